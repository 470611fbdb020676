using System.Text;

namespace GpuAttention.Imaging;

/// <summary>
/// Netpbm reader and writer: PGM (P2 ASCII, P5 binary) and PPM (P3 ASCII, P6 binary),
/// maxval 1–65535 (two big-endian bytes per sample above 255), '#' comments in the header
/// (and, for the ASCII forms, between samples).
/// </summary>
public static class PnmCodec
{
    /// <summary>Decodes a PGM/PPM; <paramref name="name"/> is used in error messages.</summary>
    /// <exception cref="InvalidDataException">Bad magic, malformed or truncated header or data, maxval out of range.</exception>
    public static Image Decode(ReadOnlySpan<byte> data, string name = "image")
    {
        InvalidDataException Bad(string what) => new($"{name}: PNM: {what}");
        if (data.Length < 2 || data[0] != (byte)'P') throw Bad("bad magic (expected P2, P3, P5 or P6)");
        char kind = (char)data[1];
        if (kind is not ('2' or '3' or '5' or '6'))
            throw Bad(kind is '1' or '4' or '7' ? $"unsupported Netpbm type P{kind} (only P2, P3, P5, P6)" : "bad magic (expected P2, P3, P5 or P6)");
        int pos = 2;
        if (pos >= data.Length || !IsSpace(data[pos]) && data[pos] != (byte)'#') throw Bad("bad magic (expected whitespace after P" + kind + ")");
        long width = ReadInt(data, ref pos, name, "width");
        long height = ReadInt(data, ref pos, name, "height");
        long maxval = ReadInt(data, ref pos, name, "maxval");
        if (width == 0 || height == 0) throw Bad($"zero image size {width}×{height}");
        if (width * height > Image.MaxPixels) throw Bad($"image size {width}×{height} too large");
        if (maxval < 1 || maxval > 65535) throw Bad($"maxval {maxval} out of range 1..65535");
        int channels = kind is '3' or '6' ? 3 : 1;
        int w = (int)width, h = (int)height, plane = w * h, n = plane * channels;
        var img = new Image(w, h, channels);
        float scale = 1f / maxval;
        if (kind is '5' or '6')
        {
            if (pos >= data.Length) throw Bad("truncated: no pixel data after the header");
            if (!IsSpace(data[pos])) throw Bad("expected one whitespace character after maxval");
            pos++;
            int bytesPer = maxval > 255 ? 2 : 1;
            long need = (long)n * bytesPer;
            if (data.Length - pos < need) throw Bad($"truncated pixel data: {data.Length - pos} of {need} bytes");
            for (int i = 0; i < n; i++)
            {
                int v = bytesPer == 1 ? data[pos + i] : data[pos + 2 * i] << 8 | data[pos + 2 * i + 1];
                if (v > maxval) throw Bad($"sample {v} exceeds maxval {maxval}");
                int p = i / channels, c = i % channels;
                img.Data[c * plane + p] = v * scale;
            }
        }
        else
        {
            for (int i = 0; i < n; i++)
            {
                long v = ReadInt(data, ref pos, name, $"sample {i} of {n}");
                if (v > maxval) throw Bad($"sample {v} exceeds maxval {maxval}");
                int p = i / channels, c = i % channels;
                img.Data[c * plane + p] = v * scale;
            }
        }
        return img;
    }

    private static bool IsSpace(byte b) => b is (byte)' ' or (byte)'\t' or (byte)'\n' or (byte)'\r' or 0x0B or 0x0C;

    /// <summary>Skips whitespace and comments, then reads a decimal integer.</summary>
    private static long ReadInt(ReadOnlySpan<byte> d, ref int pos, string name, string what)
    {
        while (pos < d.Length)
        {
            if (IsSpace(d[pos])) pos++;
            else if (d[pos] == (byte)'#') { while (pos < d.Length && d[pos] != (byte)'\n' && d[pos] != (byte)'\r') pos++; }
            else break;
        }
        if (pos >= d.Length) throw new InvalidDataException($"{name}: PNM: truncated: file ends before {what}");
        long v = 0; int start = pos;
        while (pos < d.Length && d[pos] is >= (byte)'0' and <= (byte)'9')
        {
            v = v * 10 + (d[pos++] - '0');
            if (v > int.MaxValue) throw new InvalidDataException($"{name}: PNM: {what} is too large");
        }
        if (pos == start) throw new InvalidDataException($"{name}: PNM: expected a number for {what} at byte {start}");
        return v;
    }

    /// <summary>
    /// Writes PGM (1 channel) or PPM (3 channels); binary (P5/P6) unless <paramref name="ascii"/> (P2/P3).
    /// Samples are clamped to [0, 1] and scaled to <paramref name="maxval"/> (1–65535).
    /// </summary>
    public static void Encode(Image image, Stream output, bool ascii = false, int maxval = 255, string? comment = null)
    {
        ArgumentNullException.ThrowIfNull(image); ArgumentNullException.ThrowIfNull(output);
        if (maxval is < 1 or > 65535) throw new ArgumentOutOfRangeException(nameof(maxval), $"maxval must be 1..65535, got {maxval}");
        int ch = image.Channels, plane = image.PixelCount, n = plane * ch;
        char kind = (ch, ascii) switch { (1, true) => '2', (3, true) => '3', (1, false) => '5', _ => '6' };
        var header = new StringBuilder($"P{kind}\n");
        if (comment is not null)
            foreach (var line in comment.Split('\n')) header.Append("# ").Append(line.TrimEnd('\r')).Append('\n');
        header.Append($"{image.Width} {image.Height}\n{maxval}\n");
        output.Write(Encoding.ASCII.GetBytes(header.ToString()));
        int Q(int i) => (int)(Math.Clamp(image.Data[i % ch * plane + i / ch], 0f, 1f) * maxval + 0.5f);
        if (!ascii)
        {
            int bytesPer = maxval > 255 ? 2 : 1;
            var buf = new byte[n * bytesPer];
            for (int i = 0; i < n; i++)
            {
                int v = Q(i);
                if (bytesPer == 1) buf[i] = (byte)v;
                else { buf[2 * i] = (byte)(v >> 8); buf[2 * i + 1] = (byte)v; }
            }
            output.Write(buf);
        }
        else
        {
            var sb = new StringBuilder();
            int lineLen = 0;
            for (int i = 0; i < n; i++)
            {
                var s = Q(i).ToString(System.Globalization.CultureInfo.InvariantCulture);
                if (lineLen > 0 && lineLen + 1 + s.Length > 70) { sb.Append('\n'); lineLen = 0; }
                else if (lineLen > 0) { sb.Append(' '); lineLen++; }
                sb.Append(s); lineLen += s.Length;
            }
            sb.Append('\n');
            output.Write(Encoding.ASCII.GetBytes(sb.ToString()));
        }
    }
}
