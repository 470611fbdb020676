using SkiaSharp;

namespace GpuAttention.Cli.Imaging;

/// <summary>An RGB colour with components in [0, 1].</summary>
/// <param name="R">Red.</param>
/// <param name="G">Green.</param>
/// <param name="B">Blue.</param>
public readonly record struct Color(float R, float G, float B)
{
    /// <summary>White (1, 1, 1).</summary>
    public static Color White => new(1, 1, 1);
    /// <summary>Black (0, 0, 0).</summary>
    public static Color Black => new(0, 0, 0);
    /// <summary>Rec. 601 luma of the colour, used when drawing on a one-channel image.</summary>
    public float Luma => 0.299f * R + 0.587f * G + 0.114f * B;
    /// <summary>Component <paramref name="c"/> (0 = R, 1 = G, 2 = B).</summary>
    public float this[int c] => c switch { 0 => R, 1 => G, 2 => B, _ => throw new ArgumentOutOfRangeException(nameof(c)) };
    /// <summary>Parses "#RRGGBB".</summary>
    public static Color FromHex(string hex)
    {
        var s = hex.TrimStart('#');
        if (s.Length != 6) throw new ArgumentException($"colour: expected #RRGGBB, got '{hex}'", nameof(hex));
        int v = Convert.ToInt32(s, 16);
        return new((v >> 16 & 255) / 255f, (v >> 8 & 255) / 255f, (v & 255) / 255f);
    }
}

/// <summary>
/// A raster image with 1 (gray) or 3 (RGB) channels, stored as float32 in [0, 1], planar [C, H, W]
/// (row-major, the layout of one image of an [N, C, H, W] tensor).
/// Read with <see cref="Load"/>/<see cref="Decode"/> and written with <see cref="Save"/> through SkiaSharp (PNG, JPEG).
/// </summary>
public sealed class Image
{
    /// <summary>Largest pixel count the decoders accept (guards against absurd headers).</summary>
    public const long MaxPixels = 1L << 28;

    /// <summary>Creates an image; with <paramref name="data"/> null it is black.</summary>
    /// <param name="width">Width in pixels (≥ 1).</param>
    /// <param name="height">Height in pixels (≥ 1).</param>
    /// <param name="channels">1 (gray) or 3 (RGB).</param>
    /// <param name="data">Planar [C, H, W] samples (taken, not copied), length channels·height·width.</param>
    /// <exception cref="ArgumentException">Bad size, channel count or data length.</exception>
    public Image(int width, int height, int channels, float[]? data = null)
    {
        if (width < 1 || height < 1) throw new ArgumentException($"image size must be at least 1×1, got {width}×{height}");
        if (channels is not (1 or 3)) throw new ArgumentException($"image channels must be 1 or 3, got {channels}", nameof(channels));
        if ((long)width * height > MaxPixels) throw new ArgumentException($"image {width}×{height} has more than {MaxPixels} pixels");
        int n = checked(width * height * channels);
        if (data is not null && data.Length != n) throw new ArgumentException($"image data: expected {n} samples for {channels}×{height}×{width}, got {data.Length}", nameof(data));
        Width = width; Height = height; Channels = channels;
        Data = data ?? new float[n];
    }

    /// <summary>Width in pixels.</summary>
    public int Width { get; }
    /// <summary>Height in pixels.</summary>
    public int Height { get; }
    /// <summary>1 (gray) or 3 (RGB).</summary>
    public int Channels { get; }
    /// <summary>Samples in [0, 1], planar [C, H, W].</summary>
    public float[] Data { get; }
    /// <summary>Width · height.</summary>
    public int PixelCount => Width * Height;
    /// <summary>The tensor shape of this image, [C, H, W].</summary>
    public int[] Shape => [Channels, Height, Width];

    /// <summary>Sample of channel <paramref name="c"/> at (<paramref name="x"/>, <paramref name="y"/>).</summary>
    public float this[int c, int y, int x]
    {
        get => Data[(c * Height + y) * Width + x];
        set => Data[(c * Height + y) * Width + x] = value;
    }

    /// <summary>A deep copy.</summary>
    public Image Clone() => new(Width, Height, Channels, (float[])Data.Clone());

    /// <summary>This image as RGB (a copy; gray is replicated into three channels).</summary>
    public Image ToRgb()
    {
        if (Channels == 3) return Clone();
        var d = new float[3 * PixelCount];
        for (int c = 0; c < 3; c++) Data.CopyTo(d, c * PixelCount);
        return new Image(Width, Height, 3, d);
    }

    /// <summary>This image as gray (a copy; RGB is reduced with Rec. 601 luma weights).</summary>
    public Image ToGray()
    {
        if (Channels == 1) return Clone();
        int n = PixelCount;
        var d = new float[n];
        for (int i = 0; i < n; i++) d[i] = 0.299f * Data[i] + 0.587f * Data[n + i] + 0.114f * Data[2 * n + i];
        return new Image(Width, Height, 1, d);
    }

    /// <summary>
    /// Reads an image file through SkiaSharp: PNG, JPEG (and the other formats Skia decodes: WebP, GIF, BMP, ICO), recognised by
    /// its first bytes, not its extension. Gray files give one channel, everything else RGB; alpha is composited over white.
    /// </summary>
    /// <exception cref="InvalidDataException">The file is not an image Skia decodes, or is truncated or broken; the message names the file.</exception>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    public static Image Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new FileNotFoundException($"{path}: no such file", path, e);
        }
        return Decode(bytes, path);
    }

    /// <summary>Decodes encoded image bytes (see <see cref="Load"/>); <paramref name="name"/> is used in error messages.</summary>
    /// <exception cref="InvalidDataException">Not an image, or truncated or broken data.</exception>
    public static Image Decode(ReadOnlySpan<byte> bytes, string name = "image")
    {
        if (bytes.Length == 0) throw new InvalidDataException($"{name}: empty file");
        using var data = SKData.CreateCopy(bytes);
        using var codec = SKCodec.Create(new SKMemoryStream(data), out var created)
            ?? throw new InvalidDataException($"{name}: not an image SkiaSharp can read (expected PNG or JPEG; "
                + (created == SKCodecResult.IncompleteInput ? "the data ends early: truncated?)" : Words(created) + ")"));
        var info = codec.Info;
        if (info.Width < 1 || info.Height < 1) throw new InvalidDataException($"{name}: zero image size {info.Width}×{info.Height}");
        if ((long)info.Width * info.Height > MaxPixels) throw new InvalidDataException($"{name}: image {info.Width}×{info.Height} is too large");
        int w = info.Width, h = info.Height, n = w * h;
        // RGBA, 8 bits per sample, unpremultiplied (SkiaSharp decodes 16-bit PNGs to 8 bits).
        var rgba = new byte[4 * n];
        SKCodecResult result;
        unsafe
        {
            fixed (byte* p = rgba)
                result = codec.GetPixels(new SKImageInfo(w, h, SKColorType.Rgba8888, SKAlphaType.Unpremul), (IntPtr)p);
        }
        if (result != SKCodecResult.Success)
            throw new InvalidDataException($"{name}: {(result == SKCodecResult.IncompleteInput ? "truncated image data" : "broken image data")} ({Words(result)})");
        bool gray = info.ColorType == SKColorType.Gray8;
        var img = new Image(w, h, gray ? 1 : 3);
        for (int i = 0; i < n; i++)
        {
            float a = rgba[4 * i + 3] / 255f;
            for (int c = 0; c < img.Channels; c++)
                img.Data[c * n + i] = a == 1f ? rgba[4 * i + c] / 255f : Math.Clamp(rgba[4 * i + c] / 255f * a + (1 - a), 0f, 1f);
        }
        return img;
    }

    /// <summary>"IncompleteInput" → "incomplete input".</summary>
    private static string Words(SKCodecResult r) =>
        string.Concat(r.ToString().Select((ch, i) => char.IsUpper(ch) && i > 0 ? " " + char.ToLowerInvariant(ch) : char.ToLowerInvariant(ch).ToString()));

    /// <summary>
    /// Writes the image through SkiaSharp; the format follows the extension: .png (8-bit, gray or RGB) or .jpg/.jpeg (quality
    /// <paramref name="jpegQuality"/>). Creates the directory if needed.
    /// </summary>
    /// <exception cref="ArgumentException">Unknown extension.</exception>
    public void Save(string path, int jpegQuality = 92)
    {
        ArgumentNullException.ThrowIfNull(path);
        var ext = Path.GetExtension(path).ToLowerInvariant();
        var format = ext switch
        {
            ".png" => SKEncodedImageFormat.Png,
            ".jpg" or ".jpeg" => SKEncodedImageFormat.Jpeg,
            _ => throw new ArgumentException($"{path}: unknown image extension '{ext}' (expected .png, .jpg or .jpeg)", nameof(path)),
        };
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (!string.IsNullOrEmpty(dir)) Directory.CreateDirectory(dir);
        using var fs = File.Create(path);
        Encode(fs, format, jpegQuality);
    }

    /// <summary>Encodes the image as PNG or JPEG (8 bits per sample, rounded) into <paramref name="stream"/>.</summary>
    public void Encode(Stream stream, SKEncodedImageFormat format, int quality = 92)
    {
        bool gray = Channels == 1 && format == SKEncodedImageFormat.Png;
        using var bmp = new SKBitmap(new SKImageInfo(Width, Height, gray ? SKColorType.Gray8 : SKColorType.Rgba8888, SKAlphaType.Opaque));
        var px = bmp.GetPixelSpan();
        int n = PixelCount;
        static byte B(float v) => (byte)MathF.Round(Math.Clamp(float.IsNaN(v) ? 0f : v, 0f, 1f) * 255f);
        if (gray)
            for (int i = 0; i < n; i++) px[i] = B(Data[i]);
        else
            for (int i = 0; i < n; i++)
            {
                for (int c = 0; c < 3; c++) px[4 * i + c] = B(Data[(Channels == 3 ? c : 0) * n + i]);
                px[4 * i + 3] = 255;
            }
        if (!bmp.Encode(stream, format, quality)) throw new IOException($"SkiaSharp could not encode a {Width}×{Height} {format} image");
    }
}
