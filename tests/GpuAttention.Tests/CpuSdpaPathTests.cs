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
        yield return new(1, 2, 1, 3, 2500, 33, 17, MaskShape: [3, 2500]);           // decoding: split keys with a mask
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
