using GpuAttention.Reference;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// affine_grid, grid_sample and the fused spatial transformer on every backend against the double reference
/// (every mode × padding × align_corners, grids reaching outside [−1, 1], 1-pixel images, 1 and 64 channels),
/// finite differences for every backward, determinism, and PyTorch 1.13's NaN/∞ behaviour.
/// </summary>
[TestFixtureSource(typeof(TestUtil), nameof(TestUtil.Backends))]
public class SpatialTests(string backend)
{
    private Device _device = null!;

    [OneTimeSetUp] public void Open() => _device = TestUtil.OpenOrIgnore(backend);
    [OneTimeTearDown] public void Close() => _device?.Dispose();

    public static IEnumerable<GridSampleOptions> AllOptions()
    {
        foreach (var m in new[] { GridSampleMode.Bilinear, GridSampleMode.Nearest })
        foreach (var p in new[] { GridSamplePadding.Zeros, GridSamplePadding.Border, GridSamplePadding.Reflection })
        foreach (var a in new[] { false, true })
            yield return new GridSampleOptions(m, p, a);
    }

    public static IEnumerable<GridSampleOptions> BilinearOptions() => AllOptions().Where(o => o.Mode == GridSampleMode.Bilinear);

    public record Shape(int N, int C, int H, int W, int Hout, int Wout)
    {
        public override string ToString() => $"N{N} C{C} {H}x{W} -> {Hout}x{Wout}";
    }

    public static IEnumerable<Shape> Shapes()
    {
        yield return new(2, 3, 7, 9, 5, 11);
        yield return new(1, 64, 5, 6, 3, 7);      // 64 channels
        yield return new(3, 1, 1, 1, 4, 3);       // 1-pixel image, 1 channel
        yield return new(1, 2, 1, 8, 6, 5);       // one row
        yield return new(2, 5, 13, 3, 1, 1);      // one output point
        yield return new(2, 20, 19, 37, 23, 29);  // channel groups of 16 + 4, image and outputs not multiples of 16, several point tiles
        yield return new(1, 33, 4, 4, 17, 16);    // one image, three channel groups in separate blocks (grad_grid partials)
        yield return new(16, 18, 4, 5, 2, 3);     // many images: two channel groups in one block
    }

    public static IEnumerable<TestCaseData> ShapeOptionCases() =>
        from s in Shapes() from o in AllOptions() select new TestCaseData(s, o).SetArgDisplayNames(s.ToString(), o.ToString());

    private static float[] RandomGrid(Random rng, long points, float reach = 1.6f) => TestUtil.Random(rng, points * 2, reach);

    // ---------------- affine_grid ----------------

    [TestCase(3, 5, 7, false)]
    [TestCase(3, 5, 7, true)]
    [TestCase(2, 1, 1, false)]
    [TestCase(2, 1, 4, true)]
    [TestCase(1, 33, 65, false)]
    public void AffineGridMatchesReference(int N, int H, int W, bool align)
    {
        var rng = new Random(N * 1000 + H * 10 + W + (align ? 7 : 0));
        var theta = TestUtil.Random(rng, N * 6, 1.5f);
        using var tt = _device.Upload(theta, N, 2, 3);
        using var grid = _device.Allocate(N, H, W, 2);
        _device.Fill(grid, float.NaN);
        _device.AffineGrid(tt, grid, align);
        TestUtil.AssertClose(_device.Download(grid), ReferenceOps.AffineGrid(ReferenceOps.ToDouble(theta), N, H, W, align), 1e-5, "grid");

        var gg = TestUtil.Random(rng, (long)N * H * W * 2);
        using var tgg = _device.Upload(gg, N, H, W, 2);
        using var gt = _device.Allocate(N, 2, 3);
        _device.Fill(gt, float.NaN);
        _device.AffineGridBackward(tgg, gt, align);
        var refGt = ReferenceOps.AffineGridBackward(ReferenceOps.ToDouble(gg), N, H, W, align);
        TestUtil.AssertClose(_device.Download(gt), refGt, 1e-4, "grad_theta");

        // central differences of L(theta) = <grad_grid, affine_grid(theta)> in double
        var th = ReferenceOps.ToDouble(theta);
        var ggd = ReferenceOps.ToDouble(gg);
        double L(double[] t) => Dot(ReferenceOps.AffineGrid(t, N, H, W, align), ggd);
        var fd = new double[th.Length];
        for (int i = 0; i < th.Length; i++)
        {
            double h = 1e-4, keep = th[i];
            th[i] = keep + h; double lp = L(th);
            th[i] = keep - h; double lm = L(th);
            th[i] = keep;
            fd[i] = (lp - lm) / (2 * h);
        }
        Assert.That(ReferenceOps.RelativeError(refGt.Select(x => (float)x).ToArray(), fd), Is.LessThan(1e-6), "reference grad_theta vs finite differences");
    }

    // ---------------- grid_sample forward / backward ----------------

    [TestCaseSource(nameof(ShapeOptionCases))]
    public void GridSampleMatchesReference(Shape s, GridSampleOptions o)
    {
        var rng = new Random(TestUtil.Seed($"{s} {o}"));
        var input = TestUtil.Random(rng, (long)s.N * s.C * s.H * s.W);
        var grid = RandomGrid(rng, (long)s.N * s.Hout * s.Wout);
        var gout = TestUtil.Random(rng, (long)s.N * s.C * s.Hout * s.Wout);
        using var ti = _device.Upload(input, s.N, s.C, s.H, s.W);
        using var tg = _device.Upload(grid, s.N, s.Hout, s.Wout, 2);
        using var tgo = _device.Upload(gout, s.N, s.C, s.Hout, s.Wout);
        using var to = _device.Allocate(s.N, s.C, s.Hout, s.Wout);
        using var tgi = _device.Allocate(s.N, s.C, s.H, s.W);
        using var tgg = _device.Allocate(s.N, s.Hout, s.Wout, 2);
        _device.Fill(to, float.NaN); _device.Fill(tgi, float.NaN); _device.Fill(tgg, float.NaN);

        _device.GridSample(ti, tg, to, o);
        var di = ReferenceOps.ToDouble(input); var dg = ReferenceOps.ToDouble(grid); var dgo = ReferenceOps.ToDouble(gout);
        TestUtil.AssertClose(_device.Download(to), ReferenceOps.GridSample(di, dg, s.N, s.C, s.H, s.W, s.Hout, s.Wout, o), 1e-5, "out");

        _device.GridSampleBackward(ti, tg, tgo, tgi, tgg, o);
        var (rgi, rgg) = ReferenceOps.GridSampleBackward(di, dg, dgo, s.N, s.C, s.H, s.W, s.Hout, s.Wout, o);
        TestUtil.AssertClose(_device.Download(tgi), rgi, 1e-4, "grad_input");
        var ggot = _device.Download(tgg);
        if (o.Mode == GridSampleMode.Nearest) Assert.That(ggot, Is.All.EqualTo(0f), "nearest: grad_grid is zero");
        else TestUtil.AssertClose(ggot, rgg, 1e-4, "grad_grid");
    }

    [Test]
    public void GridSampleSamplesPixelCentresExactly([Values] bool align)
    {
        // identity grid of affine_grid samples each pixel exactly, for every padding (a result a broken kernel cannot fake)
        var rng = new Random(1);
        int N = 2, C = 3, H = 6, W = 5;
        var input = TestUtil.Random(rng, N * C * H * W);
        using var ti = _device.Upload(input, N, C, H, W);
        using var th = _device.Upload(new float[] { 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0 }, N, 2, 3);
        using var grid = _device.AffineGrid(th, H, W, align);
        foreach (var pad in Enum.GetValues<GridSamplePadding>())
        foreach (var mode in Enum.GetValues<GridSampleMode>())
        {
            using var o = _device.GridSample(ti, grid, new GridSampleOptions(mode, pad, align));
            var r = _device.Download(o);
            for (int i = 0; i < r.Length; i++) Assert.That(r[i], Is.EqualTo(input[i]).Within(1e-5), $"{mode} {pad} element {i}");
        }
    }

    [TestCaseSource(nameof(BilinearOptions))]
    public void ReferenceBackwardMatchesFiniteDifferences(GridSampleOptions o)
    {
        var s = new Shape(2, 3, 6, 7, 4, 5);
        var rng = new Random(TestUtil.Seed(o.ToString()) + 17);
        var input = ReferenceOps.ToDouble(TestUtil.Random(rng, s.N * s.C * s.H * s.W));
        var grid = ReferenceOps.ToDouble(SafeGrid(rng, s, o, 0.01));
        var gout = ReferenceOps.ToDouble(TestUtil.Random(rng, s.N * s.C * s.Hout * s.Wout));
        var (gi, gg) = ReferenceOps.GridSampleBackward(input, grid, gout, s.N, s.C, s.H, s.W, s.Hout, s.Wout, o);
        double L(double[] inp, double[] g) => Dot(ReferenceOps.GridSample(inp, g, s.N, s.C, s.H, s.W, s.Hout, s.Wout, o), gout);

        var fd = new double[grid.Length];
        for (int i = 0; i < grid.Length; i++)
        {
            double h = 1e-7, keep = grid[i];
            grid[i] = keep + h; double lp = L(input, grid);
            grid[i] = keep - h; double lm = L(input, grid);
            grid[i] = keep;
            fd[i] = (lp - lm) / (2 * h);
        }
        Assert.That(RelErr(gg, fd), Is.LessThan(1e-6), "grad_grid vs finite differences");
        Assert.That(gg.Any(x => x != 0), Is.True, "some grid gradient is non-zero");

        // out is linear in input: the directional derivative along a random v equals <grad_input, v>
        var v = ReferenceOps.ToDouble(TestUtil.Random(rng, input.Length));
        var plus = input.Zip(v, (a, b) => a + 1e-3 * b).ToArray();
        var minus = input.Zip(v, (a, b) => a - 1e-3 * b).ToArray();
        double dir = (L(plus, grid) - L(minus, grid)) / 2e-3;
        Assert.That(Math.Abs(dir - Dot(gi, v)), Is.LessThan(1e-9 * Math.Max(1, Math.Abs(dir))), "grad_input vs finite differences");
    }

    [TestCaseSource(nameof(BilinearOptions))]
    public void KernelBackwardMatchesFloatFiniteDifferences(GridSampleOptions o)
    {
        var s = new Shape(1, 4, 5, 6, 2, 3);
        var rng = new Random(TestUtil.Seed(o.ToString()) + 29);
        var input = TestUtil.Random(rng, s.N * s.C * s.H * s.W);
        var grid = SafeGrid(rng, s, o, 0.05);
        var gout = TestUtil.Random(rng, s.N * s.C * s.Hout * s.Wout);
        using var ti = _device.Upload(input, s.N, s.C, s.H, s.W);
        using var tg = _device.Upload(grid, s.N, s.Hout, s.Wout, 2);
        using var tgo = _device.Upload(gout, s.N, s.C, s.Hout, s.Wout);
        using var to = _device.Allocate(s.N, s.C, s.Hout, s.Wout);
        var (tgi, tgg) = _device.GridSampleBackward(ti, tg, tgo, o);
        using (tgi) using (tgg)
        {
            var gg = _device.Download(tgg);
            var fd = new double[grid.Length];
            double L(float[] g)
            {
                _device.Upload(tg, g);
                _device.GridSample(ti, tg, to, o);
                return Dot(ReferenceOps.ToDouble(_device.Download(to)), ReferenceOps.ToDouble(gout));
            }
            for (int i = 0; i < grid.Length; i++)
            {
                float h = 2e-3f, keep = grid[i];
                grid[i] = keep + h; double lp = L(grid);
                grid[i] = keep - h; double lm = L(grid);
                grid[i] = keep;
                fd[i] = (lp - lm) / (2.0 * h);
            }
            TestUtil.AssertClose(gg, fd, 2e-2, "grad_grid vs float finite differences");
        }
    }

    [Test]
    public void BackwardIsBitForBitRepeatable()
    {
        var s = new Shape(2, 64, 17, 19, 23, 21);
        var rng = new Random(99);
        var o = new GridSampleOptions(GridSampleMode.Bilinear, GridSamplePadding.Reflection, false);
        using var ti = _device.Upload(TestUtil.Random(rng, s.N * s.C * s.H * s.W), s.N, s.C, s.H, s.W);
        // a contracting grid: many output points land on the same input pixels (a scatter with collisions)
        using var tg = _device.Upload(TestUtil.Random(rng, s.N * s.Hout * s.Wout * 2, 0.3f), s.N, s.Hout, s.Wout, 2);
        using var tgo = _device.Upload(TestUtil.Random(rng, s.N * s.C * s.Hout * s.Wout), s.N, s.C, s.Hout, s.Wout);
        float[]? gi0 = null, gg0 = null;
        var (rgi, rgg) = ReferenceOps.GridSampleBackward(ReferenceOps.ToDouble(_device.Download(ti)), ReferenceOps.ToDouble(_device.Download(tg)),
            ReferenceOps.ToDouble(_device.Download(tgo)), s.N, s.C, s.H, s.W, s.Hout, s.Wout, o);
        for (int run = 0; run < 3; run++)
        {
            var (gi, gg) = _device.GridSampleBackward(ti, tg, tgo, o);
            using (gi) using (gg)
            {
                var a = _device.Download(gi); var b = _device.Download(gg);
                if (gi0 is null)
                {
                    TestUtil.AssertClose(a, rgi, 1e-4, "grad_input");   // the chunked scatter (partials + ordered sum) is right too
                    TestUtil.AssertClose(b, rgg, 1e-4, "grad_grid");
                    gi0 = a; gg0 = b; continue;
                }
                Assert.That(a.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(gi0.Select(BitConverter.SingleToInt32Bits)), "grad_input bits");
                Assert.That(b.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(gg0!.Select(BitConverter.SingleToInt32Bits)), "grad_grid bits");
            }
        }
    }

    private static GridSampleOptions Atomic(GridSampleOptions o) => o with { Backward = GridSampleBackwardMode.Atomic };

    /// <summary>
    /// The opt-in atomic scatter (on the CPU backend: the deterministic path) against the double reference, on an odd shape whose
    /// contracting grid sends many output points (and, reaching past [−1, 1] with border/reflection, whole rows) onto the same pixels.
    /// </summary>
    [TestCaseSource(nameof(AllOptions))]
    public void AtomicBackwardMatchesReference(GridSampleOptions o)
    {
        var s = new Shape(3, 5, 7, 5, 13, 11);
        var rng = new Random(TestUtil.Seed($"{s} {o}") + 3);
        var input = TestUtil.Random(rng, (long)s.N * s.C * s.H * s.W);
        var grid = RandomGrid(rng, (long)s.N * s.Hout * s.Wout, 0.35f);
        for (int i = 0; i < 2 * 11; i++) grid[i] = 1.3f;      // the first output row of image 0: all points past the corner
        var gout = TestUtil.Random(rng, (long)s.N * s.C * s.Hout * s.Wout);
        using var ti = _device.Upload(input, s.N, s.C, s.H, s.W);
        using var tg = _device.Upload(grid, s.N, s.Hout, s.Wout, 2);
        using var tgo = _device.Upload(gout, s.N, s.C, s.Hout, s.Wout);
        using var tgi = _device.Allocate(s.N, s.C, s.H, s.W);
        using var tgg = _device.Allocate(s.N, s.Hout, s.Wout, 2);
        _device.Fill(tgi, float.NaN); _device.Fill(tgg, float.NaN);
        _device.GridSampleBackward(ti, tg, tgo, tgi, tgg, Atomic(o));
        var (rgi, rgg) = ReferenceOps.GridSampleBackward(ReferenceOps.ToDouble(input), ReferenceOps.ToDouble(grid), ReferenceOps.ToDouble(gout),
            s.N, s.C, s.H, s.W, s.Hout, s.Wout, o);
        TestUtil.AssertClose(_device.Download(tgi), rgi, 1e-4, "grad_input (atomic)");
        var ggot = _device.Download(tgg);
        if (o.Mode == GridSampleMode.Nearest) Assert.That(ggot, Is.All.EqualTo(0f), "nearest: grad_grid is zero");
        else TestUtil.AssertClose(ggot, rgg, 1e-4, "grad_grid (atomic run)");

        // the fused spatial transform takes the atomic path too (theta contracting: collisions)
        var theta = new float[s.N * 6];
        for (int n = 0; n < s.N; n++)
        {
            // irregular values: no sampling point near a pixel edge / nearest's half-pixel ties, where float and double may disagree
            float sc = 0.2113f + 0.1537f * n;
            theta[n * 6] = sc; theta[n * 6 + 1] = 0.0519f; theta[n * 6 + 2] = 0.1031f * n + 0.0173f;
            theta[n * 6 + 3] = -0.0313f; theta[n * 6 + 4] = sc * 1.0371f; theta[n * 6 + 5] = -0.0967f;
        }
        using var tt = _device.Upload(theta, s.N, 2, 3);
        using var tgt = _device.Allocate(s.N, 2, 3);
        _device.Fill(tgi, float.NaN); _device.Fill(tgt, float.NaN);
        _device.SpatialTransformBackward(ti, tt, tgo, tgi, tgt, Atomic(o));
        var tgrid = ReferenceOps.AffineGrid(ReferenceOps.ToDouble(theta), s.N, s.Hout, s.Wout, o.AlignCorners);
        var (tgiRef, tggRef) = ReferenceOps.GridSampleBackward(ReferenceOps.ToDouble(input), tgrid, ReferenceOps.ToDouble(gout),
            s.N, s.C, s.H, s.W, s.Hout, s.Wout, o);
        TestUtil.AssertClose(_device.Download(tgi), tgiRef, 1e-4, "spatial transform grad_input (atomic)");
        TestUtil.AssertClose(_device.Download(tgt), ReferenceOps.AffineGridBackward(tggRef, s.N, s.Hout, s.Wout, o.AlignCorners), 1e-4,
            "spatial transform grad_theta (atomic run)");
    }

    [Test]
    public void BackwardModeIsValidatedAndShown()
    {
        Assert.That(new GridSampleOptions().Backward, Is.EqualTo(GridSampleBackwardMode.Deterministic));
        Assert.That(default(GridSampleOptions).Backward, Is.EqualTo(GridSampleBackwardMode.Deterministic));
        Assert.That(Atomic(new GridSampleOptions()).ToString(), Is.EqualTo("bilinear zeros atomic"));
        Assert.That(new GridSampleOptions().ToString(), Is.EqualTo("bilinear zeros"));
        using var ti = _device.Allocate(1, 1, 2, 2);
        using var tg = _device.Allocate(1, 1, 1, 2);
        using var tgo = _device.Allocate(1, 1, 1, 1);
        var bad = new GridSampleOptions(Backward: (GridSampleBackwardMode)7);
        Assert.That(() => _device.GridSampleBackward(ti, tg, tgo, bad), Throws.ArgumentException.With.Message.Contains("backward"));
    }

    // ---------------- NaN and ∞ as PyTorch 1.13 ----------------

    private static readonly float[] OddGrid = [float.NaN, 0f, 0.3f, float.NaN, float.NaN, float.NaN, float.PositiveInfinity, 0.2f, float.NegativeInfinity, 0.1f, 2.5f, 0.1f];

    /// <summary>Outputs of PyTorch 1.13 (CPU, float64) for input arange(1, 13).reshape(1, 1, 3, 4) at <see cref="OddGrid"/>.</summary>
    public static IEnumerable<TestCaseData> TorchNaNCases()
    {
        double n = double.NaN;
        (string, string, bool, double[])[] rows =
        [
            ("bilinear", "zeros", false, [n, n, n, n, n, 0]),
            ("bilinear", "zeros", true, [n, n, n, n, n, 0]),
            ("bilinear", "border", false, [5.0, 3.100000023841858, 1.0, 9.200000017881393, 5.600000008940697, 8.600000008940697]),
            ("bilinear", "border", true, [5.0, 2.9500000178813934, 1.0, 8.800000011920929, 5.4000000059604645, 8.400000005960464]),
            ("bilinear", "reflection", false, [5.0, 3.100000023841858, 1.0, 6.200000017881393, 5.600000008940697, 6.100000008940697]),
            ("bilinear", "reflection", true, [5.0, 2.9500000178813934, 1.0, 5.800000011920929, 5.4000000059604645, 6.1500000059604645]),
            ("nearest", "zeros", false, [0, 0, 0, 0, 0, 0]),
            ("nearest", "zeros", true, [0, 0, 0, 0, 0, 0]),
            ("nearest", "border", false, [5, 3, 1, 8, 5, 8]),
            ("nearest", "border", true, [5, 3, 1, 8, 5, 8]),
            ("nearest", "reflection", false, [5, 3, 1, 5, 5, 5]),
            ("nearest", "reflection", true, [5, 3, 1, 5, 5, 6]),
        ];
        foreach (var (m, p, a, r) in rows)
            yield return new TestCaseData(GridSampleOptions.Parse(m, p, a), r).SetArgDisplayNames($"{m} {p}{(a ? " align" : "")}");
    }

    [TestCaseSource(nameof(TorchNaNCases))]
    public void NonFiniteGridBehavesAsPyTorch(GridSampleOptions o, double[] torch)
    {
        var input = Enumerable.Range(1, 12).Select(i => (float)i).ToArray();
        using var ti = _device.Upload(input, 1, 1, 3, 4);
        using var tg = _device.Upload(OddGrid, 1, 1, 6, 2);
        using var to = _device.Allocate(1, 1, 1, 6);
        _device.Fill(to, 12345f);
        _device.GridSample(ti, tg, to, o);
        TestUtil.AssertClose(_device.Download(to), torch, 1e-5, "out vs PyTorch 1.13");
        var reference = ReferenceOps.GridSample(ReferenceOps.ToDouble(input), ReferenceOps.ToDouble(OddGrid), 1, 1, 3, 4, 1, 6, o);
        TestUtil.AssertClose(reference.Select(x => (float)x).ToArray(), torch, 1e-7, "reference vs PyTorch 1.13");
    }

    [Test]
    public void NearestRoundsHalfToEvenAsPyTorch()
    {
        // PyTorch 1.13: input arange(1, 5).reshape(1, 1, 1, 4); x in [-0.5, 0, 0.5, -0.75, -0.25, 0.25, 0.75]
        var xs = new float[] { -0.5f, 0f, 0.5f, -0.75f, -0.25f, 0.25f, 0.75f };
        double[] noAlign = [1, 3, 3, 1, 2, 3, 4], align = [2, 3, 3, 1, 2, 3, 4];
        using var ti = _device.Upload(new float[] { 1, 2, 3, 4 }, 1, 1, 1, 4);
        using var tg = _device.Upload(xs.SelectMany(x => new[] { x, 0f }).ToArray(), 1, 1, xs.Length, 2);
        foreach (var (a, expect) in new[] { (false, noAlign), (true, align) })
        {
            using var o = _device.GridSample(ti, tg, new GridSampleOptions(GridSampleMode.Nearest, GridSamplePadding.Zeros, a));
            Assert.That(_device.Download(o).Select(v => (double)v), Is.EqualTo(expect), $"align {a}");
        }
    }

    // ---------------- fused spatial transformer ----------------

    [TestCaseSource(nameof(AllOptions))]
    public void SpatialTransformMatchesAffineGridThenGridSample(GridSampleOptions o)
    {
        var s = new Shape(2, 3, 9, 8, 5, 7);
        var rng = new Random(TestUtil.Seed(o.ToString()) + 5);
        var input = TestUtil.Random(rng, s.N * s.C * s.H * s.W);
        var theta = TestUtil.Random(rng, s.N * 6, 1.2f);
        var gout = TestUtil.Random(rng, s.N * s.C * s.Hout * s.Wout);
        using var ti = _device.Upload(input, s.N, s.C, s.H, s.W);
        using var tt = _device.Upload(theta, s.N, 2, 3);
        using var tgo = _device.Upload(gout, s.N, s.C, s.Hout, s.Wout);
        using var to = _device.Allocate(s.N, s.C, s.Hout, s.Wout);
        _device.Fill(to, float.NaN);
        _device.SpatialTransform(ti, tt, to, o);
        var di = ReferenceOps.ToDouble(input); var dgo = ReferenceOps.ToDouble(gout);
        var grid = ReferenceOps.AffineGrid(ReferenceOps.ToDouble(theta), s.N, s.Hout, s.Wout, o.AlignCorners);
        TestUtil.AssertClose(_device.Download(to), ReferenceOps.GridSample(di, grid, s.N, s.C, s.H, s.W, s.Hout, s.Wout, o), 1e-5, "out");

        using var tgi = _device.Allocate(s.N, s.C, s.H, s.W);
        using var tgt = _device.Allocate(s.N, 2, 3);
        _device.Fill(tgi, float.NaN); _device.Fill(tgt, float.NaN);
        _device.SpatialTransformBackward(ti, tt, tgo, tgi, tgt, o);
        var (rgi, rgg) = ReferenceOps.GridSampleBackward(di, grid, dgo, s.N, s.C, s.H, s.W, s.Hout, s.Wout, o);
        var rgt = ReferenceOps.AffineGridBackward(rgg, s.N, s.Hout, s.Wout, o.AlignCorners);
        TestUtil.AssertClose(_device.Download(tgi), rgi, 1e-4, "grad_input");
        TestUtil.AssertClose(_device.Download(tgt), rgt, 1e-4, "grad_theta");
    }

    [TestCaseSource(nameof(BilinearOptions))]
    public void SpatialTransformGradThetaMatchesFiniteDifferences(GridSampleOptions o)
    {
        var s = new Shape(1, 2, 7, 6, 3, 4);
        var rng = new Random(o.GetHashCode() + 41);
        var input = TestUtil.Random(rng, s.N * s.C * s.H * s.W);
        var gout = TestUtil.Random(rng, s.N * s.C * s.Hout * s.Wout);
        // theta whose sampling points all stay clear of the kinks
        float[] theta;
        do theta = TestUtil.Random(rng, s.N * 6, 1.1f);
        while (!GridIsSafe(ReferenceOps.AffineGrid(ReferenceOps.ToDouble(theta), s.N, s.Hout, s.Wout, o.AlignCorners), s, o, 0.01));
        using var ti = _device.Upload(input, s.N, s.C, s.H, s.W);
        using var tt = _device.Upload(theta, s.N, 2, 3);
        using var tgo = _device.Upload(gout, s.N, s.C, s.Hout, s.Wout);
        var (gi, gt) = _device.SpatialTransformBackward(ti, tt, tgo, o);
        using (gi) using (gt)
        {
            var th = ReferenceOps.ToDouble(theta);
            var di = ReferenceOps.ToDouble(input); var dgo = ReferenceOps.ToDouble(gout);
            double L(double[] t) => Dot(ReferenceOps.GridSample(di, ReferenceOps.AffineGrid(t, s.N, s.Hout, s.Wout, o.AlignCorners), s.N, s.C, s.H, s.W, s.Hout, s.Wout, o), dgo);
            var fd = new double[6 * s.N];
            for (int i = 0; i < fd.Length; i++)
            {
                double h = 1e-7, keep = th[i];
                th[i] = keep + h; double lp = L(th);
                th[i] = keep - h; double lm = L(th);
                th[i] = keep;
                fd[i] = (lp - lm) / (2 * h);
            }
            TestUtil.AssertClose(_device.Download(gt), fd, 1e-4, "grad_theta vs finite differences");
        }
    }

    // ---------------- validation ----------------

    [Test]
    public void BadShapesNameTheTensor()
    {
        using var input = _device.Allocate(2, 3, 4, 5);
        using var grid = _device.Allocate(2, 6, 7, 2);
        using var badGrid = _device.Allocate(3, 6, 7, 2);
        using var out_ = _device.Allocate(2, 3, 6, 7);
        using var badOut = _device.Allocate(2, 3, 7, 6);
        using var theta = _device.Allocate(2, 2, 3);
        using var badTheta = _device.Allocate(2, 3, 3);
        using var empty = _device.Allocate(2, 3, 0, 5);
        Assert.That(() => _device.GridSample(input, badGrid, out_), Throws.TypeOf<TensorShapeException>().With.Message.StartsWith("grid:"));
        Assert.That(() => _device.GridSample(input, grid, badOut), Throws.TypeOf<TensorShapeException>().With.Message.StartsWith("out:"));
        Assert.That(() => _device.GridSample(empty, grid), Throws.TypeOf<TensorShapeException>().With.Message.StartsWith("input:"));
        Assert.That(() => _device.AffineGrid(badTheta, 4, 4), Throws.TypeOf<TensorShapeException>().With.Message.StartsWith("theta:"));
        Assert.That(() => _device.SpatialTransform(input, badTheta, 3, 3), Throws.TypeOf<TensorShapeException>().With.Message.StartsWith("theta:"));
        Assert.That(() => _device.GridSampleBackward(input, grid, badOut), Throws.TypeOf<TensorShapeException>().With.Message.StartsWith("grad_out:"));
        Assert.That(() => _device.AffineGridBackward(input), Throws.TypeOf<TensorShapeException>().With.Message.StartsWith("grad_grid:"));
        Assert.That(() => _device.GridSample(input, grid, grid), Throws.InstanceOf<ArgumentException>());
        Assert.That(() => _device.GridSample(input, grid, new GridSampleOptions((GridSampleMode)7)), Throws.InstanceOf<ArgumentException>().With.Message.Contains("mode"));
        using var other = Device.Open("cpu");
        using var foreign = other.Allocate(2, 6, 7, 2);
        Assert.That(() => _device.GridSample(input, foreign), Throws.InstanceOf<ArgumentException>().With.Message.StartsWith("grid:"));
    }

    // ---------------- helpers ----------------

    private static double Dot(double[] a, double[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }

    private static double RelErr(double[] a, double[] r)
    {
        double num = 0, den = 0;
        for (int i = 0; i < a.Length; i++) { num += (a[i] - r[i]) * (a[i] - r[i]); den += r[i] * r[i]; }
        return Math.Sqrt(num / Math.Max(den, 1e-300));
    }

    private static double FracDist(double x) => Math.Abs(x - Math.Round(x));

    /// <summary>
    /// Whether a coordinate is at least <paramref name="margin"/> pixels from every kink of bilinear sampling and of the
    /// padding: the unnormalised coordinate away from integers and half-integers (clamp and reflection borders), and
    /// the reflected, clamped coordinate away from integers (the bilinear cell borders).
    /// </summary>
    private static bool CoordIsSafe(double coord, int size, GridSampleOptions o, double margin)
    {
        double u = o.AlignCorners ? (coord + 1) / 2 * (size - 1) : ((coord + 1) * size - 1) / 2;
        double r = ReferenceOps.SourceIndex(coord, size, o.Padding, o.AlignCorners, out _);
        return FracDist(u) > margin && FracDist(2 * u) > 2 * margin && FracDist(r) > margin;
    }

    private static bool GridIsSafe(double[] grid, Shape s, GridSampleOptions o, double margin)
    {
        for (int i = 0; i < grid.Length; i += 2)
            if (!CoordIsSafe(grid[i], s.W, o, margin) || !CoordIsSafe(grid[i + 1], s.H, o, margin)) return false;
        return true;
    }

    internal static float[] SafeGrid(Random rng, Shape s, GridSampleOptions o, double margin)
    {
        var g = new float[s.N * s.Hout * s.Wout * 2];
        for (int i = 0; i < g.Length; i++)
        {
            int size = i % 2 == 0 ? s.W : s.H;
            float x;
            do x = (float)(rng.NextDouble() * 3.2 - 1.6);
            while (!CoordIsSafe(x, size, o, margin));
            g[i] = x;
        }
        return g;
    }
}
