using GpuAttention.Backends.OpenCL;
using GpuAttention.Reference;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// What only the OpenCL backend has: small-tile overrides, the split-key decoding kernels with small chunks, program caching, build
/// logs in exceptions, device enumeration. The SDPA semantics on every backend (shapes, masks, causal, scale, NaN, empty dims) are in
/// <see cref="SdpaForwardTests"/>. Skipped when OpenCL is absent.
/// </summary>
[TestFixture]
[NonParallelizable]
public class OpenClSdpaTests
{
    private Device? _dev;
    private string? _unavailable;

    [OneTimeSetUp]
    public void OpenDevice()
    {
        try { _dev = Device.Open("opencl"); }
        catch (BackendUnavailableException e) { _unavailable = e.Message; }
    }

    [OneTimeTearDown]
    public void CloseDevice() => _dev?.Dispose();

    private Device Dev
    {
        get
        {
            if (_dev is null) Assert.Ignore(_unavailable ?? "opencl unavailable");
            return _dev!;
        }
    }

    /// <summary>Runs the device's SDPA on random inputs (poisoned outputs) and compares with <see cref="ReferenceOps.SdpaForward(float[], float[], float[], int, int, int, int, int, int, int, float, bool, float[], int[])"/>.
    /// A mask gets −∞ entries and its first row fully masked.</summary>
    private void Check(int B, int Hq, int Hkv, int L, int S, int E, int Ev, bool causal = false, int[]? maskShape = null, int seed = 1)
    {
        var d = Dev;
        var r = new Random(seed);
        var q = TestUtil.Random(r, (long)B * Hq * L * E);
        var k = TestUtil.Random(r, (long)B * Hkv * S * E);
        var v = TestUtil.Random(r, (long)B * Hkv * S * Ev);
        float[]? mask = null;
        if (maskShape is not null)
        {
            mask = TestUtil.Random(r, Tensor.Product(maskShape), 2f);
            for (int i = 0; i < mask.Length; i += 7) mask[i] = float.NegativeInfinity;
            for (int j = 0; j < maskShape[^1]; j++) mask[j] = float.NegativeInfinity;   // row 0 of the first mask slice
        }
        using var tq = d.Upload(q, B, Hq, L, E);
        using var tk = d.Upload(k, B, Hkv, S, E);
        using var tv = d.Upload(v, B, Hkv, S, Ev);
        using var tm = mask is null ? null : d.Upload(mask, maskShape!);
        using var to = d.Allocate(B, Hq, L, Ev);
        using var tl = d.Allocate(B, Hq, L);
        d.Fill(to, float.NaN);
        d.Fill(tl, float.NaN);
        d.Sdpa(tq, tk, tv, to, tl, tm, new SdpaOptions { IsCausal = causal });
        var (wo, wl) = ReferenceOps.SdpaForward(q, k, v, B, Hq, Hkv, L, S, E, Ev, 1f / MathF.Sqrt(E), causal, mask, maskShape);
        TestUtil.AssertClose(d.Download(to), wo, 1e-5, "out");
        TestUtil.AssertClose(d.Download(tl), wl, 1e-5, "lse");
    }

    /// <summary>Small tiles: many key tiles, query-block tails and causal block skipping on small shapes.</summary>
    [TestCase(4, 4, false, null)]
    [TestCase(8, 3, true, null)]
    [TestCase(2, 5, false, new[] { 2, 1, 21, 19 })]
    [TestCase(16, 1, true, new[] { 21, 19 })]
    public void SmallTiles(int blockM, int blockN, bool causal, int[]? maskShape)
    {
        var be = (OpenClBackend)Dev.Backend;
        be.SdpaTileOverride = (blockM, blockN);
        try
        {
            Check(2, 2, 1, 21, 19, 5, 3, causal: causal, maskShape: maskShape);
            Check(1, 2, 2, 7, 30, 9, 1, causal: causal);
        }
        finally { be.SdpaTileOverride = null; }
    }

    /// <summary>L == 1 takes the split-key decoding kernels (partial + combine); small chunks give many splits.</summary>
    [TestCase(16, false, null)]
    [TestCase(7, false, new[] { 2, 4, 1, 45 })]
    [TestCase(5, false, new[] { 1, 45 })]
    [TestCase(16, true, null)]
    public void Decode(int chunk, bool causal, int[]? maskShape)
    {
        var be = (OpenClBackend)Dev.Backend;
        (be.SdpaDecodeMinKeys, be.SdpaDecodeChunk) = (1, chunk);
        try
        {
            Check(2, 4, 2, 1, 45, 17, 23, causal: causal, maskShape: maskShape);
            Check(1, 1, 1, 1, 3, 1, 1, causal: causal);
        }
        finally { (be.SdpaDecodeMinKeys, be.SdpaDecodeChunk) = (256, 128); }
    }

    [Test] public void DecodeDefaultChunks() => Check(1, 4, 1, 1, 300, 64, 64, maskShape: [1, 4, 1, 300]);

    [Test]
    public void ProgramsAreCached()
    {
        var d = Dev;
        Check(1, 1, 1, 9, 9, 17, 23);
        var be = (OpenClBackend)d.Backend;
        int n = be.Programs.ProgramCount;
        Check(1, 2, 1, 11, 5, 17, 23, seed: 9);
        Assert.That(be.Programs.ProgramCount, Is.EqualTo(n));
    }

    [Test]
    public void BrokenSourceReportsBuildLog()
    {
        var be = (OpenClBackend)Dev.Backend;
        var ex = Assert.Throws<KernelCompileException>(() => be.Programs.Build("__kernel void broken(__global float* x) { x[0] = undeclared_thing; }", "", "broken.cl"));
        Assert.That(ex!.Message, Does.Contain("undeclared_thing"));
        Assert.That(ex.Log, Does.Contain("undeclared_thing"));
        Assert.That(ex.Message, Does.Contain("CL_BUILD_PROGRAM_FAILURE"));
    }

    [Test]
    public void EnumerateDescribesDevices()
    {
        _ = Dev;
        var all = OpenClBackend.Enumerate();
        Assert.That(all, Is.Not.Empty);
        Assert.That(all[0].Description, Does.Contain(" / ").And.Contain("OpenCL").And.Contain("CU"));
        var ex = Assert.Throws<BackendUnavailableException>(() => Device.Open($"opencl:{all.Count}"));
        Assert.That(ex!.Message, Does.Contain("no such device"));
        Assert.That(Dev.SupportsOp(OpKind.Sdpa), Is.True);
    }
}
