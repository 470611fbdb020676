using GpuAttention.Reference;
using Kind = GpuAttention.Reference.GlimpseParamKind;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>Separable Gaussian glimpse forward and backward on every backend against the double reference and finite differences.</summary>
[TestFixtureSource(typeof(TestUtil), nameof(TestUtil.Backends))]
public class GlimpseTests(string backend)
{
    private Device _device = null!;

    [OneTimeSetUp] public void Open() => _device = TestUtil.OpenOrIgnore(backend);
    [OneTimeTearDown] public void Close() => _device?.Dispose();

    public record Case(int N, int C, int H, int W, int Gh, int Gw, Kind Kind = Kind.Typical)
    {
        public override string ToString() => $"N{N} C{C} {H}x{W} -> {Gh}x{Gw} {Kind}";
    }

    public static IEnumerable<Case> Cases()
    {
        yield return new(1, 1, 2, 1, 1, 1);                        // a 1-pixel axis: its normalised filter is 1 - O(1e-8), gradient ~1e-9
        yield return new(2, 3, 37, 29, 5, 11);                    // y-first (h small)
        yield return new(2, 2, 19, 45, 13, 3);                    // x-first (w small)
        yield return new(1, 4, 33, 35, 33, 35);                   // glimpse as large as the image, tails off every tile
        yield return new(3, 1, 21, 17, 7, 9, Kind.TinySigma);
        yield return new(2, 2, 23, 31, 6, 5, Kind.HugeSigma);
        yield return new(2, 3, 25, 27, 8, 7, Kind.Outside);
        yield return new(1, 2, 30, 26, 9, 10, Kind.NegativeStride);
        yield return new(1, 70, 12, 13, 3, 4);                    // many channels: the backward's channel sum spans work items
        yield return new(2, 2, 97, 83, 11, 13);                   // σ ≪ image: narrow bands of nonzero weights (the CPU skips the rest)
        yield return new(1, 3, 90, 40, 20, 6, Kind.TinySigma);    // narrow bands, h ≫ w
        yield return new(1, 2, 41, 77, 5, 19, Kind.NegativeStride); // narrow bands, centres descending
    }

    [Test]
    public void CasesCoverBothMultiplicationOrders()
    {
        var shapes = Cases().Select(c => new GpuAttention.Backends.GlimpseShape(c.N, c.C, c.H, c.W, c.Gh, c.Gw)).ToList();
        Assert.That(shapes.Any(s => s.XFirst) && shapes.Any(s => !s.XFirst), "forward orders");
        Assert.That(shapes.Any(s => s.BackwardXFirst) && shapes.Any(s => !s.BackwardXFirst), "backward orders");
    }

    internal static float[] Params(Random rng, Case c) => ReferenceInputs.GlimpseParams(rng, c.N, c.H, c.W, c.Gh, c.Gw, c.Kind);

    [TestCaseSource(nameof(Cases))]
    public void ForwardMatchesReference(Case c)
    {
        var rng = new Random(TestUtil.Seed(c.ToString()));
        var img = TestUtil.Random(rng, (long)c.N * c.C * c.H * c.W);
        var p = Params(rng, c);
        var r = ReferenceOps.GlimpseForward(img, p, c.N, c.C, c.H, c.W, c.Gh, c.Gw);
        using var ti = _device.Upload(img, c.N, c.C, c.H, c.W);
        using var tp = _device.Upload(p, c.N, 6);
        using var to = _device.Allocate(c.N, c.C, c.Gh, c.Gw);
        _device.Fill(to, float.NaN);
        _device.Glimpse(ti, tp, to);
        TestUtil.AssertClose(_device.Download(to), r, 1e-5, "out");
    }

    [TestCaseSource(nameof(Cases))]
    public void BackwardMatchesReference(Case c)
    {
        var rng = new Random(TestUtil.Seed(c.ToString()) + 1);
        var img = TestUtil.Random(rng, (long)c.N * c.C * c.H * c.W);
        var p = Params(rng, c);
        var g = TestUtil.Random(rng, (long)c.N * c.C * c.Gh * c.Gw);
        var (ri, rp, _) = ReferenceOps.GlimpseBackward(img, p, g, c.N, c.C, c.H, c.W, c.Gh, c.Gw);
        using var ti = _device.Upload(img, c.N, c.C, c.H, c.W);
        using var tp = _device.Upload(p, c.N, 6);
        using var tg = _device.Upload(g, c.N, c.C, c.Gh, c.Gw);
        using var gi = _device.Allocate(c.N, c.C, c.H, c.W);
        using var gp = _device.Allocate(c.N, 6);
        _device.Fill(gi, float.NaN); _device.Fill(gp, float.NaN);
        _device.GlimpseBackward(ti, tp, tg, gi, gp);
        TestUtil.AssertClose(_device.Download(gi), ri, 1e-4, "grad_image");
        TestUtil.AssertClose(_device.Download(gp), rp, 1e-4, "grad_params");
    }

    /// <summary>The float kernels' grad_params against central differences of the float kernels' forward (loose bound: float FD).</summary>
    [TestCase(2, 2, 23, 19, 7, 6)]
    [TestCase(1, 3, 17, 25, 9, 4)]
    [TestCase(1, 2, 90, 80, 6, 5)]    // σ ≪ image: the CPU backward's banded products and partials
    public void BackwardMatchesFiniteDifferencesOfTheForward(int N, int C, int H, int W, int h, int w)
    {
        var c = new Case(N, C, H, W, h, w);
        var rng = new Random(H * 31 + W);
        var img = TestUtil.Random(rng, (long)N * C * H * W);
        var p = Params(rng, c);
        var g = TestUtil.Random(rng, (long)N * C * h * w);
        using var ti = _device.Upload(img, N, C, H, W);
        using var tg = _device.Upload(g, N, C, h, w);
        using var tp = _device.Upload(p, N, 6);
        var (gi, gp) = _device.GlimpseBackward(ti, tp, tg);
        float[] gradP, gradI;
        using (gi) using (gp) { gradP = _device.Download(gp); gradI = _device.Download(gi); }

        double Loss(float[] pp, float[] im)
        {
            using var a = _device.Upload(im, N, C, H, W);
            using var b = _device.Upload(pp, N, 6);
            using var o = _device.Glimpse(a, b, h, w);
            var of = _device.Download(o);
            double l = 0;
            for (int i = 0; i < of.Length; i++) l += (double)of[i] * g[i];
            return l;
        }
        var fd = new double[p.Length];
        for (int k = 0; k < p.Length; k++)
        {
            float eps = 1e-2f * Math.Max(1f, Math.Abs(p[k]) * 0.1f);
            var plus = (float[])p.Clone(); plus[k] += eps;
            var minus = (float[])p.Clone(); minus[k] -= eps;
            fd[k] = (Loss(plus, img) - Loss(minus, img)) / ((double)plus[k] - minus[k]);
        }
        TestUtil.AssertClose(gradP, fd, 2e-2, "grad_params vs float finite differences");

        // grad_image is exact for a linear map: check a few entries by differences too.
        var fdI = new double[6]; var gotI = new float[6];
        for (int t = 0; t < 6; t++)
        {
            int idx = rng.Next(img.Length);
            var plus = (float[])img.Clone(); plus[idx] += 0.5f;
            var minus = (float[])img.Clone(); minus[idx] -= 0.5f;
            fdI[t] = (Loss(p, plus) - Loss(p, minus)) / 1.0;
            gotI[t] = gradI[idx];
        }
        TestUtil.AssertClose(gotI, fdI, 1e-3, "grad_image vs float finite differences");
    }

    [Test]
    public void FarOutsideTheImageReadsZerosAndFiniteGradients()
    {
        var rng = new Random(8);
        using var ti = _device.Upload(TestUtil.Random(rng, 1L * 2 * 9 * 10), 1, 2, 9, 10);
        using var tp = _device.Upload(new float[] { -1000, 1.5f, 1, 2000, 2, 1 }, 1, 6);
        using var o = _device.Glimpse(ti, tp, 3, 4);
        Assert.That(_device.Download(o), Is.All.EqualTo(0f));
        using var tg = _device.Upload(TestUtil.Random(rng, 1L * 2 * 3 * 4), 1, 2, 3, 4);
        var (gi, gp) = _device.GlimpseBackward(ti, tp, tg);
        using (gi) using (gp)
        {
            Assert.That(_device.Download(gi), Is.All.EqualTo(0f));
            Assert.That(_device.Download(gp), Is.All.EqualTo(0f));
        }
    }

    /// <summary>The kernel backends' other tile choice (GPU tiles on a CPU OpenCL device, or the reverse), so both are tested here.</summary>
    [Test]
    public void OtherTileChoiceMatchesReference()
    {
        if (_device.Backend is not GpuAttention.Backends.Kernels.KernelBackend kb) { Assert.Ignore("no kernel tiles on the managed CPU backend"); return; }
        kb.GlimpseGpuTiles = !kb.IsGpu;
        try
        {
            BackwardMatchesReference(new Case(2, 3, 37, 29, 5, 11));
            ForwardMatchesReference(new Case(2, 2, 19, 45, 13, 3));
            ForwardMatchesReference(new Case(1, 2, 33, 35, 33, 35));
        }
        finally { kb.GlimpseGpuTiles = null; }
    }

    [Test]
    public void BackwardIsDeterministic()
    {
        var c = new Case(2, 9, 21, 22, 7, 8);
        var rng = new Random(77);
        using var ti = _device.Upload(TestUtil.Random(rng, 2L * 9 * 21 * 22), 2, 9, 21, 22);
        using var tp = _device.Upload(Params(rng, c), 2, 6);
        using var tg = _device.Upload(TestUtil.Random(rng, 2L * 9 * 7 * 8), 2, 9, 7, 8);
        var (a1, b1) = _device.GlimpseBackward(ti, tp, tg);
        var (a2, b2) = _device.GlimpseBackward(ti, tp, tg);
        using (a1) using (b1) using (a2) using (b2)
        {
            Assert.That(_device.Download(a2), Is.EqualTo(_device.Download(a1)));
            Assert.That(_device.Download(b2), Is.EqualTo(_device.Download(b1)));
        }
    }

    [Test]
    public void DrawReadMatchesReference()
    {
        int N = 3, C = 2, H = 27, W = 23, h = 6, w = 9;
        var rng = new Random(5);
        var img = TestUtil.Random(rng, (long)N * C * H * W);
        var draw = DrawInputs(rng, N);
        var r = ReferenceOps.DrawRead(img, draw, N, C, H, W, h, w);
        using var ti = _device.Upload(img, N, C, H, W);
        using var td = _device.Upload(draw, N, 5);
        using var to = _device.Allocate(N, C, h, w);
        _device.Fill(to, float.NaN);
        _device.DrawRead(ti, td, to);
        TestUtil.AssertClose(_device.Download(to), r, 1e-5, "draw read");

        var g = TestUtil.Random(rng, (long)N * C * h * w);
        var (ri, rd) = ReferenceOps.DrawReadBackward(img, draw, g, N, C, H, W, h, w);
        using var tg = _device.Upload(g, N, C, h, w);
        using var gi = _device.Allocate(N, C, H, W);
        using var gd = _device.Allocate(N, 5);
        _device.Fill(gi, float.NaN); _device.Fill(gd, float.NaN);
        _device.DrawReadBackward(ti, td, tg, gi, gd);
        TestUtil.AssertClose(_device.Download(gi), ri, 1e-4, "grad_image");
        TestUtil.AssertClose(_device.Download(gd), rd, 1e-4, "grad_draw");

        using var tpar = _device.Allocate(N, 6);
        using var tgam = _device.Allocate(N);
        _device.DrawParams(td, H, W, h, w, tpar, tgam);
        var (rp, rgam) = ReferenceOps.DrawParams(draw, N, H, W, h, w);
        TestUtil.AssertClose(_device.Download(tpar), rp, 1e-6, "params");
        TestUtil.AssertClose(_device.Download(tgam), rgam, 1e-6, "gamma");
    }

    internal static float[] DrawInputs(Random rng, int N) => ReferenceInputs.DrawInputs(rng, N);

    [Test]
    public void ShapeErrorsNameTheTensor()
    {
        using var img = _device.Allocate(2, 3, 8, 9);
        using var p = _device.Allocate(2, 6);
        using var p5 = _device.Allocate(2, 5);
        using var o = _device.Allocate(2, 3, 4, 4);
        using var oBad = _device.Allocate(2, 2, 4, 4);
        using var img3 = _device.Allocate(3, 8, 9);
        Assert.That(Assert.Throws<TensorShapeException>(() => _device.Glimpse(img, p5, o))!.TensorName, Is.EqualTo("params"));
        Assert.That(Assert.Throws<TensorShapeException>(() => _device.Glimpse(img3, p, o))!.TensorName, Is.EqualTo("image"));
        var e = Assert.Throws<TensorShapeException>(() => _device.Glimpse(img, p, oBad))!;
        Assert.That(e.TensorName, Is.EqualTo("out"));
        Assert.That(e.Message, Does.Contain("[2, 3, 4, 4]").And.Contain("[2, 2, 4, 4]"));
        using var gi = _device.Allocate(2, 3, 8, 8);
        using var gp = _device.Allocate(2, 6);
        Assert.That(Assert.Throws<TensorShapeException>(() => _device.GlimpseBackward(img, p, o, gi, gp))!.TensorName, Is.EqualTo("grad_image"));
        using var gi2 = _device.Allocate(2, 3, 8, 9);
        Assert.Throws<ArgumentException>(() => _device.GlimpseBackward(img, p, o, gi2, p));
        using var other = Device.Open("cpu");
        using var foreign = other.Allocate(2, 6);
        Assert.Throws<ArgumentException>(() => _device.Glimpse(img, foreign, o));
    }
}

/// <summary>The double reference itself against central differences in double (tight bounds).</summary>
public class GlimpseReferenceTests
{
    private static double Rel(double[] a, double[] r)
    {
        double num = 0, den = 0;
        for (int i = 0; i < a.Length; i++) { num += (a[i] - r[i]) * (a[i] - r[i]); den += r[i] * r[i]; }
        return Math.Sqrt(num / Math.Max(den, 1e-300));
    }

    [TestCase(Kind.Typical)]
    [TestCase(Kind.TinySigma)]
    [TestCase(Kind.HugeSigma)]
    [TestCase(Kind.Outside)]
    [TestCase(Kind.NegativeStride)]
    public void GradParamsMatchDoubleFiniteDifferences(Kind kind)
    {
        var c = new GlimpseTests.Case(2, 2, 13, 11, 5, 4, kind);
        var rng = new Random((int)kind + 100);
        var img = TestUtil.Random(rng, 2 * 2 * 13 * 11);
        var pf = GlimpseTests.Params(rng, c);
        var p = Array.ConvertAll(pf, x => (double)x);
        var g = TestUtil.Random(rng, 2 * 2 * 5 * 4);
        var (gi, gp, _) = ReferenceOps.GlimpseBackward(img, p, g, 2, 2, 13, 11, 5, 4);
        double Loss(double[] pp, float[] im)
        {
            var o = ReferenceOps.GlimpseForward(im, pp, 2, 2, 13, 11, 5, 4);
            double l = 0;
            for (int i = 0; i < o.Length; i++) l += o[i] * g[i];
            return l;
        }
        var fd = new double[12];
        for (int k = 0; k < 12; k++)
        {
            double eps = 1e-5 * Math.Max(1, Math.Abs(p[k]));
            var a = (double[])p.Clone(); a[k] += eps;
            var b = (double[])p.Clone(); b[k] -= eps;
            fd[k] = (Loss(a, img) - Loss(b, img)) / (2 * eps);
        }
        Assert.That(Rel(gp, fd), Is.LessThan(1e-6), $"grad_params {string.Join(", ", gp)} vs fd {string.Join(", ", fd)}");
        var fdi = new double[5]; var got = new double[5];
        for (int t = 0; t < 5; t++)
        {
            int idx = rng.Next(img.Length);
            var a = (float[])img.Clone(); a[idx] += 0.25f;
            var b = (float[])img.Clone(); b[idx] -= 0.25f;
            fdi[t] = (Loss(p, a) - Loss(p, b)) / ((double)a[idx] - b[idx]);
            got[t] = gi[idx];
        }
        Assert.That(Rel(got, fdi), Is.LessThan(1e-9), "grad_image");
    }

    [Test]
    public void DrawGradientsMatchDoubleFiniteDifferences()
    {
        int N = 2, C = 2, H = 14, W = 12, h = 5, w = 4;
        var rng = new Random(9);
        var img = TestUtil.Random(rng, (long)N * C * H * W);
        var draw = GlimpseTests.DrawInputs(rng, N);
        var g = TestUtil.Random(rng, (long)N * C * h * w);
        var (_, gd) = ReferenceOps.DrawReadBackward(img, draw, g, N, C, H, W, h, w);
        // draw is float: difference in float steps large enough to be exact in float, evaluated in double.
        var fd = new double[draw.Length];
        for (int k = 0; k < draw.Length; k++)
        {
            var a = (float[])draw.Clone(); a[k] += 1e-3f;
            var b = (float[])draw.Clone(); b[k] -= 1e-3f;
            double la = 0, lb = 0;
            var oa = ReferenceOps.DrawRead(img, a, N, C, H, W, h, w);
            var ob = ReferenceOps.DrawRead(img, b, N, C, H, W, h, w);
            for (int i = 0; i < oa.Length; i++) { la += oa[i] * g[i]; lb += ob[i] * g[i]; }
            fd[k] = (la - lb) / ((double)a[k] - b[k]);
        }
        Assert.That(Rel(gd, fd), Is.LessThan(1e-5), $"grad_draw {string.Join(", ", gd)} vs fd {string.Join(", ", fd)}");
    }

    [Test]
    public void FilterbankColumnsSumToOneAndMatchTheContractFormula()
    {
        var a = ReferenceOps.GlimpseFilterbank(10, 3, 2.5, 1.5, 2);
        for (int r = 0; r < 3; r++)
        {
            double sum = 0;
            for (int c = 0; c < 10; c++) sum += a[c * 3 + r];
            Assert.That(sum, Is.EqualTo(1).Within(1e-7));
        }
        // column 1: mu = 4.5; pixels 4 and 5 equally weighted
        Assert.That(a[4 * 3 + 1], Is.EqualTo(a[5 * 3 + 1]).Within(1e-15));
        double e = Math.Exp(-0.5 * Math.Pow((0 - 2.5) / 1.5, 2));
        double z = 0;
        for (int c = 0; c < 10; c++) z += Math.Exp(-0.5 * Math.Pow((c - 2.5) / 1.5, 2));
        Assert.That(a[0], Is.EqualTo(e / (z + 1e-8)).Within(1e-15));
    }
}
