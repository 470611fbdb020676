using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using GpuAttention.Imaging;
using NUnit.Framework;

namespace GpuAttention.Tests;

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

    [TestCase("rgb8_filter0.png", 3)]
    [TestCase("rgb8_filter1.png", 3)]
    [TestCase("rgb8_filter2.png", 3)]
    [TestCase("rgb8_filter3.png", 3)]
    [TestCase("rgb8_filter4.png", 3)]
    [TestCase("rgb8_interlaced.png", 3)]
    [TestCase("rgb16.png", 3)]
    [TestCase("rgba8.png", 3)]
    [TestCase("rgba16.png", 3)]
    [TestCase("gray8.png", 1)]
    [TestCase("gray16.png", 1)]
    [TestCase("graya8.png", 1)]
    [TestCase("palette8.png", 3)]
    [TestCase("palette2.png", 3)]
    [TestCase("rgb8.ppm", 3)]
    [TestCase("rgb16.ppm", 3)]
    [TestCase("rgb8_ascii.ppm", 3)]
    [TestCase("gray8.pgm", 1)]
    public void DecodesLikeImageMagick(string file, int channels)
    {
        var img = Image.Load(Fixture(file));
        var (w, h, px) = ReadImageMagickTxt(Fixture(file + ".txt"));
        Assert.That((img.Width, img.Height, img.Channels), Is.EqualTo((w, h, channels)));
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int c = 0; c < channels; c++)
                    Assert.That(img[c, y, x], Is.EqualTo(px[y * w + x][c]).Within(2e-6), $"{file} pixel ({x},{y}) channel {c}");
    }

    [Test]
    public void FilterFixturesUseTheirFilterAndAgree()
    {
        var reference = Image.Load(Fixture("rgb8.ppm"));
        for (int f = 0; f < 5; f++)
        {
            var bytes = File.ReadAllBytes(Fixture($"rgb8_filter{f}.png"));
            AssertSame(Image.Decode(bytes), reference);
        }
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

    [TestCase(7, 5, 3, PngFilter.None)]
    [TestCase(7, 5, 3, PngFilter.Sub)]
    [TestCase(7, 5, 3, PngFilter.Up)]
    [TestCase(7, 5, 1, PngFilter.None)]
    [TestCase(7, 5, 1, PngFilter.Sub)]
    [TestCase(7, 5, 1, PngFilter.Up)]
    [TestCase(1, 1, 3, PngFilter.Up)]
    [TestCase(33, 2, 1, PngFilter.Sub)]
    public void PngRoundTrip(int w, int h, int ch, PngFilter filter)
    {
        var img = Pattern(w, h, ch);
        var ms = new MemoryStream();
        PngCodec.Encode(img, ms, filter);
        AssertSame(Image.Decode(ms.ToArray(), "roundtrip"), img);
    }

    [Test]
    public void SaveAndLoadDispatchOnExtensionAndMagic()
    {
        var dir = Path.Combine(Path.GetTempPath(), "gpuattention-imaging-" + Guid.NewGuid().ToString("N"));
        try
        {
            var rgb = Pattern(7, 5, 3);
            foreach (var ext in new[] { ".png", ".ppm", ".pnm" })
            {
                var p = Path.Combine(dir, "a" + ext);
                rgb.Save(p);
                AssertSame(Image.Load(p), rgb);
            }
            var pgm = Path.Combine(dir, "gray.pgm");
            rgb.Save(pgm);
            AssertSame(Image.Load(pgm), rgb.ToGray(), 0.5f / 255f + 1e-6f);
            Assert.That(File.ReadAllBytes(pgm)[..2], Is.EqualTo("P5"u8.ToArray()));
            Assert.Throws<ArgumentException>(() => rgb.Save(Path.Combine(dir, "x.gif")));
            Assert.Throws<FileNotFoundException>(() => Image.Load(Path.Combine(dir, "missing.png")));
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }

    [TestCase(1, false, 255)]
    [TestCase(3, false, 255)]
    [TestCase(1, true, 255)]
    [TestCase(3, true, 255)]
    [TestCase(3, false, 65535)]
    [TestCase(1, true, 65535)]
    public void PnmRoundTrip(int ch, bool ascii, int maxval)
    {
        var img = Pattern(7, 5, ch);
        var ms = new MemoryStream();
        PnmCodec.Encode(img, ms, ascii, maxval, comment: "written by a test\nsecond line");
        var text = Encoding.ASCII.GetString(ms.ToArray(), 0, 40);
        Assert.That(text, Does.StartWith($"P{(ch, ascii) switch { (1, true) => 2, (3, true) => 3, (1, false) => 5, _ => 6 }}\n# written by a test\n# second line\n"));
        AssertSame(Image.Decode(ms.ToArray()), img, maxval == 255 ? 1e-6f : 1e-5f);
    }

    [Test]
    public void AsciiPnmWithCommentsEverywhere()
    {
        var ppm = "P3 # comment after magic\n# full-line comment\n2 # width\n1\n# before maxval\n15\n15 0 0 # red\n0 15 # split\n 5\n";
        var img = Image.Decode(Encoding.ASCII.GetBytes(ppm), "inline.ppm");
        Assert.That((img.Width, img.Height, img.Channels), Is.EqualTo((2, 1, 3)));
        Assert.That(new[] { img[0, 0, 0], img[1, 0, 0], img[2, 0, 0], img[0, 0, 1], img[1, 0, 1], img[2, 0, 1] },
            Is.EqualTo(new[] { 1f, 0f, 0f, 0f, 1f, 1 / 3f }).Within(1e-6));
        var pgm = Image.Decode("P2\n3 1\n255\n0 128 255"u8, "inline.pgm");
        Assert.That(pgm.Data, Is.EqualTo(new[] { 0f, 128 / 255f, 1f }).Within(1e-6));
    }

    private static byte[] Chunk(string type, byte[] data)
    {
        var b = new byte[12 + data.Length];
        BinaryPrimitives.WriteUInt32BigEndian(b, (uint)data.Length);
        Encoding.ASCII.GetBytes(type, b.AsSpan(4));
        data.CopyTo(b, 8);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(8 + data.Length), Crc32.Compute(b.AsSpan(4, 4 + data.Length)));
        return b;
    }

    /// <summary>A valid PNG with a crafted IHDR (CRCs correct) and the given raw (unfiltered-with-type-bytes) image data.</summary>
    private static byte[] CraftPng(uint w, uint h, byte depth, byte colorType, byte[] raw, byte interlace = 0)
    {
        var ihdr = new byte[13];
        BinaryPrimitives.WriteUInt32BigEndian(ihdr, w);
        BinaryPrimitives.WriteUInt32BigEndian(ihdr.AsSpan(4), h);
        ihdr[8] = depth; ihdr[9] = colorType; ihdr[12] = interlace;
        var z = new MemoryStream();
        using (var zs = new System.IO.Compression.ZLibStream(z, System.IO.Compression.CompressionLevel.Fastest, true)) zs.Write(raw);
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, .. Chunk("IHDR", ihdr), .. Chunk("IDAT", z.ToArray()), .. Chunk("IEND", [])];
    }

    private static void AssertBad(byte[] bytes, string expectedPart)
    {
        var e = Assert.Throws<InvalidDataException>(() => Image.Decode(bytes, "bad.png"))!;
        Assert.That(e.Message, Does.StartWith("bad.png").And.Contain(expectedPart));
        Assert.That(e.Message, Does.Not.Contain("\n"));
    }

    [Test]
    public void CraftedPngDecodes()
    {
        // 2×2 gray, rows filtered with Sub and Up.
        var png = CraftPng(2, 2, 8, 0, [1, 10, 20, 2, 5, 5]);
        Assert.That(Image.Decode(png).Data, Is.EqualTo(new[] { 10f, 30f, 15f, 35f }.Select(v => v / 255f)).Within(1e-6));
    }

    [Test]
    public void MalformedPngsGiveInvalidDataException()
    {
        var good = File.ReadAllBytes(Fixture("rgb8_filter4.png"));
        AssertBad([], "empty");
        AssertBad("GIF89a......"u8.ToArray(), "bad magic");
        AssertBad([0x89, 0x50, 0x4E, 0x47, 0, 0, 0, 0, 0, 0], "bad signature");
        AssertBad(good[..^1], "truncated");
        AssertBad(good[..40], "truncated");
        var crc = (byte[])good.Clone();
        crc[50] ^= 0x40; // inside IDAT data
        AssertBad(crc, "bad CRC in chunk IDAT");
        AssertBad(CraftPng(0, 5, 8, 2, []), "zero image size");
        AssertBad(CraftPng(3, 0, 8, 0, []), "zero image size");
        AssertBad(CraftPng(2, 2, 4, 2, [0, 0, 0, 0, 0, 0]), "unsupported bit depth 4");
        AssertBad(CraftPng(2, 2, 8, 5, [0, 0, 0, 0, 0, 0]), "unsupported colour type 5");
        AssertBad(CraftPng(2, 2, 8, 0, [0, 1, 2, 7, 3, 4]), "bad filter type 7");
        AssertBad(CraftPng(2, 2, 8, 0, [0, 1, 2, 0]), "truncated image data");
        AssertBad(CraftPng(2, 2, 8, 3, [0, 0, 0, 0, 0, 0]), "without a PLTE");
        AssertBad(CraftPng(2, 2, 8, 0, [0, 1, 2, 0, 3, 4], interlace: 2), "interlace method 2");
        AssertBad(CraftPng(60000, 60000, 8, 0, [0]), "too large");
        // zlib stream corrupted but CRC fixed up.
        var ihdrEnd = 8 + 25;
        var idatLen = (int)BinaryPrimitives.ReadUInt32BigEndian(good.AsSpan(ihdrEnd));
        var zbad = (byte[])good.Clone();
        zbad[ihdrEnd + 8] = 0x00; zbad[ihdrEnd + 9] = 0x00; // bad zlib header
        BinaryPrimitives.WriteUInt32BigEndian(zbad.AsSpan(ihdrEnd + 8 + idatLen), Crc32.Compute(zbad.AsSpan(ihdrEnd + 4, 4 + idatLen)));
        AssertBad(zbad, "zlib");
    }

    [Test]
    public void EveryTruncationAndByteFlipIsHandled()
    {
        foreach (var file in new[] { "rgb8_filter4.png", "palette2.png", "rgb8_interlaced.png", "rgb8.ppm", "rgb8_ascii.ppm", "gray8.pgm" })
        {
            var good = File.ReadAllBytes(Fixture(file));
            for (int n = 0; n < good.Length; n++)
            {
                // A prefix of an ASCII PNM may still be a valid file (e.g. cut inside the last number); anything else must throw.
                try { Image.Decode(good.AsSpan(0, n), file); if (!file.EndsWith("ascii.ppm")) Assert.Fail($"{file} cut to {n} bytes decoded"); }
                catch (InvalidDataException) { }
            }
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
    public void MalformedPnmsGiveInvalidDataException()
    {
        void Bad(string text, string part)
        {
            var e = Assert.Throws<InvalidDataException>(() => Image.Decode(Encoding.ASCII.GetBytes(text), "bad.ppm"))!;
            Assert.That(e.Message, Does.StartWith("bad.ppm").And.Contain(part));
        }
        Bad("P4\n1 1\n\0", "unsupported Netpbm type P4");
        Bad("P9\n1 1\n255\n", "bad magic");
        Bad("P6\n0 1\n255\n", "zero image size");
        Bad("P6\n2 2\n255\nabc", "truncated pixel data");
        Bad("P5\n2 2\n0\n", "maxval 0");
        Bad("P5\n2 2\n70000\n", "maxval 70000");
        Bad("P2\n2 1\n10\n3 11\n", "exceeds maxval");
        Bad("P2\n2 1\n10\n3\n", "truncated");
        Bad("P3\n1 x\n", "expected a number");
        Bad("P6\n1 1", "truncated");
    }

    [Test]
    public void Crc32MatchesTheStandardCheckValue()
    {
        Assert.That(Crc32.Compute("123456789"u8), Is.EqualTo(0xCBF43926u));
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
