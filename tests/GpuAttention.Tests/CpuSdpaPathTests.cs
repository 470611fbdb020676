using System.Runtime.Intrinsics;
using GpuAttention.Backends.Cpu;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// The CPU backend has two SDPA forward paths: AVX-512 micro-kernels (where the CPU has AVX-512F) and the portable
/// Vector&lt;T&gt; path. Both against the double reference on shapes that cross every tile boundary of the fast path
/// (several key blocks, query sub-blocks and chunks, Ev not a multiple of 16, causal diagonals, split keys), plus the
/// vectorised exp against Math.Exp.
/// </summary>
[NonParallelizable]
public class CpuSdpaPathTests
{
    public static IEnumerable<SdpaForwardTests.Case> TileCases()
    {
        yield return new(1, 2, 1, 300, 290, 40, 24, Causal: true);                  // causal, many blocks and chunks
        yield return new(2, 3, 1, 97, 333, 64, 80, MaskShape: [97, 333]);            // Ev = 64 + 16 tail, float mask
        yield return new(1, 2, 2, 70, 260, 13, 130, MaskShape: [1, 2, 70, 260], BoolMask: true);
        yield return new(1, 1, 1, 257, 129, 64, 64, Causal: true);                  // causal, L > S, key block edge
        yield return new(1, 2, 1, 3, 2500, 33, 17, MaskShape: [3, 2500]);           // decoding (the decode path): split keys, mask
        yield return new(1, 1, 1, 40, 2500, 33, 17, MaskShape: [40, 2500]);         // L·Group > 16: split keys on these paths
        yield return new(1, 1, 1, 5, 1, 7, 3);                                       // one key
    }

    private static IEnumerable<TestCaseData> Both() => CpuPath.Cases("", TileCases().Concat(SdpaForwardTests.Cases()));

    [TestCaseSource(nameof(Both))]
    public void PathMatchesReference(bool fast, SdpaForwardTests.Case c)
    {
        var t = new SdpaForwardTests("cpu");
        CpuPath.Run(fast, () => CpuBackend.FastSdpa, v => CpuBackend.FastSdpa = v, t.Open, () => t.MatchesReference(c), t.Close);
    }

    /// <summary>Backward shapes crossing the fast backward's tiles: key blocks of 128, query blocks of 64, E, Ev not multiples of 16.</summary>
    public static IEnumerable<SdpaBackwardTests.Case> BackwardTileCases()
    {
        yield return new(1, 2, 1, 300, 290, 40, 24, Causal: true);                   // causal, GQA, many blocks
        yield return new(2, 3, 1, 97, 333, 64, 80, MaskShape: [97, 333]);             // Ev = 64 + 16 tail, float mask
        yield return new(1, 2, 2, 70, 260, 13, 130, MaskShape: [1, 2, 70, 260], BoolMask: true);
        yield return new(1, 1, 1, 257, 129, 64, 64, Causal: true);                   // causal, L > S, key block edge
        yield return new(1, 4, 2, 65, 300, 33, 17, Causal: true, MaskShape: [1, 300]); // causal L < S, row-broadcast mask
        yield return new(1, 1, 1, 5, 1, 7, 3);                                        // one key
    }

    private static IEnumerable<TestCaseData> BothBackward() => CpuPath.Cases("backward ", BackwardTileCases().Concat(SdpaBackwardTests.Cases()));

    [TestCaseSource(nameof(BothBackward))]
    public void BackwardPathMatchesReference(bool fast, SdpaBackwardTests.Case c)
    {
        var t = new SdpaBackwardTests("cpu");
        CpuPath.Run(fast, () => CpuBackend.FastSdpa, v => CpuBackend.FastSdpa = v, t.Open, () => t.MatchesReference(c), t.Close);
    }

    private static IEnumerable<TestCaseData> BackwardPasses() =>
        from fused in new[] { true, false }
        from c in BackwardTileCases().Concat(SdpaBackwardTests.Cases())
        select new TestCaseData(fused, c).SetName($"backward avx512 {(fused ? "one-pass" : "two-pass")} {c}");

    /// <summary>The AVX-512 backward's one-pass form (dK, dV and dQ from each tile, one item per kv head) and its two-pass
    /// form, each forced, against the reference; plus the edge numerics on the one-pass form.</summary>
    [TestCaseSource(nameof(BackwardPasses))]
    public void BackwardPassFormMatchesReference(bool fused, SdpaBackwardTests.Case c)
    {
        var t = new SdpaBackwardTests("cpu");
        int saved = CpuBackend.BwdFusedMinItemsPerThread;
        CpuBackend.BwdFusedMinItemsPerThread = fused ? 0 : int.MaxValue / 1024;
        try { CpuPath.Run(true, () => CpuBackend.FastSdpa, v => CpuBackend.FastSdpa = v, t.Open, () => t.MatchesReference(c), t.Close); }
        finally { CpuBackend.BwdFusedMinItemsPerThread = saved; }
    }

    [Test]
    public void BackwardEdgeNumericsOnOnePassForm()
    {
        var t = new EdgeNumericsTests("cpu");
        int saved = CpuBackend.BwdFusedMinItemsPerThread;
        CpuBackend.BwdFusedMinItemsPerThread = 0;
        try
        {
            CpuPath.Run(true, () => CpuBackend.FastSdpa, v => CpuBackend.FastSdpa = v, t.Open, () =>
            {
                t.SdpaBackwardNaNInOneGradOutRowStaysWhereTheMathPutsIt(false);
                t.SdpaBackwardNaNInOneGradOutRowStaysWhereTheMathPutsIt(true);
                t.SdpaBackwardNaNInOneQueryRowAndInfInOneKey();
                t.SdpaBackwardFullyMaskedRowsGiveZeroGradientsAndNoNaN();
            }, t.Close);
        }
        finally { CpuBackend.BwdFusedMinItemsPerThread = saved; }
    }

    /// <summary>
    /// NaN scores in several places of the key blocks (the fast path's max ignores NaN lanes and relies on exp(NaN − m)):
    /// a NaN key in a later block, a query row of NaN, and a row whose first key block is fully masked before a NaN key.
    /// The set of NaN outputs equals the double reference's, and the finite outputs match it.
    /// </summary>
    [TestCaseSource(nameof(NaNCases))]
    public void NaNScoresReachExactlyTheRowsTheReferenceSays(bool fast, bool causal, int nanKey, int nanQuery, bool maskFirstBlock)
    {
        CpuPath.Run(fast, () => CpuBackend.FastSdpa, v => CpuBackend.FastSdpa = v, () => { }, () =>
        {
            const int L = 40, S = 300, E = 16, Ev = 20;
            var rng = new Random(11);
            var q = TestUtil.Random(rng, L * E);
            var k = TestUtil.Random(rng, S * E);
            var v = TestUtil.Random(rng, S * Ev);
            if (nanKey >= 0) k[nanKey * E + 3] = float.NaN;
            if (nanQuery >= 0) for (int e = 0; e < E; e++) q[nanQuery * E + e] = float.NaN;
            float[]? mask = null;
            if (maskFirstBlock)
            {
                mask = new float[L * S];
                for (int i = 0; i < L; i += 3) for (int j = 0; j < 128; j++) mask[i * S + j] = float.NegativeInfinity;
            }
            using var d = Device.Open("cpu");
            using var tq = d.Upload(q, 1, 1, L, E);
            using var tk = d.Upload(k, 1, 1, S, E);
            using var tv = d.Upload(v, 1, 1, S, Ev);
            using var tm = mask is null ? null : d.Upload(mask, L, S);
            var (o, lse) = d.Sdpa(tq, tk, tv, tm, new SdpaOptions(IsCausal: causal));
            using (o) using (lse)
            {
                var (ro, rl) = GpuAttention.Reference.ReferenceOps.SdpaForward(q, k, v, 1, 1, 1, L, S, E, Ev, 1f / MathF.Sqrt(E), causal,
                    mask, mask is null ? null : [L, S]);
                var go = d.Download(o);
                var gl = d.Download(lse);
                int nanRows = 0;
                for (int i = 0; i < L; i++)
                {
                    bool refNan = double.IsNaN(rl[i]);
                    nanRows += refNan ? 1 : 0;
                    Assert.That(float.IsNaN(gl[i]), Is.EqualTo(refNan), $"lse row {i}: {gl[i]} vs reference {rl[i]}");
                    for (int c = 0; c < Ev; c++)
                    {
                        double r = ro[i * Ev + c];
                        float g = go[i * Ev + c];
                        Assert.That(float.IsNaN(g), Is.EqualTo(double.IsNaN(r)), $"out[{i},{c}]: {g} vs reference {r}");
                        if (!double.IsNaN(r)) Assert.That(g, Is.EqualTo(r).Within(1e-5 + 1e-5 * Math.Abs(r)), $"out[{i},{c}]");
                    }
                    if (!refNan) Assert.That(gl[i], Is.EqualTo(rl[i]).Within(1e-4), $"lse row {i}");
                }
                Assert.That(nanRows, Is.GreaterThan(0).And.LessThanOrEqualTo(L), "the case puts NaN somewhere");
            }
        }, () => { });
    }

    private static IEnumerable<TestCaseData> NaNCases()
    {
        foreach (var fast in new[] { true, false })
        {
            string p = fast ? "avx512" : "portable";
            yield return new TestCaseData(fast, false, 200, -1, false).SetName($"{p} NaN key in the second block");
            yield return new TestCaseData(fast, true, 20, -1, false).SetName($"{p} causal NaN key: rows from 20 on");
            yield return new TestCaseData(fast, false, -1, 7, false).SetName($"{p} NaN query row");
            yield return new TestCaseData(fast, true, -1, 0, true).SetName($"{p} causal NaN query row 0 fully masked first block");
            yield return new TestCaseData(fast, false, 260, 5, true).SetName($"{p} first block masked then NaN key");
        }
    }

    /// <summary>The SDPA backward edge cases of <see cref="EdgeNumericsTests"/> (NaN/∞ placement, fully masked rows) on both paths.</summary>
    [TestCase(true)]
    [TestCase(false)]
    public void BackwardEdgeNumericsOnBothPaths(bool fast)
    {
        var t = new EdgeNumericsTests("cpu");
        CpuPath.Run(fast, () => CpuBackend.FastSdpa, v => CpuBackend.FastSdpa = v, t.Open, () =>
        {
            t.SdpaBackwardNaNInOneGradOutRowStaysWhereTheMathPutsIt(false);
            t.SdpaBackwardNaNInOneGradOutRowStaysWhereTheMathPutsIt(true);
            t.SdpaBackwardNaNInOneQueryRowAndInfInOneKey();
            t.SdpaBackwardFullyMaskedRowsGiveZeroGradientsAndNoNaN();
        }, t.Close);
    }

    [Test]
    public void VectorExpMatchesMathExp()
    {
        if (!CpuPath.HasAvx512) Assert.Ignore("no AVX-512F");
        var xs = new List<float>();
        for (double x = -90; x <= 0; x += 0.0137) xs.Add((float)x);
        xs.AddRange([0f, -0f, -1e-30f, -87.3f, -87.34f, -88f, -1000f, float.NegativeInfinity, float.NaN, -0.3465736f, 0.3465736f]);
        while (xs.Count % 16 != 0) xs.Add(-1f);
        double worst = 0;
        for (int i = 0; i < xs.Count; i += 16)
        {
            var v = CpuBackend.Exp(Vector512.Create(xs.ToArray(), i));
            for (int k = 0; k < 16; k++)
            {
                float x = xs[i + k], y = v[k];
                if (float.IsNaN(x)) { Assert.That(float.IsNaN(y), $"exp(NaN) = {y}"); continue; }
                if (x < -87.33654f) { Assert.That(y, Is.EqualTo(0f), $"exp({x}) is flushed to 0"); continue; }
                double r = Math.Exp(x);
                Assert.That(float.IsNormal(y), $"exp({x}) = {y} is a normal float");
                worst = Math.Max(worst, Math.Abs(y - r) / r);
            }
        }
        Assert.That(worst, Is.LessThan(5e-7), "worst relative error of the vectorised exp");
    }
}

/// <summary>The CPU GEMM's AVX-512 micro-kernel (4×64) and its portable Vector&lt;T&gt; micro-kernel, each against the reference.</summary>
[NonParallelizable]
public class CpuGemmPathTests
{
    private static IEnumerable<TestCaseData> Both() =>
        CpuPath.Cases("", GemmTests.Cases().Append(new GemmTests.Case(2, 67, 200, 300, false, true, 1f, 0.5f)));   // K over two depth blocks

    [TestCaseSource(nameof(Both))]
    public void PathMatchesReference(bool fast, GemmTests.Case c)
    {
        var t = new GemmTests("cpu");
        CpuPath.Run(fast, () => CpuBackend.FastGemm, v => CpuBackend.FastGemm = v, t.Open, () => t.MatchesReference(c), t.Close);
    }
}

/// <summary>Runs a test on one of the CPU backend's two kernel paths (AVX-512 or portable) and restores the switch.</summary>
internal static class CpuPath
{
    public static bool HasAvx512 => System.Runtime.Intrinsics.X86.Avx512F.IsSupported && Vector512.IsHardwareAccelerated;

    /// <summary>Every case on both paths, named "avx512 …" / "portable …" after <paramref name="prefix"/>.</summary>
    public static IEnumerable<TestCaseData> Cases<T>(string prefix, IEnumerable<T> cases) =>
        from fast in new[] { true, false }
        from c in cases
        select new TestCaseData(fast, c).SetName($"{prefix}{(fast ? "avx512" : "portable")} {c}");

    /// <summary>Sets the path switch, runs open → body → close, and restores the switch; the AVX-512 path is ignored on CPUs without it.</summary>
    public static void Run(bool fast, Func<bool> get, Action<bool> set, Action open, Action body, Action close)
    {
        if (fast && !HasAvx512) Assert.Ignore("this CPU has no AVX-512F: only the portable path exists here");
        bool saved = get();
        set(fast);
        try { open(); body(); }
        finally { close(); set(saved); }
    }
}
