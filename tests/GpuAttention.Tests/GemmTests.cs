using GpuAttention.Backends;
using GpuAttention.Reference;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>Batched tiled GEMM on every backend against the double triple loop, on sizes off every tile.</summary>
[TestFixtureSource(typeof(TestUtil), nameof(TestUtil.Backends))]
public class GemmTests(string backend)
{
    private Device _device = null!;

    [OneTimeSetUp] public void Open() => _device = TestUtil.OpenOrIgnore(backend);
    [OneTimeTearDown] public void Close() => _device?.Dispose();

    public record Case(int Batch, int M, int N, int K, bool TA, bool TB, float Alpha = 1f, float Beta = 0f, bool ABatched = true, bool BBatched = true, bool Rank2 = false)
    {
        public override string ToString() => $"b{Batch} {M}x{N}x{K}{(TA ? " Aᵀ" : "")}{(TB ? " Bᵀ" : "")} α{Alpha} β{Beta}{(ABatched ? "" : " A-shared")}{(BBatched ? "" : " B-shared")}{(Rank2 ? " rank2" : "")}";
    }

    public static IEnumerable<Case> Cases()
    {
        yield return new(1, 1, 1, 1, false, false, Rank2: true);
        yield return new(1, 37, 53, 29, false, false, Rank2: true);
        yield return new(3, 70, 33, 130, false, true);
        yield return new(2, 65, 129, 17, true, false, 0.5f, 0f);
        yield return new(2, 31, 47, 66, true, true, -1.5f, 0.75f);
        yield return new(4, 9, 100, 40, false, false, 1f, 1f, ABatched: false);
        yield return new(3, 100, 7, 5, false, true, 2f, 0f, BBatched: false);
        yield return new(1, 150, 140, 3, false, false, 1f, 0.5f, Rank2: true);
        yield return new(2, 5, 6, 0, false, false, 1f, 0.5f);          // K = 0: c = beta c
        yield return new(1, 301, 270, 300, false, true, 1f, 0.5f, Rank2: true);   // CPU: several rows per item, 3 depth blocks, a narrow last micro-panel with beta
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesReference(Case c)
    {
        var rng = new Random(TestUtil.Seed(c.ToString()));
        int ba = c.ABatched ? c.Batch : 1, bb = c.BBatched ? c.Batch : 1;
        var a = TestUtil.Random(rng, (long)ba * c.M * c.K);
        var b = TestUtil.Random(rng, (long)bb * c.K * c.N);
        var c0 = TestUtil.Random(rng, (long)c.Batch * c.M * c.N);
        int[] Sh(int batch, int r, int col) => c.Rank2 ? [r, col] : [batch, r, col];
        using var ta = _device.Upload(a, Sh(ba, c.TA ? c.K : c.M, c.TA ? c.M : c.K));
        using var tb = _device.Upload(b, Sh(bb, c.TB ? c.N : c.K, c.TB ? c.K : c.N));
        using var tc = _device.Allocate(Sh(c.Batch, c.M, c.N));
        if (c.Beta == 0) _device.Fill(tc, float.NaN);       // poison: beta = 0 must not read c
        else _device.Upload(tc, c0);
        _device.Gemm(ta, tb, tc, c.TA, c.TB, c.Alpha, c.Beta);
        var r = ReferenceOps.Gemm(a, b, c0, c.Batch, c.M, c.N, c.K, c.TA, c.TB, c.Alpha, c.Beta, c.ABatched, c.BBatched);
        TestUtil.AssertClose(_device.Download(tc), r, 1e-5, "c");
    }

    [Test]
    public void StridedSubMatricesLeaveTheRestAlone()
    {
        // op(A) = rows 2..6 of columns 3..10 of a 9x12 matrix, B shared, C written into columns 1..6 of rows 1..5 of an 8x9 buffer per batch.
        var rng = new Random(9);
        var a = TestUtil.Random(rng, 2 * 9 * 12);
        var b = TestUtil.Random(rng, 8 * 6);
        using var ta = _device.Upload(a, 2, 9, 12);
        using var tb = _device.Upload(b, 8, 6);
        using var tc = _device.Upload(Enumerable.Repeat(7f, 2 * 8 * 9).ToArray(), 2, 8, 9);
        _device.GemmInternal(new GemmArgs(2, 5, 6, 8, false, false, 1f, 0f, null!, 2 * 12 + 3, 9 * 12, 12, null!, 0, 0, 6, null!, 9 + 1, 8 * 9, 9), ta, tb, tc);
        var got = _device.Download(tc);
        for (int t = 0; t < 2; t++)
        for (int i = 0; i < 8; i++)
        for (int j = 0; j < 9; j++)
        {
            float x = got[t * 72 + i * 9 + j];
            if (i is >= 1 and <= 5 && j is >= 1 and <= 6)
            {
                double s = 0;
                for (int k = 0; k < 8; k++) s += (double)a[t * 108 + (i - 1 + 2) * 12 + 3 + k] * b[k * 6 + j - 1];
                Assert.That(x, Is.EqualTo(s).Within(1e-5), $"c[{t},{i},{j}]");
            }
            else Assert.That(x, Is.EqualTo(7f), $"c[{t},{i},{j}] untouched");
        }
        Assert.Throws<TensorShapeException>(() => _device.GemmInternal(new GemmArgs(2, 5, 6, 8, false, false, 1f, 0f, null!, 5 * 12, 9 * 12, 12, null!, 0, 0, 6, null!, 0, 8 * 9, 9), ta, tb, tc));
    }

    [Test]
    public void RejectsBadShapes()
    {
        using var a = _device.Allocate(2, 3, 4);
        using var b = _device.Allocate(2, 5, 6);
        using var c = _device.Allocate(2, 3, 6);
        var e = Assert.Throws<TensorShapeException>(() => _device.Gemm(a, b, c))!;
        Assert.That(e.TensorName, Is.EqualTo("b"));
        using var b2 = _device.Allocate(3, 4, 6);
        e = Assert.Throws<TensorShapeException>(() => _device.Gemm(a, b2, c))!;
        Assert.That(e.TensorName, Is.EqualTo("b"));
        using var b3 = _device.Allocate(4, 6);
        using var cBad = _device.Allocate(2, 6, 3);
        e = Assert.Throws<TensorShapeException>(() => _device.Gemm(a, b3, cBad))!;
        Assert.That(e.TensorName, Is.EqualTo("c"));
        Assert.That(e.Message, Does.Contain("[2, 3, 6]"));
        using var sq = _device.Allocate(3, 3);
        Assert.Throws<ArgumentException>(() => _device.Gemm(sq, sq, sq));
        using var c2 = _device.Allocate(2, 3, 6);
        Assert.Throws<ArgumentOutOfRangeException>(() => _device.Gemm(a, b3, c2, alpha: float.NaN));
    }
}
