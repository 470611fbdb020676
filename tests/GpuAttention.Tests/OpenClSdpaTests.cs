using GpuAttention.Backends.OpenCL;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>The OpenCL fused SDPA forward against a double-precision reference. Skipped when OpenCL is absent.</summary>
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

    // ---------------- reference ----------------

    /// <summary>softmax(q kᵀ scale + mask) v in double, the L×S way. mask is [B,Hq,L,S]-addressed through strides.</summary>
    private static (double[] Out, double[] Lse) Reference(int B, int Hq, int Hkv, int L, int S, int E, int Ev,
        float[] q, float[] k, float[] v, float[]? mask, long[] ms, double scale, bool causal)
    {
        var o = new double[(long)B * Hq * L * Ev];
        var lse = new double[(long)B * Hq * L];
        var sc = new double[S];
        int g = Hq / Hkv;
        for (int b = 0; b < B; b++)
        for (int h = 0; h < Hq; h++)
        {
            int hk = h / g;
            long kvb = ((long)b * Hkv + hk) * S;
            for (int i = 0; i < L; i++)
            {
                long row = ((long)b * Hq + h) * L + i;
                double mx = double.NegativeInfinity;
                for (int j = 0; j < S; j++)
                {
                    double d = 0;
                    for (int c = 0; c < E; c++) d += (double)q[row * E + c] * k[(kvb + j) * E + c];
                    double x = d * scale;
                    if (mask is not null) x += mask[b * ms[0] + h * ms[1] + i * ms[2] + j * ms[3]];
                    if (causal && j > i) x = double.NegativeInfinity;
                    sc[j] = x;
                    mx = Math.Max(mx, x);
                }
                if (double.IsNegativeInfinity(mx)) { lse[row] = double.NegativeInfinity; continue; }
                double sum = 0;
                for (int j = 0; j < S; j++)
                {
                    double p = Math.Exp(sc[j] - mx);
                    sum += p;
                    for (int c = 0; c < Ev; c++) o[row * Ev + c] += p * v[(kvb + j) * Ev + c];
                }
                for (int c = 0; c < Ev; c++) o[row * Ev + c] /= sum;
                lse[row] = mx + Math.Log(sum);
            }
        }
        return (o, lse);
    }

    private static float[] Random(Random r, long n, double amp = 1.0)
    {
        var a = new float[n];
        for (long i = 0; i < n; i++) a[i] = (float)((r.NextDouble() * 2 - 1) * amp);
        return a;
    }

    /// <summary>‖a−ref‖/‖ref‖ over the finite reference entries; -inf entries must match exactly; no NaN anywhere.</summary>
    private static void AssertClose(string name, float[] got, double[] want, double tol = 1e-5)
    {
        Assert.That(got, Has.Length.EqualTo(want.Length), name);
        double num = 0, den = 0;
        for (int i = 0; i < got.Length; i++)
        {
            Assert.That(float.IsNaN(got[i]), Is.False, $"{name}[{i}] is NaN (expected {want[i]})");
            if (double.IsInfinity(want[i]))
            {
                Assert.That((double)got[i], Is.EqualTo(want[i]), $"{name}[{i}]");
                continue;
            }
            Assert.That(float.IsFinite(got[i]), Is.True, $"{name}[{i}] = {got[i]}, expected {want[i]}");
            num += (got[i] - want[i]) * (got[i] - want[i]);
            den += want[i] * want[i];
        }
        double rel = den == 0 ? Math.Sqrt(num) : Math.Sqrt(num / den);
        Assert.That(rel, Is.LessThanOrEqualTo(tol), $"{name}: relative error {rel:E3}");
    }

    private static long[] MaskStrides(int[] maskShape, int B, int Hq, int L, int S)
    {
        var m4 = new int[] { 1, 1, 1, 1 };
        for (int i = 0; i < maskShape.Length; i++) m4[4 - maskShape.Length + i] = maskShape[i];
        return
        [
            m4[0] == 1 ? 0 : (long)m4[1] * m4[2] * m4[3],
            m4[1] == 1 ? 0 : (long)m4[2] * m4[3],
            m4[2] == 1 ? 0 : m4[3],
            m4[3] == 1 ? 0 : 1,
        ];
    }

    private void Check(int B, int Hq, int Hkv, int L, int S, int E, int Ev, bool causal = false, int[]? maskShape = null,
        float? scale = null, int seed = 1, bool maskInf = true)
    {
        var d = Dev;
        var r = new Random(seed);
        var q = Random(r, (long)B * Hq * L * E);
        var k = Random(r, (long)B * Hkv * S * E);
        var v = Random(r, (long)B * Hkv * S * Ev);
        float[]? mask = null;
        long[] ms = [0, 0, 0, 0];
        if (maskShape is not null)
        {
            mask = Random(r, Tensor.Product(maskShape), 2.0);
            ms = MaskStrides(maskShape, B, Hq, L, S);
            if (maskInf)
            {
                for (int i = 0; i < mask.Length; i += 7) mask[i] = float.NegativeInfinity;
                // row 0 of the first mask slice fully masked
                for (int j = 0; j < S; j++) mask[j * ms[3]] = float.NegativeInfinity;
            }
        }
        using var tq = d.Upload(q, B, Hq, L, E);
        using var tk = d.Upload(k, B, Hkv, S, E);
        using var tv = d.Upload(v, B, Hkv, S, Ev);
        using var tm = mask is null ? null : d.Upload(mask, maskShape!);
        using var to = d.Allocate(B, Hq, L, Ev);
        using var tl = d.Allocate(B, Hq, L);
        d.Fill(to, float.NaN);
        d.Fill(tl, float.NaN);
        d.Sdpa(tq, tk, tv, to, tl, tm, new SdpaOptions { IsCausal = causal, Scale = scale });
        var got = d.Download(to);
        var gotLse = d.Download(tl);
        double sc = scale ?? 1.0 / Math.Sqrt(E);
        var (wo, wl) = Reference(B, Hq, Hkv, L, S, E, Ev, q, k, v, mask, ms, (float)sc, causal);
        AssertClose("out", got, wo);
        AssertClose("lse", gotLse, wl);
    }

    // ---------------- shapes ----------------

    [Test] public void Tiny() => Check(1, 1, 1, 1, 1, 1, 1);
    [Test] public void GqaOddDims() => Check(2, 4, 2, 37, 53, 17, 23);
    [Test] public void Head64TailsOverTiles() => Check(1, 3, 1, 65, 129, 64, 64);
    [Test] public void FewKeys() => Check(1, 2, 2, 100, 7, 128, 96);
    [Test] public void LargeHeadDims() => Check(1, 1, 1, 33, 70, 200, 256);
    [Test] public void Head3Decode() => Check(2, 2, 1, 1, 45, 3, 5);
    [Test] public void CausalLShorterThanS() => Check(2, 4, 2, 37, 53, 17, 23, causal: true);
    [Test] public void CausalLLongerThanS() => Check(1, 3, 1, 65, 29, 64, 64, causal: true);
    [Test] public void CausalSquare() => Check(1, 2, 2, 70, 70, 17, 23, causal: true);
    [Test] public void CustomScale() => Check(2, 4, 2, 37, 53, 17, 23, scale: 0.37f);
    [Test] public void MaskLS() => Check(2, 4, 2, 37, 53, 17, 23, maskShape: [37, 53]);
    [Test] public void MaskB1LS() => Check(2, 4, 2, 37, 53, 17, 23, maskShape: [2, 1, 37, 53]);
    [Test] public void Mask1HLS() => Check(2, 4, 2, 37, 53, 17, 23, maskShape: [1, 4, 37, 53]);
    [Test] public void MaskBHLS() => Check(2, 4, 2, 37, 53, 17, 23, maskShape: [2, 4, 37, 53]);
    [Test] public void MaskCausalScale() => Check(2, 4, 2, 37, 53, 17, 23, causal: true, maskShape: [2, 4, 37, 53], scale: 2f);
    [Test] public void MaskLargeHeads() => Check(1, 1, 1, 33, 70, 200, 256, maskShape: [33, 70]);

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
    public void BoolMaskAndFullyMaskedRow()
    {
        var d = Dev;
        int L = 5, S = 9, E = 17, Ev = 23;
        var r = new Random(3);
        var q = Random(r, L * E); var k = Random(r, S * E); var v = Random(r, S * Ev);
        var allow = new bool[L * S];
        for (int i = 0; i < allow.Length; i++) allow[i] = r.Next(3) != 0;
        for (int j = 0; j < S; j++) allow[2 * S + j] = false;            // row 2 attends to nothing
        using var tq = d.Upload(q, 1, 1, L, E); using var tk = d.Upload(k, 1, 1, S, E); using var tv = d.Upload(v, 1, 1, S, Ev);
        using var tm = d.UploadMask(allow, L, S);
        var (o, l) = d.Sdpa(tq, tk, tv, tm);
        using (o) using (l)
        {
            var fm = allow.Select(a => a ? 0f : float.NegativeInfinity).ToArray();
            var (wo, wl) = Reference(1, 1, 1, L, S, E, Ev, q, k, v, fm, [0, 0, S, 1], 1 / Math.Sqrt(E), false);
            var got = d.Download(o); var gotL = d.Download(l);
            AssertClose("out", got, wo);
            AssertClose("lse", gotL, wl);
            Assert.That(gotL[2], Is.EqualTo(float.NegativeInfinity));
            Assert.That(got.Skip(2 * Ev).Take(Ev), Is.All.EqualTo(0f));
        }
    }

    [Test]
    public void NaNStaysInItsRow()
    {
        var d = Dev;
        int L = 40, S = 20, E = 17, Ev = 23;
        var r = new Random(4);
        var q = Random(r, L * E); var k = Random(r, S * E); var v = Random(r, S * Ev);
        q[5 * E + 3] = float.NaN;
        using var tq = d.Upload(q, 1, 1, L, E); using var tk = d.Upload(k, 1, 1, S, E); using var tv = d.Upload(v, 1, 1, S, Ev);
        var (o, l) = d.Sdpa(tq, tk, tv);
        using (o) using (l)
        {
            var got = d.Download(o); var gotL = d.Download(l);
            for (int i = 0; i < L; i++)
            {
                bool nanRow = Enumerable.Range(0, Ev).Any(c => float.IsNaN(got[i * Ev + c]));
                Assert.That(nanRow, Is.EqualTo(i == 5), $"row {i}");
                Assert.That(float.IsNaN(gotL[i]), Is.EqualTo(i == 5), $"lse row {i}");
            }
        }
    }

    [Test]
    public void EmptyKeysGiveZeroAndMinusInf()
    {
        var d = Dev;
        using var tq = d.Upload(new float[3 * 4], 1, 1, 3, 4);
        using var tk = d.Allocate(1, 1, 0, 4); using var tv = d.Allocate(1, 1, 0, 5);
        var (o, l) = d.Sdpa(tq, tk, tv);
        using (o) using (l)
        {
            Assert.That(d.Download(o), Is.All.EqualTo(0f));
            Assert.That(d.Download(l), Is.All.EqualTo(float.NegativeInfinity));
        }
    }

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
        var ex = Assert.Throws<KernelBuildException>(() => be.Programs.Build("__kernel void broken(__global float* x) { x[0] = undeclared_thing; }", "", "broken.cl"));
        Assert.That(ex!.Message, Does.Contain("undeclared_thing"));
        Assert.That(ex.BuildLog, Does.Contain("undeclared_thing"));
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
