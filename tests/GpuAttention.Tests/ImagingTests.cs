using System.Globalization;
using GpuAttention.Cli.Imaging;
using NUnit.Framework;
using SkiaSharp;

namespace GpuAttention.Tests;

/// <summary>
/// The CLI's image type (compiled into the tests from src/GpuAttention.Cli/Imaging): decoding and encoding go through SkiaSharp,
/// checked against ImageMagick's decoding of the fixtures; resizing, colour maps and drawing are the CLI's own.
/// </summary>
public class ImagingTests
{
    private static string Fixture(string name) => Path.Combine(TestContext.CurrentContext.TestDirectory, "Fixtures", name);

    private static Image Pattern(int w, int h, int ch)
    {
        var img = new Image(w, h, ch);
        for (int i = 0; i < img.Data.Length; i++) img.Data[i] = (i * 37 + i / 7 * 11) % 256 / 255f;
        return img;
    }

    private static void AssertSame(Image a, Image b, float tol = 1e-6f)
    {
        Assert.That((a.Width, a.Height, a.Channels), Is.EqualTo((b.Width, b.Height, b.Channels)));
        for (int i = 0; i < a.Data.Length; i++)
            if (Math.Abs(a.Data[i] - b.Data[i]) > tol) Assert.Fail($"sample {i}: {a.Data[i]} vs {b.Data[i]}");
    }

    /// <summary>Parses ImageMagick's txt: format: returns (W, H, pixels[y*W+x] = rgb in [0,1] with alpha composited over white).</summary>
    private static (int W, int H, float[][] Px) ReadImageMagickTxt(string path)
    {
        var lines = File.ReadAllLines(path);
        var head = lines[0].Split(':')[1].Split(',');
        int w = int.Parse(head[0]), h = int.Parse(head[1]);
        double max = double.Parse(head[2], CultureInfo.InvariantCulture);
        var px = new float[w * h][];
        foreach (var line in lines.Skip(1))
        {
            int colon = line.IndexOf(':');
            var xy = line[..colon].Split(',');
            int open = line.IndexOf('('), close = line.IndexOf(')');
            var v = line[(open + 1)..close].Split(',').Select(s => double.Parse(s, CultureInfo.InvariantCulture) / max).ToArray();
            double a = v.Length == 4 ? v[3] : 1;
            px[int.Parse(xy[1]) * w + int.Parse(xy[0])] = [.. v.Take(3).Select(c => (float)(c * a + (1 - a)))];
        }
        return (w, h, px);
    }

    [TestCase("rgb8_filter0.png", 3, 2e-6)]
    [TestCase("rgb8_filter1.png", 3, 2e-6)]
    [TestCase("rgb8_filter2.png", 3, 2e-6)]
    [TestCase("rgb8_filter3.png", 3, 2e-6)]
    [TestCase("rgb8_filter4.png", 3, 2e-6)]
    [TestCase("rgb8_interlaced.png", 3, 2e-6)]
    [TestCase("rgb16.png", 3, 1.0 / 255 + 1e-6)]   // SkiaSharp decodes to 8 bits (truncating)
    [TestCase("rgba8.png", 3, 2e-6)]
    [TestCase("rgba16.png", 3, 1.0 / 255 + 1e-6)]   // SkiaSharp decodes to 8 bits (truncating)
    [TestCase("gray8.png", 1, 2e-6)]
    [TestCase("gray16.png", 1, 1.0 / 255 + 1e-6)]   // SkiaSharp decodes to 8 bits (truncating)
    [TestCase("graya8.png", 3, 2e-6)]
    [TestCase("palette8.png", 3, 2e-6)]
    [TestCase("palette2.png", 3, 2e-6)]
    public void DecodesLikeImageMagick(string file, int channels, double tolerance)
    {
        var img = Image.Load(Fixture(file));
        var (w, h, px) = ReadImageMagickTxt(Fixture(file + ".txt"));
        Assert.That((img.Width, img.Height, img.Channels), Is.EqualTo((w, h, channels)));
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int c = 0; c < 3; c++)
                    Assert.That(img[Math.Min(c, channels - 1), y, x], Is.EqualTo(px[y * w + x][c]).Within(tolerance), $"{file} pixel ({x},{y}) channel {c}");
    }

    [Test]
    public void ShippedLogoDecodes()
    {
        var img = Image.Load(Fixture("logo.png"));
        Assert.That((img.Width, img.Height, img.Channels), Is.EqualTo((640, 480, 3)));
        // Values from `convert logo.png -format '%[pixel:p{X,Y}]' info:`.
        (int X, int Y, int R, int G, int B)[] known = [(10, 10, 255, 255, 255), (320, 240, 34, 62, 146), (500, 100, 37, 42, 109), (639, 479, 255, 255, 255)];
        foreach (var (x, y, r, g, b) in known)
            Assert.That(new[] { img[0, y, x], img[1, y, x], img[2, y, x] }, Is.EqualTo(new[] { r / 255f, g / 255f, b / 255f }).Within(1e-6), $"pixel ({x},{y})");
    }

    [TestCase(7, 5, 3)]
    [TestCase(7, 5, 1)]
    [TestCase(1, 1, 3)]
    [TestCase(33, 2, 1)]
    public void PngRoundTripIsExactOn8BitValues(int w, int h, int ch)
    {
        var img = Pattern(w, h, ch);
        var ms = new MemoryStream();
        img.Encode(ms, SKEncodedImageFormat.Png);
        AssertSame(Image.Decode(ms.ToArray(), "roundtrip"), img);
    }

    [Test]
    public void JpegRoundTripIsClose()
    {
        // A smooth picture (JPEG's case): a colour gradient.
        var img = new Image(48, 32, 3);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 48; x++)
                    img[c, y, x] = c switch { 0 => x / 47f, 1 => y / 31f, _ => 0.5f };
        var ms = new MemoryStream();
        img.Encode(ms, SKEncodedImageFormat.Jpeg, 95);
        var bytes = ms.ToArray();
        Assert.That(bytes[..3], Is.EqualTo(new byte[] { 0xFF, 0xD8, 0xFF }), "a JPEG stream");
        var back = Image.Decode(bytes, "roundtrip.jpg");
        Assert.That((back.Width, back.Height, back.Channels), Is.EqualTo((48, 32, 3)));
        double meanAbs = img.Data.Zip(back.Data, (a, b) => Math.Abs(a - b)).Average();
        Assert.That(meanAbs, Is.LessThan(0.01));
    }

    [Test]
    public void SaveAndLoadDispatchOnExtensionAndContent()
    {
        var dir = Path.Combine(Path.GetTempPath(), "gpuattention-imaging-" + Guid.NewGuid().ToString("N"));
        try
        {
            var rgb = Pattern(7, 5, 3);
            var png = Path.Combine(dir, "sub", "a.png");
            rgb.Save(png);                                   // creates the folder
            AssertSame(Image.Load(png), rgb);
            foreach (var ext in new[] { ".jpg", ".jpeg", ".JPG" })
            {
                var p = Path.Combine(dir, "a" + ext);
                rgb.Save(p);
                Assert.That(File.ReadAllBytes(p)[..2], Is.EqualTo(new byte[] { 0xFF, 0xD8 }), ext);
                Assert.That(Image.Load(p).Width, Is.EqualTo(7));
            }
            // The content decides, not the name: a PNG called .jpg still loads.
            var misnamed = Path.Combine(dir, "png-really.jpg");
            File.Copy(png, misnamed);
            AssertSame(Image.Load(misnamed), rgb);
            var gray = Pattern(7, 5, 1);
            var grayPath = Path.Combine(dir, "gray.png");
            gray.Save(grayPath);
            AssertSame(Image.Load(grayPath), gray);
            var e = Assert.Throws<ArgumentException>(() => rgb.Save(Path.Combine(dir, "x.gif")))!;
            Assert.That(e.Message, Does.Contain("expected .png, .jpg or .jpeg"));
            Assert.Throws<FileNotFoundException>(() => Image.Load(Path.Combine(dir, "missing.png")));
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }

    private static void AssertBad(byte[] bytes, string expectedPart)
    {
        var e = Assert.Throws<InvalidDataException>(() => Image.Decode(bytes, "bad.png"))!;
        Assert.That(e.Message, Does.StartWith("bad.png").And.Contain(expectedPart));
        Assert.That(e.Message, Does.Not.Contain("\n"));
    }

    [Test]
    public void MalformedFilesGiveInvalidDataException()
    {
        var good = File.ReadAllBytes(Fixture("rgb8_filter4.png"));
        AssertBad([], "empty");
        AssertBad("GIF87 is not quite a GIF"u8.ToArray(), "not an image");
        AssertBad("P6\n2 2\n255\nabcdefghijkl"u8.ToArray(), "expected PNG or JPEG");
        AssertBad(good[..40], "ends early");
    }

    [Test]
    public void EveryTruncationAndByteFlipIsHandled()
    {
        foreach (var file in new[] { "rgb8_filter4.png", "palette2.png", "rgb8_interlaced.png", "rgba16.png" })
        {
            var good = File.ReadAllBytes(Fixture(file));
            var full = Image.Decode(good, file);
            for (int n = 0; n < good.Length; n++)
            {
                // A cut file fails, or (cut after the last pixel data, e.g. without IEND) gives the whole picture: never a partial one.
                try { AssertSame(Image.Decode(good.AsSpan(0, n), file), full); }
                catch (InvalidDataException) { }
            }
            // A flipped byte may still decode (Skia, like browsers, does not insist on CRCs); anything else must be InvalidDataException.
            for (int i = 0; i < good.Length; i++)
            {
                var b = (byte[])good.Clone();
                b[i] ^= 0xA5;
                try { Image.Decode(b, file); }
                catch (InvalidDataException) { }
            }
        }
    }

    [Test]
    public void BoxResizeAveragesAndBilinearKeepsConstants()
    {
        var img = new Image(4, 2, 1, [0, 1, 2, 3, 4, 5, 6, 7]);
        var half = img.Resize(2, 1, ResizeMode.Box);
        Assert.That(half.Data, Is.EqualTo(new[] { (0 + 1 + 4 + 5) / 4f, (2 + 3 + 6 + 7) / 4f }).Within(1e-6));
        var third = new Image(3, 1, 1, [0, 3, 6]).Resize(2, 1, ResizeMode.Box);
        Assert.That(third.Data, Is.EqualTo(new[] { (0 + 1.5f) / 1.5f, (1.5f + 6) / 1.5f }).Within(1e-5));
        var flat = new Image(3, 3, 3);
        Array.Fill(flat.Data, 0.25f);
        Assert.That(flat.Resize(8, 5, ResizeMode.Bilinear).Data, Is.All.EqualTo(0.25f).Within(1e-6));
        var up = new Image(2, 1, 1, [0, 1]).Resize(4, 1, ResizeMode.Bilinear);
        Assert.That(up.Data, Is.EqualTo(new[] { 0f, 0.25f, 0.75f, 1f }).Within(1e-6));
        Assert.That(new Image(2, 1, 1, [0, 1]).Resize(4, 1, ResizeMode.Nearest).Data, Is.EqualTo(new[] { 0f, 0f, 1f, 1f }));
    }

    [Test]
    public void ColormapBlendDrawConcat()
    {
        var cm = Colormap.Inferno;
        Assert.That(cm.Map(0), Is.EqualTo(Color.FromHex("#000004")));
        Assert.That(cm.Map(1), Is.EqualTo(Color.FromHex("#fcffa4")));
        Assert.That(cm.Map(float.NaN), Is.EqualTo(cm.Map(0)));
        var rgb = cm.Apply(new Image(2, 1, 1, [3, 5]));
        Assert.That(rgb[0, 0, 1], Is.EqualTo(cm.Map(1).R));

        var bg = new Image(2, 1, 1, [0, 1]);
        var ov = new Image(2, 1, 3);
        Array.Fill(ov.Data, 1f);
        var blended = ImageOps.Blend(bg, ov, 0.5f, new Image(2, 1, 1, [1, 0]));
        Assert.That(blended.Channels, Is.EqualTo(3));
        Assert.That(new[] { blended[0, 0, 0], blended[0, 0, 1] }, Is.EqualTo(new[] { 0.5f, 1f }).Within(1e-6));

        var canvas = new Image(9, 9, 3);
        canvas.DrawCross(4, 4, 3, Color.White, thickness: 1);
        Assert.That(canvas[1, 4, 1], Is.EqualTo(1f));
        Assert.That(canvas[1, 4, 0], Is.EqualTo(0f)); // outline
        Assert.That(canvas[1, 0, 0], Is.EqualTo(0f));
        canvas.DrawRectangle(-2, -2, 20, 20, Color.White, 1); // clipped away entirely
        canvas.DrawRectangle(0, 0, 9, 9, new Color(1, 0, 0), 1);
        Assert.That((canvas[0, 0, 8], canvas[1, 0, 8], canvas[0, 8, 0]), Is.EqualTo((1f, 0f, 1f)));

        var cat = ImageOps.Concat([new Image(3, 2, 1), new Image(4, 5, 3)], 2, Color.White);
        Assert.That((cat.Width, cat.Height, cat.Channels), Is.EqualTo((2 + 3 + 2 + 4 + 2, 5 + 4, 3)));
        Assert.That(cat[0, 0, 0], Is.EqualTo(1f));
        Assert.That(cat[0, 2, 2], Is.EqualTo(0f));
        Assert.That(cat[0, 4, 2], Is.EqualTo(1f)); // below the shorter image
    }
}
