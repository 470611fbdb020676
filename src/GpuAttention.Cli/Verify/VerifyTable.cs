using GpuAttention.Reference;

namespace GpuAttention.Cli.Verify;

/// <summary>What one output of a verify case measured: its relative error against the double reference and the bound it must meet.</summary>
internal readonly record struct VerifyResult(string Output, double RelError, double Bound)
{
    /// <summary>NaN errors fail (the comparison is false).</summary>
    public bool Passed => RelError <= Bound;
}

/// <summary>
/// One row of <c>gpuattention verify</c>: an op on one shape. <see cref="Run"/> draws random inputs from the given
/// generator, runs the op on the device and compares every output with <c>ReferenceOps</c> (double precision).
/// </summary>
internal sealed record VerifyCase(string Op, string Shape, Func<Device, Random, IReadOnlyList<VerifyResult>> Run);

/// <summary>
/// Every case of <c>gpuattention verify</c>, forward and backward. Each op family lists its cases in one file of this
/// folder (<c>&lt;Family&gt;Verify.cs</c>, a static <c>Cases()</c>) and adds one line to <see cref="Families"/>.
/// </summary>
internal static class VerifyTable
{
    private static readonly Func<IEnumerable<VerifyCase>>[] Families =
    [
        SdpaVerify.Cases,
        SdpaBackwardVerify.Cases,
        GemmVerify.Cases,
        MhaVerify.Cases,
        GlimpseVerify.Cases,
        SpatialVerify.Cases,
    ];

    public static IEnumerable<VerifyCase> All => Families.SelectMany(f => f());
}

/// <summary>Helpers shared by the verify families: random inputs, poisoned outputs, and the one place a device result is compared.</summary>
internal static class VerifyKit
{
    /// <summary>Forward bound (relative L2 error against the double reference).</summary>
    public const double Forward = 1e-5;
    /// <summary>Backward bound.</summary>
    public const double Backward = 1e-4;

    /// <summary>
    /// Hidden self-test hook (<c>verify --perturb</c>): every device result is disturbed before it is compared (one element moved by
    /// 1e-3 of the result's norm), so every case must fail. It proves that the comparison can fail; never set otherwise.
    /// </summary>
    public static bool Perturb { get; set; }

    /// <summary>Uniform random floats in [−scale, scale).</summary>
    public static float[] Random(Random rng, long n, float scale = 1f)
    {
        var a = new float[n];
        for (long i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        return a;
    }

    /// <summary>A new output tensor filled with NaN, so that an element the op does not write fails the comparison.</summary>
    public static Tensor Poisoned(Device dev, params int[] shape)
    {
        var t = dev.Allocate(shape);
        dev.Fill(t, float.NaN);
        return t;
    }

    /// <summary>Downloads <paramref name="actual"/> and measures its relative error against <paramref name="reference"/>.</summary>
    public static VerifyResult Check(Device dev, string name, Tensor actual, double[] reference, double bound) =>
        Check(name, dev.Download(actual), reference, bound);

    /// <summary>Measures the relative error of a downloaded result against <paramref name="reference"/>.</summary>
    public static VerifyResult Check(string name, float[] actual, double[] reference, double bound)
    {
        if (Perturb && actual.Length > 0)
        {
            double norm = Math.Sqrt(reference.Where(double.IsFinite).Sum(r => r * r));
            int at = 0;
            for (int i = 0; i < reference.Length; i++) if (double.IsFinite(reference[i])) { at = i; break; }
            actual[at] += (float)Math.Max(1e-3 * norm, 1e-3);
        }
        return new VerifyResult(name, ReferenceOps.RelativeError(actual, reference), bound);
    }
}
