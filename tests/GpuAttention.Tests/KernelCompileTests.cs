using GpuAttention.Backends.Cuda;
using GpuAttention.Backends.Cuda.Native;
using GpuAttention.Backends.Kernels;
using GpuAttention.Backends.OpenCL;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// Compile checks that need no GPU: every kernel file with every define set the host code ships
/// (<see cref="KernelBackend.ShippedKernelConfigs"/>) is compiled by NVRTC through the CUDA branch of the prelude for
/// compute_80 and compute_90, and built by the OpenCL device (PoCL in CI). Skipped with the reason where NVRTC /
/// OpenCL is absent.
/// </summary>
[TestFixture]
[Category("Slow")]   // a process, a compiler or a tuning run: skipped by the fast tier (--filter TestCategory!=Slow)
public class KernelCompileTests
{
    private static void RequireNvrtc()
    {
        if (!Nvrtc.TryLoad(out var reason)) Assert.Ignore(reason!);
    }

    public static IEnumerable<TestCaseData> CudaConfigs() =>
        from arch in new[] { 80, 90 }
        from c in KernelBackend.ShippedKernelConfigs(KernelDeviceLimits.CudaGpu)
        select new TestCaseData(c.File, c.Defines, c.Kernels, arch).SetArgDisplayNames($"compute_{arch} {c}");

    [TestCaseSource(nameof(CudaConfigs))]
    public void CompilesWithNvrtc(string file, string defines, string[] kernels, int arch)
    {
        RequireNvrtc();
        string ptx;
        try { ptx = NvrtcCompiler.Compile(PtxCache.Source(file), file, PtxCache.Options(defines, arch)); }
        catch (KernelCompileException e) { Assert.Fail(e.Message); throw; }
        Assert.That(ptx, Does.Contain($".target sm_{arch}"));
        foreach (var k in kernels)
            Assert.That(ptx, Does.Match($@"\.entry\s+{k}\s*\("), $"PTX has no unmangled entry point {k}");
    }

    [Test]
    public void EveryKernelFileHasShippedConfigs()
    {
        var files = KernelBackend.ShippedKernelConfigs(KernelDeviceLimits.CudaGpu).Select(c => c.File).ToHashSet();
        foreach (var name in KernelSources.Names.Where(n => n != "prelude.cl"))
            Assert.That(files, Does.Contain(name), $"kernels/{name} has no entry in KernelBackend.ShippedConfigFamilies, so no compile check covers it");
    }

    [Test]
    public void ShippedSdpaConfigsFollowTheLaunchCode()
    {
        var configs = KernelBackend.ShippedKernelConfigs(KernelDeviceLimits.CudaGpu).Where(c => c.File == "sdpa.cl").ToList();
        // per head-dim pair: the tiled forward, and the split-key decoding kernels (L == 1)
        Assert.That(configs, Has.Count.EqualTo(2 * KernelBackend.SdpaShippedHeadDims.Length));
        Assert.That(configs.Select(c => c.Defines), Does.Contain("-DHEAD_DIM=64 -DHEAD_DIM_V=64 -DDEC_CHUNK=128 -DDEC_WG=64"));
        Assert.That(configs.Select(c => c.Defines), Does.Contain("-DHEAD_DIM=64 -DHEAD_DIM_V=64 -DBLOCK_M=32 -DBLOCK_N=64"));
        Assert.That(configs.Select(c => c.Defines), Does.Contain("-DHEAD_DIM=256 -DHEAD_DIM_V=256 -DBLOCK_M=32 -DBLOCK_N=16"));
    }

    [Test]
    public void PreludeCudaBranchCoversEveryWord()
    {
        RequireNvrtc();
        const string src = """
            KERNEL words(GLOBAL float* RESTRICT out, GLOBAL const float* RESTRICT in, CONSTANT float* c, int64 n)
            {
                LOCAL_ARRAY(float, tile, 64);
                const int t = LID(0) + LID(1) + LID(2);
                tile[t & 63] = in[GID(0)] + (float)(LSZ(0) + LSZ(1) + LSZ(2) + GRP(0) + GRP(1) + GRP(2) + NGRP(0) + NGRP(1) + NGRP(2));
                BARRIER();
                float x = tile[(t + 1) & 63];
                x = EXP(x) + LOG(FABS(x) + 1.0f) + SQRT(FABS(x)) + FLOOR(x) + ROUND(x) + FMAX(x, c[0]) + FMIN(x, POS_INF);
                uint64 u = (uint64)n;
                if (x > NEG_INF && GID(0) < n) out[GID(0)] = x + (float)u;
                ATOMIC_ADD_F(out + (t & 7), x);
            }
            """;
        var full = "#define CUDA\n" + KernelSources.Get("prelude.cl") + "\n" + src;
        var ptx = NvrtcCompiler.Compile(full, "words.cu", PtxCache.Options("", 80));
        Assert.That(ptx, Does.Match(@"\.entry\s+words\s*\("));
    }

    [Test]
    public void NvrtcErrorCarriesTheLog()
    {
        RequireNvrtc();
        var ex = Assert.Throws<KernelCompileException>(() =>
            NvrtcCompiler.Compile("#define CUDA\n" + KernelSources.Get("prelude.cl") + "\nKERNEL broken(GLOBAL float* x) { x[0] = undeclared_thing; }", "broken.cl", PtxCache.Options("", 80)));
        Assert.That(ex!.Log, Does.Contain("undeclared_thing"));
        Assert.That(ex.Message, Does.Contain("broken.cl").And.Contain("compute_80"));
    }

    [Test]
    public void DefinesBecomeNvrtcOptions()
    {
        Assert.That(PtxCache.Options("-DHEAD_DIM=17  -DFLAG", 90), Is.EqualTo(new[]
            { "--gpu-architecture=compute_90", "--generate-line-info", "--define-macro=HEAD_DIM=17", "--define-macro=FLAG" }));
        Assert.That(PtxCache.Options("", 80), Has.Length.EqualTo(2));
        Assert.Throws<ArgumentException>(() => PtxCache.Options("HEAD_DIM=3", 80));
        Assert.Throws<ArgumentException>(() => PtxCache.Options("-D=3", 80));
    }

    [Test]
    public void PtxIsCachedOnDiskAcrossCacheInstances()
    {
        RequireNvrtc();
        var dir = Path.Combine(Path.GetTempPath(), "gpuattention-tests", "ptx-" + Guid.NewGuid().ToString("N"));
        try
        {
            var (_, _, defines) = KernelBackend.SdpaConfig(17, 23, KernelDeviceLimits.CudaGpu);
            var first = new PtxCache(dir);
            var ptx = first.Get("sdpa.cl", defines, 80);
            Assert.That(first.Get("sdpa.cl", defines, 80), Is.SameAs(ptx), "second lookup is served from memory");
            Assert.That((first.Compiles, first.DiskHits), Is.EqualTo((1, 0)));
            var files = Directory.GetFiles(dir);
            Assert.That(files, Has.Length.EqualTo(1), "one file, no temporaries left behind");
            Assert.That(Path.GetFileName(files[0]), Does.Match("^[0-9a-f]{64}\\.ptx$"));

            var second = new PtxCache(dir);                       // a new process, as far as the cache knows
            Assert.That(second.Get("sdpa.cl", defines, 80), Is.EqualTo(ptx));
            Assert.That((second.Compiles, second.DiskHits), Is.EqualTo((0, 1)));
            second.Get("sdpa.cl", defines, 90);                  // another architecture is another key
            Assert.That(second.Compiles, Is.EqualTo(1));
            Assert.That(Directory.GetFiles(dir), Has.Length.EqualTo(2));
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    [Test]
    public void CacheKeyCoversSourceOptionsArchAndVersion()
    {
        string[] o = ["--gpu-architecture=compute_80"];
        var k = PtxCache.Key("src", o, 80, "11.8");
        Assert.That(k, Does.Match("^[0-9a-f]{64}$"));
        Assert.That(PtxCache.Key("src2", o, 80, "11.8"), Is.Not.EqualTo(k));
        Assert.That(PtxCache.Key("src", ["--gpu-architecture=compute_90"], 80, "11.8"), Is.Not.EqualTo(k));
        Assert.That(PtxCache.Key("src", o, 90, "11.8"), Is.Not.EqualTo(k));
        Assert.That(PtxCache.Key("src", o, 80, "12.4"), Is.Not.EqualTo(k));
    }

    [Test]
    public void BuildsEveryShippedConfigWithOpenCl()
    {
        Device dev;
        try { dev = Device.Open("opencl"); }
        catch (BackendUnavailableException e) { Assert.Ignore(e.Message); return; }
        using (dev)
        {
            var be = (OpenClBackend)dev.Backend;
            // The configurations this device would launch, and the GPU ones (other tiles) as well.
            var configs = KernelBackend.ShippedKernelConfigs(be.Limits).Concat(KernelBackend.ShippedKernelConfigs(KernelDeviceLimits.CudaGpu))
                .DistinctBy(c => (c.File, c.Defines)).ToList();
            foreach (var c in configs)
            {
                try
                {
                    foreach (var k in c.Kernels) Assert.That(be.Programs.Kernel(c.File, c.Defines, k).IsInvalid, Is.False);
                }
                catch (KernelCompileException e) { Assert.Fail($"{c}: {e.Message}"); }
            }
        }
    }
}
