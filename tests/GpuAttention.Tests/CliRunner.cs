using System.Diagnostics;
using System.Reflection;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>Runs the built `gpuattention` CLI as a separate process (its assembly name clashes with the library's up to case).</summary>
internal static class CliRunner
{
    public static string CliPath => typeof(CliRunner).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().First(a => a.Key == "CliPath").Value!;

    public static (int Code, string Stdout, string Stderr) Run(params string[] args)
    {
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(Path.GetFullPath(CliPath));
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var so = p.StandardOutput.ReadToEndAsync();
        var se = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(120_000)) { p.Kill(true); throw new TimeoutException("gpuattention did not finish in 120 s"); }
        return (p.ExitCode, so.Result, se.Result);
    }

    /// <summary>Runs the CLI and asserts a clean failure: the exit code, exactly one line on stderr that mentions
    /// <paramref name="mustMention"/>, no stack trace, no .NET tail, and nothing written to <paramref name="outDir"/>.</summary>
    public static void AssertFails(string outDir, int expectedCode, string mustMention, params string[] args)
    {
        var (code, so, se) = Run(args);
        Assert.That(code, Is.EqualTo(expectedCode), $"stdout: {so}\nstderr: {se}");
        Assert.That(se, Does.Contain(mustMention));
        Assert.That(se, Does.Not.Contain("   at "), "no stack trace");
        Assert.That(se.TrimEnd('\n', '\r').Split('\n'), Has.Length.EqualTo(1), "one line: " + se);
        Assert.That(se, Does.Not.Contain("(Parameter '"), "no .NET tail: " + se);
        Assert.That(Directory.EnumerateFileSystemEntries(outDir), Is.Empty, "nothing written on failure");
    }

    public static string TempDir()
    {
        var d = Path.Combine(Path.GetTempPath(), "gpuattention-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(d);
        return d;
    }
}
