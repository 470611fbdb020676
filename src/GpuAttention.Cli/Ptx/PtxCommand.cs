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
    public const string Usage = """
        usage:
          gpuattention ptx --arch sm_80|sm_90 --out DIR    PTX of every shipped ILGPU kernel configuration, one NAME.ptx each (no GPU needed)
          gpuattention ptx --report FILE                   ptxas -v of every ILGPU and NVRTC-compiled OpenCL C kernel, sm_80 and sm_90
                                                           (ptxas from $GPUATTENTION_PTXAS or PATH)
        """;

    public static int Run(ReadOnlySpan<string> argSpan)
    {
        var args = argSpan.ToArray();
        string? arch = null, outDir = null, report = null;
        for (int i = 0; i < args.Length; i++)
        {
            string a = args[i];
            string Value() => i + 1 < args.Length ? args[++i] : throw new UsageException($"{a}: expected a value");
            switch (a)
            {
                case "-h" or "--help": Console.Out.WriteLine(Usage); return 0;
                case "--arch": arch = Value(); break;
                case "--out": outDir = Value(); break;
                case "--report": report = Value(); break;
                default: throw new UsageException($"ptx: unknown option '{a}'\n{Usage}");
            }
        }
        if (report is not null) return Report(report);
        if (arch is null || outDir is null) throw new UsageException($"ptx: expected --arch sm_80|sm_90 and --out DIR (or --report FILE)\n{Usage}");
        int sm;
        try { sm = IlgpuPtx.ParseArch(arch); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }

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
