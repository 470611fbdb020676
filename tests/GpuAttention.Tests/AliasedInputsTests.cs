using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// The aliasing rule (CONTRACT.md, "Tensors"): inputs may be the same tensor as each other in every op (self-attention
/// <c>Sdpa(x, x, x)</c>, <c>Sdpa(q, kv, kv)</c>, <c>Gemm(a, a)</c>, a backward whose inputs coincide); an output may not be an
/// input or another output (<see cref="ValidationAuditTests"/>). Each op is called with one tensor bound to several inputs and
/// compared with the same op on separate copies, on every backend of <see cref="TestUtil.Backends"/>.
/// </summary>
[TestFixtureSource(typeof(TestUtil), nameof(TestUtil.Backends))]
public class AliasedInputsTests(string backend)
{
    private Device _d = null!;

    [OneTimeSetUp] public void Open() => _d = TestUtil.OpenOrIgnore(backend);
    [OneTimeTearDown] public void Close() => _d?.Dispose();

    private Tensor Up(float[] data, params int[] shape) => _d.Upload(data, shape);

    /// <summary>The aliased call and the call on copies run the same kernels on the same numbers: equal up to rounding.</summary>
    private void Same(Tensor aliased, Tensor copies, string what)
    {
        var a = _d.Download(aliased);
        var c = _d.Download(copies);
        TestUtil.AssertClose(a, Array.ConvertAll(c, x => (double)x), 1e-6, what);
    }

    [TestCase(false)]
    [TestCase(true)]
    public void SelfAttentionOneTensor(bool causal)
    {
        TestUtil.SkipHeavyOnSimulator(backend, "SharedKeyValueGroupedQuery (aliased K = V through the same host checks)");
        var rng = new Random(TestUtil.Seed($"self {causal}"));
        int[] sh = [2, 3, 7, 5];
        var x = TestUtil.Random(rng, 2 * 3 * 7 * 5);
        var g = TestUtil.Random(rng, 2 * 3 * 7 * 5);
        var opts = new SdpaOptions(IsCausal: causal);
        using var t = Up(x, sh);
        using var q = Up(x, sh); using var k = Up(x, sh); using var v = Up(x, sh);
        using var go = Up(g, sh);
        var (o1, l1) = _d.Sdpa(t, t, t, null, opts);
        var (o2, l2) = _d.Sdpa(q, k, v, null, opts);
        using (o1) using (l1) using (o2) using (l2)
        {
            Same(o1, o2, "out"); Same(l1, l2, "lse");
            // backward: q = k = v one tensor; grad_out aliasing out (both inputs of the backward) as well
            var (dq1, dk1, dv1) = _d.SdpaBackward(t, t, t, o1, l1, go, null, opts);
            var (dq2, dk2, dv2) = _d.SdpaBackward(q, k, v, o2, l2, go, null, opts);
            using (dq1) using (dk1) using (dv1) using (dq2) using (dk2) using (dv2)
            {
                Same(dq1, dq2, "grad_q"); Same(dk1, dk2, "grad_k"); Same(dv1, dv2, "grad_v");
            }
            using var oc = Up(_d.Download(o1), sh);
            var (dq3, dk3, dv3) = _d.SdpaBackward(t, t, t, o1, l1, o1, null, opts);
            var (dq4, dk4, dv4) = _d.SdpaBackward(q, k, v, o2, l2, oc, null, opts);
            using (dq3) using (dk3) using (dv3) using (dq4) using (dk4) using (dv4)
            {
                Same(dq3, dq4, "grad_q (grad_out = out)"); Same(dk3, dk4, "grad_k (grad_out = out)"); Same(dv3, dv4, "grad_v (grad_out = out)");
            }
        }
    }

    [Test]
    public void SharedKeyValueGroupedQuery()
    {
        var rng = new Random(TestUtil.Seed("kv"));
        int[] qs = [1, 4, 9, 6], kvs = [1, 2, 11, 6];
        var qd = TestUtil.Random(rng, 4 * 9 * 6);
        var kvd = TestUtil.Random(rng, 2 * 11 * 6);
        var gd = TestUtil.Random(rng, 4 * 9 * 6);
        using var q = Up(qd, qs); using var kv = Up(kvd, kvs);
        using var k = Up(kvd, kvs); using var v = Up(kvd, kvs);
        using var go = Up(gd, qs);
        var (o1, l1) = _d.Sdpa(q, kv, kv);
        var (o2, l2) = _d.Sdpa(q, k, v);
        using (o1) using (l1) using (o2) using (l2)
        {
            Same(o1, o2, "out"); Same(l1, l2, "lse");
            var (dq1, dk1, dv1) = _d.SdpaBackward(q, kv, kv, o1, l1, go);
            var (dq2, dk2, dv2) = _d.SdpaBackward(q, k, v, o2, l2, go);
            using (dq1) using (dk1) using (dv1) using (dq2) using (dk2) using (dv2)
            {
                Same(dq1, dq2, "grad_q"); Same(dk1, dk2, "grad_k"); Same(dv1, dv2, "grad_v");
            }
        }
    }

    [Test]
    public void MaskIsTheSameTensorAsTheInputs()
    {
        // L = S = E: q = k = v = mask (an additive float mask [B, Hq, L, S]) is legal, if odd
        var rng = new Random(TestUtil.Seed("mask"));
        int[] sh = [1, 2, 5, 5];
        var x = TestUtil.Random(rng, 50);
        using var t = Up(x, sh);
        using var q = Up(x, sh); using var k = Up(x, sh); using var v = Up(x, sh); using var m = Up(x, sh);
        var (o1, l1) = _d.Sdpa(t, t, t, t);
        var (o2, l2) = _d.Sdpa(q, k, v, m);
        using (o1) using (l1) using (o2) using (l2) { Same(o1, o2, "out"); Same(l1, l2, "lse"); }
    }

    [Test]
    public void GemmOfATensorWithItself()
    {
        var rng = new Random(TestUtil.Seed("gemm"));
        var ad = TestUtil.Random(rng, 3 * 13 * 13);
        var cd = TestUtil.Random(rng, 3 * 13 * 13);
        using var a = Up(ad, 3, 13, 13); using var b = Up(ad, 3, 13, 13);
        foreach (var (ta, tb) in new[] { (false, false), (false, true), (true, false), (true, true) })
        {
            using var c1 = _d.Gemm(a, a, ta, tb, 0.5f);
            using var c2 = _d.Gemm(a, b, ta, tb, 0.5f);
            Same(c1, c2, $"a·a ta={ta} tb={tb}");
            using var c3 = Up(cd, 3, 13, 13); using var c4 = Up(cd, 3, 13, 13);
            _d.Gemm(a, a, c3, ta, tb, 1f, 0.75f);
            _d.Gemm(a, b, c4, ta, tb, 1f, 0.75f);
            Same(c3, c4, $"a·a + β·c ta={ta} tb={tb}");
        }
    }

    [Test]
    public void GridSampleAndSpatialTransformWithAliasedInputs()
    {
        // input [N, C, H, W] = [1, 3, 4, 2] has the shape of a grid [N, Hout, Wout, 2] = [1, 3, 4, 2]
        var rng = new Random(TestUtil.Seed("spatial"));
        var xd = TestUtil.Random(rng, 24);
        using var t = Up(xd, 1, 3, 4, 2);
        using var input = Up(xd, 1, 3, 4, 2); using var grid = Up(xd, 1, 3, 4, 2); using var go = Up(xd, 1, 3, 4, 2);
        foreach (var mode in new[] { GridSampleMode.Bilinear, GridSampleMode.Nearest })
        {
            var opts = new GridSampleOptions(mode, GridSamplePadding.Border, false);
            using var o1 = _d.GridSample(t, t, opts);
            using var o2 = _d.GridSample(input, grid, opts);
            Same(o1, o2, $"grid_sample {mode}");
            // grad_out [N, C, Hout, Wout] = [1, 3, 3, 4]: a different shape; input = grid aliased in the backward
            var god = TestUtil.Random(rng, 36);
            using var g = Up(god, 1, 3, 3, 4);
            var (gi1, gg1) = _d.GridSampleBackward(t, t, g, opts);
            var (gi2, gg2) = _d.GridSampleBackward(input, grid, g, opts);
            using (gi1) using (gg1) using (gi2) using (gg2) { Same(gi1, gi2, $"grad_input {mode}"); Same(gg1, gg2, $"grad_grid {mode}"); }
        }
        // spatial transform backward with grad_out = input (h = H, w = W)
        var thd = new float[] { 0.9f, 0.1f, 0.05f, -0.2f, 1.1f, 0.1f };
        using var theta = Up(thd, 1, 2, 3);
        var so = new GridSampleOptions(GridSampleMode.Bilinear, GridSamplePadding.Zeros, true);
        var (si1, st1) = _d.SpatialTransformBackward(t, theta, t, so);
        var (si2, st2) = _d.SpatialTransformBackward(input, theta, go, so);
        using (si1) using (st1) using (si2) using (st2) { Same(si1, si2, "spatial grad_input"); Same(st1, st2, "spatial grad_theta"); }
    }

    [Test]
    public void GlimpseBackwardWithGradOutTheImage()
    {
        var rng = new Random(TestUtil.Seed("glimpse"));
        var xd = TestUtil.Random(rng, 2 * 2 * 6 * 5);
        var pd = new float[] { 1.5f, 1.2f, 0.8f, 2f, 1f, 0.9f, 2.5f, 0.9f, 0.6f, 1.5f, 1.3f, 0.7f };
        using var t = Up(xd, 2, 2, 6, 5); using var image = Up(xd, 2, 2, 6, 5); using var go = Up(xd, 2, 2, 6, 5);
        using var p = Up(pd, 2, 6);
        var (gi1, gp1) = _d.GlimpseBackward(t, p, t);
        var (gi2, gp2) = _d.GlimpseBackward(image, p, go);
        using (gi1) using (gp1) using (gi2) using (gp2) { Same(gi1, gi2, "grad_image"); Same(gp1, gp2, "grad_params"); }
    }

    [Test]
    public void MultiHeadSelfAttentionLayer()
    {
        var rng = new Random(TestUtil.Seed("mha"));
        var xd = TestUtil.Random(rng, 2 * 5 * 8);
        var gd = TestUtil.Random(rng, 2 * 5 * 8);
        using var layer = new MultiHeadAttention(_d, 8, 2, seed: 3);
        using var x = Up(xd, 2, 5, 8);
        using var q = Up(xd, 2, 5, 8); using var k = Up(xd, 2, 5, 8); using var v = Up(xd, 2, 5, 8);
        using var g = Up(gd, 2, 5, 8);
        using var f1 = layer.Forward(x, x, x, isCausal: true);
        using var f2 = layer.Forward(q, k, v, isCausal: true);
        Same(f1.Output, f2.Output, "output");
        using var g1 = layer.Backward(f1, g);
        using var g2 = layer.Backward(f2, g);
        Same(g1.Query, g2.Query, "grad query"); Same(g1.Key, g2.Key, "grad key"); Same(g1.Value, g2.Value, "grad value");
        for (int i = 0; i < g1.Parameters.Count; i++) Same(g1.Parameters[i].Gradient, g2.Parameters[i].Gradient, g1.Parameters[i].Name);
    }

    [Test]
    public void AnOutputAliasingAnInputIsStillRejected()
    {
        using var x = _d.Allocate(1, 1, 3, 4);
        using var l = _d.Allocate(1, 1, 3);
        var e = Assert.Throws<ArgumentException>(() => _d.Sdpa(x, x, x, x, l))!;
        Assert.That(e.Message, Does.StartWith("out: must not be the same tensor as the input q"));
        using var a = _d.Allocate(3, 3);
        Assert.Throws<ArgumentException>(() => _d.Gemm(a, a, a));
    }
}
