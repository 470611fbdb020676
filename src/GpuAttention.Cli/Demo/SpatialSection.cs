using GpuAttention.Cli.Imaging;
using GpuAttention.Reference;

namespace GpuAttention.Cli;

/// <summary>
/// Spatial-transformer crops and zooms (Jaderberg et al. 2015) of the image letterboxed to a square: three crops with
/// <c>theta = [[s·cos a, −s·sin a, tx], [s·sin a, s·cos a, ty]]</c> through the fused
/// <see cref="Device.SpatialTransform(Tensor, Tensor, int, int, GridSampleOptions)"/>, each beside the Gaussian glimpse of the
/// same (unrotated) box; affine_grid, grid_sample and the fused transform, forward and backward, timed and checked against
/// <see cref="ReferenceOps"/>; and Adam on (s, a, tx, ty), with grad_theta from
/// <see cref="Device.SpatialTransformBackward(Tensor, Tensor, Tensor, GridSampleOptions)"/> and the chain rule, learning the
/// theta of a target crop, its trajectory drawn on the image.
/// </summary>
internal sealed class SpatialSection : IDemoSection
{
    private const int Side = 320;
    private const int Out = 96;           // crop size of the gallery
    private const int LearnSide = 64;     // the learning loop samples a 64² copy: bilinear gradients then reach further
    private const int LearnOut = 32;
    private const int LearnSteps = 60;
    private static readonly GridSampleOptions Options = new(GridSampleMode.Bilinear, GridSamplePadding.Zeros, AlignCorners: false);
    private static readonly Color[] Colors = [Color.FromHex("#00e5ff"), Color.FromHex("#ff4081"), Color.FromHex("#76ff03")];

    /// <summary>(s, a, tx, ty): scale, rotation (radians), translation, in normalised coordinates.</summary>
    private readonly record struct Crop(string What, double S, double A, double Tx, double Ty)
    {
        public float[] Theta() => ThetaOf([S, A, Tx, Ty]);
    }

    private static readonly Color StartColor = Color.FromHex("#b388ff");

    public string Name => "spatial";

    private static float[] ThetaOf(ReadOnlySpan<double> p)
    {
        double s = p[0], c = Math.Cos(p[1]), sn = Math.Sin(p[1]);
        return [(float)(s * c), (float)(-s * sn), (float)p[2], (float)(s * sn), (float)(s * c), (float)p[3]];
    }

    public void Run(DemoContext ctx)
    {
        var dev = ctx.Device;
        var work = DemoDrawing.Letterbox(ctx.Input, Side);
        Crop[] crops =
        [
            new("zoom ×3.4 on (0.253, −0.077)", 0.29, 0, 0.2531, -0.0771),
            new("zoom ×2.9, rotated −20°", 0.35, -0.35, -0.28, -0.45),
            new("whole image rotated 30°", 1.0, Math.PI / 6, 0, 0),
        ];
        int N = crops.Length, C = 3, H = Side, W = Side;
        var images = new float[N * C * H * W];
        for (int i = 0; i < N; i++) work.Data.CopyTo(images, i * C * H * W);
        var theta = crops.SelectMany(c => c.Theta()).ToArray();
        var thetaD = ReferenceOps.ToDouble(theta);
        var imagesD = ReferenceOps.ToDouble(images);
        using var timg = dev.Upload(images, N, C, H, W);
        using var ttheta = dev.Upload(theta, N, 2, 3);
        long P = (long)N * Out * Out;
        const double B = 4;   // bytes per float
        string inShape = $"input [{N},{C},{H},{W}]";
        double Gbps(double bytes, double ms) => bytes / (ms * 1e6);

        // affine_grid forward / backward.
        ctx.ReportStatus($"spatial: affine_grid, grid_sample on {dev.Spec}");
        using var tgrid = dev.Allocate(N, Out, Out, 2);
        dev.Fill(tgrid, float.NaN);
        double msAg = ctx.TimeMedian(() => dev.AffineGrid(ttheta, tgrid, Options.AlignCorners));
        var grid = dev.Download(tgrid);
        var (eAg, rAg) = DemoContext.Compare(grid, ReferenceOps.AffineGrid(thetaD, N, Out, Out, Options.AlignCorners));
        ctx.Rows.Add(new DemoRow("affine_grid forward", $"theta [{N},2,3] → grid [{N},{Out},{Out},2]", msAg, null, eAg, rAg,
            !dev.SupportsOp(OpKind.AffineGrid), Gbps((N * 6 + P * 2) * B, msAg)));

        var ggrid = DemoDrawing.Noise((int)(P * 2), 11);
        using var tggrid = dev.Upload(ggrid, N, Out, Out, 2);
        using var tgtheta = dev.Allocate(N, 2, 3);
        dev.Fill(tgtheta, float.NaN);
        double msAgB = ctx.TimeMedian(() => dev.AffineGridBackward(tggrid, tgtheta, Options.AlignCorners));
        var (eAgB, rAgB) = DemoContext.Compare(dev.Download(tgtheta), ReferenceOps.AffineGridBackward(ReferenceOps.ToDouble(ggrid), N, Out, Out, Options.AlignCorners));
        ctx.Rows.Add(new DemoRow("affine_grid backward", $"grad_grid [{N},{Out},{Out},2] → grad_theta", msAgB, null, eAgB, rAgB,
            !dev.SupportsOp(OpKind.AffineGridBackward), Gbps((N * 6 + P * 2) * B, msAgB)));

        // grid_sample forward / backward on the device's grid (the reference reads the same grid).
        var gridD = ReferenceOps.ToDouble(grid);
        using var tout = dev.Allocate(N, C, Out, Out);
        dev.Fill(tout, float.NaN);
        double msGs = ctx.TimeMedian(() => dev.GridSample(timg, tgrid, tout, Options));
        var outGs = dev.Download(tout);
        var (eGs, rGs) = DemoContext.Compare(outGs, ReferenceOps.GridSample(imagesD, gridD, N, C, H, W, Out, Out, Options));
        double bytesGs = ((double)N * C * H * W + P * 2 + P * C) * B;
        ctx.Rows.Add(new DemoRow("grid_sample forward", $"{inShape} grid [{N},{Out},{Out},2] ({Options})", msGs, null, eGs, rGs,
            !dev.SupportsOp(OpKind.GridSample), Gbps(bytesGs, msGs)));

        var gout = DemoDrawing.Noise((int)(P * C), 13);
        var goutD = ReferenceOps.ToDouble(gout);
        using var tgout = dev.Upload(gout, N, C, Out, Out);
        using var tgin = dev.Allocate(N, C, H, W);
        using var tgg = dev.Allocate(N, Out, Out, 2);
        dev.Fill(tgin, float.NaN); dev.Fill(tgg, float.NaN);
        double msGsB = ctx.TimeMedian(() => dev.GridSampleBackward(timg, tgrid, tgout, tgin, tgg, Options));
        var (rgin, rgg) = ReferenceOps.GridSampleBackward(imagesD, gridD, goutD, N, C, H, W, Out, Out, Options);
        var (e1, r1) = DemoContext.Compare(dev.Download(tgin), rgin);
        var (e2, r2) = DemoContext.Compare(dev.Download(tgg), rgg);
        double bytesGsB = (2.0 * N * C * H * W + 2 * P * 2 + P * C) * B;
        ctx.Rows.Add(new DemoRow("grid_sample backward (input, grid)", $"{inShape} grid [{N},{Out},{Out},2]", msGsB, null, Math.Max(e1, e2), Math.Max(r1, r2),
            !dev.SupportsOp(OpKind.GridSampleBackward), Gbps(bytesGsB, msGsB)));

        // Fused spatial transform forward / backward, checked against the composition of the references.
        ctx.ReportStatus("spatial: fused spatial transform");
        using var tst = dev.Allocate(N, C, Out, Out);
        dev.Fill(tst, float.NaN);
        double msSt = ctx.TimeMedian(() => dev.SpatialTransform(timg, ttheta, tst, Options));
        var crops3 = dev.Download(tst);
        var refGrid = ReferenceOps.AffineGrid(thetaD, N, Out, Out, Options.AlignCorners);
        var (eSt, rSt) = DemoContext.Compare(crops3, ReferenceOps.GridSample(imagesD, refGrid, N, C, H, W, Out, Out, Options));
        ctx.Rows.Add(new DemoRow("spatial transform forward (fused)", $"{inShape} theta [{N},2,3] → [{N},{C},{Out},{Out}]", msSt, null, eSt, rSt,
            !dev.SupportsOp(OpKind.GridSample), Gbps(((double)N * C * H * W + N * 6 + P * C) * B, msSt)));

        using var tsgin = dev.Allocate(N, C, H, W);
        using var tsgt = dev.Allocate(N, 2, 3);
        dev.Fill(tsgin, float.NaN); dev.Fill(tsgt, float.NaN);
        double msStB = ctx.TimeMedian(() => dev.SpatialTransformBackward(timg, ttheta, tgout, tsgin, tsgt, Options));
        var (rsgin, rsgg) = ReferenceOps.GridSampleBackward(imagesD, refGrid, goutD, N, C, H, W, Out, Out, Options);
        var rsgt = ReferenceOps.AffineGridBackward(rsgg, N, Out, Out, Options.AlignCorners);
        var (e3, r3) = DemoContext.Compare(dev.Download(tsgin), rsgin);
        var (e4, r4) = DemoContext.Compare(dev.Download(tsgt), rsgt);
        ctx.Rows.Add(new DemoRow("spatial transform backward (input, theta)", $"{inShape} theta [{N},2,3]", msStB, null, Math.Max(e3, e4), Math.Max(r3, r4),
            !dev.SupportsOp(OpKind.GridSampleBackward), Gbps((2.0 * N * C * H * W + 2 * N * 6 + P * C) * B, msStB)));

        // The Gaussian glimpse of the same boxes (axis-aligned: a glimpse cannot rotate).
        var gprm = new float[N * 6];
        for (int i = 0; i < N; i++)
        {
            var c = crops[i];
            double d = c.S * Side / Out, sigma = Math.Max(0.5, d / 2);
            double cx = ((c.Tx + 1) * Side - 1) / 2, cy = ((c.Ty + 1) * Side - 1) / 2;
            float[] p = [(float)(cy - (Out - 1) / 2.0 * d), (float)sigma, (float)d, (float)(cx - (Out - 1) / 2.0 * d), (float)sigma, (float)d];
            p.CopyTo(gprm, i * 6);
        }
        using var tgprm = dev.Upload(gprm, N, 6);
        using var tglimpse = dev.Glimpse(timg, tgprm, Out, Out);
        var glimpses = dev.Download(tglimpse);

        const int display = 240;
        var rows = new List<Image>();
        for (int i = 0; i < N; i++)
        {
            var pic = work.Resize(display, display, ResizeMode.Box);
            DrawCropBox(pic, ReferenceOps.ToDouble(theta.AsSpan(i * 6, 6)), display, Colors[i], 3);
            var crop = DemoDrawing.ToImage(crops3.AsSpan(i * C * Out * Out, C * Out * Out), C, Out, Out).Resize(display, display, ResizeMode.Nearest);
            var gl = DemoDrawing.ToImage(glimpses.AsSpan(i * C * Out * Out, C * Out * Out), C, Out, Out).Resize(display, display, ResizeMode.Nearest);
            rows.Add(ImageOps.Concat([pic, DemoDrawing.Framed(crop, Colors[i]), DemoDrawing.Framed(gl, Color.White)], 8, DemoDrawing.Background));
        }
        ctx.Save("spatial_crops.png", DemoDrawing.Stack(rows, 0),
            $"one row per crop ({string.Join("; ", crops.Select(c => c.What))}): image with the sampled box | spatial-transformer crop {Out}×{Out} (coloured frame) | Gaussian glimpse of the same box, unrotated (white frame)");

        Learn(ctx, work);
        ctx.Notes.Add($"spatial: {Options}; GB/s counts every tensor of the op read or written once (grid_sample reads the whole input)");
    }

    /// <summary>Adam on (s, a, tx, ty) so that the crop matches a target crop made with known parameters, on a coarse copy of the image.</summary>
    private static void Learn(DemoContext ctx, Image work)
    {
        var dev = ctx.Device;
        ctx.ReportStatus("spatial: learning theta of a target crop");
        var coarse = work.Resize(LearnSide, LearnSide, ResizeMode.Box);
        double[] target = [0.35, -0.35, -0.38, -0.45];
        double[] p = [0.45, -0.05, -0.23, -0.30];
        double[] start = (double[])p.Clone();
        int C = 3, n = C * LearnOut * LearnOut;
        using var timg = dev.Upload(coarse.Data, 1, C, LearnSide, LearnSide);
        using var ttheta = dev.Upload(ThetaOf(target), 1, 2, 3);
        using var tout = dev.Allocate(1, C, LearnOut, LearnOut);
        dev.SpatialTransform(timg, ttheta, tout, Options);
        var tgt = dev.Download(tout);
        using var tgo = dev.Allocate(1, C, LearnOut, LearnOut);
        using var tgi = dev.Allocate(1, C, LearnSide, LearnSide);
        using var tgt6 = dev.Allocate(1, 2, 3);
        var adam = new Adam([0.02, 0.05, 0.02, 0.02]);
        var trajectory = new List<double[]>();
        var losses = new List<double>();
        var go = new float[n];
        var grad = new double[4];
        float[] first = [], last = [];
        int learnSteps = ctx.LearningSteps(LearnSteps);
        for (int step = 0; step <= learnSteps; step++)
        {
            trajectory.Add((double[])p.Clone());
            dev.Upload(ttheta, ThetaOf(p));
            dev.SpatialTransform(timg, ttheta, tout, Options);
            var o = dev.Download(tout);
            if (step == 0) first = o;
            last = o;
            double loss = 0;
            for (int i = 0; i < n; i++) { go[i] = o[i] - tgt[i]; loss += go[i] * go[i]; }
            losses.Add(loss / n);
            if (step == learnSteps) break;
            dev.Upload(tgo, go);                               // grad_out = out − target
            dev.SpatialTransformBackward(timg, ttheta, tgo, tgi, tgt6, Options);
            var g = dev.Download(tgt6);
            // chain rule from theta to (s, a, tx, ty)
            double s = p[0], c = Math.Cos(p[1]), sn = Math.Sin(p[1]);
            grad[0] = g[0] * c - g[1] * sn + g[3] * sn + g[4] * c;
            grad[1] = -g[0] * s * sn - g[1] * s * c + g[3] * s * c - g[4] * s * sn;
            grad[2] = g[2];
            grad[3] = g[5];
            adam.Step(p, grad);
        }

        const int display = 320;
        var pic = work.Resize(display, display, ResizeMode.Box);
        for (int i = 10; i < trajectory.Count; i += 10)
            DrawCropBox(pic, ReferenceOps.ToDouble(ThetaOf(trajectory[i])), display, DemoDrawing.StepColor(i, trajectory.Count), 1.5);
        DrawCropBox(pic, ReferenceOps.ToDouble(ThetaOf(trajectory[0])), display, StartColor, 2.5);
        DrawCropBox(pic, ReferenceOps.ToDouble(ThetaOf(target)), display, Color.FromHex("#ff1744"), 3);
        DrawCropBox(pic, ReferenceOps.ToDouble(ThetaOf(trajectory[^1])), display, Color.FromHex("#ffeb3b"), 1.5, outline: false);
        Image Tile(float[] d, Color col) => DemoDrawing.Framed(DemoDrawing.ToImage(d, C, LearnOut, LearnOut).Resize(display / 2 - 4, display / 2 - 4, ResizeMode.Nearest), col);
        var tiles = DemoDrawing.Stack([
            ImageOps.Concat([Tile(tgt, Color.FromHex("#ff1744")), Tile(first, StartColor)], 0, DemoDrawing.Background),
            ImageOps.Concat([Tile(last, Color.FromHex("#ffeb3b")), DemoDrawing.Plot(losses, display / 2 - 4, display / 2 - 4, Color.FromHex("#ffab40"))], 0, DemoDrawing.Background)], 0);
        ctx.Save("spatial_learning.png", ImageOps.Concat([pic, tiles], 8, DemoDrawing.Background),
            "gradient descent on theta: image with the target crop box (red) and the box every 10 steps (violet start, then dark blue → yellow) | " +
            $"target crop (red) and the start (violet) / the crop after learning (yellow) and the loss per step (sampled from a {LearnSide}² copy)");
        static string F(double[] v) => string.Join(", ", v.Select(x => x.ToString("0.000", System.Globalization.CultureInfo.InvariantCulture)));
        ctx.Notes.Add($"spatial learning: loss mean((out − target)²) {losses[0]:0.00000} → {losses[^1]:0.00000} in {learnSteps} Adam steps; " +
                      $"(s, a, tx, ty) start ({F(start)}) → ({F(trajectory[^1])}), target ({F(target)})" +
                      (losses[^1] < losses[0] ? "" : " — loss did NOT fall"));
    }

    /// <summary>Draws the quadrilateral that a crop samples: the output's corners (±1, ±1) mapped through theta, on a picture of side <paramref name="display"/>.</summary>
    private static void DrawCropBox(Image pic, ReadOnlySpan<double> t, int display, Color color, double thickness, bool outline = true)
    {
        var pts = new List<(double, double)>();
        foreach (var (bx, by) in (ReadOnlySpan<(double, double)>)[(-1, -1), (1, -1), (1, 1), (-1, 1)])
        {
            double x = t[0] * bx + t[1] * by + t[2], y = t[3] * bx + t[4] * by + t[5];
            pts.Add(((x + 1) / 2 * display, (y + 1) / 2 * display));
        }
        pic.DrawPolygon(pts, color, thickness, outline);
    }
}
