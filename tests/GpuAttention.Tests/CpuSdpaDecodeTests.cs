using System.Runtime.Intrinsics;
using GpuAttention.Backends.Cpu;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// The CPU decode path (L·Group ≤ 16 query rows per kv head: one pass over each kv head for its whole query group,
/// split keys with a deterministic merge) at every vector width of its one generic algorithm (512, 256, 128 bits),
/// against the double reference: GQA groups, split and unsplit keys, E and Ev off the vector width, masks, causal.
/// </summary>
[NonParallelizable]
public class CpuSdpaDecodeTests
{
    public static IEnumerable<SdpaForwardTests.Case> DecodeCases()
    {
        yield return new(1, 32, 8, 1, 4096, 128, 128);                                 // the LLM decode shape: split keys
        yield return new(1, 8, 2, 1, 1000, 128, 128);                                  // group 4, split keys, tail block
        yield return new(2, 6, 3, 2, 700, 33, 17);                                     // L = 2, E/Ev tails at every width
        yield return new(1, 4, 1, 1, 1300, 20, 24, MaskShape: [1, 4, 1, 1300], BoolMask: true);   // bool mask, group 4
        yield return new(1, 4, 2, 3, 50, 16, 16, Causal: true);                          // causal: rows keep j ≤ i
        yield return new(3, 16, 1, 1, 513, 64, 64, MaskShape: [1, 513]);                 // group 16, float mask row
        yield return new(8, 4, 4, 1, 129, 7, 5);                                        // many items, no split, tiny E
        yield return new(1, 2, 2, 4, 3, 9, 9, MaskShape: [4, 3]);                        // fewer keys than a block
    }

    private static IEnumerable<TestCaseData> Widths() =>
        from w in new[] { 512, 256, 128 }
        from c in DecodeCases()
        select new TestCaseData(w, c).SetName($"decode w{w} {c}");

    [TestCaseSource(nameof(Widths))]
    public void DecodeMatchesReference(int width, SdpaForwardTests.Case c)
    {
        if (width == 512 && !Vector512.IsHardwareAccelerated) Assert.Ignore("no 512-bit vectors here");
        if (width == 256 && !Vector256.IsHardwareAccelerated) Assert.Ignore("no 256-bit vectors here");
        var shape = new Backends.SdpaShape(c.B, c.Hq, c.Hkv, c.L, c.S, c.E, c.Ev, 1f, c.Causal, 0, 0, 0, 0);
        Assert.That(CpuBackend.UsesDecode(shape), "the case takes the decode path");
        var t = new SdpaForwardTests("cpu");
        int saved = CpuBackend.DecodeWidth;
        CpuBackend.DecodeWidth = width;
        try { t.Open(); t.MatchesReference(c); }
        finally { t.Close(); CpuBackend.DecodeWidth = saved; }
    }

    /// <summary>Huge scores (‖q‖·‖k‖ past <see cref="CpuBackend.DecodeSafeNorm"/>): the decode forward redoes the block in
    /// the score order of the backward that follows, on both paths, so the backward's exp(S − lse) does not overflow.</summary>
    [TestCase(true)]
    [TestCase(false)]
    public void HugeScoresStayConsistentWithTheBackward(bool fast)
    {
        var t = new EdgeNumericsTests("cpu");
        CpuPath.Run(fast, () => CpuBackend.FastSdpa, v => CpuBackend.FastSdpa = v, t.Open, t.SdpaHugeInputsDoNotOverflow, t.Close);
    }

    /// <summary>The split-key merge runs in a fixed order: repeated calls give bit-identical out and lse.</summary>
    [Test]
    public void SplitKeyDecodeIsBitwiseRepeatable()
    {
        const int B = 1, Hq = 8, Hkv = 2, S = 5000, E = 64;
        var rng = new Random(3);
        using var d = Device.Open("cpu");
        using var q = d.Upload(TestUtil.Random(rng, B * Hq * E), B, Hq, 1, E);
        using var k = d.Upload(TestUtil.Random(rng, B * Hkv * S * E), B, Hkv, S, E);
        using var v = d.Upload(TestUtil.Random(rng, B * Hkv * S * E), B, Hkv, S, E);
        var (o1, l1) = d.Sdpa(q, k, v);
        float[] a = d.Download(o1), la = d.Download(l1);
        for (int rep = 0; rep < 5; rep++)
        {
            var (o2, l2) = d.Sdpa(q, k, v);
            Assert.That(d.Download(o2), Is.EqualTo(a), $"out of call {rep + 2}");
            Assert.That(d.Download(l2), Is.EqualTo(la), $"lse of call {rep + 2}");
            o2.Dispose(); l2.Dispose();
        }
        o1.Dispose(); l1.Dispose();
    }
}
