using GpuAttention.Imaging;

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
    /// A line chart of <paramref name="values"/> (log scale when all are positive and span more than a factor 10), on a dark panel
    /// with axes; the first value sits at the left edge, the last at the right.
    /// </summary>
    public static Image Plot(IReadOnlyList<double> values, int width, int height, Color color)
    {
        var img = new Image(width, height, 3);
        img.FillRectangle(0, 0, width, height, new Color(0.05f, 0.05f, 0.05f));
        int m = 12;
        img.DrawLine(m, m, m, height - m, new Color(0.6f, 0.6f, 0.6f), 1);
        img.DrawLine(m, height - m, width - m, height - m, new Color(0.6f, 0.6f, 0.6f), 1);
        if (values.Count < 2) return img;
        bool log = values.All(v => v > 0) && values.Max() > 10 * values.Min();
        var ys = values.Select(v => log ? Math.Log10(v) : v).ToArray();
        double lo = ys.Min(), hi = ys.Max();
        if (!(hi > lo)) { lo -= 1; hi += 1; }
        if (!log) lo = Math.Min(lo, 0);
        double X(int i) => m + 4 + (width - 2 * m - 8) * (double)i / (values.Count - 1);
        double Y(double v) => height - m - 4 - (height - 2 * m - 8) * (v - lo) / (hi - lo);
        for (int i = 1; i < ys.Length; i++) img.DrawLine(X(i - 1), Y(ys[i - 1]), X(i), Y(ys[i]), color, 2);
        return img;
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
