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
    ];

    public static IEnumerable<VerifyCase> All => Families.SelectMany(f => f());
}
