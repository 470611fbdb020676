using GpuAttention.Backends;
using GpuAttention.Backends.Ilgpu;
using GpuAttention.Reference;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using NUnit.Framework;
using Kind = GpuAttention.Reference.GlimpseParamKind;

namespace GpuAttention.Tests;

/// <summary>
/// The ILGPU glimpse and spatial-transformer kernels (kernels/ilgpu/Glimpse.cs, Spatial.cs) run through their launchers
/// (<see cref="IlgpuGlimpse"/>, <see cref="IlgpuSpatial"/>) directly on ILGPU's CPU accelerator (a simulator with NVIDIA-like
/// 32-wide warps: shapes are small and odd) against the double reference: outputs are poisoned with NaN first, forward relative
/// error ≤ 1e-5, backward ≤ 1e-4, finite differences of the float forward for every backward, bit-for-bit repeatability of the
/// deterministic backward; and every shipped kernel configuration compiles to PTX for sm_80 and sm_90.
/// </summary>
[NonParallelizable]
public class IlgpuVisualKernelTests
{
    private Context _ctx = null!;
    private Accelerator _acc = null!;
    private IlgpuGlimpse _glimpse = null!;
    private IlgpuSpatial _spatial = null!;
    private readonly List<MemoryBuffer1D<float, Stride1D.Dense>> _buffers = [];

    private AcceleratorStream Stream => _acc.DefaultStream;

    [OneTimeSetUp]
    public void Open()
    {
        _ctx = Context.Create(b => b.CPU(CPUDeviceKind.Nvidia).Math(MathMode.Fast32BitOnly).EnableAlgorithms());
        _acc = _ctx.CreateCPUAccelerator(0);
        _glimpse = new IlgpuGlimpse(_acc);
        _spatial = new IlgpuSpatial(_acc);
    }

    [OneTimeTearDown]
    public void Close()
    {
        _glimpse?.Dispose();
        _spatial?.Dispose();
        _acc?.Dispose();
        _ctx?.Dispose();
    }

    [TearDown]
    public void FreeBuffers()
    {
        foreach (var b in _buffers) b.Dispose();
        _buffers.Clear();
        _spatial.ScatterGroups = 16;
    }

    private ArrayView<float> Up(float[] data)
    {
        var b = _acc.Allocate1D(data.Length == 0 ? new float[1] : data);
        _buffers.Add(b);
        return ((ArrayView<float>)b.View).SubView(0, data.Length);
    }

    /// <summary>A device buffer of <paramref name="n"/> floats, all NaN (so a kernel that leaves an element unwritten shows).</summary>
    private ArrayView<float> Poisoned(long n) => Up(Enumerable.Repeat(float.NaN, (int)n).ToArray());

    private float[] Down(ArrayView<float> v)
    {
        Stream.Synchronize();
        var a = new float[v.Length];
        if (v.Length > 0) v.CopyToCPU(a);
        return a;
    }

    private static int[] Bits(float[] a) => a.Select(BitConverter.SingleToInt32Bits).ToArray();

    // ======================================================================== glimpse

    public static IEnumerable<GlimpseTests.Case> GlimpseCases()
    {
        yield return new(1, 1, 2, 1, 1, 1);                   // a 1-pixel axis
        yield return new(2, 3, 37, 29, 5, 11);               // y-first
        yield return new(2, 2, 19, 45, 13, 3);               // x-first
        yield return new(1, 2, 33, 35, 33, 35);              // glimpse as large as the image: tails off every 32-tile
        yield return new(3, 1, 21, 17, 7, 9, Kind.TinySigma);
        yield return new(2, 2, 23, 31, 6, 5, Kind.HugeSigma);
        yield return new(2, 3, 25, 27, 8, 7, Kind.Outside);   // centres outside the image
        yield return new(1, 2, 30, 26, 9, 10, Kind.NegativeStride);
        yield return new(1, 37, 12, 13, 3, 4);               // many channels: the backward's channel sum in K
    }

    [Test]
    public void GlimpseCasesCoverBothMultiplicationOrders()
    {
        var shapes = GlimpseCases().Select(c => new GlimpseShape(c.N, c.C, c.H, c.W, c.Gh, c.Gw)).ToList();
        Assert.That(shapes.Any(s => s.XFirst) && shapes.Any(s => !s.XFirst), "forward orders");
        Assert.That(shapes.Any(s => s.BackwardXFirst) && shapes.Any(s => !s.BackwardXFirst), "backward orders");
    }

    private static GlimpseShape ShapeOf(GlimpseTests.Case c) => new(c.N, c.C, c.H, c.W, c.Gh, c.Gw);

    [TestCaseSource(nameof(GlimpseCases))]
    public void GlimpseForwardMatchesReference(GlimpseTests.Case c)
    {
        var rng = new Random(TestUtil.Seed("ilgpu " + c));
        var img = TestUtil.Random(rng, (long)c.N * c.C * c.H * c.W);
        var p = GlimpseTests.Params(rng, c);
        var o = Poisoned((long)c.N * c.C * c.Gh * c.Gw);
        _glimpse.GlimpseForward(Stream, ShapeOf(c), Up(img), Up(p), ArrayView<float>.Empty, o);
        TestUtil.AssertClose(Down(o), ReferenceOps.GlimpseForward(img, p, c.N, c.C, c.H, c.W, c.Gh, c.Gw), 1e-5, "out");
    }

    [TestCaseSource(nameof(GlimpseCases))]
    public void GlimpseBackwardMatchesReference(GlimpseTests.Case c)
    {
        var rng = new Random(TestUtil.Seed("ilgpu " + c) + 1);
        var img = TestUtil.Random(rng, (long)c.N * c.C * c.H * c.W);
        var p = GlimpseTests.Params(rng, c);
        var g = TestUtil.Random(rng, (long)c.N * c.C * c.Gh * c.Gw);
        var (ri, rp, _) = ReferenceOps.GlimpseBackward(img, p, g, c.N, c.C, c.H, c.W, c.Gh, c.Gw);
        var gi = Poisoned((long)c.N * c.C * c.H * c.W);
        var gp = Poisoned(c.N * 6);
        _glimpse.GlimpseBackward(Stream, ShapeOf(c), Up(img), Up(p), ArrayView<float>.Empty, Up(g), gi, gp, ArrayView<float>.Empty);
        TestUtil.AssertClose(Down(gi), ri, 1e-4, "grad_image");
        TestUtil.AssertClose(Down(gp), rp, 1e-4, "grad_params");
    }

    /// <summary>DRAW's read through the same kernels: DrawParams, the γ-scaled forward and backward (with dL/d log γ) and the
    /// mapping's backward, in both multiplication orders.</summary>
    [TestCase(3, 2, 27, 23, 6, 9)]
    [TestCase(2, 3, 15, 29, 11, 3)]
    public void DrawReadMatchesReference(int N, int C, int H, int W, int h, int w)
    {
        var s = new GlimpseShape(N, C, H, W, h, w);
        var rng = new Random(5 + H);
        var img = TestUtil.Random(rng, (long)N * C * H * W);
        var draw = GlimpseTests.DrawInputs(rng, N);
        var vImg = Up(img); var vDraw = Up(draw);
        var prm = Poisoned(N * 6); var gamma = Poisoned(N);
        _glimpse.DrawParams(Stream, s, vDraw, prm, gamma);
        var (rp, rg) = ReferenceOps.DrawParams(draw, N, H, W, h, w);
        TestUtil.AssertClose(Down(prm), rp, 1e-6, "params");
        TestUtil.AssertClose(Down(gamma), rg, 1e-6, "gamma");

        var o = Poisoned((long)N * C * h * w);
        _glimpse.GlimpseForward(Stream, s, vImg, prm, gamma, o);
        TestUtil.AssertClose(Down(o), ReferenceOps.DrawRead(img, draw, N, C, H, W, h, w), 1e-5, "draw read");

        var g = TestUtil.Random(rng, (long)N * C * h * w);
        var (ri, rd) = ReferenceOps.DrawReadBackward(img, draw, g, N, C, H, W, h, w);
        var gi = Poisoned((long)N * C * H * W); var gp = Poisoned(N * 6); var glg = Poisoned(N); var gd = Poisoned(N * 5);
        _glimpse.GlimpseBackward(Stream, s, vImg, prm, gamma, Up(g), gi, gp, glg);
        _glimpse.DrawParamsBackward(Stream, s, vDraw, gp, glg, gd);
        TestUtil.AssertClose(Down(gi), ri, 1e-4, "grad_image");
        TestUtil.AssertClose(Down(gd), rd, 1e-4, "grad_draw");
    }

    private double GlimpseLoss(GlimpseShape s, float[] img, float[] p, float[] g)
    {
        var o = Poisoned((long)s.N * s.C * s.Gh * s.Gw);
        _glimpse.GlimpseForward(Stream, s, Up(img), Up(p), ArrayView<float>.Empty, o);
        var of = Down(o);
        double l = 0;
        for (int i = 0; i < of.Length; i++) l += (double)of[i] * g[i];
        return l;
    }

    /// <summary>grad_params and grad_image against central differences of the float kernels' own forward.</summary>
    [TestCase(2, 2, 23, 19, 7, 6, Kind.Typical)]
    [TestCase(1, 3, 17, 25, 9, 4, Kind.Typical)]
    [TestCase(2, 2, 13, 11, 5, 4, Kind.NegativeStride)]
    public void GlimpseBackwardMatchesFiniteDifferences(int N, int C, int H, int W, int h, int w, Kind kind)
    {
        var c = new GlimpseTests.Case(N, C, H, W, h, w, kind);
        var s = ShapeOf(c);
        var rng = new Random(H * 31 + W);
        var img = TestUtil.Random(rng, (long)N * C * H * W);
        var p = GlimpseTests.Params(rng, c);
        var g = TestUtil.Random(rng, (long)N * C * h * w);
        var gi = Poisoned((long)N * C * H * W); var gp = Poisoned(N * 6);
        _glimpse.GlimpseBackward(Stream, s, Up(img), Up(p), ArrayView<float>.Empty, Up(g), gi, gp, ArrayView<float>.Empty);
        var gradP = Down(gp); var gradI = Down(gi);
        var fd = new double[p.Length];
        for (int k = 0; k < p.Length; k++)
        {
            float eps = 1e-2f * Math.Max(1f, Math.Abs(p[k]) * 0.1f);
            var plus = (float[])p.Clone(); plus[k] += eps;
            var minus = (float[])p.Clone(); minus[k] -= eps;
            fd[k] = (GlimpseLoss(s, img, plus, g) - GlimpseLoss(s, img, minus, g)) / ((double)plus[k] - minus[k]);
        }
        TestUtil.AssertClose(gradP, fd, 2e-2, "grad_params vs float finite differences");
        var fdI = new double[5]; var gotI = new float[5];
        for (int t = 0; t < 5; t++)
        {
            int idx = rng.Next(img.Length);
            var plus = (float[])img.Clone(); plus[idx] += 0.5f;
            var minus = (float[])img.Clone(); minus[idx] -= 0.5f;
            fdI[t] = GlimpseLoss(s, plus, p, g) - GlimpseLoss(s, minus, p, g);
            gotI[t] = gradI[idx];
        }
        TestUtil.AssertClose(gotI, fdI, 1e-3, "grad_image vs float finite differences");
    }

    [Test]
    public void GlimpseFarOutsideTheImageReadsZerosAndFiniteGradients()
    {
        var s = new GlimpseShape(1, 2, 9, 10, 3, 4);
        var rng = new Random(8);
        var img = Up(TestUtil.Random(rng, 2 * 9 * 10));
        var p = Up([-1000, 1.5f, 1, 2000, 2, 1]);
        var o = Poisoned(2 * 3 * 4);
        _glimpse.GlimpseForward(Stream, s, img, p, ArrayView<float>.Empty, o);
        Assert.That(Down(o), Is.All.EqualTo(0f));
        var gi = Poisoned(2 * 9 * 10); var gp = Poisoned(6);
        _glimpse.GlimpseBackward(Stream, s, img, p, ArrayView<float>.Empty, Up(TestUtil.Random(rng, 2 * 3 * 4)), gi, gp, ArrayView<float>.Empty);
        Assert.That(Down(gi), Is.All.EqualTo(0f));
        Assert.That(Down(gp), Is.All.EqualTo(0f));
    }

    [Test]
    public void GlimpseBackwardIsBitForBitRepeatable()
    {
        var c = new GlimpseTests.Case(2, 5, 21, 22, 7, 8);
        var s = ShapeOf(c);
        var rng = new Random(77);
        var img = Up(TestUtil.Random(rng, 2L * 5 * 21 * 22)); var p = Up(GlimpseTests.Params(rng, c)); var g = Up(TestUtil.Random(rng, 2L * 5 * 7 * 8));
        int[]? i0 = null, p0 = null;
        for (int run = 0; run < 3; run++)
        {
            var gi = Poisoned(2L * 5 * 21 * 22); var gp = Poisoned(12);
            _glimpse.GlimpseBackward(Stream, s, img, p, ArrayView<float>.Empty, g, gi, gp, ArrayView<float>.Empty);
            var a = Bits(Down(gi)); var b = Bits(Down(gp));
            if (i0 is null) { i0 = a; p0 = b; continue; }
            Assert.That(a, Is.EqualTo(i0), "grad_image bits");
            Assert.That(b, Is.EqualTo(p0), "grad_params bits");
        }
    }

    /// <summary>Empty glimpse axes: the forward writes zeros (or nothing when the output is empty), the backward zero gradients.</summary>
    [Test]
    public void GlimpseEmptyImageAxisGivesZeros()
    {
        var s = new GlimpseShape(2, 2, 0, 5, 3, 4);
        var o = Poisoned(2 * 2 * 3 * 4);
        _glimpse.GlimpseForward(Stream, s, Up([]), Up(new float[12]), ArrayView<float>.Empty, o);
        Assert.That(Down(o), Is.All.EqualTo(0f));
        var gp = Poisoned(12);
        _glimpse.GlimpseBackward(Stream, s, Up([]), Up(new float[12]), ArrayView<float>.Empty, Up(new float[48]), Up([]), gp, ArrayView<float>.Empty);
        Assert.That(Down(gp), Is.All.EqualTo(0f));
    }

    // ======================================================================== spatial

    public static IEnumerable<SpatialTests.Shape> SpatialShapes()
    {
        yield return new(2, 3, 7, 9, 5, 11);
        yield return new(3, 1, 1, 1, 4, 3);       // 1-pixel image
        yield return new(1, 2, 1, 8, 6, 5);       // one row
        yield return new(1, 70, 5, 6, 3, 7);      // channels over two scatter groups (64 + 6)
        yield return new(2, 5, 13, 3, 1, 1);      // one output point
    }

    public static IEnumerable<TestCaseData> SpatialCases() =>
        from s in SpatialShapes() from o in SpatialTests.AllOptions() select new TestCaseData(s, o).SetArgDisplayNames(s.ToString(), o.ToString());

    private static GridSampleShape ShapeOf(SpatialTests.Shape s, GridSampleOptions o) =>
        new(s.N, s.C, s.H, s.W, s.Hout, s.Wout, o.Mode, o.Padding, o.AlignCorners);

    /// <summary>
    /// A grid reaching outside [−1, 1] where every fourth coordinate is put exactly on a pixel centre or edge (pixel coordinate
    /// k/2) when the axis size allows that exactly, in float (the kernel) and in double (the reference): otherwise a point on an
    /// edge is a different point for the two and nearest rounding or the bilinear grid gradient legitimately differ.
    /// </summary>
    private static float[] EdgyGrid(Random rng, SpatialTests.Shape s, bool align)
    {
        var g = TestUtil.Random(rng, (long)s.N * s.Hout * s.Wout * 2, 1.6f);
        for (int i = 0; i < g.Length; i += 4)
        {
            int size = i % 2 == 0 ? s.W : s.H;
            float px = rng.Next(-2, 2 * size + 2) * 0.5f;
            float x = align ? (size > 1 ? px * 2f / (size - 1) - 1f : 0f) : (2f * px + 1f) / size - 1f;
            double ud = align ? ((double)x + 1) / 2 * (size - 1) : (((double)x + 1) * size - 1) / 2;
            float uf = align ? (x + 1f) * 0.5f * (size - 1) : ((x + 1f) * size - 1f) * 0.5f;
            if (ud == uf && (size == 1 && align || ud == px)) g[i] = x;
        }
        return g;
    }

    [Test]
    public void EdgyGridsPutPointsOnPixelEdges()
    {
        int exact = 0;
        foreach (var s in SpatialShapes())
            foreach (bool align in new[] { false, true })
            {
                var g = EdgyGrid(new Random(1), s, align);
                for (int i = 0; i < g.Length; i += 2)
                {
                    double u = align ? ((double)g[i] + 1) / 2 * (s.W - 1) : (((double)g[i] + 1) * s.W - 1) / 2;
                    if (s.W > 1 && u * 2 == Math.Round(u * 2)) exact++;
                }
            }
        Assert.That(exact, Is.GreaterThan(20), "points exactly on pixel centres or edges");
    }

    [TestCaseSource(nameof(SpatialCases))]
    public void GridSampleMatchesReference(SpatialTests.Shape s, GridSampleOptions o)
    {
        var rng = new Random(TestUtil.Seed($"ilgpu {s} {o}"));
        var input = TestUtil.Random(rng, (long)s.N * s.C * s.H * s.W);
        var grid = EdgyGrid(rng, s, o.AlignCorners);
        var gout = TestUtil.Random(rng, (long)s.N * s.C * s.Hout * s.Wout);
        var sh = ShapeOf(s, o);
        var vi = Up(input); var vg = Up(grid); var vgo = Up(gout);
        var vo = Poisoned((long)s.N * s.C * s.Hout * s.Wout);
        _spatial.GridSample(Stream, sh, vi, vg, ArrayView<float>.Empty, vo);
        var di = ReferenceOps.ToDouble(input); var dg = ReferenceOps.ToDouble(grid); var dgo = ReferenceOps.ToDouble(gout);
        TestUtil.AssertClose(Down(vo), ReferenceOps.GridSample(di, dg, s.N, s.C, s.H, s.W, s.Hout, s.Wout, o), 1e-5, "out");

        var (rgi, rgg) = ReferenceOps.GridSampleBackward(di, dg, dgo, s.N, s.C, s.H, s.W, s.Hout, s.Wout, o);
        foreach (bool atomic in new[] { false, true })
        {
            var gi = Poisoned((long)s.N * s.C * s.H * s.W); var gg = Poisoned((long)s.N * s.Hout * s.Wout * 2);
            _spatial.GridSampleBackward(Stream, sh, vi, vg, ArrayView<float>.Empty, vgo, gi, gg, ArrayView<float>.Empty, atomic);
            TestUtil.AssertClose(Down(gi), rgi, 1e-4, $"grad_input (atomic {atomic})");
            var got = Down(gg);
            if (o.Mode == GridSampleMode.Nearest) Assert.That(got, Is.All.EqualTo(0f), "nearest: grad_grid is zero");
            else TestUtil.AssertClose(got, rgg, 1e-4, $"grad_grid (atomic {atomic})");
        }
    }

    /// <summary>The fused transform-and-sample (theta in, grid never in memory) against affine_grid then grid_sample in double,
    /// grad_theta against affine_grid's backward of the reference grad_grid; deterministic and atomic scatter.</summary>
    [TestCaseSource(typeof(SpatialTests), nameof(SpatialTests.AllOptions))]
    public void FusedTransformMatchesReference(GridSampleOptions o)
    {
        var s = new SpatialTests.Shape(2, 3, 6, 7, 5, 4);
        var rng = new Random(TestUtil.Seed("ilgpu fused " + o));
        var input = TestUtil.Random(rng, s.N * s.C * s.H * s.W);
        var theta = TestUtil.Random(rng, s.N * 6, 1.2f);
        var gout = TestUtil.Random(rng, s.N * s.C * s.Hout * s.Wout);
        var sh = ShapeOf(s, o);
        var dt = ReferenceOps.ToDouble(theta);
        // the fused path computes the points in float: the reference samples at the float grid affine_grid gives
        var fgrid = ReferenceOps.AffineGrid(dt, s.N, s.Hout, s.Wout, o.AlignCorners).Select(x => (double)(float)x).ToArray();
        var vi = Up(input); var vt = Up(theta); var vgo = Up(gout);
        var vo = Poisoned(s.N * s.C * s.Hout * s.Wout);
        _spatial.GridSample(Stream, sh, vi, ArrayView<float>.Empty, vt, vo);
        var di = ReferenceOps.ToDouble(input);
        TestUtil.AssertClose(Down(vo), ReferenceOps.GridSample(di, fgrid, s.N, s.C, s.H, s.W, s.Hout, s.Wout, o), 1e-5, "out");
        var (rgi, rgg) = ReferenceOps.GridSampleBackward(di, fgrid, ReferenceOps.ToDouble(gout), s.N, s.C, s.H, s.W, s.Hout, s.Wout, o);
        var rgt = ReferenceOps.AffineGridBackward(rgg, s.N, s.Hout, s.Wout, o.AlignCorners);
        foreach (bool atomic in new[] { false, true })
        {
            var gi = Poisoned(s.N * s.C * s.H * s.W); var gt = Poisoned(s.N * 6);
            _spatial.GridSampleBackward(Stream, sh, vi, ArrayView<float>.Empty, vt, vgo, gi, ArrayView<float>.Empty, gt, atomic);
            TestUtil.AssertClose(Down(gi), rgi, 1e-4, $"grad_input (atomic {atomic})");
            var got = Down(gt);
            if (o.Mode == GridSampleMode.Nearest) Assert.That(got, Is.All.EqualTo(0f), "nearest: grad_theta is zero");
            else TestUtil.AssertClose(got, rgt, 1e-4, $"grad_theta (atomic {atomic})");
        }
    }

    [TestCase(3, 5, 7, false)]
    [TestCase(3, 5, 7, true)]
    [TestCase(2, 1, 1, false)]
    [TestCase(2, 1, 4, true)]
    [TestCase(1, 13, 21, false)]
    public void AffineGridMatchesReference(int N, int H, int W, bool align)
    {
        var rng = new Random(N * 1000 + H * 10 + W + (align ? 7 : 0));
        var theta = TestUtil.Random(rng, N * 6);
        var grid = Poisoned((long)N * H * W * 2);
        _spatial.AffineGrid(Stream, N, H, W, align, Up(theta), grid);
        TestUtil.AssertClose(Down(grid), ReferenceOps.AffineGrid(ReferenceOps.ToDouble(theta), N, H, W, align), 1e-5, "grid");
        var gg = TestUtil.Random(rng, (long)N * H * W * 2);
        var gt = Poisoned(N * 6);
        _spatial.AffineGridBackward(Stream, N, H, W, align, Up(gg), gt);
        TestUtil.AssertClose(Down(gt), ReferenceOps.AffineGridBackward(ReferenceOps.ToDouble(gg), N, H, W, align), 1e-4, "grad_theta");
    }

    private static double Dot(float[] a, float[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += (double)a[i] * b[i];
        return s;
    }

    /// <summary>grad_grid, grad_input and (fused) grad_theta against central differences of the float kernels' own forward,
    /// on points away from the kinks of bilinear sampling and of the padding.</summary>
    [TestCaseSource(typeof(SpatialTests), nameof(SpatialTests.BilinearOptions))]
    public void GridSampleBackwardMatchesFloatFiniteDifferences(GridSampleOptions o)
    {
        var s = new SpatialTests.Shape(1, 3, 5, 6, 2, 3);
        var sh = ShapeOf(s, o);
        var rng = new Random(TestUtil.Seed("ilgpu fd " + o));
        var input = TestUtil.Random(rng, s.N * s.C * s.H * s.W);
        var grid = SpatialTests.SafeGrid(rng, s, o, 0.05);
        var gout = TestUtil.Random(rng, s.N * s.C * s.Hout * s.Wout);
        var gi = Poisoned(input.Length); var gg = Poisoned(grid.Length);
        _spatial.GridSampleBackward(Stream, sh, Up(input), Up(grid), ArrayView<float>.Empty, Up(gout), gi, gg, ArrayView<float>.Empty);
        var gotG = Down(gg); var gotI = Down(gi);
        double L(float[] inp, float[] g, bool fused)
        {
            var vo = Poisoned(gout.Length);
            if (fused) _spatial.GridSample(Stream, sh, Up(inp), ArrayView<float>.Empty, Up(g), vo);
            else _spatial.GridSample(Stream, sh, Up(inp), Up(g), ArrayView<float>.Empty, vo);
            return Dot(Down(vo), gout);
        }
        var fd = new double[grid.Length];
        for (int i = 0; i < grid.Length; i++)
        {
            float h = 2e-3f, keep = grid[i];
            grid[i] = keep + h; double lp = L(input, grid, false);
            grid[i] = keep - h; double lm = L(input, grid, false);
            grid[i] = keep;
            fd[i] = (lp - lm) / (2.0 * h);
        }
        TestUtil.AssertClose(gotG, fd, 2e-2, "grad_grid vs float finite differences");
        // out is linear in input: a few entries by differences
        var fdI = new double[4]; var gI = new float[4];
        for (int t = 0; t < 4; t++)
        {
            int idx = rng.Next(input.Length);
            var plus = (float[])input.Clone(); plus[idx] += 0.5f;
            var minus = (float[])input.Clone(); minus[idx] -= 0.5f;
            fdI[t] = L(plus, grid, false) - L(minus, grid, false);
            gI[t] = gotI[idx];
        }
        TestUtil.AssertClose(gI, fdI, 1e-3, "grad_input vs float finite differences");

        // fused: grad_theta by differences of the fused forward (a small theta keeps the points inside one cell's smooth part)
        var theta = new float[] { 0.31f, 0.07f, 0.05f, -0.04f, 0.27f, -0.03f };
        var gt = Poisoned(6);
        _spatial.GridSampleBackward(Stream, sh, Up(input), ArrayView<float>.Empty, Up(theta), Up(gout), Poisoned(input.Length), ArrayView<float>.Empty, gt);
        var gotT = Down(gt);
        var fdT = new double[6];
        for (int i = 0; i < 6; i++)
        {
            float h = 1e-3f, keep = theta[i];
            theta[i] = keep + h; double lp = L(input, theta, true);
            theta[i] = keep - h; double lm = L(input, theta, true);
            theta[i] = keep;
            fdT[i] = (lp - lm) / (2.0 * h);
        }
        TestUtil.AssertClose(gotT, fdT, 2e-2, "grad_theta vs float finite differences");
    }

    /// <summary>affine_grid's backward against differences of its forward (linear: exact up to float rounding).</summary>
    [TestCase(false)]
    [TestCase(true)]
    public void AffineGridBackwardMatchesFiniteDifferences(bool align)
    {
        int N = 2, H = 4, W = 5;
        var rng = new Random(align ? 3 : 4);
        var theta = TestUtil.Random(rng, N * 6);
        var gg = TestUtil.Random(rng, N * H * W * 2);
        var gt = Poisoned(N * 6);
        _spatial.AffineGridBackward(Stream, N, H, W, align, Up(gg), gt);
        var got = Down(gt);
        var fd = new double[N * 6];
        for (int i = 0; i < fd.Length; i++)
        {
            var plus = (float[])theta.Clone(); plus[i] += 0.5f;
            var minus = (float[])theta.Clone(); minus[i] -= 0.5f;
            var a = Poisoned(gg.Length); var b = Poisoned(gg.Length);
            _spatial.AffineGrid(Stream, N, H, W, align, Up(plus), a);
            _spatial.AffineGrid(Stream, N, H, W, align, Up(minus), b);
            fd[i] = Dot(Down(a), gg) - Dot(Down(b), gg);
        }
        TestUtil.AssertClose(got, fd, 1e-5, "grad_theta vs finite differences");
    }

    /// <summary>The deterministic scatter repeats bit for bit, with one chunk and with several (private partial copies added in
    /// chunk order); a contracting grid makes many points hit the same pixels. Both agree with the reference.</summary>
    [TestCase(1)]
    [TestCase(512)]
    public void GridSampleBackwardIsBitForBitRepeatable(int scatterGroups)
    {
        _spatial.ScatterGroups = scatterGroups;
        var s = new SpatialTests.Shape(2, 5, 9, 11, 23, 21);
        var o = new GridSampleOptions(GridSampleMode.Bilinear, GridSamplePadding.Reflection, false);
        var sh = ShapeOf(s, o);
        var (_, chunks, _) = _spatial.ScatterConfig(sh);
        Assert.That(chunks, scatterGroups == 1 ? Is.EqualTo(1) : Is.GreaterThan(1), "chunking");
        var rng = new Random(99);
        var input = TestUtil.Random(rng, s.N * s.C * s.H * s.W);
        var grid = TestUtil.Random(rng, s.N * s.Hout * s.Wout * 2, 0.3f);
        var gout = TestUtil.Random(rng, s.N * s.C * s.Hout * s.Wout);
        var (rgi, rgg) = ReferenceOps.GridSampleBackward(ReferenceOps.ToDouble(input), ReferenceOps.ToDouble(grid), ReferenceOps.ToDouble(gout),
            s.N, s.C, s.H, s.W, s.Hout, s.Wout, o);
        var vi = Up(input); var vg = Up(grid); var vgo = Up(gout);
        int[]? i0 = null, g0 = null;
        for (int run = 0; run < 3; run++)
        {
            var gi = Poisoned(input.Length); var gg = Poisoned(grid.Length);
            _spatial.GridSampleBackward(Stream, sh, vi, vg, ArrayView<float>.Empty, vgo, gi, gg, ArrayView<float>.Empty);
            var a = Down(gi); var b = Down(gg);
            if (i0 is null)
            {
                TestUtil.AssertClose(a, rgi, 1e-4, "grad_input");
                TestUtil.AssertClose(b, rgg, 1e-4, "grad_grid");
                i0 = Bits(a); g0 = Bits(b);
                continue;
            }
            Assert.That(Bits(a), Is.EqualTo(i0), "grad_input bits");
            Assert.That(Bits(b), Is.EqualTo(g0), "grad_grid bits");
        }
    }

    private static readonly float[] OddGrid = [float.NaN, 0f, 0.3f, float.NaN, float.NaN, float.NaN, float.PositiveInfinity, 0.2f, float.NegativeInfinity, 0.1f, 2.5f, 0.1f];

    /// <summary>Non-finite grid coordinates as PyTorch 1.13 (the values SpatialTests took from it), and the backward as the reference.</summary>
    [TestCaseSource(typeof(SpatialTests), nameof(SpatialTests.TorchNaNCases))]
    public void NonFiniteGridBehavesAsPyTorch(GridSampleOptions o, double[] torch)
    {
        var input = Enumerable.Range(1, 12).Select(i => (float)i).ToArray();
        var sh = new GridSampleShape(1, 1, 3, 4, 1, 6, o.Mode, o.Padding, o.AlignCorners);
        var vi = Up(input); var vg = Up(OddGrid);
        var vo = Poisoned(6);
        _spatial.GridSample(Stream, sh, vi, vg, ArrayView<float>.Empty, vo);
        TestUtil.AssertClose(Down(vo), torch, 1e-5, "out vs PyTorch 1.13");
        var gout = new float[] { 1, -2, 3, 0.5f, -1, 2 };
        var (rgi, rgg) = ReferenceOps.GridSampleBackward(ReferenceOps.ToDouble(input), ReferenceOps.ToDouble(OddGrid), ReferenceOps.ToDouble(gout), 1, 1, 3, 4, 1, 6, o);
        var gi = Poisoned(12); var gg = Poisoned(12);
        _spatial.GridSampleBackward(Stream, sh, vi, vg, ArrayView<float>.Empty, Up(gout), gi, gg, ArrayView<float>.Empty);
        TestUtil.AssertClose(Down(gi), rgi, 1e-5, "grad_input");
        if (o.Mode == GridSampleMode.Bilinear) TestUtil.AssertClose(Down(gg), rgg, 1e-5, "grad_grid");
    }

    /// <summary>NaN in one input pixel reaches exactly the outputs that read it (zero-weight corners included), as the reference.</summary>
    [TestCaseSource(typeof(SpatialTests), nameof(SpatialTests.AllOptions))]
    public void NaNInTheImageReachesTheReadersOnly(GridSampleOptions o)
    {
        var s = new SpatialTests.Shape(1, 2, 4, 5, 3, 4);
        var rng = new Random(TestUtil.Seed("ilgpu nan " + o));
        var input = TestUtil.Random(rng, s.C * s.H * s.W);
        input[7] = float.NaN;
        var grid = EdgyGrid(rng, s, o.AlignCorners);
        var sh = ShapeOf(s, o);
        var vo = Poisoned(s.C * s.Hout * s.Wout);
        _spatial.GridSample(Stream, sh, Up(input), Up(grid), ArrayView<float>.Empty, vo);
        TestUtil.AssertClose(Down(vo), ReferenceOps.GridSample(ReferenceOps.ToDouble(input), ReferenceOps.ToDouble(grid), 1, s.C, s.H, s.W, s.Hout, s.Wout, o), 1e-5, "out");
    }

    /// <summary>PyTorch's float32 source index for reflection padding (GridSampler.h: unnormalize, reflect_coordinates with
    /// fmod and a float floor, clip_coordinates), for checking huge coordinates where a double reference is another computation.</summary>
    private static float TorchReflectIndex(float coord, int size, bool align)
    {
        float x = align ? (coord + 1f) / 2 * (size - 1) : ((coord + 1f) * size - 1) / 2;
        float twiceLow = align ? 0 : -1, twiceHigh = align ? 2 * (size - 1) : 2 * size - 1;
        if (twiceLow == twiceHigh) x = 0;
        else
        {
            float min = twiceLow / 2, span = (twiceHigh - twiceLow) / 2;
            x = MathF.Abs(x - min);
            float extra = x % span;                      // .NET: the exact IEEE fmod
            float flips = MathF.Floor(x / span);           // in float: from 2^24 on every value is even
            x = flips % 2 == 0 ? extra + min : span - extra + min;
        }
        return float.IsNaN(x) ? 0 : Math.Min(size - 1, Math.Max(x, 0));
    }

    /// <summary>Huge finite coordinates with reflection padding land where PyTorch's float kernel puts them (exact fmod, float
    /// flip count): nearest exactly, bilinear within float rounding.</summary>
    [TestCase(false)]
    [TestCase(true)]
    public void HugeCoordinatesReflectAsPyTorchFloat(bool align)
    {
        float[] xs = [1e7f, -3.3e9f, 7.7e20f, -1e38f, 12345.678f, 4.2e6f, 8.5e6f, -2.5e7f, 0.3f, 3.4e38f];
        int H = 5, W = 7;
        var rng = new Random(align ? 1 : 2);
        var input = TestUtil.Random(rng, H * W);
        var grid = new float[xs.Length * 2];
        for (int i = 0; i < xs.Length; i++) { grid[2 * i] = xs[i]; grid[2 * i + 1] = xs[(i + 3) % xs.Length] * 0.7f; }
        var vi = Up(input); var vg = Up(grid);
        foreach (var mode in new[] { GridSampleMode.Nearest, GridSampleMode.Bilinear })
        {
            var vo = Poisoned(xs.Length);
            _spatial.GridSample(Stream, new GridSampleShape(1, 1, H, W, 1, xs.Length, mode, GridSamplePadding.Reflection, align), vi, vg, ArrayView<float>.Empty, vo);
            var got = Down(vo);
            var expect = new double[xs.Length];
            for (int i = 0; i < xs.Length; i++)
            {
                double ix = TorchReflectIndex(grid[2 * i], W, align), iy = TorchReflectIndex(grid[2 * i + 1], H, align);
                if (mode == GridSampleMode.Nearest) { expect[i] = input[(int)Math.Round(iy, MidpointRounding.ToEven) * W + (int)Math.Round(ix, MidpointRounding.ToEven)]; continue; }
                int x0 = (int)Math.Floor(ix), y0 = (int)Math.Floor(iy);
                double ax = ix - x0, ay = iy - y0, v = 0;
                for (int k = 0; k < 4; k++)
                {
                    int cx = x0 + (k & 1), cy = y0 + (k >> 1);
                    double wk = ((k & 1) == 1 ? ax : 1 - ax) * ((k >> 1) == 1 ? ay : 1 - ay);
                    if (cx < W && cy < H) v += wk * input[cy * W + cx];
                }
                expect[i] = v;
            }
            if (mode == GridSampleMode.Nearest) Assert.That(got.Select(v => (double)v), Is.EqualTo(expect), "nearest");
            else TestUtil.AssertClose(got, expect, 1e-5, "bilinear");
        }
    }

    [Test]
    public void NearestRoundsHalfToEvenAsPyTorch()
    {
        var xs = new float[] { -0.5f, 0f, 0.5f, -0.75f, -0.25f, 0.25f, 0.75f };
        double[] noAlign = [1, 3, 3, 1, 2, 3, 4], align = [2, 3, 3, 1, 2, 3, 4];
        var vi = Up([1, 2, 3, 4]);
        var vg = Up(xs.SelectMany(x => new[] { x, 0f }).ToArray());
        foreach (var (a, expect) in new[] { (false, noAlign), (true, align) })
        {
            var vo = Poisoned(xs.Length);
            _spatial.GridSample(Stream, new GridSampleShape(1, 1, 1, 4, 1, xs.Length, GridSampleMode.Nearest, GridSamplePadding.Zeros, a), vi, vg, ArrayView<float>.Empty, vo);
            Assert.That(Down(vo).Select(v => (double)v), Is.EqualTo(expect), $"align {a}");
        }
    }

    /// <summary>Empty output (no points): grad_input and grad_theta are zero.</summary>
    [Test]
    public void NoOutputPointsGiveZeroGradients()
    {
        var sh = new GridSampleShape(2, 3, 4, 5, 0, 3, GridSampleMode.Bilinear, GridSamplePadding.Zeros, false);
        var gi = Poisoned(2 * 3 * 4 * 5); var gt = Poisoned(12);
        _spatial.GridSampleBackward(Stream, sh, Up(new float[120]), ArrayView<float>.Empty, Up(new float[12]), Up([]), gi, ArrayView<float>.Empty, gt);
        Assert.That(Down(gi), Is.All.EqualTo(0f));
        Assert.That(Down(gt), Is.All.EqualTo(0f));
    }

    // ======================================================================== PTX

    public static IEnumerable<TestCaseData> ShippedConfigs() =>
        IlgpuGlimpse.ShippedConfigs().Concat(IlgpuSpatial.ShippedConfigs()).Select(c => new TestCaseData(c.Name).SetArgDisplayNames(c.Name));

    [Test]
    public void RegistryListsEveryVisualConfig()
    {
        var all = IlgpuKernelRegistry.All().Select(c => c.Name).ToHashSet();
        foreach (var c in IlgpuGlimpse.ShippedConfigs().Concat(IlgpuSpatial.ShippedConfigs()))
            Assert.That(all, Does.Contain(c.Name));
    }

    /// <summary>Every shipped glimpse / spatial kernel configuration compiles to PTX for sm_80 and sm_90 (no GPU needed), with
    /// no 64-bit floating-point instruction in it. With <c>VISUAL_PTX_DUMP=DIR</c> the PTX is written to DIR (NAME.80.ptx,
    /// NAME.90.ptx) for ptxas -v.</summary>
    [TestCaseSource(nameof(ShippedConfigs))]
    public void CompilesToPtx(string name)
    {
        var c = IlgpuGlimpse.ShippedConfigs().Concat(IlgpuSpatial.ShippedConfigs()).Single(x => x.Name == name);
        using var ctx = Context.Create(b => b.Math(MathMode.Fast32BitOnly).EnableAlgorithms());
        foreach (var arch in new[] { CudaArchitecture.SM_80, CudaArchitecture.SM_90 })
        {
            using var backend = new PTXBackend(ctx, new CudaCapabilityContext(arch), arch, CudaInstructionSet.ISA_78, null);
            var entry = c.Kind == IlgpuKernelKind.ExplicitlyGrouped
                ? EntryPointDescription.FromExplicitlyGroupedKernel(c.Method)
                : EntryPointDescription.FromImplicitlyGroupedKernel(c.Method);
            var ck = backend.Compile(entry, default);
            var ptx = ((PTXCompiledKernel)ck).PTXAssembly;
            Assert.That(ptx, Does.Contain(".entry"), $"{name} {arch}");
            if (Environment.GetEnvironmentVariable("VISUAL_PTX_DUMP") is { } dir) File.WriteAllText(Path.Combine(dir, $"{name.Replace('<', '_').Replace('>', '_').Replace(',', '_')}.{arch.Major}{arch.Minor}.ptx"), ptx);
            Assert.That(ptx, Does.Not.Contain(".f64"), $"{name} {arch}: float64 crept in");
        }
    }
}
