using GpuAttention.Reference;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>Fused SDPA backward on every backend against the double reference and by finite differences of the float forward.</summary>
[TestFixtureSource(typeof(TestUtil), nameof(TestUtil.Backends))]
public class SdpaBackwardTests(string backend)
{
    private Device _device = null!;

    [OneTimeSetUp] public void Open() => _device = TestUtil.OpenOrIgnore(backend);
    [OneTimeTearDown] public void Close() => _device?.Dispose();

    public record Case(int B, int Hq, int Hkv, int L, int S, int E, int Ev, bool Causal = false, int[]? MaskShape = null, float? Scale = null, bool BoolMask = false)
    {
        public override string ToString() =>
            $"B{B} Hq{Hq} Hkv{Hkv} L{L} S{S} E{E} Ev{Ev}{(Causal ? " causal" : "")}{(MaskShape is null ? "" : $" mask[{string.Join(",", MaskShape)}]{(BoolMask ? "bool" : "")}")}{(Scale is null ? "" : $" scale{Scale}")}";
    }

    public static IEnumerable<Case> Cases()
    {
        yield return new(1, 1, 1, 1, 1, 9, 11);
        yield return new(2, 4, 2, 37, 53, 17, 23);                        // GQA, tails off every tile
        yield return new(1, 3, 1, 70, 133, 64, 64);                       // GQA group of 3, several key and query blocks
        yield return new(1, 2, 2, 100, 7, 17, 23);
        yield return new(1, 1, 1, 9, 20, 130, 150);                       // wide heads
        yield return new(1, 2, 1, 1, 90, 16, 16);                         // L = 1
        yield return new(2, 2, 2, 19, 41, 9, 11, Causal: true);           // causal, L < S
        yield return new(1, 4, 2, 77, 21, 16, 16, Causal: true);          // causal, L > S, GQA
        yield return new(1, 2, 1, 130, 140, 9, 11, Causal: true);        // causal over several blocks
        yield return new(2, 2, 1, 13, 29, 9, 11, MaskShape: [13, 29]);
        yield return new(2, 2, 1, 13, 29, 9, 11, MaskShape: [2, 1, 13, 29], BoolMask: true);
        yield return new(2, 3, 3, 13, 29, 9, 11, MaskShape: [1, 3, 13, 29]);
        yield return new(2, 2, 2, 13, 29, 9, 11, MaskShape: [2, 2, 13, 29], Causal: true, BoolMask: true);
        yield return new(1, 1, 1, 17, 19, 17, 23, MaskShape: [1, 19]);    // broadcast over rows
        yield return new(1, 2, 1, 21, 70, 16, 16, Scale: 0.37f);
    }

    internal static float[]? MakeMask(Random rng, Case c)
    {
        if (c.MaskShape is null) return null;
        long n = c.MaskShape.Aggregate(1L, (a, d) => a * d);
        var mask = new float[n];
        for (long i = 0; i < n; i++)
            mask[i] = c.BoolMask ? (rng.NextDouble() < 0.3 ? float.NegativeInfinity : 0f) : (rng.NextDouble() < 0.1 ? float.NegativeInfinity : (float)rng.NextDouble() * 2 - 1);
        if (c.MaskShape.Length >= 2 && c.MaskShape[^2] > 2)      // one fully masked row: it must contribute nothing
            for (int j = 0; j < c.MaskShape[^1]; j++) mask[2 * c.MaskShape[^1] + j] = float.NegativeInfinity;
        return mask;
    }

    private sealed class Problem(Device d, Case c, float[] q, float[] k, float[] v, float[] g, float[]? mask) : IDisposable
    {
        public readonly Tensor Q = d.Upload(q, c.B, c.Hq, c.L, c.E), K = d.Upload(k, c.B, c.Hkv, c.S, c.E), V = d.Upload(v, c.B, c.Hkv, c.S, c.Ev),
            G = d.Upload(g, c.B, c.Hq, c.L, c.Ev);
        public readonly Tensor? M = mask is null ? null
            : c.BoolMask ? d.UploadMask(mask.Select(x => x == 0f).ToArray(), c.MaskShape!) : d.Upload(mask, c.MaskShape!);
        public SdpaOptions Options => new(c.Causal, c.Scale);
        public void Dispose() { Q.Dispose(); K.Dispose(); V.Dispose(); G.Dispose(); M?.Dispose(); }
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesReference(Case c)
    {
        TestUtil.SkipLargeSdpaOnSimulator(backend, c.B, c.Hq, c.L, c.S, 12, "IlgpuSdpaKernelTests.BackwardMatchesReference");
        var rng = new Random(TestUtil.Seed(c.ToString()));
        var q = TestUtil.Random(rng, (long)c.B * c.Hq * c.L * c.E);
        var k = TestUtil.Random(rng, (long)c.B * c.Hkv * c.S * c.E);
        var v = TestUtil.Random(rng, (long)c.B * c.Hkv * c.S * c.Ev);
        var g = TestUtil.Random(rng, (long)c.B * c.Hq * c.L * c.Ev);
        var mask = MakeMask(rng, c);
        float scale = c.Scale ?? 1f / MathF.Sqrt(c.E);
        var (rq, rk, rv) = ReferenceOps.SdpaBackward(q, k, v, g, c.B, c.Hq, c.Hkv, c.L, c.S, c.E, c.Ev, scale, c.Causal, mask, c.MaskShape);

        using var p = new Problem(_device, c, q, k, v, g, mask);
        var (o, l) = _device.Sdpa(p.Q, p.K, p.V, p.M, p.Options);
        using (o) using (l)
        {
            using var dq = _device.Allocate(c.B, c.Hq, c.L, c.E);
            using var dk = _device.Allocate(c.B, c.Hkv, c.S, c.E);
            using var dv = _device.Allocate(c.B, c.Hkv, c.S, c.Ev);
            _device.Fill(dq, float.NaN); _device.Fill(dk, float.NaN); _device.Fill(dv, float.NaN);   // poison
            _device.SdpaBackward(p.Q, p.K, p.V, o, l, p.G, dq, dk, dv, p.M, p.Options);
            TestUtil.AssertClose(_device.Download(dq), rq, 1e-4, "grad_q");
            TestUtil.AssertClose(_device.Download(dk), rk, 1e-4, "grad_k");
            TestUtil.AssertClose(_device.Download(dv), rv, 1e-4, "grad_v");
        }
    }

    /// <summary>Central differences of loss = Σ out∘G through the device's float forward, against the device's backward.</summary>
    [TestCase(false, false)]
    [TestCase(true, true)]
    public void FloatKernelMatchesFiniteDifferences(bool causal, bool masked)
    {
        TestUtil.SkipHeavyOnSimulator(backend, "IlgpuSdpaKernelTests.BackwardMatchesFiniteDifferencesOfTheKernelForward");
        var c = new Case(1, 2, 1, 7, 9, 5, 6, causal, masked ? [7, 9] : null);
        var rng = new Random(causal ? 21 : 20);
        var q = TestUtil.Random(rng, c.B * c.Hq * c.L * c.E);
        var k = TestUtil.Random(rng, c.B * c.Hkv * c.S * c.E);
        var v = TestUtil.Random(rng, c.B * c.Hkv * c.S * c.Ev);
        var g = TestUtil.Random(rng, c.B * c.Hq * c.L * c.Ev);
        var mask = MakeMask(rng, c);
        using var p = new Problem(_device, c, q, k, v, g, mask);
        var (o, l) = _device.Sdpa(p.Q, p.K, p.V, p.M, p.Options);
        var (dq, dk, dv) = _device.SdpaBackward(p.Q, p.K, p.V, o, l, p.G, p.M, p.Options);
        float[] gq = _device.Download(dq), gk = _device.Download(dk), gv = _device.Download(dv);
        o.Dispose(); l.Dispose(); dq.Dispose(); dk.Dispose(); dv.Dispose();

        double Loss()
        {
            var (o2, l2) = _device.Sdpa(p.Q, p.K, p.V, p.M, p.Options);
            using (o2) using (l2)
            {
                var y = _device.Download(o2);
                double sum = 0;
                for (int i = 0; i < y.Length; i++) sum += (double)y[i] * g[i];
                return sum;
            }
        }
        const float h = 1e-2f;
        foreach (var (host, tensor, grad, name) in new[] { (q, p.Q, gq, "q"), (k, p.K, gk, "k"), (v, p.V, gv, "v") })
        {
            var numeric = new double[host.Length];
            for (int i = 0; i < host.Length; i++)
            {
                float x = host[i];
                host[i] = x + h; _device.Upload(tensor, host); double up = Loss();
                host[i] = x - h; _device.Upload(tensor, host); double down = Loss();
                host[i] = x; _device.Upload(tensor, host);
                numeric[i] = (up - down) / (2 * h);
            }
            TestUtil.AssertClose(grad, numeric, 2e-3, $"grad_{name} vs finite differences");
        }
    }

    [Test]
    public void FullyMaskedRowContributesNothing()
    {
        // Row 0 sees no key; rows 1 and 2 see some.
        var c = new Case(1, 1, 1, 3, 4, 2, 2, MaskShape: [3, 4], BoolMask: true);
        var q = new float[] { 1, 2, 3, 4, -1, 0.5f };
        var k = new float[] { 1, 0, 0, 1, 1, 1, -1, 2 };
        var v = new float[] { 1, 2, 3, 4, 5, 6, 7, 8 };
        var g = new float[] { 10, -10, 1, 2, 3, 4 };
        var mask = new float[] { float.NegativeInfinity, float.NegativeInfinity, float.NegativeInfinity, float.NegativeInfinity, 0, 0, float.NegativeInfinity, 0, 0, 0, 0, 0 };
        using var p = new Problem(_device, c, q, k, v, g, mask);
        var (o, l) = _device.Sdpa(p.Q, p.K, p.V, p.M, p.Options);
        var (dq, dk, dv) = _device.SdpaBackward(p.Q, p.K, p.V, o, l, p.G, p.M, p.Options);
        using (o) using (l) using (dq) using (dk) using (dv)
        {
            var gq = _device.Download(dq);
            Assert.That(gq[..2], Is.EqualTo(new float[] { 0, 0 }), "masked row: grad_q = 0");
            Assert.That(gq[2..].All(float.IsFinite) && _device.Download(dk).All(float.IsFinite) && _device.Download(dv).All(float.IsFinite), Is.True);
            var (rq, rk, rv) = ReferenceOps.SdpaBackward(q, k, v, g, 1, 1, 1, 3, 4, 2, 2, 1f / MathF.Sqrt(2), false, mask, [3, 4]);
            TestUtil.AssertClose(gq, rq, 1e-4, "grad_q");
            TestUtil.AssertClose(_device.Download(dk), rk, 1e-4, "grad_k");
            TestUtil.AssertClose(_device.Download(dv), rv, 1e-4, "grad_v");
        }
    }

    [Test]
    public void EmptyDimensionsWriteZeros()
    {
        using var q = _device.Upload(new float[8], 1, 2, 1, 4);
        using var k = _device.Allocate(1, 2, 0, 4);
        using var v = _device.Allocate(1, 2, 0, 3);
        var (o, l) = _device.Sdpa(q, k, v);
        using var g = _device.Upload(new float[] { 1, 2, 3, 4, 5, 6 }, 1, 2, 1, 3);
        using var dq = _device.Allocate(1, 2, 1, 4);
        _device.Fill(dq, float.NaN);
        using var dk = _device.Allocate(1, 2, 0, 4);
        using var dv = _device.Allocate(1, 2, 0, 3);
        using (o) using (l) _device.SdpaBackward(q, k, v, o, l, g, dq, dk, dv);
        Assert.That(_device.Download(dq), Is.All.EqualTo(0f), "no keys: grad_q = 0");

        using var q2 = _device.Allocate(1, 1, 0, 4);
        using var k2 = _device.Upload(new float[12], 1, 1, 3, 4);
        using var v2 = _device.Upload(new float[6], 1, 1, 3, 2);
        var (o2, l2) = _device.Sdpa(q2, k2, v2);
        using var g2 = _device.Allocate(1, 1, 0, 2);
        var (dq2, dk2, dv2) = _device.SdpaBackward(q2, k2, v2, o2, l2, g2);
        using (o2) using (l2) using (dq2) using (dk2) using (dv2)
        {
            Assert.That(_device.Download(dk2), Is.All.EqualTo(0f), "no queries: grad_k = 0");
            Assert.That(_device.Download(dv2), Is.All.EqualTo(0f), "no queries: grad_v = 0");
        }
    }

    [Test]
    public void RejectsBadShapesAndAliases()
    {
        using var q = _device.Allocate(1, 2, 3, 4);
        using var k = _device.Allocate(1, 1, 5, 4);
        using var v = _device.Allocate(1, 1, 5, 6);
        using var o = _device.Allocate(1, 2, 3, 6);
        using var l = _device.Allocate(1, 2, 3);
        using var g = _device.Allocate(1, 2, 3, 6);
        using var bad = _device.Allocate(1, 2, 3, 5);
        using var dq = _device.Allocate(1, 2, 3, 4);
        using var dk = _device.Allocate(1, 1, 5, 4);
        using var dv = _device.Allocate(1, 1, 5, 6);
        var e = Assert.Throws<TensorShapeException>(() => _device.SdpaBackward(q, k, v, o, l, bad, dq, dk, dv))!;
        Assert.That(e.TensorName, Is.EqualTo("grad_out"));
        Assert.That(e.Message, Does.Contain("[1, 2, 3, 6]").And.Contain("[1, 2, 3, 5]"));
        e = Assert.Throws<TensorShapeException>(() => _device.SdpaBackward(q, k, v, bad, l, g, dq, dk, dv))!;
        Assert.That(e.TensorName, Is.EqualTo("out"));
        e = Assert.Throws<TensorShapeException>(() => _device.SdpaBackward(q, k, v, o, o, g, dq, dk, dv))!;
        Assert.That(e.TensorName, Is.EqualTo("lse"));
        e = Assert.Throws<TensorShapeException>(() => _device.SdpaBackward(q, k, v, o, l, g, dq, dq, dv))!;
        Assert.That(e.TensorName, Is.EqualTo("grad_k"));
        var a = Assert.Throws<ArgumentException>(() => _device.SdpaBackward(q, k, v, o, l, g, dq, dk, v))!;
        Assert.That(a.Message, Does.Contain("grad_v"));
        using var other = Device.Open("cpu");
        using var foreign = other.Allocate(1, 2, 3, 4);
        Assert.Throws<ArgumentException>(() => _device.SdpaBackward(q, k, v, o, l, g, foreign, dk, dv));
    }
}

/// <summary>The double-precision backward reference checked by central finite differences of the double forward.</summary>
public class SdpaBackwardReferenceTests
{
    [TestCase(false, false, 1, 1)]
    [TestCase(true, false, 3, 1)]
    [TestCase(false, true, 2, 2)]
    [TestCase(true, true, 4, 2)]
    public void ReferenceMatchesFiniteDifferences(bool causal, bool masked, int hq, int hkv)
    {
        int B = 2, L = 5, S = 7, E = 3, Ev = 4;
        var rng = new Random(hq * 7 + (causal ? 1 : 0) + (masked ? 2 : 0));
        double[] R(long n) { var a = new double[n]; for (long i = 0; i < n; i++) a[i] = rng.NextDouble() * 2 - 1; return a; }
        var q = R(B * hq * L * E); var k = R(B * hkv * S * E); var v = R(B * hkv * S * Ev); var g = R(B * hq * L * Ev);
        float[]? mask = null;
        if (masked)
        {
            mask = new float[L * S];
            for (int i = 0; i < mask.Length; i++) mask[i] = rng.NextDouble() < 0.25 ? float.NegativeInfinity : (float)rng.NextDouble();
            for (int j = 0; j < S; j++) mask[1 * S + j] = float.NegativeInfinity;   // fully masked row 1
        }
        int[]? ms = masked ? [L, S] : null;
        double scale = 0.7;
        var (dq, dk, dv) = ReferenceOps.SdpaBackward(q, k, v, g, B, hq, hkv, L, S, E, Ev, scale, causal, mask, ms);
        double Loss()
        {
            var (o, _) = ReferenceOps.SdpaForward(q, k, v, B, hq, hkv, L, S, E, Ev, scale, causal, mask, ms);
            double s = 0;
            for (int i = 0; i < o.Length; i++) s += o[i] * g[i];
            return s;
        }
        const double h = 1e-6;
        foreach (var (x, grad, name) in new[] { (q, dq, "q"), (k, dk, "k"), (v, dv, "v") })
        {
            double num = 0, den = 0;
            for (int i = 0; i < x.Length; i++)
            {
                double x0 = x[i];
                x[i] = x0 + h; double up = Loss();
                x[i] = x0 - h; double down = Loss();
                x[i] = x0;
                double fd = (up - down) / (2 * h);
                num += (fd - grad[i]) * (fd - grad[i]);
                den += grad[i] * grad[i];
            }
            Assert.That(den, Is.GreaterThan(0), $"grad_{name} is not all zero");
            Assert.That(Math.Sqrt(num / den), Is.LessThan(1e-7), $"grad_{name} vs finite differences");
        }
    }
}
