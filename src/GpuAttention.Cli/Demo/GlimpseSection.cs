using GpuAttention.Cli.Imaging;
using GpuAttention.Reference;

namespace GpuAttention.Cli;

/// <summary>
/// Separable Gaussian glimpses (DRAW) of the image, letterboxed to a <see cref="Side"/>² square: four glimpses at different
/// (centre, stride, σ) in one batched call, each drawn beside the image with the box it reads; forward and backward timed
/// and checked against <see cref="ReferenceOps.GlimpseForward(float[], float[], int, int, int, int, int, int, float[])"/> /
/// <see cref="ReferenceOps.GlimpseBackward(float[], float[], float[], int, int, int, int, int, int, float[])"/>; and a
/// gradient-descent loop (Adam on the six parameters, gradients from <see cref="Device.GlimpseBackward(Tensor, Tensor, Tensor)"/>)
/// that moves a glimpse from elsewhere onto a target glimpse, its trajectory drawn on the image.
/// The box of a glimpse per axis spans the filter centres u … u + (g−1)d, widened by σ on each side.
/// </summary>
internal sealed class GlimpseSection : IDemoSection
{
    /// <summary>Side of the square working image.</summary>
    public const int Side = 256;
    private const int G = 32;             // glimpse size of the gallery
    private const int LearnG = 24;        // glimpse size of the learning loop
    private const int LearnSteps = 60;
    private const int LearnSide = 160;   // the learning loop reads a 160² copy

    private static readonly Color[] Colors =
        [Color.FromHex("#00e5ff"), Color.FromHex("#ff4081"), Color.FromHex("#76ff03"), Color.FromHex("#ffab40")];

    /// <summary>A glimpse setting: centre (x, y) in pixels, stride d and σ (the same on both axes).</summary>
    private readonly record struct Setting(string What, double Cx, double Cy, double D, double Sigma)
    {
        public float[] Params(int g) => [(float)(Cy - (g - 1) / 2.0 * D), (float)Sigma, (float)D, (float)(Cx - (g - 1) / 2.0 * D), (float)Sigma, (float)D];
    }

    private static readonly Color StartColor = Color.FromHex("#b388ff");

    public string Name => "glimpse";

    public void Run(DemoContext ctx)
    {
        var dev = ctx.Device;
        var work = DemoDrawing.Letterbox(ctx.Input, Side);
        const double fs = Side / 320.0;   // positions below are chosen on a 320² letterbox of the shipped logo
        Setting[] settings =
        [
            new("whole image, stride (S−1)/(g−1), σ = d/2", (Side - 1) / 2.0, (Side - 1) / 2.0, (Side - 1.0) / (G - 1), (Side - 1.0) / (G - 1) / 2),
            new("zoom ×0.5 (stride 2, σ 1)", 115 * fs, 88 * fs, 2, 1),
            new("zoom ×1 (stride 1, σ 0.5): a sharp crop", 200 * fs, 147 * fs, 1, 0.5),
            new("zoom ×1, σ 3: the same box blurred", 200 * fs, 147 * fs, 1, 3),
        ];
        int N = settings.Length, C = 3, H = Side, W = Side;
        var images = new float[N * C * H * W];
        for (int i = 0; i < N; i++) work.Data.CopyTo(images, i * C * H * W);
        var prm = settings.SelectMany(s => s.Params(G)).ToArray();

        // Forward, timed and checked.
        ctx.ReportStatus($"glimpse: {N} glimpses of {G}×{G} on {dev.Spec}");
        using var timg = dev.Upload(images, N, C, H, W);
        using var tprm = dev.Upload(prm, N, 6);
        using var tout = dev.Allocate(N, C, G, G);
        dev.Fill(tout, float.NaN);
        double msF = ctx.TimeMedian(() => dev.Glimpse(timg, tprm, tout));
        var outp = dev.Download(tout);
        var refOut = ReferenceOps.GlimpseForward(images, prm, N, C, H, W, G, G);
        var (eF, rF) = DemoContext.Compare(outp, refOut);
        // out = (Ayᵀ·image)·Ax per channel: 2·h·H·W + 2·h·W·w multiply-adds.
        double flopsF = 2.0 * N * C * G * W * (H + G);
        string shape = $"image [{N},{C},{H},{W}] params [{N},6] out [{N},{C},{G},{G}]";
        ctx.Rows.Add(new DemoRow("glimpse forward", shape, msF, flopsF / (msF * 1e6), eF, rF, !dev.SupportsOp(OpKind.Glimpse)));

        // Backward with a fixed pseudo-random grad_out, timed and checked.
        var gout = DemoDrawing.Noise(N * C * G * G, 7);
        using var tgo = dev.Upload(gout, N, C, G, G);
        using var tgi = dev.Allocate(N, C, H, W);
        using var tgp = dev.Allocate(N, 6);
        dev.Fill(tgi, float.NaN); dev.Fill(tgp, float.NaN);
        double msB = ctx.TimeMedian(() => dev.GlimpseBackward(timg, tprm, tgo, tgi, tgp));
        var gi = dev.Download(tgi); var gp = dev.Download(tgp);
        ctx.ReportStatus("glimpse: double-precision reference backward");
        var (rgi, rgp, _) = ReferenceOps.GlimpseBackward(images, prm, gout, N, C, H, W, G, G);
        var (eI, rI) = DemoContext.Compare(gi, rgi);
        var (eP, rP) = DemoContext.Compare(gp, rgp);
        ctx.Rows.Add(new DemoRow("glimpse backward (image, params)", shape, msB, null, Math.Max(eI, eP), Math.Max(rI, rP), !dev.SupportsOp(OpKind.GlimpseBackward)));

        // Pictures: each glimpse beside the image with its box; an overview with all boxes.
        const int display = 320;
        double scale = (double)display / Side;
        var overviewImg = work.Resize(display, display, ResizeMode.Bilinear);
        var gallery = new List<Image>();
        for (int i = 0; i < N; i++)
        {
            var s = settings[i];
            var glimpse = DemoDrawing.ToImage(outp.AsSpan(i * C * G * G, C * G * G), C, G, G).Resize(display, display, ResizeMode.Nearest);
            var withBox = work.Resize(display, display, ResizeMode.Bilinear);
            DrawGlimpseBox(withBox, prm.AsSpan(i * 6, 6), G, G, scale, Colors[i], 3);
            DrawGlimpseBox(overviewImg, prm.AsSpan(i * 6, 6), G, G, scale, Colors[i], 2);
            ctx.Save($"glimpse_{i + 1}.png", ImageOps.Concat([withBox, DemoDrawing.Framed(glimpse, Colors[i])], 8, DemoDrawing.Background),
                $"image with the box glimpse {i + 1} reads | the {G}×{G} glimpse, enlarged: {s.What}");
            gallery.Add(DemoDrawing.Framed(glimpse.Resize(display / 2, display / 2, ResizeMode.Box), Colors[i]));
        }
        var grid = DemoDrawing.Stack([ImageOps.Concat(gallery.Take(2).ToList(), 0, DemoDrawing.Background),
                                      ImageOps.Concat(gallery.Skip(2).ToList(), 0, DemoDrawing.Background)], 0);
        ctx.Save("glimpse_overview.png", ImageOps.Concat([overviewImg, grid], 8, DemoDrawing.Background),
            "image with the boxes of four glimpses | the glimpses in the same colours (cyan, pink / green, orange)");

        Learn(ctx, work, scale);
        ctx.Notes.Add("glimpse: a box spans the filter centres u … u+(g−1)d on each axis, widened by σ on each side; glimpse backward checked on a pseudo-random grad_out");
    }

    /// <summary>Adam on the six parameters so that the glimpse matches a target glimpse taken at known parameters.</summary>
    private static void Learn(DemoContext ctx, Image work, double scale)
    {
        var dev = ctx.Device;
        ctx.ReportStatus("glimpse: learning the parameters of a target glimpse");
        var img = work.Resize(LearnSide, LearnSide, ResizeMode.Box);
        const double f = LearnSide / 320.0;
        scale *= (double)Side / LearnSide;
        var target = new Setting("target", 100 * f, 90 * f, 3 * f, 3 * f).Params(LearnG);
        var start = new Setting("start", 70 * f, 115 * f, 3.9 * f, 3.9 * f).Params(LearnG);
        int C = 3, H = LearnSide, W = LearnSide, n = C * LearnG * LearnG;
        using var timg = dev.Upload(img.Data, 1, C, H, W);
        using var tprm = dev.Upload(target, 1, 6);
        using var tout = dev.Allocate(1, C, LearnG, LearnG);
        dev.Glimpse(timg, tprm, tout);
        var tgt = dev.Download(tout);
        var p = start.Select(x => (double)x).ToArray();
        var adam = new Adam([2 * f, 0.1 * f, 0.05 * f, 2 * f, 0.1 * f, 0.05 * f]);
        var trajectory = new List<float[]>();
        var losses = new List<double>();
        var pf = new float[6];
        var grad = new double[6];
        var go = new float[n];
        float[] first = [], last = [];
        using var tgo = dev.Allocate(1, C, LearnG, LearnG);
        using var tgi = dev.Allocate(1, C, H, W);
        using var tgp = dev.Allocate(1, 6);
        int learnSteps = ctx.LearningSteps(LearnSteps);
        for (int step = 0; step <= learnSteps; step++)
        {
            for (int i = 0; i < 6; i++) pf[i] = (float)p[i];
            trajectory.Add((float[])pf.Clone());
            dev.Upload(tprm, pf);
            dev.Glimpse(timg, tprm, tout);
            var o = dev.Download(tout);
            if (step == 0) first = o;
            last = o;
            double loss = 0;
            for (int i = 0; i < n; i++) { go[i] = o[i] - tgt[i]; loss += go[i] * go[i]; }
            losses.Add(loss / n);
            if (step == learnSteps) break;
            dev.Upload(tgo, go);                               // grad_out = out − target: L = ½ Σ (out − target)²
            dev.GlimpseBackward(timg, tprm, tgo, tgi, tgp);
            var gp = dev.Download(tgp);
            for (int i = 0; i < 6; i++) grad[i] = gp[i];
            adam.Step(p, grad);
        }

        const int display = 320;
        var pic = work.Resize(display, display, ResizeMode.Bilinear);
        for (int i = 10; i < trajectory.Count; i += 10)
            DrawGlimpseBox(pic, trajectory[i], LearnG, LearnG, scale, DemoDrawing.StepColor(i, trajectory.Count), 1.5);
        DrawGlimpseBox(pic, trajectory[0], LearnG, LearnG, scale, StartColor, 2.5);
        DrawGlimpseBox(pic, target, LearnG, LearnG, scale, Color.FromHex("#ff1744"), 3);
        DrawGlimpseBox(pic, trajectory[^1], LearnG, LearnG, scale, Color.FromHex("#ffeb3b"), 1.5, outline: false);
        var tile = new Func<float[], Color, Image>((d, c) => DemoDrawing.Framed(DemoDrawing.ToImage(d, C, LearnG, LearnG).Resize(display / 2 - 4, display / 2 - 4, ResizeMode.Nearest), c));
        var tiles = DemoDrawing.Stack([
            ImageOps.Concat([tile(tgt, Color.FromHex("#ff1744")), tile(first, StartColor)], 0, DemoDrawing.Background),
            ImageOps.Concat([tile(last, Color.FromHex("#ffeb3b")), DemoDrawing.Plot(losses, display / 2 - 4, display / 2 - 4, Color.FromHex("#ffab40"))], 0, DemoDrawing.Background)], 0);
        ctx.Save("glimpse_learning.png", ImageOps.Concat([pic, tiles], 8, DemoDrawing.Background),
            $"gradient descent moving a glimpse onto a target: image with the target box (red) and the box every 10 steps (violet start, then dark blue → yellow) | " +
            "target glimpse (red) and the start (violet) / the glimpse after learning (yellow) and the loss per step");
        var fin = trajectory[^1];
        ctx.Notes.Add($"glimpse learning: loss mean((out − target)²) {losses[0]:0.00000} → {losses[^1]:0.00000} in {learnSteps} Adam steps; " +
                      $"params (uy, sy, dy, ux, sx, dx) start ({Fmt(start)}) → ({Fmt(fin)}), target ({Fmt(target)})" +
                      (losses[^1] < losses[0] ? "" : " — loss did NOT fall"));
    }

    private static string Fmt(float[] p) => string.Join(", ", p.Select(x => x.ToString("0.0", System.Globalization.CultureInfo.InvariantCulture)));

    /// <summary>Draws a glimpse's box (filter centres widened by σ) on a picture of the working image scaled by <paramref name="scale"/>.</summary>
    private static void DrawGlimpseBox(Image pic, ReadOnlySpan<float> p, int gh, int gw, double scale, Color color, double thickness, bool outline = true)
    {
        // pixel c covers [c, c+1) in picture units / scale, centred at c + 0.5
        double y0 = p[0] - p[1] + 0.5, y1 = p[0] + (gh - 1) * p[2] + p[1] + 0.5;
        double x0 = p[3] - p[4] + 0.5, x1 = p[3] + (gw - 1) * p[5] + p[4] + 0.5;
        pic.DrawBox(x0 * scale, y0 * scale, x1 * scale, y1 * scale, color, thickness, outline);
    }
}
