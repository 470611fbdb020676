using NUnit.Framework;
using NUnit.Framework.Interfaces;
using NUnit.Framework.Internal;

/// <summary>
/// Says why tests were skipped, grouped by reason, at the end of every run (<c>dotnet test</c> without a verbosity flag
/// prints skipped tests without their reasons): one line per reason, "skipped N: reason", most frequent first.
/// A set-up fixture outside every namespace encloses the whole assembly; its one-time teardown runs after every test, when
/// the results of all of them hang below its own.
/// </summary>
[SetUpFixture]
public sealed class SkipReport
{
    [OneTimeTearDown]
    public void Report()
    {
        var reasons = new Dictionary<string, int>();
        void Walk(ITestResult r)
        {
            if (r.HasChildren) { foreach (var c in r.Children) Walk(c); return; }
            if (r.ResultState.Status != TestStatus.Skipped) return;
            if (r.Test.IsSuite) return;   // a skipped fixture's tests are results of their own (also below a parameterized suite)
            var reason = FirstLine(r.Message);
            reasons[reason] = reasons.GetValueOrDefault(reason) + 1;
        }
        foreach (var child in TestExecutionContext.CurrentContext.CurrentResult.Children) Walk(child);
        if (reasons.Count == 0) return;
        var text = new System.Text.StringBuilder();
        text.AppendLine($"Skipped tests by reason ({reasons.Values.Sum()} in {reasons.Count} groups):");
        foreach (var (reason, n) in reasons.OrderByDescending(g => g.Value).ThenBy(g => g.Key, StringComparer.Ordinal))
            text.AppendLine($"  skipped {n}: {reason}");
        // the test host's stderr is what `dotnet test` shows at its default verbosity (TestContext.Progress is not)
        TestContext.Error.Write(text.ToString());
    }

    private static string FirstLine(string? message)
    {
        if (string.IsNullOrWhiteSpace(message)) return "(no reason given)";
        var line = message.Trim().Split('\n')[0].Trim();
        if (line.StartsWith("OneTimeSetUp: ", StringComparison.Ordinal)) line = line["OneTimeSetUp: ".Length..];   // a fixture's reason
        return line.Length > 200 ? line[..200] + "…" : line;
    }
}
