using System.Text;
using GpuAttention.IO;
using NUnit.Framework;

namespace GpuAttention.Tests;

public class NpyTests
{
    private static byte[] Bytes(NpyArray a) { using var ms = new MemoryStream(); Npy.Write(ms, a); return ms.ToArray(); }

    private static byte[] Handmade(string header, int dataBytes)
    {
        var h = Encoding.ASCII.GetBytes(header);
        var b = new byte[10 + h.Length + dataBytes];
        new byte[] { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0, (byte)h.Length, 0 }.CopyTo(b, 0);
        h.CopyTo(b, 10);
        return b;
    }

    [Test]
    public void RoundTripsFloatAndBool()
    {
        var f = NpyArray.FromFloats([1.5f, -2, float.NegativeInfinity, 4, 5, 6], 2, 3);
        var g = Npy.Parse(Bytes(f));
        Assert.That(g.Shape, Is.EqualTo(new[] { 2, 3 }));
        Assert.That(g.Floats, Is.EqualTo(f.Floats));
        var b = NpyArray.FromBools([true, false, true], 3);
        var c = Npy.Parse(Bytes(b));
        Assert.That(c.Bools, Is.EqualTo(b.Bools));
        Assert.That(c.Shape, Is.EqualTo(new[] { 3 }));
        Assert.That(Bytes(f).Length % 64, Is.EqualTo(24 % 64), "header padded to 64 bytes");
    }

    [Test]
    public void ReadsWhatNumPyWrites()
    {
        // np.save of np.arange(3, dtype='<f4').reshape(1, 3), header as NumPy 1.x writes it.
        var d = Handmade("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), }          \n", 12);
        BitConverter.GetBytes(0f).CopyTo(d, d.Length - 12); BitConverter.GetBytes(1f).CopyTo(d, d.Length - 8); BitConverter.GetBytes(2f).CopyTo(d, d.Length - 4);
        var a = Npy.Parse(d);
        Assert.That(a.Floats, Is.EqualTo(new[] { 0f, 1f, 2f }));
        var s = Npy.Parse(Handmade("{'descr': '<f4', 'fortran_order': False, 'shape': (), }\n", 4));
        Assert.That(s.Shape, Is.Empty);
        Assert.That(s.Length, Is.EqualTo(1));
    }

    [TestCase("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n", 16, "dtype '<f8'")]
    [TestCase("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }\n", 8, "Fortran")]
    [TestCase("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n", 8, "truncated data")]
    [TestCase("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n", 8, "unexpected bytes")]
    [TestCase("{'descr': '<f4', 'shape': (2,), }\n", 8, "fortran_order")]
    [TestCase("{'descr': '<f4', 'fortran_order': False, 'shape': (2,3 }\n", 24, "malformed")]
    [TestCase("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }\n", 8, "out of range")]
    [TestCase("{'descr': '<f4', 'fortran_order': False, 'shape': (99999, 99999, 99999), }\n", 8, "too many elements")]
    [TestCase("['not', 'a', 'dict']\n", 8, "malformed")]
    public void MalformedHeadersGiveCleanErrors(string header, int dataBytes, string mention)
    {
        var e = Assert.Throws<InvalidDataException>(() => Npy.Parse(Handmade(header, dataBytes), "q"));
        Assert.That(e!.Message, Does.StartWith("q: ").And.Contain(mention));
    }

    [Test]
    public void TruncatedFilesGiveCleanErrorsAtEveryLength()
    {
        var full = Bytes(NpyArray.FromFloats(new float[10], 2, 5));
        for (int n = 0; n < full.Length; n++)
            Assert.Throws<InvalidDataException>(() => Npy.Parse(full.AsSpan(0, n), "x"), $"length {n}");
    }
}
