using System.Buffers.Binary;
using System.IO.Compression;

namespace GpuAttention.Imaging;

/// <summary>Row filter used by <see cref="PngCodec.Encode"/>.</summary>
public enum PngFilter
{
    /// <summary>Filter type 0: bytes stored as they are.</summary>
    None = 0,
    /// <summary>Filter type 1: difference to the pixel on the left.</summary>
    Sub = 1,
    /// <summary>Filter type 2: difference to the pixel above.</summary>
    Up = 2,
}

/// <summary>
/// PNG reader and writer on the .NET framework alone (zlib via <see cref="ZLibStream"/>).
/// Reads every standard colour type and bit depth (gray 1–16, RGB 8/16, palette 1–8 with tRNS,
/// gray+alpha and RGBA 8/16), all five filter types and Adam7 interlacing; alpha is composited over white.
/// Writes 8-bit gray or RGB.
/// </summary>
public static class PngCodec
{
    private static ReadOnlySpan<byte> Signature => [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];

    // Adam7 passes: x start, y start, x step, y step.
    private static readonly (int X, int Y, int Dx, int Dy)[] Adam7 =
        [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)];

    /// <summary>Decodes a PNG; <paramref name="name"/> is used in error messages.</summary>
    /// <exception cref="InvalidDataException">Bad signature, truncated data, bad chunk CRC, unsupported or inconsistent header, corrupt zlib stream.</exception>
    public static Image Decode(ReadOnlySpan<byte> png, string name = "image")
    {
        InvalidDataException Bad(string what) => new($"{name}: PNG: {what}");
        if (png.Length < 8 || !png[..8].SequenceEqual(Signature))
            throw Bad(png.Length < 8 ? "truncated signature" : "bad signature (not a PNG file)");

        int pos = 8, width = 0, height = 0, bitDepth = 0, colorType = -1, interlace = 0;
        byte[]? palette = null;
        byte[]? paletteAlpha = null;
        var idat = new MemoryStream();
        bool sawEnd = false;
        while (!sawEnd)
        {
            if (pos + 8 > png.Length) throw Bad($"truncated: file ends at byte {png.Length} without an IEND chunk");
            uint len = BinaryPrimitives.ReadUInt32BigEndian(png[pos..]);
            var typeBytes = png.Slice(pos + 4, 4);
            string type = System.Text.Encoding.ASCII.GetString(typeBytes);
            foreach (var b in typeBytes)
                if (!(b is >= (byte)'A' and <= (byte)'Z' || b is >= (byte)'a' and <= (byte)'z'))
                    throw Bad($"bad chunk type at byte {pos}");
            if (len > int.MaxValue || pos + 12L + len > png.Length)
                throw Bad($"truncated chunk {type} at byte {pos} (length {len}, {png.Length - pos - 8} bytes left)");
            var data = png.Slice(pos + 8, (int)len);
            uint crc = BinaryPrimitives.ReadUInt32BigEndian(png[(pos + 8 + (int)len)..]);
            if (Crc32.Compute(png.Slice(pos + 4, 4 + (int)len)) != crc) throw Bad($"bad CRC in chunk {type} at byte {pos}");
            if (pos == 8 && type != "IHDR") throw Bad($"first chunk is {type}, expected IHDR");
            switch (type)
            {
                case "IHDR":
                    if (pos != 8) throw Bad("duplicate IHDR chunk");
                    if (len != 13) throw Bad($"IHDR has length {len}, expected 13");
                    uint w = BinaryPrimitives.ReadUInt32BigEndian(data), h = BinaryPrimitives.ReadUInt32BigEndian(data[4..]);
                    bitDepth = data[8]; colorType = data[9]; interlace = data[12];
                    if (w == 0 || h == 0) throw Bad($"zero image size {w}×{h}");
                    if (w > int.MaxValue || h > int.MaxValue || (long)w * h > Image.MaxPixels) throw Bad($"image size {w}×{h} too large");
                    width = (int)w; height = (int)h;
                    bool okDepth = colorType switch
                    {
                        0 => bitDepth is 1 or 2 or 4 or 8 or 16,
                        3 => bitDepth is 1 or 2 or 4 or 8,
                        2 or 4 or 6 => bitDepth is 8 or 16,
                        _ => throw Bad($"unsupported colour type {colorType}"),
                    };
                    if (!okDepth) throw Bad($"unsupported bit depth {bitDepth} for colour type {colorType}");
                    if (data[10] != 0) throw Bad($"unsupported compression method {data[10]}");
                    if (data[11] != 0) throw Bad($"unsupported filter method {data[11]}");
                    if (interlace > 1) throw Bad($"unsupported interlace method {interlace}");
                    break;
                case "PLTE":
                    if (len % 3 != 0 || len == 0 || len > 768) throw Bad($"PLTE has length {len}, expected a multiple of 3 up to 768");
                    palette = data.ToArray();
                    break;
                case "tRNS":
                    if (colorType == 3) paletteAlpha = data.ToArray(); // gray/RGB colour keys are ignored (treated as opaque)
                    break;
                case "IDAT":
                    idat.Write(data);
                    break;
                case "IEND":
                    sawEnd = true;
                    break;
                default:
                    if (char.IsUpper(type[0])) throw Bad($"unknown critical chunk {type}");
                    break; // ancillary chunk: skipped
            }
            pos += 12 + (int)len;
        }
        if (idat.Length == 0) throw Bad("no IDAT chunk");
        if (colorType == 3 && palette is null) throw Bad("palette image without a PLTE chunk");

        int samplesPerPixel = colorType switch { 0 => 1, 2 => 3, 3 => 1, 4 => 2, _ => 4 };
        int bitsPerPixel = samplesPerPixel * bitDepth;
        int bpp = Math.Max(1, bitsPerPixel / 8);

        // Size of the filtered data over all passes.
        long expected = 0;
        foreach (var (pw, ph) in Passes(width, height, interlace))
            expected += ph * (1 + ((long)pw * bitsPerPixel + 7) / 8);
        if (expected > int.MaxValue) throw Bad("image data too large");
        var raw = new byte[expected];
        idat.Position = 0;
        try
        {
            using var z = new ZLibStream(idat, CompressionMode.Decompress);
            int got = 0, n;
            while (got < raw.Length && (n = z.Read(raw, got, raw.Length - got)) > 0) got += n;
            if (got < raw.Length) throw Bad($"truncated image data: {got} of {raw.Length} bytes after decompression");
        }
        catch (InvalidDataException e) when (!e.Message.StartsWith(name, StringComparison.Ordinal))
        {
            throw Bad($"corrupt zlib stream ({e.Message})");
        }

        int channels = colorType is 0 or 4 ? 1 : 3;
        var img = new Image(width, height, channels);
        int plane = width * height;
        float maxv = (1 << bitDepth) - 1;
        int offset = 0, pass = 0;
        foreach (var (pw, ph) in Passes(width, height, interlace))
        {
            var (x0, y0, dx, dy) = interlace == 1 ? Adam7[pass] : (0, 0, 1, 1);
            pass++;
            if (pw == 0 || ph == 0) continue;
            int stride = (int)(((long)pw * bitsPerPixel + 7) / 8);
            Span<byte> prev = new byte[stride];
            for (int r = 0; r < ph; r++)
            {
                int ft = raw[offset];
                var row = raw.AsSpan(offset + 1, stride);
                offset += 1 + stride;
                Unfilter(ft, row, prev, bpp, name, r);
                int y = y0 + r * dy;
                for (int i = 0; i < pw; i++)
                {
                    int x = x0 + i * dx, p = y * width + x;
                    if (colorType == 3)
                    {
                        int idx = Sample(row, i, bitDepth);
                        if (idx * 3 + 2 >= palette!.Length) throw Bad($"palette index {idx} out of range (palette has {palette.Length / 3} entries)");
                        float a = paletteAlpha is not null && idx < paletteAlpha.Length ? paletteAlpha[idx] / 255f : 1f;
                        for (int c = 0; c < 3; c++) img.Data[c * plane + p] = palette[idx * 3 + c] / 255f * a + (1 - a);
                    }
                    else
                    {
                        int first = i * samplesPerPixel;
                        float a = colorType is 4 or 6 ? Sample(row, first + samplesPerPixel - 1, bitDepth) / maxv : 1f;
                        for (int c = 0; c < channels; c++)
                            img.Data[c * plane + p] = Sample(row, first + c, bitDepth) / maxv * a + (1 - a);
                    }
                }
                prev = row;
            }
        }
        return img;
    }

    private static IEnumerable<(int W, int H)> Passes(int width, int height, int interlace)
    {
        if (interlace == 0) { yield return (width, height); yield break; }
        foreach (var (x, y, dx, dy) in Adam7)
            yield return ((width - x + dx - 1) / dx, (height - y + dy - 1) / dy);
    }

    private static int Sample(ReadOnlySpan<byte> row, int index, int bitDepth) => bitDepth switch
    {
        8 => row[index],
        16 => row[2 * index] << 8 | row[2 * index + 1],
        _ => row[index * bitDepth / 8] >> (8 - bitDepth - index * bitDepth % 8) & ((1 << bitDepth) - 1),
    };

    private static void Unfilter(int type, Span<byte> row, ReadOnlySpan<byte> prev, int bpp, string name, int r)
    {
        switch (type)
        {
            case 0: break;
            case 1: for (int i = bpp; i < row.Length; i++) row[i] += row[i - bpp]; break;
            case 2: for (int i = 0; i < row.Length; i++) row[i] += prev[i]; break;
            case 3:
                for (int i = 0; i < row.Length; i++)
                    row[i] += (byte)(((i >= bpp ? row[i - bpp] : 0) + prev[i]) >> 1);
                break;
            case 4:
                for (int i = 0; i < row.Length; i++)
                {
                    int a = i >= bpp ? row[i - bpp] : 0, b = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
                    int p = a + b - c, pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
                    row[i] += (byte)(pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
                }
                break;
            default: throw new InvalidDataException($"{name}: PNG: bad filter type {type} in row {r}");
        }
    }

    /// <summary>Writes an 8-bit PNG (gray for 1 channel, RGB for 3); samples are clamped to [0, 1] and rounded.</summary>
    public static void Encode(Image image, Stream output, PngFilter filter = PngFilter.Up)
    {
        ArgumentNullException.ThrowIfNull(image); ArgumentNullException.ThrowIfNull(output);
        int w = image.Width, h = image.Height, ch = image.Channels, stride = w * ch, plane = w * h;
        var ihdr = new byte[13];
        BinaryPrimitives.WriteUInt32BigEndian(ihdr, (uint)w);
        BinaryPrimitives.WriteUInt32BigEndian(ihdr.AsSpan(4), (uint)h);
        ihdr[8] = 8; ihdr[9] = (byte)(ch == 1 ? 0 : 2);
        output.Write(Signature);
        WriteChunk(output, "IHDR", ihdr);

        var z = new MemoryStream();
        using (var zs = new ZLibStream(z, CompressionLevel.Optimal, leaveOpen: true))
        {
            var cur = new byte[stride];
            var prev = new byte[stride];
            var line = new byte[stride + 1];
            for (int y = 0; y < h; y++)
            {
                for (int x = 0; x < w; x++)
                    for (int c = 0; c < ch; c++)
                        cur[x * ch + c] = (byte)(Math.Clamp(image.Data[c * plane + y * w + x], 0f, 1f) * 255f + 0.5f);
                line[0] = (byte)filter;
                for (int i = 0; i < stride; i++)
                    line[i + 1] = filter switch
                    {
                        PngFilter.Sub => (byte)(cur[i] - (i >= ch ? cur[i - ch] : 0)),
                        PngFilter.Up => (byte)(cur[i] - prev[i]),
                        _ => cur[i],
                    };
                zs.Write(line);
                (cur, prev) = (prev, cur);
            }
        }
        WriteChunk(output, "IDAT", z.GetBuffer().AsSpan(0, (int)z.Length));
        WriteChunk(output, "IEND", []);
    }

    private static void WriteChunk(Stream s, string type, ReadOnlySpan<byte> data)
    {
        Span<byte> head = stackalloc byte[8];
        BinaryPrimitives.WriteUInt32BigEndian(head, (uint)data.Length);
        System.Text.Encoding.ASCII.GetBytes(type, head[4..]);
        s.Write(head);
        s.Write(data);
        uint crc = Crc32.Update(Crc32.Update(0xFFFFFFFFu, head[4..]), data) ^ 0xFFFFFFFFu;
        Span<byte> tail = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(tail, crc);
        s.Write(tail);
    }
}

/// <summary>CRC-32 (ISO 3309 / ITU-T V.42, polynomial 0xEDB88320 reflected), as used by PNG and zlib's gzip.</summary>
public static class Crc32
{
    private static readonly uint[] Table = MakeTable();

    private static uint[] MakeTable()
    {
        var t = new uint[256];
        for (uint n = 0; n < 256; n++)
        {
            uint c = n;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[n] = c;
        }
        return t;
    }

    /// <summary>Continues a running (pre-inverted) CRC over <paramref name="data"/>; start with 0xFFFFFFFF and invert at the end.</summary>
    public static uint Update(uint crc, ReadOnlySpan<byte> data)
    {
        foreach (var b in data) crc = Table[(crc ^ b) & 0xFF] ^ (crc >> 8);
        return crc;
    }

    /// <summary>The CRC-32 of <paramref name="data"/>.</summary>
    public static uint Compute(ReadOnlySpan<byte> data) => Update(0xFFFFFFFFu, data) ^ 0xFFFFFFFFu;
}
