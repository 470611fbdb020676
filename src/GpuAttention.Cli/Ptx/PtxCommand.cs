using System.CommandLine;
using GpuAttention.Backends.Ilgpu;

namespace GpuAttention.Cli.Ptx;

/// <summary>
/// <c>gpuattention ptx --arch sm_80|sm_90 --out DIR</c>: writes the PTX of every shipped ILGPU kernel configuration
/// (<see cref="IlgpuKernelRegistry.All"/>), one <c>NAME.ptx</c> each, compiled by ILGPU's PTX backend (no GPU, no CUDA toolkit).
/// <c>gpuattention ptx --report FILE</c>: assembles every configuration for sm_80 and sm_90 with ptxas (<c>$GPUATTENTION_PTXAS</c>
/// or PATH), and the OpenCL C kernels through NVRTC too, and writes registers, spills and shared memory per kernel
/// (<c>bench/results/ptxas-report.txt</c>); exit code 1 when a kernel fails to assemble or ptxas is absent.
/// </summary>
internal static class PtxCommand
{
    public static Command Build()
    {
        var archOpt = CliOptions.Text("--arch", "The target: sm_80 or sm_90.", "sm_80|sm_90");
        var outOpt = CliOptions.Text("--out", "Folder for the NAME.ptx files, created if needed.", "DIR");
        var reportOpt = CliOptions.Text("--report", "Instead: ptxas -v of every ILGPU and NVRTC-compiled OpenCL C kernel for sm_80 and sm_90 "
            + "(ptxas from $GPUATTENTION_PTXAS or PATH), written to FILE.", "FILE");
        var cmd = new Command("ptx", "Writes the PTX of every shipped ILGPU kernel configuration, one NAME.ptx each. No GPU needed "
            + "(ILGPU's PTX backend); --report assembles them with ptxas and lists registers, spills and shared memory.")
        { archOpt, outOpt, reportOpt };
        cmd.SetAction(r => Run(r.GetValue(archOpt), r.GetValue(outOpt), r.GetValue(reportOpt)));
        return cmd;
    }

    private static int Run(string? arch, string? outDir, string? report)
    {
        if (report is not null) return Report(report);
        if (arch is null || outDir is null) throw new UsageException("ptx: expected --arch sm_80|sm_90 and --out DIR (or --report FILE)");
        int sm;
        try { sm = IlgpuPtx.ParseArch(arch); }
        catch (ArgumentException e) { throw new UsageException(CliErrors.Clean(e)); }

        var configs = IlgpuKernelRegistry.All().ToList();
        var ptx = configs.Select(c => (File: IlgpuPtx.FileName(c), Text: IlgpuPtx.Compile(c, sm))).ToList(); // all compiled before anything is written
        Directory.CreateDirectory(outDir);
        foreach (var (file, text) in ptx)
        {
            File.WriteAllText(Path.Combine(outDir, file), text);
            Console.Out.WriteLine($"{Path.Combine(outDir, file)}  ({text.Length} bytes)");
        }
        Console.Out.WriteLine($"{ptx.Count} kernel configurations, sm_{sm}");
        return 0;
    }

    private static int Report(string file)
    {
        string ptxas = Ptxas.Find(out var reason) ?? throw new InputException(reason!);
        var notes = new List<string>();
        var rows = PtxasReport.IlgpuRows(ptxas).Concat(PtxasReport.NvrtcRows(ptxas, r => notes.Add("NVRTC kernels skipped: " + r))).ToList();
        string text = PtxasReport.Format(rows, PtxasReport.Version(ptxas), notes);
        string? dir = Path.GetDirectoryName(Path.GetFullPath(file));
        if (dir is not null) Directory.CreateDirectory(dir);
        File.WriteAllText(file, text);
        Console.Out.Write(text);
        int failed = rows.Count(r => r.Info is null), spilling = rows.Count(r => r.Info is { SpillStores: > 0 } or { SpillLoads: > 0 });
        Console.Out.WriteLine($"{rows.Count} kernels assembled ({failed} failed, {spilling} spilling) -> {file}");
        return failed == 0 ? 0 : 1;
    }
}
