using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using GpuAttention.Backends.Cuda;
using GpuAttention.Backends.Cuda.Native;
using GpuAttention.Backends.Kernels;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace GpuAttention.Backends.Ilgpu;

/// <summary>
/// PTX of the shipped ILGPU kernels without a GPU: ILGPU's <see cref="PTXBackend"/> for sm_80 / sm_90 with PTX ISA 7.8 (the
/// newest that CUDA 11.8's ptxas, Debian's, accepts). ILGPU 1.5.3 writes <c>.target sm_80</c> whatever architecture it is given
/// (it takes the target from the ISA's minimum), so the <c>.target</c> line is set to the requested architecture here.
/// </summary>
internal static partial class IlgpuPtx
{
    /// <summary>The architectures of the PTX gate.</summary>
    public static readonly int[] Arches = [80, 90];

    private static readonly Lock Gate = new();
    private static Context? _context;

    /// <summary>Parses "sm_80" / "sm_90" (also "80", "90").</summary>
    /// <exception cref="ArgumentException">Any other architecture.</exception>
    public static int ParseArch(string s)
    {
        string t = s.Trim().ToLowerInvariant();
        if (t.StartsWith("sm_", StringComparison.Ordinal)) t = t[3..];
        return int.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out int a) && Arches.Contains(a)
            ? a : throw new ArgumentException($"--arch: expected sm_80 or sm_90, got '{s}'");
    }

    private static CudaArchitecture Architecture(int arch) => arch switch
    {
        80 => CudaArchitecture.SM_80,
        90 => CudaArchitecture.SM_90,
        _ => throw new ArgumentException($"arch: expected 80 or 90, got {arch}"),
    };

    /// <summary>Compiles one kernel configuration to PTX for sm_<paramref name="arch"/>.</summary>
    public static string Compile(IlgpuKernelConfig config, int arch)
    {
        var sm = Architecture(arch);
        lock (Gate)
        {
            IlgpuRuntime.EnsureResolver();
            _context ??= Context.Create(b => b.Math(MathMode.Fast32BitOnly).EnableAlgorithms());
            using var backend = new PTXBackend(_context, new CudaCapabilityContext(sm), sm, CudaInstructionSet.ISA_78, null);
            var entry = config.Kind == IlgpuKernelKind.ExplicitlyGrouped
                ? EntryPointDescription.FromExplicitlyGroupedKernel(config.Method)
                : EntryPointDescription.FromImplicitlyGroupedKernel(config.Method);
            var compiled = (PTXCompiledKernel)backend.Compile(entry, default);
            return TargetLine().Replace(compiled.PTXAssembly, $".target sm_{arch}", 1);
        }
    }

    /// <summary>A file name for a configuration's PTX: its name with everything but letters, digits, '-' and '_' as '_'.</summary>
    public static string FileName(IlgpuKernelConfig c) => Regex.Replace(c.Name, "[^A-Za-z0-9_-]+", "_").Trim('_') + ".ptx";

    [GeneratedRegex(@"^\.target\s+sm_\d+[a-z]?", RegexOptions.Multiline)]
    private static partial Regex TargetLine();
}

/// <summary>One kernel's resources as <c>ptxas -v</c> reports them.</summary>
internal sealed record PtxasKernelInfo(string Entry, int Registers, int StackFrame, int SpillStores, int SpillLoads, int SharedBytes);

/// <summary>
/// CUDA's PTX assembler, for the compile gate: found through <c>$GPUATTENTION_PTXAS</c> (a path), else <c>ptxas</c> on PATH
/// (<c>.ci/run</c> unpacks Debian non-free's <c>nvidia-cuda-toolkit</c> 11.8 and sets the variable).
/// </summary>
internal static partial class Ptxas
{
    /// <summary>The ptxas to run, or null with the reason it is absent.</summary>
    public static string? Find(out string? reason)
    {
        reason = null;
        string? env = Environment.GetEnvironmentVariable("GPUATTENTION_PTXAS");
        if (!string.IsNullOrEmpty(env))
        {
            if (File.Exists(env)) return env;
            reason = $"ptxas: GPUATTENTION_PTXAS={env} does not exist";
            return null;
        }
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            string p = Path.Combine(dir, "ptxas");
            if (File.Exists(p)) return p;
        }
        reason = "ptxas not found: set GPUATTENTION_PTXAS or put ptxas on PATH (.ci/run unpacks Debian non-free's nvidia-cuda-toolkit 11.8)";
        return null;
    }

    /// <summary>Assembles <paramref name="ptx"/> for sm_<paramref name="arch"/> with <c>-v</c>; returns the exit code and the
    /// combined output (errors, or the per-kernel resource lines).</summary>
    public static (int ExitCode, string Log) Assemble(string ptxas, string ptx, int arch)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"gpuattention-ptxas-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            string input = Path.Combine(dir, "k.ptx");
            File.WriteAllText(input, ptx);
            var psi = new ProcessStartInfo(ptxas) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            foreach (var a in new[] { $"-arch=sm_{arch}", "-v", "-o", Path.Combine(dir, "k.cubin"), input }) psi.ArgumentList.Add(a);
            using var p = Process.Start(psi)!;
            var err = p.StandardError.ReadToEndAsync();
            string output = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            return (p.ExitCode, output + err.Result);
        }
        finally
        {
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    /// <summary>Parses the resource lines of <c>ptxas -v</c>, one entry per kernel (<c>.entry</c>).</summary>
    public static List<PtxasKernelInfo> Parse(string log)
    {
        var list = new List<PtxasKernelInfo>();
        string? entry = null;
        int stack = 0, spillS = 0, spillL = 0;
        foreach (var line in log.Split('\n'))
        {
            if (CompilingEntry().Match(line) is { Success: true } m) { entry = m.Groups[1].Value; stack = spillS = spillL = 0; continue; }
            if (entry is null) continue;
            if (Frame().Match(line) is { Success: true } f)
            {
                stack = int.Parse(f.Groups[1].Value, CultureInfo.InvariantCulture);
                spillS = int.Parse(f.Groups[2].Value, CultureInfo.InvariantCulture);
                spillL = int.Parse(f.Groups[3].Value, CultureInfo.InvariantCulture);
            }
            else if (Used().Match(line) is { Success: true } u)
            {
                var smem = Smem().Match(line);
                list.Add(new PtxasKernelInfo(entry, int.Parse(u.Groups[1].Value, CultureInfo.InvariantCulture), stack, spillS, spillL,
                    smem.Success ? int.Parse(smem.Groups[1].Value, CultureInfo.InvariantCulture) : 0));
                entry = null;
            }
        }
        return list;
    }

    [GeneratedRegex(@"Compiling entry function '([^']+)'")] private static partial Regex CompilingEntry();
    [GeneratedRegex(@"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")] private static partial Regex Frame();
    [GeneratedRegex(@"Used (\d+) registers")] private static partial Regex Used();
    [GeneratedRegex(@"(\d+) bytes smem")] private static partial Regex Smem();
}

/// <summary>One row of the ptxas report: a kernel configuration (ILGPU or NVRTC-compiled OpenCL C) on one architecture.</summary>
internal sealed record PtxasReportRow(string Source, string Config, int Arch, PtxasKernelInfo? Info, string? Error);

/// <summary>Builds <c>bench/results/ptxas-report.txt</c>: every shipped ILGPU kernel configuration and every shipped OpenCL C
/// configuration (through NVRTC, when it loads) assembled by ptxas for sm_80 and sm_90, with registers, spills and shared memory.</summary>
internal static class PtxasReport
{
    /// <summary>ILGPU kernel configurations of <see cref="IlgpuKernelRegistry.All"/> through ptxas.</summary>
    public static IEnumerable<PtxasReportRow> IlgpuRows(string ptxas)
    {
        foreach (int arch in IlgpuPtx.Arches)
        foreach (var c in IlgpuKernelRegistry.All())
        {
            PtxasReportRow row;
            try
            {
                var (rc, log) = Ptxas.Assemble(ptxas, IlgpuPtx.Compile(c, arch), arch);
                var infos = Ptxas.Parse(log);
                row = rc == 0 && infos.Count > 0 ? new("ilgpu", c.Name, arch, infos[0], null) : new("ilgpu", c.Name, arch, null, FirstLines(log));
            }
            catch (Exception e) { row = new("ilgpu", c.Name, arch, null, $"{e.GetType().Name}: {e.Message}"); }
            yield return row;
        }
    }

    /// <summary>The OpenCL C kernels (<see cref="KernelBackend.ShippedKernelConfigs"/>, CUDA limits) through NVRTC and ptxas;
    /// one row per kernel entry. Empty with <paramref name="skipped"/> set when NVRTC does not load.</summary>
    public static IEnumerable<PtxasReportRow> NvrtcRows(string ptxas, Action<string> skipped)
    {
        if (!Nvrtc.TryLoad(out var reason)) { skipped(reason ?? "NVRTC not found"); yield break; }
        foreach (int arch in IlgpuPtx.Arches)
        foreach (var c in KernelBackend.ShippedKernelConfigs(KernelDeviceLimits.CudaGpu))
        {
            string name = $"{c.File} {c.Defines}".Trim();
            List<PtxasReportRow> rows = [];
            try
            {
                string ptx = NvrtcCompiler.Compile(PtxCache.Source(c.File), c.File, PtxCache.Options(c.Defines, arch));
                var (rc, log) = Ptxas.Assemble(ptxas, ptx, arch);
                if (rc != 0) rows.Add(new("opencl-c/nvrtc", name, arch, null, FirstLines(log)));
                else rows.AddRange(Ptxas.Parse(log).Select(i => new PtxasReportRow("opencl-c/nvrtc", $"{name} :: {i.Entry}", arch, i, null)));
            }
            catch (Exception e) { rows.Add(new("opencl-c/nvrtc", name, arch, null, $"{e.GetType().Name}: {e.Message}")); }
            foreach (var r in rows) yield return r;
        }
    }

    /// <summary>The report text: one aligned line per row, errors last.</summary>
    public static string Format(IEnumerable<PtxasReportRow> rows, string ptxasVersion, IEnumerable<string> notes)
    {
        var sb = new StringBuilder();
        sb.AppendLine("# ptxas -v of every shipped kernel configuration (gpuattention ptx --report); no GPU involved");
        sb.AppendLine($"# ptxas: {ptxasVersion}; ILGPU PTX: ISA 7.8, .target forced to the arch; NVRTC: the OpenCL C kernels through the CUDA prelude");
        foreach (var n in notes) sb.AppendLine("# " + n);
        sb.AppendLine($"{"source",-15} {"arch",-6} {"regs",4} {"spill st",8} {"spill ld",8} {"stack",5} {"smem B",7}  config");
        foreach (var r in rows.OrderBy(r => r.Source).ThenBy(r => r.Arch).ThenBy(r => r.Config, StringComparer.Ordinal))
        {
            if (r.Info is { } i)
                sb.AppendLine($"{r.Source,-15} sm_{r.Arch,-3} {i.Registers,4} {i.SpillStores,8} {i.SpillLoads,8} {i.StackFrame,5} {i.SharedBytes,7}  {r.Config}");
            else
                sb.AppendLine($"{r.Source,-15} sm_{r.Arch,-3} FAILED  {r.Config}: {r.Error}");
        }
        return sb.ToString();
    }

    /// <summary>The first line of <c>ptxas --version</c>'s release line, e.g. "Cuda compilation tools, release 11.8, V11.8.89".</summary>
    public static string Version(string ptxas)
    {
        try
        {
            var psi = new ProcessStartInfo(ptxas, "--version") { RedirectStandardOutput = true, UseShellExecute = false };
            using var p = Process.Start(psi)!;
            string s = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            return s.Split('\n').FirstOrDefault(l => l.Contains("release", StringComparison.Ordinal))?.Trim() ?? s.Trim();
        }
        catch (Exception e) { return $"unknown ({e.Message})"; }
    }

    private static string FirstLines(string log) => string.Join(" | ", log.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Take(4));
}
