using System.Text.RegularExpressions;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>`gpuattention verify` and the CUDA lines of `gpuattention devices`, run as a user runs them.</summary>
public class VerifyCliTests
{
    [Test]
    public void VerifyPassesEveryCase([Values("cpu", "opencl", "cuda")] string backend)
    {
        if (backend != "cpu") { using var _ = TestUtil.OpenOrIgnore(backend); }
        var (code, so, se) = CliRunner.Run("verify", "--backend", backend, "--seed", "7");
        Assert.That(code, Is.Zero, so + se);
        var lines = so.TrimEnd().Split('\n').Select(l => l.TrimEnd('\r')).ToArray();
        var m = Regex.Match(lines[^1], @"^(\d+) passed, (\d+) failed$");
        Assert.That(m.Success, Is.True, $"last line: '{lines[^1]}'");
        int passed = int.Parse(m.Groups[1].Value);
        Assert.That(m.Groups[2].Value, Is.EqualTo("0"));
        var rows = lines.Where(l => l.EndsWith("PASS", StringComparison.Ordinal) || l.EndsWith("FAIL", StringComparison.Ordinal)).ToList();
        Assert.That(rows, Has.Count.EqualTo(passed), "one row per case");
        Assert.That(rows.Count(r => r.StartsWith("sdpa ", StringComparison.Ordinal)), Is.GreaterThanOrEqualTo(14));
        Assert.That(rows, Has.Some.Contains("causal").And.Some.Contains("mask[2,1,13,29]").And.Some.Contains("scale="));
        Assert.That(rows, Is.All.Match(@"rel +\d\.\d\dE[-+]\d\d +bound +1E-05 +PASS$"));
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
