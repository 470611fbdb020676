using System.Text;
using FsCheck;
using FsCheck.Fluent;
using GpuAttention.IO;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// Property-based tests (FsCheck) of the .npy reader on random bytes, random header text, mutated and truncated valid files:
/// it either returns an array consistent with its header or throws <see cref="InvalidDataException"/> — never another
/// exception type (which the CLI would not turn into its one-line message).
/// </summary>
public class NpyPropertyTests
{
    private static readonly Config Cfg = Config.QuickThrowOnFailure.WithMaxTest(400);

    /// <summary>Parses; true when the result is consistent or the error is an InvalidDataException with a one-line message.</summary>
    private static bool ParsesCleanly(byte[] bytes)
    {
        try
        {
            var a = Npy.Parse(bytes, "x");
            long n = 1;
            foreach (var d in a.Shape) n *= d;
            return n == a.Length;
        }
        catch (InvalidDataException e) { return e.Message.StartsWith("x: ", StringComparison.Ordinal) && !e.Message.Contains('\n'); }
        catch (Exception e) { throw new AssertionException($"Npy.Parse threw {e.GetType().Name}: {e.Message} on {Convert.ToHexString(bytes.AsSpan(0, Math.Min(bytes.Length, 120)))}"); }
    }

    private static byte[] Valid(int seed)
    {
        var rng = new Random(seed);
        int rank = rng.Next(0, 4);
        var shape = Enumerable.Range(0, rank).Select(_ => rng.Next(0, 4)).ToArray();
        long n = 1; foreach (var d in shape) n *= d;
        var arr = rng.Next(2) == 0
            ? NpyArray.FromFloats(Enumerable.Range(0, (int)n).Select(i => (float)rng.NextDouble()).ToArray(), shape)
            : NpyArray.FromBools(Enumerable.Range(0, (int)n).Select(i => rng.Next(2) == 1).ToArray(), shape);
        using var ms = new MemoryStream();
        Npy.Write(ms, arr);
        return ms.ToArray();
    }

    private static byte[] WithHeader(string header, int dataBytes, byte major = 1)
    {
        var h = Encoding.Latin1.GetBytes(header);
        var pre = major == 1
            ? new byte[] { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0, (byte)(h.Length & 0xff), (byte)(h.Length >> 8) }
            : new byte[] { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', major, 0, (byte)(h.Length & 0xff), (byte)(h.Length >> 8), 0, 0 };
        return [.. pre, .. h, .. new byte[dataBytes]];
    }

    [Test]
    public void RandomBytesGiveOnlyCleanErrors()
    {
        var magic = new byte[] { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y' };
        Prop.ForAll(ArbMap.Default.ArbFor<byte[]>(), ArbMap.Default.ArbFor<bool>(), (bytes, withMagic) =>
            ParsesCleanly(withMagic ? [.. magic, .. bytes] : bytes)).Check(Cfg);
    }

    [Test]
    public void RandomHeadersGiveOnlyCleanErrors()
    {
        string[] tokens = ["{", "}", "(", ")", ",", ":", " ", "'descr'", "'fortran_order'", "'shape'", "'<f4'", "'|b1'", "'<f8'", "'>f4'",
            "True", "False", "0", "1", "3", "-1", "2147483648", "99999999999999999999", "'", "\"", "\n", "é", "\u0000", "-", "((", "'x'"];
        var gen = Gen.Elements(tokens).ListOf().Select(l => string.Concat(l));
        Prop.ForAll(gen.ToArbitrary(), Gen.Choose(0, 40).ToArbitrary(), Gen.Elements((byte)1, (byte)2, (byte)3).ToArbitrary(),
            (header, data, major) => ParsesCleanly(WithHeader(header, data, major))).Check(Cfg);
    }

    [Test]
    public void MutatedValidFilesGiveOnlyCleanErrors()
    {
        var mutation = Gen.Choose(0, 3).Zip(Gen.Choose(0, 1 << 20)).Zip(Gen.Choose(0, 255));
        Prop.ForAll(Gen.Choose(0, 1000).ToArbitrary(), mutation.ListOf().ToArbitrary(), (seed, muts) =>
        {
            var b = Valid(seed).ToList();
            foreach (var ((kind, pos), value) in muts)
            {
                if (b.Count == 0) break;
                int p = pos % b.Count;
                switch (kind)
                {
                    case 0: b[p] = (byte)value; break;                  // overwrite a byte
                    case 1: b.RemoveRange(p, b.Count - p); break;        // truncate
                    case 2: b.Insert(p, (byte)value); break;             // insert a byte
                    default: b[p] ^= (byte)(1 << (value & 7)); break;    // flip a bit
                }
            }
            return ParsesCleanly(b.ToArray());
        }).Check(Cfg);
    }

    [Test]
    public void EveryTruncationOfAValidFileIsAnInvalidDataError()
    {
        for (int seed = 0; seed < 30; seed++)
        {
            var full = Valid(seed);
            Assert.That(Npy.Parse(full).Length, Is.GreaterThanOrEqualTo(0));
            for (int len = 0; len < full.Length; len++)
                Assert.Throws<InvalidDataException>(() => Npy.Parse(full.AsSpan(0, len)), $"seed {seed}, truncated to {len} of {full.Length} bytes");
        }
    }

    [Test]
    public void HugeShapesAreRejectedBeforeAllocating()
    {
        foreach (var shape in new[] { "(2147483647, 2147483647)", "(4611686018427387904,)", "(-1,)", "(99999999999999999999,)", "(" + string.Join(",", Enumerable.Repeat("1", 40)) + ")" })
        {
            var ex = Assert.Throws<InvalidDataException>(() => Npy.Parse(WithHeader($"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}\n", 8)));
            Assert.That(ex!.Message, Does.Contain("array"));
        }
    }
}
