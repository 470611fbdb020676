using GpuAttention.Reference;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// Numerics at the edges for every op other than the SDPA forward (which SdpaForwardTests covers), on every backend:
/// a NaN or ∞ placed in one row or element of an input reaches exactly the output elements where the double reference puts
/// it (<see cref="TestUtil.AssertClose"/> fails on any non-finite element the reference does not have, and the other way
/// round), fully masked SDPA rows give zero gradients, huge scores and extreme parameters do not overflow to NaN, and empty
/// dimensions give empty (or zero) outputs without an exception. Outputs are poisoned with NaN before each run.
/// </summary>
[TestFixtureSource(typeof(TestUtil), nameof(TestUtil.Backends))]
public class EdgeNumericsTests(string backend)
{
    private Device _d = null!;

    [OneTimeSetUp] public void Open() => _d = TestUtil.OpenOrIgnore(backend);
    [OneTimeTearDown] public void Close() => _d?.Dispose();

    private Tensor Poisoned(params int[] shape)
    {
        var t = _d.Allocate(shape);
        if (t.Length > 0) _d.Fill(t, float.NaN);
        return t;
    }

    private static int CountNonFinite(float[] a) => a.Count(x => !float.IsFinite(x));

    // ---------------- SDPA backward ----------------

    private sealed record SdpaCase(int B, int Hq, int Hkv, int L, int S, int E, int Ev, float Scale, bool Causal = false, int[]? MaskShape = null);

    /// <summary>Runs forward + backward on the device and compares out, lse, dQ, dK, dV (non-finite sets included) with the reference.</summary>
    private (float[] Dq, float[] Dk, float[] Dv) SdpaBackwardVsReference(SdpaCase c, float[] q, float[] k, float[] v, float[] g, float[]? mask)
    {
        var (ro, rl) = ReferenceOps.SdpaForward(q, k, v, c.B, c.Hq, c.Hkv, c.L, c.S, c.E, c.Ev, c.Scale, c.Causal, mask, c.MaskShape);
        var (rq, rk, rv) = ReferenceOps.SdpaBackward(q, k, v, g, c.B, c.Hq, c.Hkv, c.L, c.S, c.E, c.Ev, c.Scale, c.Causal, mask, c.MaskShape);
        using var tq = _d.Upload(q, c.B, c.Hq, c.L, c.E);
        using var tk = _d.Upload(k, c.B, c.Hkv, c.S, c.E);
        using var tv = _d.Upload(v, c.B, c.Hkv, c.S, c.Ev);
        using var tg = _d.Upload(g, c.B, c.Hq, c.L, c.Ev);
        using var tm = mask is null ? null : _d.Upload(mask, c.MaskShape!);
        using var to = Poisoned(c.B, c.Hq, c.L, c.Ev);
        using var tl = Poisoned(c.B, c.Hq, c.L);
        var opt = new SdpaOptions(c.Causal, c.Scale);
        _d.Sdpa(tq, tk, tv, to, tl, tm, opt);
        TestUtil.AssertClose(_d.Download(to), ro, 1e-5, "out");
        TestUtil.AssertClose(_d.Download(tl), rl, 1e-5, "lse");
        using var dq = Poisoned(c.B, c.Hq, c.L, c.E);
        using var dk = Poisoned(c.B, c.Hkv, c.S, c.E);
        using var dv = Poisoned(c.B, c.Hkv, c.S, c.Ev);
        _d.SdpaBackward(tq, tk, tv, to, tl, tg, dq, dk, dv, tm, opt);
        var (aq, ak, av) = (_d.Download(dq), _d.Download(dk), _d.Download(dv));
        TestUtil.AssertClose(aq, rq, 1e-4, "grad_q");
        TestUtil.AssertClose(ak, rk, 1e-4, "grad_k");
        TestUtil.AssertClose(av, rv, 1e-4, "grad_v");
        return (aq, ak, av);
    }

    private static SdpaCase Sdpa2(bool causal = false, int[]? mask = null) => new(2, 4, 2, 37, 29, 17, 11, 0.3f, causal, mask);

    private static (float[] Q, float[] K, float[] V, float[] G) SdpaInputs(SdpaCase c, int seed)
    {
        var rng = new Random(seed);
        return (TestUtil.Random(rng, (long)c.B * c.Hq * c.L * c.E), TestUtil.Random(rng, (long)c.B * c.Hkv * c.S * c.E),
            TestUtil.Random(rng, (long)c.B * c.Hkv * c.S * c.Ev), TestUtil.Random(rng, (long)c.B * c.Hq * c.L * c.Ev));
    }

    [TestCase(false)]
    [TestCase(true)]
    public void SdpaBackwardNaNInOneGradOutRowStaysWhereTheMathPutsIt(bool causal)
    {
        TestUtil.SkipHeavyOnSimulator(backend, "IlgpuSdpaKernelTests.NonFiniteRowNeverReachesKeysWithZeroProbability");
        var c = Sdpa2(causal);
        var (q, k, v, g) = SdpaInputs(c, 11);
        int row = 5;   // (b 0, h 0, i 5)
        g[row * c.Ev + 3] = float.NaN;
        var (dq, dk, dv) = SdpaBackwardVsReference(c, q, k, v, g, null);
        // dQ: NaN only in that row
        for (int i = 0; i < dq.Length; i++)
            Assert.That(float.IsNaN(dq[i]), Is.EqualTo(i / c.E == row), $"grad_q[{i}]");
        // dV = Pᵀ·dO: NaN only in column 3 of key head 0 of batch 0, and (causal) only for keys the row sees (j <= 5);
        // dK likewise only in key head 0 of batch 0 for the keys the row sees (every column: dS of the row is NaN)
        for (int i = 0; i < dv.Length; i++)
        {
            long j = i / c.Ev, head = j / c.S, key = j % c.S;
            Assert.That(float.IsNaN(dv[i]), Is.EqualTo(head == 0 && i % c.Ev == 3 && (!causal || key <= row)), $"grad_v[{i}]");
        }
        for (int i = 0; i < dk.Length; i++)
        {
            long j = i / c.E, head = j / c.S, key = j % c.S;
            Assert.That(float.IsNaN(dk[i]), Is.EqualTo(head == 0 && (!causal || key <= row)), $"grad_k[{i}]");
        }
    }

    [Test]
    public void SdpaBackwardNaNInOneQueryRowAndInfInOneKey()
    {
        TestUtil.SkipHeavyOnSimulator(backend, "IlgpuSdpaKernelTests.NonFiniteRowNeverReachesKeysWithZeroProbability");
        var c = Sdpa2(mask: [37, 29]);
        var (q, k, v, g) = SdpaInputs(c, 12);
        var mask = new float[37 * 29];
        for (int j = 0; j < 29; j++) mask[4 * 29 + j] = float.NegativeInfinity;   // row 4 fully masked
        for (int i = 0; i < 37; i++) mask[i * 29 + 7] = float.NegativeInfinity;   // key 7 masked everywhere
        q[(1 * 4 + 2) * 37 * 17 + 9 * 17 + 1] = float.NaN;                          // (b 1, h 2, i 9)
        v[(0 * 2 + 1) * 29 * 11 + 7 * 11] = float.PositiveInfinity;                  // a masked key's value: out = P·V has 0·∞ = NaN in the
        // rows of heads 2, 3 of batch 0 (as PyTorch), so their dQ and the dK of the keys they see are NaN, but key 7's own grad_k, grad_v stay 0
        SdpaBackwardVsReference(c, q, k, v, g, mask);
    }

    [Test]
    public void SdpaBackwardFullyMaskedRowsGiveZeroGradientsAndNoNaN()
    {
        TestUtil.SkipHeavyOnSimulator(backend, "IlgpuSdpaKernelTests.FullyMaskedRowGivesZeroOutAndNegativeInfinityLse");
        var c = Sdpa2(causal: true, mask: [2, 1, 37, 29]);
        var (q, k, v, g) = SdpaInputs(c, 13);
        var mask = new float[2 * 37 * 29];
        var rng = new Random(3);
        for (int i = 0; i < mask.Length; i++) mask[i] = rng.NextDouble() < 0.3 ? float.NegativeInfinity : 0f;
        foreach (int r in new[] { 0, 3, 36, 37 + 20 })
            for (int j = 0; j < 29; j++) mask[r * 29 + j] = float.NegativeInfinity;
        var (dq, dk, dv) = SdpaBackwardVsReference(c, q, k, v, g, mask);
        Assert.That(CountNonFinite(dq) + CountNonFinite(dk) + CountNonFinite(dv), Is.Zero);
        for (int h = 0; h < c.Hq; h++)
            Assert.That(dq.AsSpan(((0 * c.Hq + h) * c.L + 3) * c.E, c.E).ToArray(), Is.All.EqualTo(0f), "fully masked row: grad_q = 0");
    }

    [Test]
    public void SdpaLargeScaleMatchesReference()
    {
        var c = new SdpaCase(1, 2, 1, 13, 19, 9, 5, 30f);
        var (q, k, v, g) = SdpaInputs(c, 14);
        var (dq, dk, dv) = SdpaBackwardVsReference(c, q, k, v, g, null);
        Assert.That(CountNonFinite(dq) + CountNonFinite(dk) + CountNonFinite(dv), Is.Zero);
    }

    /// <summary>
    /// scale = 1e15 (scores ~1e15): the softmax is one-hot. Forward and grad_v match the reference; grad_q and grad_k only have to
    /// be finite: their exact value is 0 (a saturated softmax), but scale·P∘(dP − D) multiplies float rounding of dP − D by 1e15
    /// (FlashAttention's formula does the same), so no relative bound can hold.
    /// </summary>
    [Test]
    public void SdpaHugeScaleDoesNotOverflowForwardOrBackward()
    {
        var c = new SdpaCase(1, 2, 1, 13, 19, 9, 5, 1e15f);
        var (q, k, v, g) = SdpaInputs(c, 14);
        var (ro, rl) = ReferenceOps.SdpaForward(q, k, v, c.B, c.Hq, c.Hkv, c.L, c.S, c.E, c.Ev, c.Scale, false, null, null);
        var (_, _, rv) = ReferenceOps.SdpaBackward(q, k, v, g, c.B, c.Hq, c.Hkv, c.L, c.S, c.E, c.Ev, c.Scale, false, null, null);
        using var tq = _d.Upload(q, c.B, c.Hq, c.L, c.E);
        using var tk = _d.Upload(k, c.B, c.Hkv, c.S, c.E);
        using var tv = _d.Upload(v, c.B, c.Hkv, c.S, c.Ev);
        using var tg = _d.Upload(g, c.B, c.Hq, c.L, c.Ev);
        var opt = new SdpaOptions(Scale: c.Scale);
        var (o, l) = _d.Sdpa(tq, tk, tv, null, opt);
        using (o) using (l)
        {
            TestUtil.AssertClose(_d.Download(o), ro, 1e-5, "out");
            TestUtil.AssertClose(_d.Download(l), rl, 1e-5, "lse");
            var (dq, dk, dv) = _d.SdpaBackward(tq, tk, tv, o, l, tg, null, opt);
            using (dq) using (dk) using (dv)
            {
                TestUtil.AssertClose(_d.Download(dv), rv, 1e-4, "grad_v");
                Assert.That(_d.Download(dq).Concat(_d.Download(dk)).All(float.IsFinite), Is.True, "grad_q, grad_k finite");
            }
        }
    }

    /// <summary>Decode shapes (one query row per head, GQA groups of 4 and 2, E a multiple of every vector width): a NaN in
    /// one key and an infinity in another reach exactly the outputs and gradients the reference gives, through the decode
    /// kernels' 4-key score steps (whose key-norm guard sees the NaN and the infinity) and through their single-key tails.</summary>
    [TestCase(8, 2, 77)]
    [TestCase(4, 2, 30)]
    public void SdpaDecodeNaNAndInfinityInKeys(int Hq, int Hkv, int S)
    {
        if (S > 32) TestUtil.SkipHeavyOnSimulator(backend, "the S = 30 case");
        var c = new SdpaCase(1, Hq, Hkv, 1, S, 32, 16, 0.3f);
        var (q, k, v, g) = SdpaInputs(c, 16);
        k[(0 * S + 5) * 32 + 3] = float.NaN;                  // kv head 0, key 5: its whole query group is NaN
        k[(1 * S + S - 2) * 32 + 0] = float.PositiveInfinity;  // kv head 1, a key in the tail past the last 4-key step
        q[(Hq / 2) * 32 + 0] = 1f;                           // the first query of head 1's group sees +∞ (NaN through ∞ − ∞)
        var (dq, _, _) = SdpaBackwardVsReference(c, q, k, v, g, null);
        Assert.That(CountNonFinite(dq), Is.GreaterThan(0), "the non-finite keys reach grad_q");
    }

    [Test]
    public void SdpaHugeInputsDoNotOverflow()
    {
        var c = new SdpaCase(1, 1, 1, 9, 11, 16, 4, 1e-15f);
        var (q, k, v, g) = SdpaInputs(c, 15);
        for (int i = 0; i < q.Length; i++) q[i] *= 1e15f;
        for (int i = 0; i < k.Length; i++) k[i] *= 1e15f;   // q·k ~ 1e30, scaled to ~1e15
        var (dq, dk, dv) = SdpaBackwardVsReference(c, q, k, v, g, null);
        Assert.That(CountNonFinite(dq) + CountNonFinite(dk) + CountNonFinite(dv), Is.Zero);
    }

    [TestCase(0, 2, 2, 5, 7, 4, 3)]   // B = 0
    [TestCase(2, 0, 0, 5, 7, 4, 3)]   // H = 0
    [TestCase(2, 2, 1, 0, 7, 4, 3)]   // L = 0: grad_k = grad_v = 0
    [TestCase(2, 2, 1, 5, 0, 4, 3)]   // S = 0: out 0, lse −∞, grad_q = 0
    [TestCase(1, 2, 1, 5, 7, 0, 3)]   // E = 0: scores 0, uniform softmax; grad_q, grad_k empty
    [TestCase(1, 2, 1, 5, 7, 4, 0)]   // Ev = 0: out empty, all gradients 0
    public void SdpaEmptyDimensions(int B, int Hq, int Hkv, int L, int S, int E, int Ev)
    {
        var c = new SdpaCase(B, Hq, Hkv, L, S, E, Ev, E > 0 ? 1f / MathF.Sqrt(E) : 1f);
        var (q, k, v, g) = SdpaInputs(c, 16);
        var (dq, dk, dv) = SdpaBackwardVsReference(c, q, k, v, g, null);
        Assert.That(CountNonFinite(dq) + CountNonFinite(dk) + CountNonFinite(dv), Is.Zero);
        if (S == 0) Assert.That(dq, Is.All.EqualTo(0f));
        if (L == 0 || Ev == 0) Assert.That(dk.Concat(dv), Is.All.EqualTo(0f));
    }

    // ---------------- GEMM ----------------

    [TestCase(false, false)]
    [TestCase(true, false)]
    [TestCase(false, true)]
    [TestCase(true, true)]
    public void GemmNaNInOneRowOfAStaysInThatRowOfC(bool ta, bool tb)
    {
        int batch = 2, M = 37, N = 45, K = 29;
        var rng = new Random(21);
        var a = TestUtil.Random(rng, batch * M * K);
        var b = TestUtil.Random(rng, batch * K * N);
        var c = TestUtil.Random(rng, batch * M * N);
        // NaN in a[1, row 6, col 4] (op(a) coordinates), ∞ in b[0, row 3, col 10]
        a[ta ? M * K + 4 * M + 6 : M * K + 6 * K + 4] = float.NaN;
        b[tb ? 10 * K + 3 : 3 * N + 10] = float.PositiveInfinity;
        var r = ReferenceOps.Gemm(a, b, c, batch, M, N, K, ta, tb, 1.5f, 0.5f);
        using var ta_ = _d.Upload(a, batch, ta ? K : M, ta ? M : K);
        using var tb_ = _d.Upload(b, batch, tb ? N : K, tb ? K : N);
        using var tc = _d.Upload(c, batch, M, N);
        _d.Gemm(ta_, tb_, tc, ta, tb, 1.5f, 0.5f);
        var got = _d.Download(tc);
        TestUtil.AssertClose(got, r, 1e-5, "c");
        for (int i = 0; i < got.Length; i++)
        {
            int bi = i / (M * N), row = i / N % M, col = i % N;
            bool expectNonFinite = bi == 1 && row == 6 || bi == 0 && col == 10;
            Assert.That(!float.IsFinite(got[i]), Is.EqualTo(expectNonFinite), $"c[{bi}, {row}, {col}]");
        }
    }

    [TestCase(0, 5, 7, 3)]
    [TestCase(2, 0, 7, 3)]
    [TestCase(2, 5, 0, 3)]
    [TestCase(2, 5, 7, 0)]
    public void GemmEmptyDimensions(int batch, int M, int N, int K)
    {
        var rng = new Random(22);
        var a = TestUtil.Random(rng, batch * M * K);
        var b = TestUtil.Random(rng, batch * K * N);
        var c = TestUtil.Random(rng, batch * M * N);
        using var ta = _d.Upload(a, batch, M, K);
        using var tb = _d.Upload(b, batch, K, N);
        using var tc = _d.Upload(c, batch, M, N);
        _d.Gemm(ta, tb, tc, alpha: 2f, beta: 0.5f);
        TestUtil.AssertClose(_d.Download(tc), ReferenceOps.Gemm(a, b, c, batch, M, N, K, false, false, 2f, 0.5f), 1e-6, "c = beta·c when K = 0");
        using var tc0 = Poisoned(batch, M, N);
        _d.Gemm(ta, tb, tc0, beta: 0f);
        if (K == 0) Assert.That(_d.Download(tc0), Is.All.EqualTo(0f), "K = 0, beta = 0: c = 0 (the poison is overwritten)");
        using var alloc = _d.Gemm(ta, tb);
        Assert.That(alloc.Length, Is.EqualTo((long)batch * M * N));
    }

    // ---------------- MHA layer ----------------

    [TestCase(0, 4, 5)]
    [TestCase(2, 0, 5)]
    [TestCase(2, 4, 0)]
    [TestCase(2, 0, 0)]
    public void MhaEmptyBatchOrLength(int B, int L, int S)
    {
        using var layer = new MultiHeadAttention(_d, 8, 2, bias: true, kdim: 6, vdim: 5, seed: 3);
        var rng = new Random(23);
        using var q = _d.Upload(TestUtil.Random(rng, B * L * 8), B, L, 8);
        using var k = _d.Upload(TestUtil.Random(rng, B * S * 6), B, S, 6);
        using var v = _d.Upload(TestUtil.Random(rng, B * S * 5), B, S, 5);
        using var f = layer.Forward(q, k, v);
        Assert.That(f.Output.ShapeArray, Is.EqualTo(new[] { B, L, 8 }));
        var o = _d.Download(f.Output);
        Assert.That(o.All(float.IsFinite), Is.True);
        if (S == 0) Assert.That(o, Is.All.EqualTo(0f), "no keys: attention output 0 (bias 0)");
        using var go = _d.Upload(TestUtil.Random(rng, B * L * 8), B, L, 8);
        using var g = layer.Backward(f, go);
        Assert.That(_d.Download(g.Query).Length, Is.EqualTo(B * L * 8));
        foreach (var (name, t) in g.Parameters)
            Assert.That(_d.Download(t).All(float.IsFinite), Is.True, name);
        if (B * L == 0 || S == 0)
        {
            Assert.That(_d.Download(g.Key).Concat(_d.Download(g.Value)), Is.All.EqualTo(0f));
            foreach (var (name, t) in g.Parameters.Where(p => p.Name.StartsWith("k_") || p.Name.StartsWith("v_")))
                Assert.That(_d.Download(t), Is.All.EqualTo(0f), name);
        }
    }

    [Test]
    public void MhaNaNInOneQueryRowStaysInThatRow()
    {
        int B = 2, L = 5, S = 6, E = 8;
        using var layer = new MultiHeadAttention(_d, E, 2, seed: 4);
        var rng = new Random(24);
        var qv = TestUtil.Random(rng, B * L * E);
        qv[(1 * L + 3) * E + 2] = float.NaN;
        using var q = _d.Upload(qv, B, L, E);
        using var k = _d.Upload(TestUtil.Random(rng, B * S * E), B, S, E);
        using var v = _d.Upload(TestUtil.Random(rng, B * S * E), B, S, E);
        using var f = layer.Forward(q, k, v);
        var o = _d.Download(f.Output);
        for (int i = 0; i < o.Length; i++)
            Assert.That(float.IsNaN(o[i]), Is.EqualTo(i / E == 1 * L + 3), $"out[{i}]");
    }

    // ---------------- glimpse ----------------

    private void GlimpseVsReference(int N, int C, int H, int W, int h, int w, float[] img, float[] p, float[] g)
    {
        using var ti = _d.Upload(img, N, C, H, W);
        using var tp = _d.Upload(p, N, 6);
        using var tg = _d.Upload(g, N, C, h, w);
        using var to = Poisoned(N, C, h, w);
        _d.Glimpse(ti, tp, to);
        TestUtil.AssertClose(_d.Download(to), ReferenceOps.GlimpseForward(img, p, N, C, H, W, h, w), 1e-5, "out");
        using var gi = Poisoned(N, C, H, W);
        using var gp = Poisoned(N, 6);
        _d.GlimpseBackward(ti, tp, tg, gi, gp);
        var (ri, rp, _) = ReferenceOps.GlimpseBackward(img, p, g, N, C, H, W, h, w);
        TestUtil.AssertClose(_d.Download(gi), ri, 1e-4, "grad_image");
        TestUtil.AssertClose(_d.Download(gp), rp, 1e-4, "grad_params");
    }

    [Test]
    public void GlimpseNaNInOnePixelStaysInItsImageAndChannel()
    {
        int N = 3, C = 2, H = 13, W = 11, h = 5, w = 4;
        var rng = new Random(31);
        var img = TestUtil.Random(rng, N * C * H * W);
        var p = ReferenceInputs.GlimpseParams(rng, N, H, W, h, w);
        var g = TestUtil.Random(rng, N * C * h * w);
        img[((1 * C + 1) * H + 6) * W + 5] = float.NaN;   // image 1, channel 1
        g[(2 * C + 0) * h * w + 7] = float.NaN;   // grad_out of image 2, channel 0 (NaN: ∞·(a weight that underflows in float) would differ)
        GlimpseVsReference(N, C, H, W, h, w, img, p, g);
    }

    [Test]
    public void GlimpseNaNInANarrowGlimpseSpreadsAsThroughADenseProduct()
    {
        // σ ≪ image: the CPU backend sums over the bands of nonzero weights only, except in a channel with a non-finite value,
        // where NaN must reach every output (NaN·0 = NaN in the dense products the reference does).
        int N = 2, C = 2, H = 70, W = 61, h = 7, w = 6;
        var rng = new Random(34);
        var img = TestUtil.Random(rng, N * C * H * W);
        // Every centre inside the image (a Gaussian wholly outside underflows to 0 in float but not in double: NaN·0 vs NaN·1e-266).
        var p = new float[] { 20f, 1.2f, 5f, 15f, 1.5f, 6f, 20f, 1.2f, 5f, 15f, 1.5f, 6f };   // y centres 20..50, x centres 15..45
        var g = TestUtil.Random(rng, N * C * h * w);
        img[((0 * C + 1) * H + 3) * W + 60] = float.NaN;   // image 0, channel 1: (3, 60) is > 10σ from every centre, outside every band
        g[(1 * C + 0) * h * w + 5] = float.NaN;            // grad_out of image 1, channel 0
        GlimpseVsReference(N, C, H, W, h, w, img, p, g);
    }

    [TestCase(1e20f, 1f)]     // flat filters
    [TestCase(1e-20f, 1f)]    // filters narrower than any pixel distance
    [TestCase(1.5f, 1e20f)]   // every filter but the first far outside
    [TestCase(1.5f, 1e-20f)]  // every filter on the same centre
    [TestCase(1e-20f, 1e20f)]
    public void GlimpseExtremeSigmaAndDeltaStayFinite(float sigma, float delta)
    {
        int N = 2, C = 2, H = 9, W = 12, h = 4, w = 5;
        var rng = new Random(32);
        var img = TestUtil.Random(rng, N * C * H * W);
        var g = TestUtil.Random(rng, N * C * h * w);
        var p = new float[] { 3.3f, sigma, delta, 4.6f, sigma, delta, 2f, sigma, -delta, 11f, sigma, -delta };
        GlimpseVsReference(N, C, H, W, h, w, img, p, g);
    }

    [TestCase(0, 2)]
    [TestCase(2, 0)]
    public void GlimpseEmptyBatchOrChannels(int N, int C)
    {
        var rng = new Random(33);
        GlimpseVsReference(N, C, 7, 6, 3, 2, TestUtil.Random(rng, N * C * 42), ReferenceInputs.GlimpseParams(rng, N, 7, 6, 3, 2), TestUtil.Random(rng, N * C * 6));
        using var img = _d.Upload(new float[N * C * 42], N, C, 7, 6);
        using var draw = _d.Upload(ReferenceInputs.DrawInputs(rng, N), N, 5);
        using var o = Poisoned(N, C, 3, 2);
        _d.DrawRead(img, draw, o);
        using var go = _d.Upload(new float[N * C * 6], N, C, 3, 2);
        using var gi = Poisoned(N, C, 7, 6);
        using var gd = Poisoned(N, 5);
        _d.DrawReadBackward(img, draw, go, gi, gd);
        Assert.That(_d.Download(gd), Is.All.EqualTo(0f));
    }

    [Test]
    public void DrawReadNaNInOneImageStaysInThatImage()
    {
        int N = 3, C = 2, H = 10, W = 9, h = 4, w = 3;
        var rng = new Random(34);
        var img = TestUtil.Random(rng, N * C * H * W);
        var draw = ReferenceInputs.DrawInputs(rng, N);
        var g = TestUtil.Random(rng, N * C * h * w);
        img[(0 * C + 1) * H * W + 17] = float.NaN;
        draw[2 * 5 + 3] = 40f;   // huge log δ̃: filters far outside, still finite
        using var ti = _d.Upload(img, N, C, H, W);
        using var td = _d.Upload(draw, N, 5);
        using var tg = _d.Upload(g, N, C, h, w);
        using var to = Poisoned(N, C, h, w);
        _d.DrawRead(ti, td, to);
        TestUtil.AssertClose(_d.Download(to), ReferenceOps.DrawRead(img, draw, N, C, H, W, h, w), 1e-5, "out");
        using var gi = Poisoned(N, C, H, W);
        using var gd = Poisoned(N, 5);
        _d.DrawReadBackward(ti, td, tg, gi, gd);
        var (ri, rd) = ReferenceOps.DrawReadBackward(img, draw, g, N, C, H, W, h, w);
        TestUtil.AssertClose(_d.Download(gi), ri, 1e-4, "grad_image");
        TestUtil.AssertClose(_d.Download(gd), rd, 1e-4, "grad_draw");
    }

    // ---------------- affine_grid, grid_sample, spatial transform ----------------

    [TestCase(false)]
    [TestCase(true)]
    public void AffineGridNaNInOneThetaStaysInItsImage(bool align)
    {
        int N = 3, H = 5, W = 7;
        var theta = TestUtil.Random(new Random(41), N * 6, 1.5f);
        theta[1 * 6 + 4] = float.NaN;       // image 1, y row: only the y coordinates of image 1
        theta[2 * 6 + 2] = float.PositiveInfinity;   // image 2, x translation: x coordinates +∞
        using var tt = _d.Upload(theta, N, 2, 3);
        using var grid = Poisoned(N, H, W, 2);
        _d.AffineGrid(tt, grid, align);
        TestUtil.AssertClose(_d.Download(grid), ReferenceOps.AffineGrid(ReferenceOps.ToDouble(theta), N, H, W, align), 1e-6, "grid");
        var gg = TestUtil.Random(new Random(42), N * H * W * 2);
        gg[(1 * H * W + 9) * 2] = float.NaN;   // one point's x gradient: only grad_theta[1, 0, :]
        using var tgg = _d.Upload(gg, N, H, W, 2);
        using var gt = Poisoned(N, 2, 3);
        _d.AffineGridBackward(tgg, gt, align);
        TestUtil.AssertClose(_d.Download(gt), ReferenceOps.AffineGridBackward(ReferenceOps.ToDouble(gg), N, H, W, align), 1e-5, "grad_theta");
    }

    public static IEnumerable<TestCaseData> AllOptions() =>
        from o in SpatialTests.AllOptions()
        from atomic in new[] { false, true }
        let oo = o with { Backward = atomic ? GridSampleBackwardMode.Atomic : GridSampleBackwardMode.Deterministic }
        select new TestCaseData(oo).SetArgDisplayNames(oo.ToString());

    private (float[] Out, float[] GradInput, float[] GradGrid) GridSampleVsReference(int N, int C, int H, int W, int Hout, int Wout,
        float[] input, float[] grid, float[] gradOut, GridSampleOptions o, bool compareGradGrid = true)
    {
        using var ti = _d.Upload(input, N, C, H, W);
        using var tg = _d.Upload(grid, N, Hout, Wout, 2);
        using var tgo = _d.Upload(gradOut, N, C, Hout, Wout);
        using var to = Poisoned(N, C, Hout, Wout);
        _d.GridSample(ti, tg, to, o);
        var (di, dg, dgo) = (ReferenceOps.ToDouble(input), ReferenceOps.ToDouble(grid), ReferenceOps.ToDouble(gradOut));
        var outp = _d.Download(to);
        TestUtil.AssertClose(outp, ReferenceOps.GridSample(di, dg, N, C, H, W, Hout, Wout, o), 1e-5, "out");
        using var gi = Poisoned(N, C, H, W);
        using var gg = Poisoned(N, Hout, Wout, 2);
        _d.GridSampleBackward(ti, tg, tgo, gi, gg, o);
        var (ri, rg) = ReferenceOps.GridSampleBackward(di, dg, dgo, N, C, H, W, Hout, Wout, o);
        var (agi, agg) = (_d.Download(gi), _d.Download(gg));
        TestUtil.AssertClose(agi, ri, 1e-4, "grad_input");
        if (compareGradGrid) TestUtil.AssertClose(agg, rg, 1e-4, "grad_grid");
        return (outp, agi, agg);
    }

    [TestCaseSource(nameof(AllOptions))]
    public void GridSampleNaNInOnePixelReachesOnlyThePointsThatSampleIt(GridSampleOptions o)
    {
        // sizes for which the pixel coordinates of the points below are exact in float (like the double reference's)
        int N = 2, C = 3, H = o.AlignCorners ? 5 : 4, W = o.AlignCorners ? 5 : 8, Hout = 5, Wout = 8;
        var rng = new Random(43);
        var input = TestUtil.Random(rng, N * C * H * W);
        var grid = TestUtil.Random(rng, N * Hout * Wout * 2, 1.3f);
        var g = TestUtil.Random(rng, N * C * Hout * Wout);
        input[((1 * C + 2) * H + 3) * W + 4] = float.NaN;        // image 1, channel 2, pixel (y 3, x 4)
        // points that sample the pixel exactly at its centre (zero weight on the neighbours), and right beside it
        float Gx(double px, bool align) => (float)(align ? px / (W - 1) * 2 - 1 : (2 * px + 1) / W - 1);
        float Gy(double py, bool align) => (float)(align ? py / (H - 1) * 2 - 1 : (2 * py + 1) / H - 1);
        (double x, double y)[] near = [(4, 3), (3, 3), (3, 2), (4, 2.5), (3.5, 3), (4.5, 2.5)];
        for (int t = 0; t < near.Length; t++)
        {
            int pt = 1 * Hout * Wout + 2 * t;
            grid[pt * 2] = Gx(near[t].x, o.AlignCorners); grid[pt * 2 + 1] = Gy(near[t].y, o.AlignCorners);
        }
        g[(0 * C + 1) * Hout * Wout + 3] = float.NaN;   // a NaN grad_out of image 0
        var (outp, gi, _) = GridSampleVsReference(N, C, H, W, Hout, Wout, input, grid, g, o);
        // the NaN pixel: never in another image or channel
        for (int i = 0; i < outp.Length; i++)
            if (i / (Hout * Wout) != 1 * C + 2) Assert.That(float.IsFinite(outp[i]), $"out[{i}] outside image 1 channel 2");
        for (int i = 0; i < gi.Length; i++)
            if (i / (H * W) != 0 * C + 1) Assert.That(float.IsFinite(gi[i]), $"grad_input[{i}] outside image 0 channel 1");
    }

    [TestCaseSource(nameof(AllOptions))]
    public void GridSampleHugeAndInfiniteCoordinates(GridSampleOptions o)
    {
        int N = 1, C = 2, H = 4, W = 5;
        // (±3e38 overflows to ±∞ in PyTorch's float unnormalisation, not in the double reference: left out; 0.25 is exact in both)
        float[] coords = [1e30f, -1e30f, float.PositiveInfinity, float.NegativeInfinity, float.NaN, 0.25f];
        var pts = (from x in coords from y in coords select (x, y)).ToArray();
        int Hout = 1, Wout = pts.Length;
        var grid = pts.SelectMany(p => new[] { p.x, p.y }).ToArray();
        var rng = new Random(44);
        var input = TestUtil.Random(rng, N * C * H * W);
        var g = TestUtil.Random(rng, N * C * Hout * Wout);
        // Reflection of ±1e30 is float rounding noise (fmod of a value whose ulp exceeds the image): the kernels compute the
        // pixel coordinate in float like PyTorch, the reference in double, so only compare grad_grid for the other paddings
        // and check reflection's outputs by their invariant (a convex combination of pixels) below.
        bool reflect = o.Padding == GridSamplePadding.Reflection;
        if (!reflect)
        {
            GridSampleVsReference(N, C, H, W, Hout, Wout, input, grid, g, o);
            return;
        }
        using var ti = _d.Upload(input, N, C, H, W);
        using var tg = _d.Upload(grid, N, Hout, Wout, 2);
        using var to = Poisoned(N, C, Hout, Wout);
        _d.GridSample(ti, tg, to, o);
        var outp = _d.Download(to);
        float lo = input.Min(), hi = input.Max();
        Assert.That(outp.All(x => x >= lo - 1e-5f && x <= hi + 1e-5f), Is.True, "reflection: every output is a convex combination of pixels");
        using var tgo = _d.Upload(g, N, C, Hout, Wout);
        var (gi, gg) = _d.GridSampleBackward(ti, tg, tgo, o);
        using (gi) using (gg)
        {
            Assert.That(_d.Download(gi).All(float.IsFinite), Is.True, "grad_input finite");
            Assert.That(_d.Download(gi).Sum(), Is.EqualTo(g.Sum()).Within(1e-3), "reflection: every grad_out lands in the image");
            Assert.That(_d.Download(gg).All(float.IsFinite), Is.True, "grad_grid finite");
        }
    }

    [TestCase(0, 2, 3, 4)]
    [TestCase(2, 0, 3, 4)]
    [TestCase(2, 2, 0, 4)]
    [TestCase(2, 2, 3, 0)]
    public void GridSampleAndSpatialTransformEmptyDimensions(int N, int C, int Hout, int Wout)
    {
        int H = 5, W = 6;
        var rng = new Random(45);
        foreach (var o in new[] { new GridSampleOptions(), new GridSampleOptions(Backward: GridSampleBackwardMode.Atomic), new GridSampleOptions(GridSampleMode.Nearest, GridSamplePadding.Reflection, true) })
        {
            var input = TestUtil.Random(rng, N * C * H * W);
            var (_, gi, gg) = GridSampleVsReference(N, C, H, W, Hout, Wout, input, TestUtil.Random(rng, N * Hout * Wout * 2), TestUtil.Random(rng, N * C * Hout * Wout), o);
            Assert.That(gi.Concat(gg).All(float.IsFinite), Is.True);
            using var ti = _d.Upload(input, N, C, H, W);
            using var th = _d.Upload(TestUtil.Random(rng, N * 6), N, 2, 3);
            using var to = Poisoned(N, C, Hout, Wout);
            _d.SpatialTransform(ti, th, to, o);
            using var grid = Poisoned(N, Hout, Wout, 2);
            _d.AffineGrid(th, grid, o.AlignCorners);
            using var tgo = _d.Upload(TestUtil.Random(rng, N * C * Hout * Wout), N, C, Hout, Wout);
            using var sgi = Poisoned(N, C, H, W);
            using var sgt = Poisoned(N, 2, 3);
            _d.SpatialTransformBackward(ti, th, tgo, sgi, sgt, o);
            Assert.That(_d.Download(sgi).Concat(_d.Download(sgt)), Is.All.EqualTo(0f), "no output points or channels: zero gradients");
            using var agt = Poisoned(N, 2, 3);
            _d.AffineGridBackward(grid, agt, o.AlignCorners);
            if (Hout * Wout == 0) Assert.That(_d.Download(agt), Is.All.EqualTo(0f));
        }
    }

    [TestCase(GridSampleMode.Bilinear, GridSamplePadding.Zeros)]
    [TestCase(GridSampleMode.Bilinear, GridSamplePadding.Border)]
    [TestCase(GridSampleMode.Nearest, GridSamplePadding.Reflection)]
    public void SpatialTransformNaNInOneThetaStaysInItsImage(GridSampleMode mode, GridSamplePadding padding)
    {
        var o = new GridSampleOptions(mode, padding);
        int N = 3, C = 2, H = 6, W = 5, Hout = 4, Wout = 3;
        var rng = new Random(46);
        var input = TestUtil.Random(rng, N * C * H * W);
        var theta = TestUtil.Random(rng, N * 6);
        var g = TestUtil.Random(rng, N * C * Hout * Wout);
        theta[1 * 6 + 1] = float.NaN;
        var dth = ReferenceOps.ToDouble(theta);
        var grid = ReferenceOps.AffineGrid(dth, N, Hout, Wout, false);
        var rOut = ReferenceOps.GridSample(ReferenceOps.ToDouble(input), grid, N, C, H, W, Hout, Wout, o);
        var (rgi, rgg) = ReferenceOps.GridSampleBackward(ReferenceOps.ToDouble(input), grid, ReferenceOps.ToDouble(g), N, C, H, W, Hout, Wout, o);
        var rgt = ReferenceOps.AffineGridBackward(rgg, N, Hout, Wout, false);
        using var ti = _d.Upload(input, N, C, H, W);
        using var tt = _d.Upload(theta, N, 2, 3);
        using var tg = _d.Upload(g, N, C, Hout, Wout);
        using var to = Poisoned(N, C, Hout, Wout);
        _d.SpatialTransform(ti, tt, to, o);
        TestUtil.AssertClose(_d.Download(to), rOut, 1e-5, "out");
        using var gi = Poisoned(N, C, H, W);
        using var gt = Poisoned(N, 2, 3);
        _d.SpatialTransformBackward(ti, tt, tg, gi, gt, o);
        TestUtil.AssertClose(_d.Download(gi), rgi, 1e-4, "grad_input");
        TestUtil.AssertClose(_d.Download(gt), rgt, 1e-4, "grad_theta");
        var got = _d.Download(gt);
        for (int i = 0; i < got.Length; i++) if (i / 6 != 1) Assert.That(float.IsFinite(got[i]), $"grad_theta[{i}] of another image");
    }
}
