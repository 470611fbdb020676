using System.Buffers.Binary;
using System.Globalization;
using System.Text;

namespace GpuAttention.IO;

/// <summary>Element type of an <see cref="NpyArray"/>.</summary>
public enum NpyDType
{
    /// <summary>float32, descr '&lt;f4' (or '&gt;f4', converted on read).</summary>
    Float32,
    /// <summary>bool, descr '|b1'.</summary>
    Bool,
}

/// <summary>A dense C-order array read from or written to a NumPy .npy file: float32 or bool.</summary>
public sealed class NpyArray
{
    private NpyArray(int[] shape, float[]? f, bool[]? b) { Shape = shape; Floats = f; Bools = b; }

    /// <summary>Dimensions (empty for a scalar).</summary>
    public int[] Shape { get; }
    /// <summary>The data when <see cref="DType"/> is Float32, else null.</summary>
    public float[]? Floats { get; }
    /// <summary>The data when <see cref="DType"/> is Bool, else null.</summary>
    public bool[]? Bools { get; }
    /// <summary>Element type.</summary>
    public NpyDType DType => Floats is not null ? NpyDType.Float32 : NpyDType.Bool;
    /// <summary>Number of elements.</summary>
    public long Length => Floats?.LongLength ?? Bools!.LongLength;

    /// <summary>A float32 array of the given shape (data is not copied).</summary>
    public static NpyArray FromFloats(float[] data, params int[] shape)
    {
        if (Tensor.Product(shape) != data.Length) throw new ArgumentException($"data: {data.Length} elements do not fill shape {TensorShapeException.Format(shape)}");
        return new NpyArray(shape, data, null);
    }

    /// <summary>A bool array of the given shape (data is not copied).</summary>
    public static NpyArray FromBools(bool[] data, params int[] shape)
    {
        if (Tensor.Product(shape) != data.Length) throw new ArgumentException($"data: {data.Length} elements do not fill shape {TensorShapeException.Format(shape)}");
        return new NpyArray(shape, null, data);
    }

    /// <summary>The shape formatted as "[a, b]".</summary>
    public string ShapeText => TensorShapeException.Format(Shape);

    internal static NpyArray Create(int[] shape, float[]? f, bool[]? b) => new(shape, f, b);
}

/// <summary>
/// Reader and writer of NumPy's .npy format (format versions 1.0, 2.0 and 3.0, see
/// https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html), for float32 and bool C-order arrays.
/// Every malformed input gives an <see cref="InvalidDataException"/> with a one-line message; nothing else escapes.
/// </summary>
public static class Npy
{
    private static ReadOnlySpan<byte> Magic => [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];
    /// <summary>Largest header accepted (NumPy itself limits headers to 10 000 bytes by default).</summary>
    public const int MaxHeaderBytes = 65536;

    /// <summary>Reads a .npy file. <paramref name="name"/> is used in error messages (defaults to the file name).</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not a float32/bool C-order .npy, or it is truncated.</exception>
    public static NpyArray Read(string path, string? name = null)
    {
        name ??= Path.GetFileName(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"{name}: file not found: {path}", path);
        byte[] bytes = File.ReadAllBytes(path);
        return Parse(bytes, name);
    }

    /// <summary>Parses the bytes of a .npy file.</summary>
    /// <exception cref="InvalidDataException">Malformed header, unsupported dtype, Fortran order, wrong data length.</exception>
    public static NpyArray Parse(ReadOnlySpan<byte> bytes, string name = "array")
    {
        if (bytes.Length < 10 || !bytes[..6].SequenceEqual(Magic))
            throw Bad(name, "not a .npy file (missing \\x93NUMPY magic)");
        byte major = bytes[6];
        int headerLen, start;
        switch (major)
        {
            case 1: headerLen = BinaryPrimitives.ReadUInt16LittleEndian(bytes[8..]); start = 10; break;
            case 2:
            case 3:
                if (bytes.Length < 12) throw Bad(name, "truncated header");
                uint hl = BinaryPrimitives.ReadUInt32LittleEndian(bytes[8..]);
                if (hl > MaxHeaderBytes) throw Bad(name, $"header length {hl} is absurd (more than {MaxHeaderBytes} bytes)");
                headerLen = (int)hl; start = 12; break;
            default: throw Bad(name, $"unsupported .npy format version {major}.{bytes[7]}");
        }
        if (headerLen > MaxHeaderBytes) throw Bad(name, $"header length {headerLen} is absurd");
        if (bytes.Length < start + headerLen) throw Bad(name, $"truncated header (needs {headerLen} bytes, file has {bytes.Length - start})");
        string header;
        try { header = (major == 3 ? new UTF8Encoding(false, true) : Encoding.Latin1).GetString(bytes.Slice(start, headerLen)); }
        catch (DecoderFallbackException) { throw Bad(name, "header is not valid UTF-8"); }

        var dict = ParseDict(header, name);
        if (!dict.TryGetValue("descr", out var descrObj) || descrObj is not string descr) throw Bad(name, "header has no 'descr' string");
        if (!dict.TryGetValue("fortran_order", out var fo) || fo is not bool fortran) throw Bad(name, "header has no 'fortran_order' bool");
        if (!dict.TryGetValue("shape", out var sh) || sh is not List<long> shapeL) throw Bad(name, "header has no 'shape' tuple");
        if (fortran) throw Bad(name, "Fortran-order arrays are not supported; save a C-order array (np.ascontiguousarray)");
        if (shapeL.Count > 32) throw Bad(name, $"rank {shapeL.Count} is absurd");
        var shape = new int[shapeL.Count];
        long count = 1;
        for (int i = 0; i < shape.Length; i++)
        {
            if (shapeL[i] < 0 || shapeL[i] > int.MaxValue) throw Bad(name, $"dimension {shapeL[i]} out of range");
            shape[i] = (int)shapeL[i];
            count = count * shape[i];
            if (count > Array.MaxLength) throw Bad(name, $"shape {TensorShapeException.Format(shape)} has too many elements");
        }
        int itemSize = descr switch { "<f4" or ">f4" or "=f4" => 4, "|b1" or "<b1" or ">b1" or "=b1" or "?" => 1, _ => 0 };
        if (itemSize == 0) throw Bad(name, $"dtype '{descr}' is not supported; expected float32 ('<f4') or bool ('|b1')");
        var data = bytes[(start + headerLen)..];
        long need = count * itemSize;
        if (data.Length < need) throw Bad(name, $"truncated data: shape {TensorShapeException.Format(shape)} needs {need} bytes, file has {data.Length}");
        if (data.Length > need) throw Bad(name, $"{data.Length - need} unexpected bytes after the data of shape {TensorShapeException.Format(shape)}");
        if (itemSize == 4)
        {
            var f = new float[count];
            bool big = descr[0] == '>';
            for (long i = 0; i < count; i++)
            {
                var s = data.Slice((int)(i * 4), 4);
                f[i] = big ? BinaryPrimitives.ReadSingleBigEndian(s) : BinaryPrimitives.ReadSingleLittleEndian(s);
            }
            return NpyArray.Create(shape, f, null);
        }
        var b = new bool[count];
        for (long i = 0; i < count; i++)
        {
            byte x = data[(int)i];
            if (x > 1) throw Bad(name, $"bool element {i} has byte value {x} (expected 0 or 1)");
            b[i] = x == 1;
        }
        return NpyArray.Create(shape, null, b);
    }

    /// <summary>Writes a .npy file (format 1.0, or 2.0 if the header needs it).</summary>
    public static void Write(string path, NpyArray array)
    {
        using var fs = File.Create(path);
        Write(fs, array);
    }

    /// <summary>Writes a .npy to a stream.</summary>
    public static void Write(Stream stream, NpyArray array)
    {
        string shape = array.Shape.Length switch
        {
            0 => "()",
            1 => $"({array.Shape[0]},)",
            _ => "(" + string.Join(", ", array.Shape) + ")",
        };
        string descr = array.DType == NpyDType.Float32 ? "<f4" : "|b1";
        string dict = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}";
        int pre = 10;
        int total = pre + dict.Length + 1;
        bool v2 = false;
        int pad = (64 - total % 64) % 64;
        if (dict.Length + 1 + pad > ushort.MaxValue) { v2 = true; pre = 12; total = pre + dict.Length + 1; pad = (64 - total % 64) % 64; }
        string header = dict + new string(' ', pad) + "\n";
        var w = new BinaryWriter(stream, Encoding.Latin1, leaveOpen: true);
        w.Write(Magic);
        w.Write((byte)(v2 ? 2 : 1)); w.Write((byte)0);
        if (v2) w.Write((uint)header.Length); else w.Write((ushort)header.Length);
        w.Write(Encoding.Latin1.GetBytes(header));
        if (array.Floats is { } f)
        {
            var buf = new byte[f.Length * 4];
            for (int i = 0; i < f.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(buf.AsSpan(i * 4), f[i]);
            w.Write(buf);
        }
        else
        {
            foreach (var x in array.Bools!) w.Write((byte)(x ? 1 : 0));
        }
        w.Flush();
    }

    private static InvalidDataException Bad(string name, string what) => new($"{name}: {what}");

    // A tiny parser for the header's Python dict literal: string keys; values are strings, True/False, or tuples of ints.
    private static Dictionary<string, object> ParseDict(string s, string name)
    {
        int p = 0;
        var d = new Dictionary<string, object>();
        void Ws() { while (p < s.Length && char.IsWhiteSpace(s[p])) p++; }
        void Expect(char c) { Ws(); if (p >= s.Length || s[p] != c) throw Bad(name, $"malformed header (expected '{c}' at {p})"); p++; }
        string Str()
        {
            Ws();
            if (p >= s.Length || s[p] is not ('\'' or '"')) throw Bad(name, $"malformed header (expected a string at {p})");
            char qc = s[p++];
            int e = s.IndexOf(qc, p);
            if (e < 0) throw Bad(name, "malformed header (unterminated string)");
            var r = s[p..e]; p = e + 1; return r;
        }
        object Value()
        {
            Ws();
            if (p >= s.Length) throw Bad(name, "malformed header (truncated)");
            if (s[p] is '\'' or '"') return Str();
            if (s.AsSpan(p).StartsWith("True")) { p += 4; return true; }
            if (s.AsSpan(p).StartsWith("False")) { p += 5; return false; }
            if (s[p] == '(')
            {
                p++;
                var list = new List<long>();
                while (true)
                {
                    Ws();
                    if (p < s.Length && s[p] == ')') { p++; return list; }
                    int st = p;
                    while (p < s.Length && (char.IsDigit(s[p]) || s[p] == '-')) p++;
                    if (st == p || !long.TryParse(s.AsSpan(st, p - st), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long v))
                        throw Bad(name, "malformed header (bad shape tuple)");
                    if (list.Count > 64) throw Bad(name, "malformed header (shape tuple too long)");
                    list.Add(v);
                    Ws();
                    if (p < s.Length && s[p] == ',') p++;
                    else if (p >= s.Length || s[p] != ')') throw Bad(name, "malformed header (bad shape tuple)");
                }
            }
            throw Bad(name, $"malformed header (unexpected value at {p})");
        }
        Expect('{');
        while (true)
        {
            Ws();
            if (p < s.Length && s[p] == '}') { p++; break; }
            string key = Str();
            Expect(':');
            d[key] = Value();
            Ws();
            if (p < s.Length && s[p] == ',') { p++; continue; }
            Expect('}');
            break;
        }
        return d;
    }
}
