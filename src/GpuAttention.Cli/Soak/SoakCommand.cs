using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using GpuAttention.Diagnostics;

namespace GpuAttention.Cli.Soak;

/// <summary>
/// <c>gpuattention soak --backend B (--minutes N | --iterations N) [--interval S] [--case TEXT] [--skip TEXT]</c>: runs every op of
/// <see cref="OpWorkload"/> in a loop on one device (each iteration uploads, runs, downloads and disposes everything),
/// compares every output with the same case run on the CPU backend, and prints over time the managed heap, the process
/// working set and private memory, and the live native handle counts (<see cref="NativeResources"/>). Fails (exit 1) when
/// an output disagrees with the CPU, or when live handles or native bytes at the end exceed those after the first iteration.
/// </summary>
internal static class SoakCommand
{
    /// <summary>Relative error allowed between the backend and the CPU backend (float32 vs float32, different orders).</summary>
    private const double Bound = 1e-4;

    public static Command Build()
    {
        var backendOpt = CliOptions.Backend();
        var minutesOpt = CliOptions.Number("--minutes", "Run for this many minutes.", "N", 0);
        var iterationsOpt = CliOptions.Number("--iterations", "Run this many iterations (each runs every case once).", "N", 1);
        var intervalOpt = CliOptions.Number("--interval", "Seconds between two report lines (default 30).", "S", 0.1);
        var caseOpt = CliOptions.Text("--case", "Only the cases whose name contains TEXT.", "TEXT");
        var skipOpt = CliOptions.Text("--skip", "Leave out the cases whose name contains TEXT.", "TEXT");
        var listOpt = CliOptions.Flag("--list", "Print the case names and exit.");
        var cmd = new Command("soak", "Runs every op in a loop on one device, for leaks and drift. Every output is checked against the "
            + "cpu backend; memory and live native handles are reported over time; fails when an output disagrees or handles grow.")
        { backendOpt, minutesOpt, iterationsOpt, intervalOpt, caseOpt, skipOpt, listOpt };
        cmd.SetAction(r =>
        {
            if (r.GetValue(listOpt))
            {
                foreach (var c in OpWorkload.Cases) Console.Out.WriteLine(c.Name);
                return 0;
            }
            return Run(r.GetValue(backendOpt)!, r.GetValue(minutesOpt), r.GetValue(iterationsOpt) is double it ? (long)it : null,
                r.GetValue(intervalOpt) ?? 30, r.GetValue(caseOpt), r.GetValue(skipOpt));
        });
        return cmd;
    }

    private static int Run(string backend, double? minutes, long? iterations, double interval, string? only, string? skip)
    {
        if (minutes is null && iterations is null) throw new UsageException("soak: expected --minutes N or --iterations N");
        var cases = OpWorkload.Cases.Where(c => (only is null || c.Name.Equals(only, StringComparison.OrdinalIgnoreCase) || c.Name.Contains(only, StringComparison.OrdinalIgnoreCase))
            && (skip is null || !c.Name.Contains(skip, StringComparison.OrdinalIgnoreCase))).ToList();
        if (cases.Count == 0) throw new UsageException($"--case: no case name contains '{only}'");
        using var device = CliOptions.OpenDevice(backend);
        float[][][] expected;
        using (var cpu = Device.Open("cpu")) expected = cases.Select(c => c.Run(cpu)).ToArray();

        var proc = Process.GetCurrentProcess();
        Console.Out.WriteLine($"soak on {device.Spec} ({device.Name}); machine: {Environment.MachineName}, {Environment.ProcessorCount} cores, "
            + $"{System.Runtime.InteropServices.RuntimeInformation.OSDescription}, .NET {Environment.Version}");
        Console.Out.WriteLine($"{cases.Count} cases per iteration ({string.Join(", ", cases.Select(c => c.Name))}); outputs checked against the cpu backend, bound {Bound:0E+0}");
        Console.Out.WriteLine($"{"elapsed_s",9} {"iter",7} {"ops",8} {"gc_heap_MB",10} {"working_set_MB",14} {"private_MB",10} {"cpu_buffers",11} {"cpu_native_MB",13} {"opencl_handles",14} {"mismatches",10}");

        var sw = Stopwatch.StartNew();
        long iter = 0, ops = 0, mismatches = 0;
        long baseHandles = 0, baseBuffers = 0, baseBytes = 0;
        double nextReport = 0;
        double worst = 0;
        void Report()
        {
            proc.Refresh();
            Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{sw.Elapsed.TotalSeconds,9:0.0} {iter,7} {ops,8} {GC.GetTotalMemory(false) / 1048576.0,10:0.0} {proc.WorkingSet64 / 1048576.0,14:0.0} "
                + $"{proc.PrivateMemorySize64 / 1048576.0,10:0.0} {NativeResources.CpuBuffers,11} {NativeResources.CpuBytes / 1048576.0,13:0.000} "
                + $"{NativeResources.OpenClHandles,14} {mismatches,10}"));
        }
        while (true)
        {
            for (int c = 0; c < cases.Count; c++)
            {
                var got = cases[c].Run(device);
                double e = OpWorkload.WorstError(got, expected[c]);
                worst = Math.Max(worst, double.IsNaN(e) ? double.PositiveInfinity : e);
                if (!(e <= Bound))
                {
                    mismatches++;
                    if (mismatches <= 10) Console.Out.WriteLine($"mismatch: iteration {iter}, {cases[c].Name}: relative error {e:E3} > {Bound:0E+0}");
                }
                ops++;
            }
            iter++;
            if (iter == 1)
            {
                device.Synchronize();
                (baseHandles, baseBuffers, baseBytes) = (NativeResources.OpenClHandles, NativeResources.CpuBuffers, NativeResources.CpuBytes);
            }
            bool done = iterations is long n ? iter >= n : sw.Elapsed.TotalMinutes >= minutes!.Value;
            if (done || sw.Elapsed.TotalSeconds >= nextReport) { Report(); nextReport = sw.Elapsed.TotalSeconds + interval; }
            if (done) break;
        }
        device.Synchronize();
        long dh = NativeResources.OpenClHandles - baseHandles, db = NativeResources.CpuBuffers - baseBuffers, dbytes = NativeResources.CpuBytes - baseBytes;
        bool leak = dh > 0 || db > 0 || dbytes > 0;
        Console.Out.WriteLine($"{iter} iterations, {ops} op cases in {sw.Elapsed.TotalSeconds:0.0} s; worst relative error vs cpu {worst:E2}; "
            + $"live handles after first iteration → end: opencl {baseHandles} → {NativeResources.OpenClHandles}, cpu buffers {baseBuffers} → {NativeResources.CpuBuffers}");
        Console.Out.WriteLine(mismatches == 0 && !leak ? "soak: OK" : $"soak: FAILED ({mismatches} mismatches{(leak ? ", native handles grew" : "")})");
        return mismatches == 0 && !leak ? 0 : 1;
    }
}
