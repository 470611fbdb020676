using System.Diagnostics;
using System.Globalization;

namespace GpuAttention.Backends.Kernels.Tuning;

/// <summary>What the tuner did with one candidate: its times, or why it was rejected.</summary>
internal sealed record TuningCandidateResult(TuningParams Params, bool IsDefault, double MedianMs, double MinMs, double Rate, string? Rejected)
{
    public bool Accepted => Rejected is null;
}

/// <summary>The outcome of tuning one workload: every candidate tried, the winner (null when none passed) and the space's size.</summary>
internal sealed record TuningFamilyResult(TuningWorkload Workload, IReadOnlyList<TuningCandidateResult> Candidates, int Valid, int Invalid,
    TuningCandidateResult? Winner, TuningCandidateResult? Default, double Seconds)
{
    /// <summary>The cache entry of the winner (null without one).</summary>
    public TuningCacheEntry? ToEntry() => Winner is null ? null : new TuningCacheEntry
    {
        Family = Workload.Space.Family,
        Key = Workload.Key,
        Params = Winner.Params.Items.ToDictionary(i => i.Key, i => i.Value),
        SourceHash = TuningCache.SourceHash(Workload.Space),
        Shape = Workload.Shape,
        Ms = Math.Round(Winner.MedianMs, 4),
        DefaultMs = Default is { Accepted: true } ? Math.Round(Default.MedianMs, 4) : 0,
        Rate = Math.Round(Winner.Rate, 3),
        Unit = Workload.Unit,
        Tried = Candidates.Count,
        TunedAt = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
    };
}

/// <summary>
/// Searches a <see cref="TuningSpace"/> on one device by hill climbing from the default over <see cref="TuningSpace.CandidateOrder"/>
/// (valid points only: an invalid point is never compiled or run; the next candidate is an untried neighbour of the best so far), each forced on the backend with <see cref="KernelBackend.SetTuningOverride"/>,
/// first checked against the reference (<see cref="TuningWorkload.Check"/>; a wrong or failing candidate is rejected and
/// printed), then timed: one warm-up run (which also compiles it), then <c>repeats</c> runs timed with
/// <see cref="Device.TimeMs"/> (device events where the backend has them, else host time around launch + synchronise); the
/// median decides. The search stops when the time budget is spent (the default is always tried); then the fastest few and the
/// default are timed again, interleaved, and that round's medians decide (<see cref="FinalRound"/>).
/// </summary>
internal static class Tuner
{
    public static TuningFamilyResult Tune(Device device, TuningWorkload w, double budgetSeconds, int repeats, TextWriter log)
    {
        var be = device.Backend as KernelBackend ?? throw new NotSupportedException($"{device.Spec}: only the opencl and cuda backends have kernels to tune");
        var space = w.Space;
        var limits = be.Limits;
        var order = space.CandidateOrder(limits, out int invalid, w.Key);
        var def = space.Default(limits, w.Key);
        var results = new List<TuningCandidateResult>();
        var sw = Stopwatch.StartNew();
        log.WriteLine($"{space.Family} [{w.Key}] on {device.Spec} ({device.Name}): {w.Shape}; {order.Count} valid candidates ({invalid} invalid on this device skipped); budget {budgetSeconds:0.#} s");
        log.WriteLine($"  {"candidate",-56} {"median_ms",10} {"min_ms",10} {w.Unit,9}");
        TuningRun? run = null;
        List<TuningCandidateResult>? finalists = null;
        try
        {
            run = w.Prepare(device);
            double slowest = 0;
            var left = new List<TuningParams>(order);
            while (left.Count > 0)
            {
                double elapsed = sw.Elapsed.TotalSeconds;
                if (results.Count > 0 && elapsed + slowest > budgetSeconds) break;
                // Hill climbing: the next untried neighbour (one knob changed) of the best so far, in candidate order; when the
                // best has no untried neighbour left, the next untried point of the order (a jump elsewhere in the space).
                var best = results.Where(r => r.Accepted).MinBy(r => r.MedianMs)?.Params ?? def;
                int at = results.Count == 0 ? 0 : left.FindIndex(c => space.Knobs.Count(k => c[k.Name] != best[k.Name]) == 1);
                var p = left[at < 0 ? 0 : at];
                left.RemoveAt(at < 0 ? 0 : at);
                double t0 = elapsed;
                var r = TryCandidate(device, be, w, run, p, p.Equals(def), repeats);
                results.Add(r);
                slowest = Math.Max(slowest, sw.Elapsed.TotalSeconds - t0);
                string name = p + (r.IsDefault ? " (default)" : "");
                log.WriteLine(r.Accepted
                    ? string.Create(CultureInfo.InvariantCulture, $"  {name,-56} {r.MedianMs,10:0.000} {r.MinMs,10:0.000} {r.Rate,9:0.00}")
                    : $"  {name,-56} REJECTED: {r.Rejected}");
            }
            (results, finalists) = FinalRound(device, be, w, run, results, repeats, log);
        }
        finally
        {
            be.SetTuningOverride(space, null, w.Key);
            run?.Dispose();
        }
        // After a final round only its times compare fairly (same conditions): the winner is the fastest finalist.
        var winner = (finalists ?? results).Where(r => r.Accepted).MinBy(r => r.MedianMs);
        var dres = results.FirstOrDefault(r => r.IsDefault);
        var res = new TuningFamilyResult(w, results, order.Count, invalid, winner, dres, sw.Elapsed.TotalSeconds);
        if (winner is null) log.WriteLine($"  no candidate passed; nothing stored for {space.Family}");
        else
        {
            var ci = CultureInfo.InvariantCulture;
            string vsDefault = dres is { Accepted: true } ? string.Format(ci, ", {0:0.00}x the default ({1:0.000} ms)", dres.MedianMs / winner.MedianMs, dres.MedianMs) : "";
            log.WriteLine(string.Format(ci, "  winner: {0}  {1:0.000} ms, {2:0.00} {3}{4}; {5} of {6} tried in {7:0.0} s",
                winner.Params, winner.MedianMs, winner.Rate, w.Unit, vsDefault, results.Count, order.Count, sw.Elapsed.TotalSeconds));
        }
        return res;
    }

    /// <summary>The median of <paramref name="times"/> (the mean of the middle two for an even count); also the CLI's `--repeat`.</summary>
    internal static double Median(IEnumerable<double> times)
    {
        var t = times.Order().ToArray();
        return t.Length % 2 == 1 ? t[t.Length / 2] : 0.5 * (t[t.Length / 2 - 1] + t[t.Length / 2]);
    }

    /// <summary>How many of the fastest candidates the final round times again (beside the default).</summary>
    private const int Finalists = 3;

    /// <summary>
    /// Against the winner's curse on a noisy machine: the fastest few candidates and the default are timed again, interleaved
    /// (one run of each in turn, <paramref name="repeats"/> rounds), and their medians of that round replace the search's;
    /// the winner is chosen among them only.
    /// It runs after the budget (at most 4 × repeats runs of candidates already compiled and checked).
    /// </summary>
    private static (List<TuningCandidateResult> All, List<TuningCandidateResult>? Finalists) FinalRound(Device device, KernelBackend be, TuningWorkload w, TuningRun run,
        List<TuningCandidateResult> results, int repeats, TextWriter log)
    {
        var finalists = results.Where(r => r.Accepted).OrderBy(r => r.MedianMs).Take(Finalists)
            .Concat(results.Where(r => r.Accepted && r.IsDefault)).Distinct().ToList();
        if (finalists.Count < 2) return (results, null);
        var times = finalists.Select(_ => new List<double>()).ToList();
        for (int round = 0; round < repeats; round++)
            for (int i = 0; i < finalists.Count; i++)
            {
                be.SetTuningOverride(w.Space, finalists[i].Params, w.Key);
                run.Launch();                           // one untimed run after switching (caches, first-launch costs)
                device.Synchronize();
                times[i].Add(device.TimeMs(run.Launch));
            }
        log.WriteLine($"  final round: the {finalists.Count} best (default included) again, interleaved, {repeats} runs each");
        var updated = new List<TuningCandidateResult>(results);
        var timed = new List<TuningCandidateResult>();
        for (int i = 0; i < finalists.Count; i++)
        {
            double median = Median(times[i]);
            var f = finalists[i] with { MedianMs = median, MinMs = times[i].Min(), Rate = w.Rate(median) };
            updated[updated.IndexOf(finalists[i])] = f;
            timed.Add(f);
            string name = f.Params + (f.IsDefault ? " (default)" : "");
            log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {name,-56} {f.MedianMs,10:0.000} {f.MinMs,10:0.000} {f.Rate,9:0.00}"));
        }
        return (updated, timed);
    }

    private static TuningCandidateResult TryCandidate(Device device, KernelBackend be, TuningWorkload w, TuningRun run, TuningParams p, bool isDefault, int repeats)
    {
        try
        {
            be.SetTuningOverride(w.Space, p, w.Key);
            var bad = w.Check(device).Where(c => !c.Passed).ToList();
            if (bad.Count > 0)
                return new(p, isDefault, 0, 0, 0, string.Join("; ", bad.Select(c => string.Create(CultureInfo.InvariantCulture, $"{c.Name}: relative error {c.Error:0.0e+0} > {c.Bound:0e+0}"))));
            run.Launch();                               // warm-up (and compile)
            device.Synchronize();
            var times = new double[repeats];
            for (int i = 0; i < repeats; i++) times[i] = device.TimeMs(run.Launch);
            double median = Median(times);
            return new(p, isDefault, median, times.Min(), w.Rate(median), null);
        }
        catch (Exception e) when (e is not OutOfMemoryException and not ObjectDisposedException)
        {
            // A candidate that does not build or launch on this device is rejected, not fatal.
            try { device.Synchronize(); } catch (Exception) { }
            return new(p, isDefault, 0, 0, 0, $"{e.GetType().Name}: {e.Message.ReplaceLineEndings(" ")}");
        }
    }
}
