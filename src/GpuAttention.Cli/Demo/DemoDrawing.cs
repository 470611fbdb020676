using GpuAttention.Cli.Imaging;

namespace GpuAttention.Cli;

/// <summary>Drawing and small numeric helpers shared by the demo sections (lines, boxes, plots, a tiny Adam optimiser).</summary>
internal static class DemoDrawing
{
    /// <summary>Panel background of the composite pictures.</summary>
    public static readonly Color Background = new(0.12f, 0.12f, 0.12f);

    /// <summary>
    /// The image fitted into a <paramref name="side"/>×<paramref name="side"/> square (aspect kept, centred), the
    /// rest filled with the mean colour of the image's border pixels (white for the shipped logo). A square makes a
    /// rotation in normalised [-1, 1] coordinates a rotation in pixels, too.
    /// </summary>
    public static Image Letterbox(Image src, int side)
    {
        var rgb = src.Channels == 3 ? src : src.ToRgb();
        var fitted = rgb.ResizeLongSide(side, ResizeMode.Box);
        var res = new Image(side, side, 3);
        res.FillRectangle(0, 0, side, side, BorderMean(rgb));
        int x0 = (side - fitted.Width) / 2, y0 = (side - fitted.Height) / 2;
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < fitted.Height; y++)
                for (int x = 0; x < fitted.Width; x++)
                    res[c, y0 + y, x0 + x] = fitted[c, y, x];
        return res;
    }

    private static Color BorderMean(Image img)
    {
        double r = 0, g = 0, b = 0; int n = 0;
        for (int y = 0; y < img.Height; y++)
            for (int x = 0; x < img.Width; x++)
            {
                if (y != 0 && y != img.Height - 1 && x != 0 && x != img.Width - 1) continue;
                r += img[0, y, x]; g += img[1, y, x]; b += img[2, y, x]; n++;
            }
        return new((float)(r / n), (float)(g / n), (float)(b / n));
    }

    /// <summary>Image [C, H, W] planar data as an <see cref="Image"/>, clamped to [0, 1].</summary>
    public static Image ToImage(ReadOnlySpan<float> planar, int channels, int height, int width)
    {
        var img = new Image(width, height, channels);
        for (int i = 0; i < img.Data.Length; i++) img.Data[i] = float.IsFinite(planar[i]) ? Math.Clamp(planar[i], 0f, 1f) : 0f;
        return img;
    }

    /// <summary>Draws a line of <paramref name="thickness"/> pixels from (x0, y0) to (x1, y1) (float pixel coordinates), with an optional dark outline.</summary>
    public static void DrawLine(this Image img, double x0, double y0, double x1, double y1, Color color, double thickness = 2, Color? outline = null)
    {
        if (outline is { } o) DrawLineCore(img, x0, y0, x1, y1, o, thickness + 2);
        DrawLineCore(img, x0, y0, x1, y1, color, thickness);
    }

    private static void DrawLineCore(Image img, double x0, double y0, double x1, double y1, Color color, double thickness)
    {
        double r = thickness / 2;
        int minX = (int)Math.Floor(Math.Min(x0, x1) - r - 1), maxX = (int)Math.Ceiling(Math.Max(x0, x1) + r + 1);
        int minY = (int)Math.Floor(Math.Min(y0, y1) - r - 1), maxY = (int)Math.Ceiling(Math.Max(y0, y1) + r + 1);
        minX = Math.Max(0, minX); minY = Math.Max(0, minY);
        maxX = Math.Min(img.Width - 1, maxX); maxY = Math.Min(img.Height - 1, maxY);
        double dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy;
        for (int y = minY; y <= maxY; y++)
            for (int x = minX; x <= maxX; x++)
            {
                double px = x + 0.5 - x0, py = y + 0.5 - y0;
                double t = len2 > 0 ? Math.Clamp((px * dx + py * dy) / len2, 0, 1) : 0;
                double ex = px - t * dx, ey = py - t * dy;
                if (ex * ex + ey * ey <= r * r) img.SetPixel(x, y, color);
            }
    }

    /// <summary>Draws the closed polygon through <paramref name="points"/> (float pixel coordinates).</summary>
    public static void DrawPolygon(this Image img, IReadOnlyList<(double X, double Y)> points, Color color, double thickness = 2, bool outline = true)
    {
        if (outline)
            for (int i = 0; i < points.Count; i++)
            {
                var (a, b) = (points[i], points[(i + 1) % points.Count]);
                DrawLineCore(img, a.X, a.Y, b.X, b.Y, Color.Black, thickness + 2);
            }
        for (int i = 0; i < points.Count; i++)
        {
            var (a, b) = (points[i], points[(i + 1) % points.Count]);
            DrawLineCore(img, a.X, a.Y, b.X, b.Y, color, thickness);
        }
    }

    /// <summary>Draws the axis-aligned box [x0, x1] × [y0, y1] (float pixel coordinates).</summary>
    public static void DrawBox(this Image img, double x0, double y0, double x1, double y1, Color color, double thickness = 2, bool outline = true) =>
        img.DrawPolygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], color, thickness, outline);

    /// <summary>Puts a frame of <paramref name="color"/> around a copy of the image.</summary>
    public static Image Framed(Image img, Color color, int thickness = 3)
    {
        var c = img.Channels == 3 ? img.Clone() : img.ToRgb();
        c.DrawRectangle(0, 0, c.Width, c.Height, color, thickness);
        return c;
    }

    /// <summary>
    /// A line chart of a loss per step, drawn by ScottPlot on a dark panel: x axis "step" (the first value is step 0), y axis
    /// <paramref name="yLabel"/> with numbers; a log scale when all values are positive and span more than a factor 10.
    /// </summary>
    public static Image Plot(IReadOnlyList<double> values, int width, int height, Color color, string yLabel = "loss")
    {
        var plt = new ScottPlot.Plot();
        var fg = ScottPlot.Color.FromHex("#d0d0d0");
        plt.FigureBackground.Color = ScottPlot.Color.FromHex("#0d0d0d");
        plt.DataBackground.Color = ScottPlot.Color.FromHex("#161616");
        plt.Axes.Color(fg);
        plt.Grid.MajorLineColor = fg.WithAlpha(0.15);
        bool log = values.Count > 0 && values.All(v => v > 0) && values.Max() > 10 * values.Min();
        double[] xs = Enumerable.Range(0, values.Count).Select(i => (double)i).ToArray();
        double[] ys = values.Select(v => log ? Math.Log10(v) : v).ToArray();
        if (values.Count > 0)
        {
            var line = plt.Add.ScatterLine(xs, ys);
            line.Color = new ScottPlot.Color((byte)(color.R * 255), (byte)(color.G * 255), (byte)(color.B * 255));
            line.LineWidth = 2;
        }
        if (log)
        {
            // Values plotted as log10; ticks at whole decades, labelled with the values themselves.
            plt.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
            {
                MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
                IntegerTicksOnly = true,
                LabelFormatter = y => Math.Pow(10, y).ToString("0.#e0", System.Globalization.CultureInfo.InvariantCulture),
            };
        }
        else
        {
            plt.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
            {
                LabelFormatter = y => y.ToString("g3", System.Globalization.CultureInfo.InvariantCulture),
            };
        }
        int small = Math.Min(width, height) < 260 ? 11 : 13;
        plt.Axes.Bottom.TickLabelStyle.FontSize = small;
        plt.Axes.Left.TickLabelStyle.FontSize = small;
        plt.XLabel("step", small + 1);
        plt.YLabel(log ? yLabel + " (log scale)" : yLabel, small + 1);
        return Image.Decode(plt.GetImageBytes(width, height, ScottPlot.ImageFormat.Png), "plot");
    }

    /// <summary>Stacks images vertically, left-aligned, with <paramref name="gap"/> pixels between and around them.</summary>
    public static Image Stack(IReadOnlyList<Image> rows, int gap)
    {
        int w = rows.Max(r => r.Width) + 2 * gap, h = gap + rows.Sum(r => r.Height + gap);
        var res = new Image(w, h, 3);
        res.FillRectangle(0, 0, w, h, Background);
        int y0 = gap;
        foreach (var r0 in rows)
        {
            var r = r0.Channels == 3 ? r0 : r0.ToRgb();
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < r.Height; y++)
                    Array.Copy(r.Data, (c * r.Height + y) * r.Width, res.Data, (c * h + y0 + y) * w + gap, r.Width);
            y0 += r.Height + gap;
        }
        return res;
    }

    /// <summary>A colour along the viridis map for step <paramref name="i"/> of <paramref name="n"/> (early = purple, late = yellow).</summary>
    public static Color StepColor(int i, int n) => Colormap.Viridis.Map(n <= 1 ? 1f : (float)i / (n - 1));

    /// <summary>
    /// Deterministic pseudo-random floats in [-1, 1) (SplitMix64), for gradients fed into backward passes.
    /// </summary>
    public static float[] Noise(int n, ulong seed)
    {
        var r = new float[n];
        ulong s = seed;
        for (int i = 0; i < n; i++)
        {
            ulong z = s += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            z ^= z >> 31;
            r[i] = (float)((z >> 40) / (double)(1UL << 24) * 2 - 1);
        }
        return r;
    }
}

/// <summary>Adam (Kingma and Ba 2015) over a handful of parameters, each with its own step size.</summary>
internal sealed class Adam(double[] stepSizes, double beta1 = 0.9, double beta2 = 0.999)
{
    private readonly double[] _m = new double[stepSizes.Length], _v = new double[stepSizes.Length];
    private int _t;

    /// <summary>One step: <c>p -= lr · m̂ / (√v̂ + ε)</c>.</summary>
    public void Step(double[] p, ReadOnlySpan<double> grad)
    {
        _t++;
        for (int i = 0; i < p.Length; i++)
        {
            _m[i] = beta1 * _m[i] + (1 - beta1) * grad[i];
            _v[i] = beta2 * _v[i] + (1 - beta2) * grad[i] * grad[i];
            double mh = _m[i] / (1 - Math.Pow(beta1, _t)), vh = _v[i] / (1 - Math.Pow(beta2, _t));
            p[i] -= stepSizes[i] * mh / (Math.Sqrt(vh) + 1e-12);
        }
    }
}
