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
    public static int Run(ReadOnlySpan<string> argSpan)
    {
        var args = argSpan.ToArray();
        string backend = "cpu";
        int seed = 1;
        HashSet<string>? only = null;
        VerifyKit.Perturb = false;
        for (int i = 0; i < args.Length; i++)
        {
            string a = args[i];
            string Value() => i + 1 < args.Length ? args[++i] : throw new UsageException($"{a}: expected a value");
            switch (a)
            {
                case "--backend": backend = Value(); break;
                case "--seed":
                    {
                        var v = Value();
                        if (!int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out seed))
                            throw new UsageException($"--seed: expected an integer, got '{v}'");
                        break;
                    }
                case "--only":
                    {
                        only = [.. Value().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)];
                        var known = VerifyTable.All.Select(c => c.Op).ToHashSet();
                        var unknown = only.FirstOrDefault(o => !known.Contains(o));
                        if (unknown is not null || only.Count == 0)
                            throw new UsageException($"--only: unknown op '{unknown}' (expected some of {string.Join(", ", known)})");
                        break;
                    }
                case "--perturb": VerifyKit.Perturb = true; break;
                default: throw new UsageException($"verify: unknown option '{a}'");
            }
        }
        Program.ValidateBackendName(backend);
        using var device = Device.Open(backend);
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
                detail = $"error: {e.GetType().Name}: {e.Message.ReplaceLineEndings(" ")}";
            }
            if (ok) passed++; else failed++;
            Console.Out.WriteLine($"{c.Op,-26} {c.Shape,-56} {detail}  {(ok ? "PASS" : "FAIL")}");
        }
        Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"({clock.Elapsed.TotalSeconds:0.0} s)"));
        Console.Out.WriteLine($"{passed} passed, {failed} failed");
        return failed == 0 ? 0 : 1;
    }
}
