namespace GpuAttention.Cli.Imaging;

/// <summary>How <see cref="ImageOps.Resize"/> interpolates.</summary>
public enum ResizeMode
{
    /// <summary>Area average (exact box filter with fractional pixel coverage); the right choice for downscaling.</summary>
    Box,
    /// <summary>Bilinear interpolation between pixel centres (half-pixel aligned, edges clamped); smooth upscaling.</summary>
    Bilinear,
    /// <summary>Nearest pixel; blocky upscaling that keeps every source pixel visible.</summary>
    Nearest,
}

/// <summary>A colour map: a small table of evenly spaced stops, interpolated linearly.</summary>
public sealed class Colormap
{
    private readonly Color[] _stops;

    /// <summary>Creates a map from stops at t = 0, 1/(n−1), ..., 1 (at least two).</summary>
    public Colormap(string name, params Color[] stops)
    {
        if (stops.Length < 2) throw new ArgumentException("a colour map needs at least two stops", nameof(stops));
        Name = name;
        _stops = (Color[])stops.Clone();
    }

    /// <summary>The map's name.</summary>
    public string Name { get; }

    /// <summary>Matplotlib's perceptually uniform "inferno" (black → purple → orange → pale yellow), 11 stops.</summary>
    public static Colormap Inferno { get; } = new("inferno",
        ["#000004", "#160b39", "#420a68", "#6a176e", "#932667", "#bc3754", "#dd513a", "#f37819", "#fca50a", "#f6d746", "#fcffa4"]);

    /// <summary>Matplotlib's perceptually uniform "viridis" (purple → teal → yellow), 11 stops.</summary>
    public static Colormap Viridis { get; } = new("viridis",
        ["#440154", "#482475", "#414487", "#355f8d", "#2a788e", "#21918c", "#22a884", "#44bf70", "#7ad151", "#bddf26", "#fde725"]);

    private Colormap(string name, string[] hex) : this(name, hex.Select(Color.FromHex).ToArray()) { }

    /// <summary>The colour at <paramref name="t"/> (clamped to [0, 1]; NaN maps to 0).</summary>
    public Color Map(float t)
    {
        if (!(t > 0)) return _stops[0];
        if (t >= 1) return _stops[^1];
        float f = t * (_stops.Length - 1);
        int i = (int)f;
        float u = f - i;
        Color a = _stops[i], b = _stops[i + 1];
        return new(a.R + (b.R - a.R) * u, a.G + (b.G - a.G) * u, a.B + (b.B - a.B) * u);
    }

    /// <summary>
    /// Turns a one-channel image into RGB: value <c>lo</c> → first stop, <c>hi</c> → last stop
    /// (defaults: the image's minimum and maximum).
    /// </summary>
    public Image Apply(Image scalar, float? lo = null, float? hi = null)
    {
        if (scalar.Channels != 1) throw new ArgumentException("colour map: expected a one-channel image", nameof(scalar));
        float min = lo ?? scalar.Data.Min(), max = hi ?? scalar.Data.Max();
        float inv = max > min ? 1f / (max - min) : 0f;
        int n = scalar.PixelCount;
        var rgb = new Image(scalar.Width, scalar.Height, 3);
        for (int i = 0; i < n; i++)
        {
            var c = Map((scalar.Data[i] - min) * inv);
            rgb.Data[i] = c.R; rgb.Data[n + i] = c.G; rgb.Data[2 * n + i] = c.B;
        }
        return rgb;
    }
}

/// <summary>Small image helpers for visualisation: resize, blend, draw markers, concatenate.</summary>
public static class ImageOps
{
    /// <summary>Returns the image resized to <paramref name="width"/>×<paramref name="height"/>.</summary>
    public static Image Resize(this Image src, int width, int height, ResizeMode mode = ResizeMode.Box)
    {
        ArgumentNullException.ThrowIfNull(src);
        var dst = new Image(width, height, src.Channels);
        int sw = src.Width, sh = src.Height;
        if (mode == ResizeMode.Box)
        {
            var wx = BoxWeights(sw, width);
            var wy = BoxWeights(sh, height);
            var tmp = new float[sh * width]; // horizontal pass of one channel
            for (int c = 0; c < src.Channels; c++)
            {
                int so = c * sw * sh, dof = c * width * height;
                for (int y = 0; y < sh; y++)
                    for (int x = 0; x < width; x++)
                    {
                        float s = 0;
                        foreach (var (i, w) in wx[x]) s += w * src.Data[so + y * sw + i];
                        tmp[y * width + x] = s;
                    }
                for (int y = 0; y < height; y++)
                    for (int x = 0; x < width; x++)
                    {
                        float s = 0;
                        foreach (var (i, w) in wy[y]) s += w * tmp[i * width + x];
                        dst.Data[dof + y * width + x] = s;
                    }
            }
            return dst;
        }
        float fx = (float)sw / width, fy = (float)sh / height;
        for (int c = 0; c < src.Channels; c++)
        {
            int so = c * sw * sh, dof = c * width * height;
            for (int y = 0; y < height; y++)
                for (int x = 0; x < width; x++)
                {
                    float sx = (x + 0.5f) * fx - 0.5f, sy = (y + 0.5f) * fy - 0.5f;
                    float v;
                    if (mode == ResizeMode.Nearest)
                        v = src.Data[so + Math.Clamp((int)((y + 0.5f) * fy), 0, sh - 1) * sw + Math.Clamp((int)((x + 0.5f) * fx), 0, sw - 1)];
                    else
                    {
                        sx = Math.Clamp(sx, 0, sw - 1); sy = Math.Clamp(sy, 0, sh - 1);
                        int x0 = (int)sx, y0 = (int)sy, x1 = Math.Min(x0 + 1, sw - 1), y1 = Math.Min(y0 + 1, sh - 1);
                        float ax = sx - x0, ay = sy - y0;
                        float top = src.Data[so + y0 * sw + x0] * (1 - ax) + src.Data[so + y0 * sw + x1] * ax;
                        float bot = src.Data[so + y1 * sw + x0] * (1 - ax) + src.Data[so + y1 * sw + x1] * ax;
                        v = top * (1 - ay) + bot * ay;
                    }
                    dst.Data[dof + y * width + x] = v;
                }
        }
        return dst;
    }

    /// <summary>Resizes so that the longer side is <paramref name="longSide"/> pixels, keeping the aspect ratio.</summary>
    public static Image ResizeLongSide(this Image src, int longSide, ResizeMode mode = ResizeMode.Box)
    {
        double f = (double)longSide / Math.Max(src.Width, src.Height);
        return src.Resize(Math.Max(1, (int)Math.Round(src.Width * f)), Math.Max(1, (int)Math.Round(src.Height * f)), mode);
    }

    // For each output index, the source indices and weights of the interval [o·n/m, (o+1)·n/m) (weights sum to 1).
    private static (int Index, float Weight)[][] BoxWeights(int n, int m)
    {
        var res = new (int, float)[m][];
        double f = (double)n / m;
        for (int o = 0; o < m; o++)
        {
            double a = o * f, b = (o + 1) * f;
            var list = new List<(int, float)>();
            for (int i = (int)Math.Floor(a); i < Math.Min(n, (int)Math.Ceiling(b)); i++)
            {
                double cover = Math.Min(b, i + 1) - Math.Max(a, i);
                if (cover > 1e-12) list.Add((i, (float)(cover / f)));
            }
            res[o] = list.ToArray();
        }
        return res;
    }

    /// <summary>
    /// Alpha-blends <paramref name="overlay"/> over <paramref name="background"/> (same size):
    /// <c>out = bg·(1−a) + overlay·a</c> with <c>a = alpha · alphaMap[y, x]</c> (alphaMap one-channel, optional).
    /// The result is RGB if either input is.
    /// </summary>
    public static Image Blend(Image background, Image overlay, float alpha, Image? alphaMap = null)
    {
        ArgumentNullException.ThrowIfNull(background); ArgumentNullException.ThrowIfNull(overlay);
        if (background.Width != overlay.Width || background.Height != overlay.Height)
            throw new ArgumentException($"blend: sizes differ ({background.Width}×{background.Height} vs {overlay.Width}×{overlay.Height})");
        if (alphaMap is not null && (alphaMap.Channels != 1 || alphaMap.Width != background.Width || alphaMap.Height != background.Height))
            throw new ArgumentException("blend: alpha map must be one channel of the images' size", nameof(alphaMap));
        bool rgb = background.Channels == 3 || overlay.Channels == 3;
        var bg = rgb ? background.ToRgb() : background.Clone();
        var ov = rgb && overlay.Channels == 1 ? overlay.ToRgb() : overlay;
        int n = bg.PixelCount;
        for (int c = 0; c < bg.Channels; c++)
            for (int i = 0; i < n; i++)
            {
                float a = alpha * (alphaMap?.Data[i] ?? 1f);
                bg.Data[c * n + i] = bg.Data[c * n + i] * (1 - a) + ov.Data[c * n + i] * a;
            }
        return bg;
    }

    /// <summary>Sets pixel (x, y) to <paramref name="color"/> if it is inside the image (luma on gray images).</summary>
    public static void SetPixel(this Image img, int x, int y, Color color)
    {
        if ((uint)x >= (uint)img.Width || (uint)y >= (uint)img.Height) return;
        if (img.Channels == 1) img[0, y, x] = color.Luma;
        else for (int c = 0; c < 3; c++) img[c, y, x] = color[c];
    }

    /// <summary>Fills the axis-aligned rectangle [x0, x0+w) × [y0, y0+h), clipped to the image.</summary>
    public static void FillRectangle(this Image img, int x0, int y0, int w, int h, Color color)
    {
        for (int y = Math.Max(0, y0); y < Math.Min(img.Height, y0 + h); y++)
            for (int x = Math.Max(0, x0); x < Math.Min(img.Width, x0 + w); x++)
                img.SetPixel(x, y, color);
    }

    /// <summary>Draws the outline of the rectangle [x0, x0+w) × [y0, y0+h), <paramref name="thickness"/> pixels inwards.</summary>
    public static void DrawRectangle(this Image img, int x0, int y0, int w, int h, Color color, int thickness = 1)
    {
        int t = Math.Max(1, thickness);
        img.FillRectangle(x0, y0, w, t, color);
        img.FillRectangle(x0, y0 + h - t, w, t, color);
        img.FillRectangle(x0, y0, t, h, color);
        img.FillRectangle(x0 + w - t, y0, t, h, color);
    }

    /// <summary>
    /// Draws a "+" marker centred at (<paramref name="cx"/>, <paramref name="cy"/>) with arms of <paramref name="radius"/> pixels,
    /// in <paramref name="color"/> with a one-pixel <paramref name="outline"/> so it shows on any background.
    /// </summary>
    public static void DrawCross(this Image img, int cx, int cy, int radius, Color color, int thickness = 2, Color? outline = null)
    {
        int t = Math.Max(1, thickness), lo = -(t / 2);
        var o = outline ?? Color.Black;
        img.FillRectangle(cx - radius - 1, cy + lo - 1, 2 * radius + 3, t + 2, o);
        img.FillRectangle(cx + lo - 1, cy - radius - 1, t + 2, 2 * radius + 3, o);
        img.FillRectangle(cx - radius, cy + lo, 2 * radius + 1, t, color);
        img.FillRectangle(cx + lo, cy - radius, t, 2 * radius + 1, color);
    }

    /// <summary>
    /// Places images side by side, top-aligned, with <paramref name="gap"/> pixels of <paramref name="background"/>
    /// between them and around them. The result is RGB if any input is.
    /// </summary>
    public static Image Concat(IReadOnlyList<Image> images, int gap, Color background)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.Count == 0) throw new ArgumentException("concat: no images", nameof(images));
        int ch = images.Any(i => i.Channels == 3) ? 3 : 1;
        int w = gap + images.Sum(i => i.Width + gap), h = images.Max(i => i.Height) + 2 * gap;
        var res = new Image(w, h, ch);
        res.FillRectangle(0, 0, w, h, background);
        int x0 = gap;
        foreach (var im in images)
        {
            var src = ch == 3 ? (im.Channels == 3 ? im : im.ToRgb()) : im;
            for (int c = 0; c < ch; c++)
                for (int y = 0; y < src.Height; y++)
                    Array.Copy(src.Data, (c * src.Height + y) * src.Width, res.Data, (c * h + gap + y) * w + x0, src.Width);
            x0 += im.Width + gap;
        }
        return res;
    }
}
