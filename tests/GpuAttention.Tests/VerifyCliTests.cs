using System.Text.RegularExpressions;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>`gpuattention verify` and the CUDA lines of `gpuattention devices`, run as a user runs them.</summary>
[Category("Slow")]   // a process, a compiler or a tuning run: skipped by the fast tier (--filter TestCategory!=Slow)
public class VerifyCliTests
{
    /// <summary>Every op of the library, forward and backward, as `verify` names its rows.</summary>
    private static readonly string[] Ops =
    [
        "sdpa", "sdpa-backward", "gemm", "mha", "mha-backward", "glimpse", "glimpse-backward", "draw-read", "draw-read-backward",
        "affine-grid", "affine-grid-backward", "grid-sample", "grid-sample-backward", "spatial-transform", "spatial-transform-backward",
    ];

    private static (string[] Rows, int Passed, int Failed) Parse(string stdout)
    {
        var lines = stdout.TrimEnd().Split('\n').Select(l => l.TrimEnd('\r')).ToArray();
        var m = Regex.Match(lines[^1], @"^(\d+) passed, (\d+) failed$");
        Assert.That(m.Success, Is.True, $"last line: '{lines[^1]}'");
        var rows = lines.Where(l => l.EndsWith("PASS", StringComparison.Ordinal) || l.EndsWith("FAIL", StringComparison.Ordinal)).ToArray();
        return (rows, int.Parse(m.Groups[1].Value), int.Parse(m.Groups[2].Value));
    }

    private static string OpOf(string row) => row.Split(' ', 2)[0];

    [Test]
    public void VerifyPassesEveryCase([Values("cpu", "opencl", "cuda")] string backend)
    {
        if (backend != "cpu") { using var _ = TestUtil.OpenOrIgnore(backend); }
        var (code, so, se) = CliRunner.Run("verify", "--backend", backend, "--seed", "7");
        Assert.That(code, Is.Zero, so + se);
        var (rows, passed, failed) = Parse(so);
        Assert.That(failed, Is.Zero);
        Assert.That(rows, Has.Length.EqualTo(passed), "one row per case");
        Assert.That(rows.Select(OpOf).Distinct(), Is.EquivalentTo(Ops), "every op, forward and backward");
        var count = rows.GroupBy(OpOf).ToDictionary(g => g.Key, g => g.Count());
        Assert.That(count["sdpa"], Is.GreaterThanOrEqualTo(14));
        Assert.That(count["sdpa-backward"], Is.GreaterThanOrEqualTo(14));
        Assert.That(count["grid-sample"], Is.GreaterThanOrEqualTo(12), "every mode × padding × align");
        Assert.That(count["spatial-transform-backward"], Is.GreaterThanOrEqualTo(12), "every mode × padding × align");
        Assert.That(rows, Has.Some.Contains("causal").And.Some.Contains("mask[2,1,13,29]").And.Some.Contains("scale="));
        Assert.That(rows.Where(r => OpOf(r).StartsWith("sdpa-backward", StringComparison.Ordinal)), Has.Some.Contains(" L1 ").And.Some.Contains("causal"));
        Assert.That(rows.Where(r => OpOf(r) == "gemm"), Has.Some.Contains("ᵀ b").And.Some.Contains("beta="));
        Assert.That(rows.Where(r => OpOf(r) == "glimpse-backward"), Has.Some.Contains("tinysigma").And.Some.Contains("hugesigma").And.Some.Contains("outside"));
        foreach (var r in rows)   // forward rows meet 1e-5, backward rows 1e-4
            Assert.That(r, Does.Match(OpOf(r).EndsWith("-backward", StringComparison.Ordinal)
                ? @"rel +\d\.\d\dE[-+]\d\d +bound +1E-04 +PASS$" : @"rel +\d\.\d\dE[-+]\d\d +bound +1E-05 +PASS$"));
    }

    [Test]
    public void VerifyFailsWhenResultsAreDisturbed()
    {
        // --perturb moves one element of every device result by 1e-3 of its norm before the comparison: every row must fail
        var (code, so, se) = CliRunner.Run("verify", "--backend", "cpu", "--perturb");
        Assert.That(code, Is.EqualTo(1), so + se);
        var (rows, passed, failed) = Parse(so);
        Assert.That(passed, Is.Zero, so);
        Assert.That(rows, Has.Length.EqualTo(failed).And.Length.GreaterThan(150));
        Assert.That(rows, Is.All.EndsWith("FAIL"));
        Assert.That(rows.Select(OpOf).Distinct(), Is.EquivalentTo(Ops));
    }

    [Test]
    public void VerifyOnlyRunsTheNamedOps()
    {
        var (code, so, se) = CliRunner.Run("verify", "--backend", "cpu", "--only", "gemm,affine-grid-backward");
        Assert.That(code, Is.Zero, so + se);
        var (rows, passed, _) = Parse(so);
        Assert.That(rows.Select(OpOf).Distinct(), Is.EquivalentTo(new[] { "gemm", "affine-grid-backward" }));
        Assert.That(rows, Has.Length.EqualTo(passed));

        var (bad, _, err) = CliRunner.Run("verify", "--only", "gemm,nope");
        Assert.That(bad, Is.EqualTo(2));
        Assert.That(err, Does.Contain("--only: unknown op 'nope'"));
    }

    [Test]
    public void VerifyUsageErrorsExitWithTwo()
    {
        foreach (var args in new[] { new[] { "verify", "--seed", "x" }, ["verify", "--bogus"], ["verify", "--backend", "tpu"], ["verify", "--backend"] })
        {
            var (code, _, se) = CliRunner.Run(args);
            Assert.That(code, Is.EqualTo(2), string.Join(" ", args) + ": " + se);
            Assert.That(se, Does.Not.Contain("   at "));
        }
    }

    [Test]
    public void MissingCudaIsExplainedByDevicesAndVerify()
    {
        string? reason = null;
        try { using var d = Device.Open("cuda"); }
        catch (BackendUnavailableException e) { reason = e.Message; }
        if (reason is null) Assert.Ignore("CUDA is present here");

        var (code, so, _) = CliRunner.Run("devices");
        Assert.That(code, Is.Zero);
        var line = so.Split('\n').Single(l => l.StartsWith("cuda", StringComparison.Ordinal));
        Assert.That(line, Does.Contain("(missing)").And.Contain(reason!.Split(';')[0]));

        var (vcode, _, se) = CliRunner.Run("verify", "--backend", "cuda");
        Assert.That(vcode, Is.EqualTo(1));
        Assert.That(se.Trim(), Does.StartWith("gpuattention: cuda").And.Not.Contain("   at "));
        Assert.That(se.Trim().Split('\n'), Has.Length.EqualTo(1));
    }
}
