using GpuAttention.Backends.Cpu;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// The CPU backend's two grid_sample paths — channel-last AVX-512 (here forced for every shape, also 1 channel) and
/// the channel-first path — each through the <see cref="SpatialTests"/> checks: every mode × padding × align on every
/// shape (channel groups with tails, several tiles and blocks, 1-pixel images), finite differences, the fused spatial
/// transformer, PyTorch's NaN behaviour and bit-for-bit repeatability.
/// </summary>
[NonParallelizable]
public class CpuSpatialPathTests
{
    public record Case(SpatialTests.Shape S, GridSampleOptions O)
    {
        public override string ToString() => $"{S} {O}";
    }

    private static IEnumerable<TestCaseData> ShapeCases() =>
        CpuPath.Cases("", from s in SpatialTests.Shapes() from o in SpatialTests.AllOptions() select new Case(s, o));

    private static IEnumerable<TestCaseData> Options() => CpuPath.Cases("", SpatialTests.AllOptions());
    private static IEnumerable<TestCaseData> Bilinear() => CpuPath.Cases("", SpatialTests.BilinearOptions());
    private static IEnumerable<TestCaseData> Paths() => CpuPath.Cases("", new[] { "" });

    private static void Run(bool fast, Action<SpatialTests> body)
    {
        var t = new SpatialTests("cpu");
        CpuPath.Run(fast, () => CpuBackend.FastGridSample, v => CpuBackend.FastGridSample = v,
            () => { CpuBackend.FastGridSampleAlways = true; t.Open(); }, () => body(t),
            () => { t.Close(); CpuBackend.FastGridSampleAlways = false; });
    }

    [TestCaseSource(nameof(ShapeCases))]
    public void GridSampleMatchesReference(bool fast, Case c) => Run(fast, t => t.GridSampleMatchesReference(c.S, c.O));

    [TestCaseSource(nameof(Bilinear))]
    public void BackwardMatchesFloatFiniteDifferences(bool fast, GridSampleOptions o) => Run(fast, t => t.KernelBackwardMatchesFloatFiniteDifferences(o));

    [TestCaseSource(nameof(Options))]
    public void SpatialTransformMatchesAffineGridThenGridSample(bool fast, GridSampleOptions o) => Run(fast, t => t.SpatialTransformMatchesAffineGridThenGridSample(o));

    [TestCaseSource(nameof(Bilinear))]
    public void SpatialTransformGradThetaMatchesFiniteDifferences(bool fast, GridSampleOptions o) => Run(fast, t => t.SpatialTransformGradThetaMatchesFiniteDifferences(o));

    [TestCaseSource(nameof(Options))]
    public void AtomicBackwardMatchesReference(bool fast, GridSampleOptions o) => Run(fast, t => t.AtomicBackwardMatchesReference(o));

    [TestCaseSource(nameof(Paths))]
    public void NonFiniteGridBehavesAsPyTorch(bool fast, string _)
    {
        foreach (var c in SpatialTests.TorchNaNCases())
            Run(fast, t => t.NonFiniteGridBehavesAsPyTorch((GridSampleOptions)c.Arguments[0]!, (double[])c.Arguments[1]!));
    }

    /// <summary>The grid_sample edge cases of <see cref="EdgeNumericsTests"/> (NaN pixels, ±1e30/±∞/NaN coordinates, empty dims) on both paths.</summary>
    [TestCaseSource(nameof(Paths))]
    public void EdgeNumericsOnBothPaths(bool fast, string _)
    {
        var t = new EdgeNumericsTests("cpu");
        CpuPath.Run(fast, () => CpuBackend.FastGridSample, v => CpuBackend.FastGridSample = v,
            () => { CpuBackend.FastGridSampleAlways = true; t.Open(); }, () =>
            {
                foreach (var o in from o in SpatialTests.AllOptions()
                                  from b in new[] { GridSampleBackwardMode.Deterministic, GridSampleBackwardMode.Atomic }
                                  select o with { Backward = b })
                {
                    t.GridSampleNaNInOnePixelReachesOnlyThePointsThatSampleIt(o);
                    t.GridSampleHugeAndInfiniteCoordinates(o);
                }
                foreach (var (n, c, h, w) in new[] { (0, 2, 3, 4), (2, 0, 3, 4), (2, 2, 0, 4), (2, 2, 3, 0) })
                    t.GridSampleAndSpatialTransformEmptyDimensions(n, c, h, w);
            },
            () => { t.Close(); CpuBackend.FastGridSampleAlways = false; });
    }

    [TestCaseSource(nameof(Paths))]
    public void BackwardIsBitForBitRepeatable(bool fast, string _) => Run(fast, t => t.BackwardIsBitForBitRepeatable());

    [TestCaseSource(nameof(Paths))]
    public void SamplesPixelCentresExactly(bool fast, string _) => Run(fast, t => { t.GridSampleSamplesPixelCentresExactly(false); t.GridSampleSamplesPixelCentresExactly(true); });
}
