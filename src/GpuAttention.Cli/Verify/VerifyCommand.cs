using System.CommandLine;
using System.Globalization;

namespace GpuAttention.Cli.Verify;

/// <summary>
/// <c>gpuattention verify [--backend B] [--seed N] [--only OP[,OP...]]</c>: every case of <see cref="VerifyTable"/> (or those whose op
/// is one of <c>--only</c>'s, e.g. <c>gemm,sdpa-backward</c>) on one backend against the double-precision reference, one row per case,
/// last line exactly <c>N passed, N failed</c>; exit code 0 only when every case passed. Every tensor the device allocates starts as NaN.
/// The hidden option <c>--perturb</c> disturbs every result before it is compared (see <see cref="VerifyKit.Perturb"/>): every case must
/// then fail, which the test suite checks.
/// </summary>
internal static class VerifyCommand
{
    public static Command Build()
    {
        var backendOpt = CliOptions.Backend();
        var seedOpt = CliOptions.Parsed("--seed", "Seed of the random inputs.", "N",
            s => int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) ? v : throw new FormatException($"expected an integer, got '{s}'"), 1);
        var known = VerifyTable.All.Select(c => c.Op).Distinct().ToList();
        var onlyOpt = CliOptions.List("--only", $"Only these ops, comma-separated: {string.Join(", ", known)}.", "OP,...", known);
        var perturbOpt = CliOptions.Flag("--perturb", "Disturbs every result before the comparison (every case must then fail).", hidden: true);
        var cmd = new Command("verify", "Checks every op on one backend against the double-precision reference. One row per case; "
            + "the last line is 'N passed, N failed' (exit 0 only when every case passed).")
        { backendOpt, seedOpt, onlyOpt, perturbOpt };
        cmd.SetAction(r => Run(r.GetValue(backendOpt)!, r.GetValue(seedOpt), r.GetValue(onlyOpt) is { Length: > 0 } only ? only.ToHashSet(StringComparer.OrdinalIgnoreCase) : null, r.GetValue(perturbOpt)));
        return cmd;
    }

    private static int Run(string backend, int seed, HashSet<string>? only, bool perturb)
    {
        VerifyKit.Perturb = perturb;
        using var device = CliOptions.OpenDevice(backend);
        device.PoisonAllocations = true;                                // results a layer allocates itself start as NaN too
        Console.Out.WriteLine($"verify on {device.Spec} ({device.Name}), seed {seed}, against the double-precision reference");

        int passed = 0, failed = 0, index = 0;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        foreach (var c in VerifyTable.All)
        {
            var rng = new Random(unchecked(seed * 1_000_003 + index++));   // a case's inputs do not depend on --only
            if (only is not null && !only.Contains(c.Op)) continue;
            string detail;
            bool ok;
            try
            {
                var results = c.Run(device, rng);
                var worst = results.OrderByDescending(r => double.IsNaN(r.RelError) ? double.PositiveInfinity : r.RelError / r.Bound).First();
                ok = results.All(r => r.Passed);
                detail = $"{worst.Output,-11} rel {worst.RelError,9:0.00E+00}  bound {worst.Bound:0E+00}";
            }
            catch (Exception e)
            {
                ok = false;
                detail = $"error: {e.GetType().Name}: {CliErrors.Clean(e)}";
            }
            if (ok) passed++; else failed++;
            Console.Out.WriteLine($"{c.Op,-26} {c.Shape,-56} {detail}  {(ok ? "PASS" : "FAIL")}");
        }
        Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"({clock.Elapsed.TotalSeconds:0.0} s)"));
        Console.Out.WriteLine($"{passed} passed, {failed} failed");
        return failed == 0 ? 0 : 1;
    }
}
