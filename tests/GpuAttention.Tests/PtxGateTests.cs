using System.Text.RegularExpressions;
using GpuAttention.Backends.Cuda;
using GpuAttention.Backends.Cuda.Native;
using GpuAttention.Backends.Ilgpu;
using GpuAttention.Backends.Kernels;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// The CUDA compile gate without a GPU: every ILGPU kernel configuration the host code ships (<see cref="IlgpuKernelRegistry.All"/>)
/// compiled to PTX for sm_80 and sm_90 and assembled by ptxas, spill-free; the NVRTC-compiled OpenCL C kernels through the same
/// ptxas; the committed report <c>bench/results/ptxas-report.txt</c> covering every configuration. ptxas comes from
/// <c>$GPUATTENTION_PTXAS</c> or PATH (.ci/run unpacks CUDA 11.8's); the tests that need it are ignored with the reason otherwise.
/// </summary>
[TestFixture]
public class PtxGateTests
{
    public static IEnumerable<TestCaseData> IlgpuConfigs() =>
        from arch in IlgpuPtx.Arches
        from c in IlgpuKernelRegistry.All()
        select new TestCaseData(c.Name, arch).SetArgDisplayNames($"sm_{arch} {c.Name}");

    private static IlgpuKernelConfig Config(string name) => IlgpuKernelRegistry.All().Single(c => c.Name == name);

    private static string RequirePtxas() => Ptxas.Find(out var reason) ?? throw new IgnoreException(reason!);

    [TestCaseSource(nameof(IlgpuConfigs))]
    public void IlgpuKernelCompilesToPtx(string name, int arch)
    {
        string ptx = IlgpuPtx.Compile(Config(name), arch);
        Assert.That(ptx, Does.Contain($".target sm_{arch}\n").Or.Contain($".target sm_{arch}\r"), "the .target is the requested architecture");
        Assert.That(Regex.Matches(ptx, @"\.target\s").Count, Is.EqualTo(1));
        Assert.That(ptx, Does.Match(@"\.visible \.entry \w+\("));
        Assert.That(ptx, Does.Not.Contain(".f64"), "no float64 math in a float32 kernel");
        Assert.That(ptx, Does.Not.Contain(".local"), "no per-thread arrays in local memory");
    }

    [TestCaseSource(nameof(IlgpuConfigs))]
    public void IlgpuKernelAssemblesWithPtxasSpillFree(string name, int arch)
    {
        string ptxas = RequirePtxas();
        var (rc, log) = Ptxas.Assemble(ptxas, IlgpuPtx.Compile(Config(name), arch), arch);
        Assert.That(rc, Is.EqualTo(0), log);
        var info = Ptxas.Parse(log);
        Assert.That(info, Has.Count.EqualTo(1), log);
        Assert.That(info[0].SpillStores + info[0].SpillLoads, Is.EqualTo(0), $"{name} spills on sm_{arch}: {log}");
        Assert.That(info[0].Registers, Is.LessThanOrEqualTo(255));
    }

    public static IEnumerable<TestCaseData> NvrtcConfigs() => KernelCompileTests.CudaConfigs();

    [TestCaseSource(nameof(NvrtcConfigs))]
    public void NvrtcKernelAssemblesWithPtxas(string file, string defines, string[] kernels, int arch)
    {
        if (!Nvrtc.TryLoad(out var reason)) Assert.Ignore(reason!);
        string ptxas = RequirePtxas();
        string ptx = NvrtcCompiler.Compile(PtxCache.Source(file), file, PtxCache.Options(defines, arch));
        var (rc, log) = Ptxas.Assemble(ptxas, ptx, arch);
        Assert.That(rc, Is.EqualTo(0), log);
        Assert.That(Ptxas.Parse(log).Select(i => i.Entry), Is.SupersetOf(kernels));
    }

    [Test]
    public void ParsesPtxasVerboseOutput()
    {
        const string log = """
            ptxas info    : 0 bytes gmem
            ptxas info    : Compiling entry function 'Kernel_Gemm' for 'sm_90'
            ptxas info    : Function properties for Kernel_Gemm
                8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
            ptxas info    : Used 40 registers, 8448 bytes smem, 476 bytes cmem[0]
            ptxas info    : Compiling entry function 'Kernel_Fill' for 'sm_90'
            ptxas info    : Function properties for Kernel_Fill
                0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
            ptxas info    : Used 20 registers, 380 bytes cmem[0]
            """;
        var p = Ptxas.Parse(log);
        Assert.That(p, Is.EqualTo(new[] { new PtxasKernelInfo("Kernel_Gemm", 40, 8, 4, 12, 8448), new PtxasKernelInfo("Kernel_Fill", 20, 0, 0, 0, 0) }));
    }

    /// <summary>The committed report lists every shipped ILGPU configuration on both architectures (regenerate it with
    /// <c>gpuattention ptx --report bench/results/ptxas-report.txt</c> after changing a kernel or the registry).</summary>
    [Test]
    public void CommittedReportCoversEveryIlgpuConfig()
    {
        string path = Path.Combine(RepoRoot(), "bench", "results", "ptxas-report.txt");
        Assert.That(File.Exists(path), Is.True, path);
        var lines = File.ReadAllLines(path);
        foreach (int arch in IlgpuPtx.Arches)
        foreach (var c in IlgpuKernelRegistry.All())
        {
            var line = lines.FirstOrDefault(l => l.StartsWith("ilgpu ", StringComparison.Ordinal) && l.Contains($" sm_{arch} ") && l.EndsWith("  " + c.Name, StringComparison.Ordinal));
            Assert.That(line, Is.Not.Null, $"{path} has no line for {c.Name} on sm_{arch}: regenerate it (gpuattention ptx --report)");
            Assert.That(line, Does.Not.Contain("FAILED"));
        }
    }

    [Test]
    public void PtxCommandWritesOnePtxPerConfig()
    {
        string dir = CliRunner.TempDir();
        var (code, so, se) = CliRunner.Run("ptx", "--arch", "sm_90", "--out", dir);
        Assert.That(code, Is.EqualTo(0), se);
        var files = Directory.GetFiles(dir, "*.ptx").Select(Path.GetFileName).ToList();
        Assert.That(files, Is.EquivalentTo(IlgpuKernelRegistry.All().Select(IlgpuPtx.FileName)));
        foreach (var f in Directory.GetFiles(dir, "*.ptx")) Assert.That(File.ReadAllText(f), Does.Contain(".target sm_90"));
        var bad = CliRunner.Run("ptx", "--arch", "sm_75", "--out", dir);
        Assert.That(bad.Code, Is.EqualTo(2));
        Assert.That(bad.Stderr, Does.Contain("sm_80 or sm_90"));
    }

    internal static string RepoRoot()
    {
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d is not null && !File.Exists(Path.Combine(d.FullName, "GpuAttention.sln"))) d = d.Parent;
        return d?.FullName ?? throw new DirectoryNotFoundException("GpuAttention.sln not found above " + AppContext.BaseDirectory);
    }
}
