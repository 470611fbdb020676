using System.Reflection;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// The README's C# example ("Using the library") is <c>samples/GpuAttention.Sample/Program.cs</c>, verbatim: the build compiles
/// it, these tests run it on every backend and fail when the README block and the file differ.
/// </summary>
public class ReadmeExampleTests
{
    internal static string RepoRoot => typeof(ReadmeExampleTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
        .Single(a => a.Key == "RepoRoot").Value!;

    private static string Normalize(string s) => s.Replace("\r\n", "\n").Trim('\n', ' ');

    /// <summary>The first ```csharp block after the heading <paramref name="heading"/>.</summary>
    internal static string CodeBlockAfter(string markdown, string heading)
    {
        int h = markdown.IndexOf("\n" + heading + "\n", StringComparison.Ordinal);
        Assert.That(h, Is.GreaterThanOrEqualTo(0), $"README: no heading '{heading}'");
        int start = markdown.IndexOf("```csharp\n", h, StringComparison.Ordinal);
        Assert.That(start, Is.GreaterThanOrEqualTo(0), $"README: no ```csharp block after '{heading}'");
        start += "```csharp\n".Length;
        int end = markdown.IndexOf("\n```", start, StringComparison.Ordinal);
        return markdown[start..end];
    }

    [Test]
    public void ReadmeBlockIsTheSampleProgram()
    {
        var readme = Normalize(File.ReadAllText(Path.Combine(RepoRoot, "README.md")));
        var block = Normalize(CodeBlockAfter(readme, "## Using the library"));
        var program = Normalize(File.ReadAllText(Path.Combine(RepoRoot, "samples", "GpuAttention.Sample", "Program.cs")));
        if (block == program) return;
        var bl = block.Split('\n'); var pl = program.Split('\n');
        int i = 0;
        while (i < bl.Length && i < pl.Length && bl[i] == pl[i]) i++;
        Assert.Fail($"README.md's C# block differs from samples/GpuAttention.Sample/Program.cs at line {i + 1}:\n" +
                    $"  README:     {(i < bl.Length ? bl[i] : "(end)")}\n  Program.cs: {(i < pl.Length ? pl[i] : "(end)")}\n" +
                    "Copy Program.cs (the file the suite compiles and runs) into the README block.");
    }

    [TestCaseSource(typeof(TestUtil), nameof(TestUtil.Backends))]
    public void SampleRuns(string backend)
    {
        var entry = Assembly.Load("GpuAttention.Sample").EntryPoint!;
        var previous = Console.Out;
        var sw = new StringWriter();
        Console.SetOut(sw);
        try { entry.Invoke(null, [new[] { backend }]); }
        catch (TargetInvocationException e) when (e.InnerException is BackendUnavailableException u) { Assert.Ignore(u.Message); }
        finally { Console.SetOut(previous); }
        var output = sw.ToString();
        TestContext.Out.Write(output);
        Assert.That(output, Does.Contain("out[0, 0, 0, :4] = ").And.Contain("self-attention: lse[0, 0, 0] = "));
        Assert.That(output, Does.Not.Contain("NaN"));
    }
}
