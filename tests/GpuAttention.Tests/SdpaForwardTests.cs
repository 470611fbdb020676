using GpuAttention.Reference;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>Fused SDPA forward on every backend against the double reference, on odd shapes (tails off the tiles).</summary>
[TestFixtureSource(typeof(TestUtil), nameof(TestUtil.Backends))]
public class SdpaForwardTests(string backend)
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
        yield return new(1, 1, 1, 1, 1, 1, 1);
        yield return new(2, 4, 2, 37, 53, 17, 23);
        yield return new(1, 3, 1, 65, 129, 64, 64);
        yield return new(1, 2, 2, 100, 7, 128, 96);
        yield return new(1, 1, 1, 33, 70, 200, 256);
        yield return new(1, 2, 1, 1, 300, 64, 64);                        // decoding, L = 1
        yield return new(1, 2, 1, 1, 1100, 64, 64);                       // decoding over many keys (CPU splits the keys)
        yield return new(1, 1, 1, 3, 777, 17, 5, MaskShape: [3, 777]);   // split keys with a mask and a fully masked row
        yield return new(2, 2, 2, 19, 41, 8, 5, Causal: true);            // causal, L < S
        yield return new(1, 4, 2, 45, 21, 16, 16, Causal: true);          // causal, L > S
        yield return new(2, 2, 1, 13, 29, 9, 11, MaskShape: [13, 29]);
        yield return new(2, 2, 1, 13, 29, 9, 11, MaskShape: [2, 1, 13, 29], BoolMask: true);
        yield return new(2, 3, 3, 13, 29, 9, 11, MaskShape: [1, 3, 13, 29]);
        yield return new(2, 2, 2, 13, 29, 9, 11, MaskShape: [2, 2, 13, 29], Causal: true, BoolMask: true);
        yield return new(1, 1, 1, 17, 19, 33, 3, MaskShape: [1, 19]);     // broadcast over rows
        yield return new(1, 2, 1, 21, 130, 31, 7, Scale: 0.37f);
        yield return new(1, 2, 2, 70, 70, 17, 23, Causal: true);          // causal, L = S over several blocks
        yield return new(1, 1, 1, 33, 70, 200, 256, MaskShape: [33, 70]); // mask with large head dims
        yield return new(2, 4, 2, 37, 53, 17, 23, Causal: true, MaskShape: [2, 4, 37, 53], Scale: 2f);   // mask + causal + scale
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesReference(Case c)
    {
        var rng = new Random(TestUtil.Seed(c.ToString()));
        var q = TestUtil.Random(rng, (long)c.B * c.Hq * c.L * c.E);
        var k = TestUtil.Random(rng, (long)c.B * c.Hkv * c.S * c.E);
        var v = TestUtil.Random(rng, (long)c.B * c.Hkv * c.S * c.Ev);
        float[]? mask = null;
        if (c.MaskShape is not null)
        {
            long n = c.MaskShape.Aggregate(1L, (a, d) => a * d);
            mask = new float[n];
            for (long i = 0; i < n; i++)
                mask[i] = c.BoolMask ? (rng.NextDouble() < 0.3 ? float.NegativeInfinity : 0f) : (rng.NextDouble() < 0.1 ? float.NegativeInfinity : (float)rng.NextDouble() * 2 - 1);
            // one fully masked row (a row of the mask's last two dims) when rows are not broadcast
            if (c.MaskShape.Length >= 2 && c.MaskShape[^2] > 1)
                for (int j = 0; j < c.MaskShape[^1]; j++) mask[2 * c.MaskShape[^1] + j] = float.NegativeInfinity;
        }
        float scale = c.Scale ?? 1f / MathF.Sqrt(c.E);
        var (refOut, refLse) = ReferenceOps.SdpaForward(q, k, v, c.B, c.Hq, c.Hkv, c.L, c.S, c.E, c.Ev, scale, c.Causal, mask, c.MaskShape);

        using var tq = _device.Upload(q, c.B, c.Hq, c.L, c.E);
        using var tk = _device.Upload(k, c.B, c.Hkv, c.S, c.E);
        using var tv = _device.Upload(v, c.B, c.Hkv, c.S, c.Ev);
        using var tm = mask is null ? null
            : c.BoolMask ? _device.UploadMask(mask.Select(x => x == 0f).ToArray(), c.MaskShape!) : _device.Upload(mask, c.MaskShape!);
        using var to = _device.Allocate(c.B, c.Hq, c.L, c.Ev);
        using var tl = _device.Allocate(c.B, c.Hq, c.L);
        _device.Fill(to, float.NaN);   // poison: unwritten elements show
        _device.Fill(tl, float.NaN);
        _device.Sdpa(tq, tk, tv, to, tl, tm, new SdpaOptions(c.Causal, c.Scale));

        TestUtil.AssertClose(_device.Download(to), refOut, 1e-5, "out");
        TestUtil.AssertClose(_device.Download(tl), refLse, 1e-5, "lse");
    }

    [Test]
    public void FullyMaskedRowGivesZeroAndNegativeInfinityLse()
    {
        using var q = _device.Upload(new float[] { 1, 2, 3, 4 }, 1, 1, 2, 2);
        using var k = _device.Upload(new float[] { 1, 0, 0, 1, 1, 1 }, 1, 1, 3, 2);
        using var v = _device.Upload(new float[] { 1, 2, 3, 4, 5, 6 }, 1, 1, 3, 2);
        using var m = _device.UploadMask(new[] { false, false, false, true, false, true }, 2, 3);
        var (o, l) = _device.Sdpa(q, k, v, m);
        using (o) using (l)
        {
            var out0 = _device.Download(o);
            var lse = _device.Download(l);
            Assert.That(out0[..2], Is.EqualTo(new float[] { 0, 0 }));
            Assert.That(lse[0], Is.EqualTo(float.NegativeInfinity));
            Assert.That(float.IsFinite(lse[1]) && float.IsFinite(out0[2]) && float.IsFinite(out0[3]), Is.True);
        }
    }

    [Test]
    public void NaNInOneQueryRowStaysInThatRow()
    {
        var q = new float[] { 1, 2, float.NaN, 4, 0.5f, 0.25f };
        using var tq = _device.Upload(q, 1, 1, 3, 2);
        using var tk = _device.Upload(new float[] { 1, 0, 0, 1, 1, 1 }, 1, 1, 3, 2);
        using var tv = _device.Upload(new float[] { 1, 2, 3, 4, 5, 6 }, 1, 1, 3, 2);
        var (o, l) = _device.Sdpa(tq, tk, tv);
        using (o) using (l)
        {
            var r = _device.Download(o);
            Assert.That(float.IsNaN(r[2]) && float.IsNaN(r[3]), Is.True, "row 1 is NaN");
            Assert.That(r.Where((_, i) => i is not (2 or 3)).All(float.IsFinite), Is.True, "rows 0 and 2 are finite");
        }
    }

    [Test]
    public void HugeScoresDoNotOverflow()
    {
        var rng = new Random(5);
        var q = TestUtil.Random(rng, 1 * 1 * 9 * 16, 300f);
        var k = TestUtil.Random(rng, 1 * 1 * 11 * 16, 300f);
        var v = TestUtil.Random(rng, 1 * 1 * 11 * 4);
        var (ro, rl) = ReferenceOps.SdpaForward(q, k, v, 1, 1, 1, 9, 11, 16, 4, 0.25f, false, null, null);
        using var tq = _device.Upload(q, 1, 1, 9, 16);
        using var tk = _device.Upload(k, 1, 1, 11, 16);
        using var tv = _device.Upload(v, 1, 1, 11, 4);
        var (o, l) = _device.Sdpa(tq, tk, tv, null, new SdpaOptions(Scale: 0.25f));
        using (o) using (l)
        {
            TestUtil.AssertClose(_device.Download(o), ro, 1e-5, "out");
            TestUtil.AssertClose(_device.Download(l), rl, 1e-5, "lse");
        }
    }

    [Test]
    public void EmptyDimensionsGiveEmptyOrMaskedOutputs()
    {
        using var q = _device.Allocate(1, 2, 0, 4);
        using var k = _device.Allocate(1, 2, 5, 4);
        using var v = _device.Allocate(1, 2, 5, 3);
        var (o, l) = _device.Sdpa(q, k, v);
        using (o) using (l) Assert.That(o.Length + l.Length, Is.Zero);

        using var q2 = _device.Upload(new float[8], 1, 2, 1, 4);
        using var k2 = _device.Allocate(1, 2, 0, 4);
        using var v2 = _device.Allocate(1, 2, 0, 3);
        var (o2, l2) = _device.Sdpa(q2, k2, v2);
        using (o2) using (l2)
        {
            Assert.That(_device.Download(o2), Is.All.EqualTo(0f), "no keys: out = 0");
            Assert.That(_device.Download(l2), Is.All.EqualTo(float.NegativeInfinity), "no keys: lse = -inf");
        }
    }
}
