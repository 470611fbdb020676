using System.CommandLine;
using System.Globalization;
using GpuAttention.Backends.Kernels;
using GpuAttention.Backends.Kernels.Tuning;

namespace GpuAttention.Cli.Tune;

/// <summary>
/// <c>gpuattention tune --backend opencl[:K]|cuda[:K] [--op gemm,grid-sample,glimpse] [--budget SECONDS] [--repeat N] [--dry-run]</c>
/// and <c>gpuattention tune --show [--backend B]</c>: searches each family's <c>-D</c> / launch-parameter space on the device
/// (<see cref="Tuner"/>), prints a table per family, and stores the winners in the device's tuning cache
/// (<see cref="TuningCache"/>), which the backend reads when it opens. <c>--dry-run</c> prints the spaces and the order the
/// candidates would be tried in, and runs and writes nothing; <c>--show</c> prints where the cache is and what it holds.
/// </summary>
internal static class TuneCommand
{
    /// <summary>Accepted --op words → family name.</summary>
    private static readonly Dictionary<string, string> OpAliases = new(StringComparer.OrdinalIgnoreCase)
    {
        ["gemm"] = "gemm",
        ["grid-sample"] = "grid-sample", ["spatial"] = "grid-sample", ["affine-grid"] = "grid-sample",
        ["glimpse"] = "glimpse",
    };

    public static Command Build()
    {
        var backendOpt = CliOptions.Backend(null, "tune: opencl[:K] or cuda[:K]");
        var opOpt = CliOptions.Parsed<List<string>?>("--op", "Only these kernel families, comma-separated: gemm, grid-sample (also spatial, affine-grid), glimpse.",
            "OP,...", ParseOps, null);
        var budgetOpt = CliOptions.Parsed<double?>("--budget", "Seconds to spend over all families (default 120).", "SECONDS",
            v => double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var b) && double.IsFinite(b) && b > 0
                ? b : throw new FormatException($"expected a number of seconds > 0, got '{v}'"), null);
        var repeatOpt = CliOptions.Int("--repeat", "Timed runs per candidate (median).", 1, 5);
        var dryOpt = CliOptions.Flag("--dry-run", "Print the search spaces and the order of the candidates; run and write nothing.");
        var showOpt = CliOptions.Flag("--show", "Print where the tuning cache is and what it holds (for --backend's device, else every file).");
        var cmd = new Command("tune", "Tunes the kernels' tile sizes and work-group sizes for the device. Every candidate is checked "
            + "against the reference, then timed (median); the winners go to a per-device cache that the backend reads when it opens: "
            + "$GPUATTENTION_TUNING_DIR, else $XDG_CACHE_HOME/gpuattention/tuning, else ~/.cache/gpuattention/tuning.")
        { backendOpt, opOpt, budgetOpt, repeatOpt, dryOpt, showOpt };
        cmd.SetAction(r => Run(r.GetValue(backendOpt), r.GetValue(opOpt) is { Count: > 0 } ops ? ops : null, r.GetValue(budgetOpt) ?? 120, r.GetValue(repeatOpt), r.GetValue(dryOpt), r.GetValue(showOpt)));
        return cmd;
    }

    private static List<string> ParseOps(string value)
    {
        var ops = new List<string>();
        foreach (var w in value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            ops.Add(OpAliases.TryGetValue(w, out var f) ? f
                : throw new FormatException($"unknown op '{w}' (expected {string.Join(", ", TuningSpaces.All.Select(s => s.Family))})"));
        return ops.Count > 0 ? ops : throw new FormatException("expected at least one op");
    }

    private static int Run(string? backend, List<string>? ops, double budget, int repeats, bool dry, bool show)
    {
        if (show) return Show(backend);
        if (backend is null) throw new UsageException("tune: expected --backend opencl[:K] or cuda[:K]");
        var families = ops?.Distinct().ToList() ?? TuningSpaces.All.Select(s => s.Family).ToList();
        var workloads = TuningWorkloads.All.Where(w => families.Contains(w.Space.Family)).ToList();

        using var device = CliOptions.OpenDevice(backend);
        if (device.Backend is not KernelBackend be)
            throw new UsageException($"tune: --backend {backend}: only opencl[:K] and cuda[:K] have kernels to tune");
        var id = be.TuningIdentity;
        string path = TuningCache.PathFor(id);
        Console.Out.WriteLine($"gpuattention tune on {device.Spec}: {id}");
        Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"date {DateTime.UtcNow:yyyy-MM-dd HH:mm:ss} UTC; load average {LoadAverage()}; {Environment.ProcessorCount} cores; limits: work-group {be.MaxWorkGroupSize}, local memory {be.LocalMemBytes} B, {(be.IsGpu ? "GPU" : "CPU device")}"));
        Console.Out.WriteLine($"cache: {path}");
        if (dry) return DryRun(be, workloads);

        Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"budget {budget:0.#} s over {workloads.Count} famil{(workloads.Count == 1 ? "y" : "ies")}; each candidate: checked against the double-precision reference, then 1 warm-up + median of {repeats} timed runs ({(device.HasDeviceTimer ? "device events" : "host time around launch + synchronise")})"));
        var entries = new List<TuningCacheEntry>();
        var start = DateTime.UtcNow;
        for (int i = 0; i < workloads.Count; i++)
        {
            double left = budget - (DateTime.UtcNow - start).TotalSeconds;
            double share = Math.Max(0, left) / (workloads.Count - i);
            Console.Out.WriteLine();
            var r = Tuner.Tune(device, workloads[i], share, repeats, Console.Out);
            if (r.ToEntry() is { } e) entries.Add(e);
        }
        Console.Out.WriteLine();
        if (entries.Count == 0)
        {
            Console.Out.WriteLine("no winners; cache not written");
            return 1;
        }
        string written = TuningCache.Save(id, entries);
        Console.Out.WriteLine($"wrote {entries.Count} winner{(entries.Count == 1 ? "" : "s")} to {written}");
        return 0;
    }

    private static int DryRun(KernelBackend be, List<TuningWorkload> workloads)
    {
        foreach (var w in workloads)
        {
            var s = w.Space;
            var order = s.CandidateOrder(be.Limits, out int invalid, w.Key);
            Console.Out.WriteLine();
            Console.Out.WriteLine($"{s.Family} [{w.Key}]: {w.Shape}; knobs {string.Join(", ", s.Knobs.Select(k => $"{k.Name}{(k.IsDefine ? "" : " (host)")} ∈ {{{string.Join(",", k.Values)}}}"))}");
            Console.Out.WriteLine($"  default {s.Default(be.Limits, w.Key)}; current {be.Tuned(s, w.Key)}; {order.Count} valid, {invalid} invalid on this device");
            Console.Out.WriteLine($"  first candidates: {string.Join(" | ", order.Take(5))}");
        }
        Console.Out.WriteLine();
        Console.Out.WriteLine("dry run: nothing compiled, run or written");
        return 0;
    }

    /// <summary>Where the cache is and what it holds: for <paramref name="backend"/>'s device, or every file in the folder.</summary>
    private static int Show(string? backend)
    {
        string dir = TuningCache.Directory;
        Console.Out.WriteLine($"tuning cache: {dir}");
        if (backend is not null)
        {
            using var device = CliOptions.OpenDevice(backend);
            if (device.Backend is not KernelBackend be) throw new UsageException($"tune: --backend {backend}: only opencl[:K] and cuda[:K] have a tuning cache");
            string path = TuningCache.PathFor(be.TuningIdentity);
            Console.Out.WriteLine($"{device.Spec}: {be.TuningIdentity}");
            var inUse = TuningSpaces.All.Select(s => (s.Family, Params: be.Tuned(s))).ToList();   // the backend's own read: warns once if the file is bad
            var f = TuningCache.Load(be.TuningIdentity, _ => { });
            if (f is null) Console.Out.WriteLine($"  {path}: {(File.Exists(path) ? "ignored (see the warning)" : "none (built-in defaults)")}");
            else PrintEntries(path, f, be);
            foreach (var (family, p) in inUse) Console.Out.WriteLine($"  in use: {family,-12} {p}");
            return 0;
        }
        var files = Directory.Exists(dir) ? Directory.GetFiles(dir, "*.json").Order(StringComparer.Ordinal).ToList() : [];
        if (files.Count == 0) Console.Out.WriteLine("  (empty)");
        foreach (var path in files)
        {
            var f = TuningCache.Parse(File.ReadAllText(path), out var error);
            if (f is null) { Console.Out.WriteLine($"  {Path.GetFileName(path)}: ignored ({error})"); continue; }
            PrintEntries(path, f, null);
        }
        return 0;
    }

    private static void PrintEntries(string path, TuningCacheFile f, KernelBackend? be)
    {
        Console.Out.WriteLine($"  {Path.GetFileName(path)}: {f.Backend}: {f.Platform} / {f.Device}, driver {f.Driver}");
        foreach (var e in f.Entries)
        {
            var space = TuningSpaces.Find(e.Family);
            string state = space is null ? "unknown family"
                : e.SourceHash != TuningCache.SourceHash(space) ? "stale"
                : be is not null && space.Validate(TuningCache.ToParams(space, e.Params), be.Limits, e.Key) is string why ? "invalid: " + why
                : "current";
            string p = space is null ? string.Join(" ", e.Params.Select(kv => $"{kv.Key}={kv.Value}")) : TuningCache.ToParams(space, e.Params).ToString();
            Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"    {e.Family,-12} [{e.Key}] {p,-44} {e.Ms,9:0.000} ms (default {e.DefaultMs:0.000}) {e.Rate,8:0.00} {e.Unit}; {e.Tried} tried, {e.TunedAt}; {state}"));
        }
    }

    /// <summary>The 1/5/15-minute load average (Linux), or "n/a".</summary>
    internal static string LoadAverage()
    {
        try { return string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return "n/a"; }
    }
}
