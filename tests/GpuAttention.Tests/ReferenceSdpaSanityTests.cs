using GpuAttention.Reference;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>Hand-computed cases for the double-precision SDPA reference the demo verifies against.</summary>
public class ReferenceSdpaSanityTests
{
    [Test]
    public void TwoKeysByHand()
    {
        // One query, two keys: scores 1·scale and 0 → weights e^s/(e^s+1).
        float[] q = [1, 0], k = [1, 0, 0, 1], v = [10, 20];
        var (o, lse) = ReferenceOps.SdpaForward(q, k, v, 1, 1, 1, 1, 2, 2, 1, 0.5f, false, null, null);
        double p0 = Math.Exp(0.5) / (Math.Exp(0.5) + 1);
        Assert.That(o[0], Is.EqualTo(p0 * 10 + (1 - p0) * 20).Within(1e-12));
        Assert.That(lse[0], Is.EqualTo(Math.Log(Math.Exp(0.5) + 1)).Within(1e-12));
    }

    [Test]
    public void CausalMaskAndFullyMaskedRow()
    {
        // L = S = 2, E = 1, Ev = 1; all scores 0. Causal: row 0 sees key 0 only, row 1 averages both.
        float[] q = [0, 0], k = [0, 0], v = [2, 4];
        var (o, lse) = ReferenceOps.SdpaForward(q, k, v, 1, 1, 1, 2, 2, 1, 1, 1f, true, null, null);
        Assert.That(o, Is.EqualTo(new[] { 2.0, 3.0 }).Within(1e-12));
        Assert.That(lse, Is.EqualTo(new[] { 0.0, Math.Log(2) }).Within(1e-12));
        // A [L, S] additive mask that removes all of row 1 and key 1 of row 0, broadcast over B = 2 batches (GQA: Hq 2, Hkv 1).
        float[] mask = [0, float.NegativeInfinity, float.NegativeInfinity, float.NegativeInfinity];
        float[] q2 = new float[2 * 2 * 2], k2 = new float[2 * 1 * 2], v2 = [2, 4, 6, 8];
        var (o2, lse2) = ReferenceOps.SdpaForward(q2, k2, v2, 2, 2, 1, 2, 2, 1, 1, 1f, false, mask, [2, 2]);
        Assert.That(o2, Is.EqualTo(new[] { 2.0, 0, 2, 0, 6, 0, 6, 0 }));
        Assert.That(lse2.Where((_, i) => i % 2 == 1), Is.All.EqualTo(double.NegativeInfinity));
    }
}
