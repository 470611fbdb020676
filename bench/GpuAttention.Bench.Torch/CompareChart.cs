using System.Globalization;
using System.Text.RegularExpressions;

namespace GpuAttention.Bench.Torch;

/// <summary>
/// The chart of a LibTorch comparison: one horizontal bar per workload row of the Markdown table that
/// <see cref="Compare.Run"/> writes, bar length = ratio (LibTorch time / ours), a dashed line at parity (1×), the ratio
/// written at the end of each bar, the workload names on the left, and the date / machine line of the Markdown in the
/// title. Drawn by ScottPlot from the Markdown itself, so <c>compare --out X.md</c> (X.png beside it) and
/// <c>chart IN.md OUT.png</c> (an existing results file) go through the same code.
/// </summary>
public static partial class CompareChart
{
    /// <summary>One workload row of the table.</summary>
    public sealed record Row(string Workload, double TorchMs, double OursMs, double Ratio);

    /// <summary>What the chart takes from a comparison's Markdown.</summary>
    public sealed record Table(string? Heading, string? DateMachine, string? Load, IReadOnlyList<Row> Rows);

    /// <summary><c>chart IN.md [OUT.png]</c>: draws the chart of an existing comparison (OUT defaults to IN's stem + .png).</summary>
    public static int Run(string[] args)
    {
        if (args.Length < 2 || args.Length > 3)
        {
            Console.Error.WriteLine("usage: chart IN.md [OUT.png]   (the Markdown of `compare --out IN.md`; OUT defaults to IN with .png)");
            return 2;
        }
        string png = args.Length == 3 ? args[2] : Path.ChangeExtension(args[1], ".png");
        var table = Parse(File.ReadAllLines(args[1]));
        if (table.Rows.Count == 0)
        {
            Console.Error.WriteLine($"{args[1]}: no comparison table (a header `| workload | LibTorch ms | ours ms | ratio | ...`) with rows");
            return 1;
        }
        Save(table, png);
        Console.Error.WriteLine($"wrote {png} ({table.Rows.Count} workloads)");
        return 0;
    }

    /// <summary>Writes the chart of <paramref name="markdownLines"/> to <paramref name="png"/>; false when they hold no table rows.</summary>
    public static bool Save(IEnumerable<string> markdownLines, string png)
    {
        var table = Parse(markdownLines);
        if (table.Rows.Count == 0) return false;
        Save(table, png);
        return true;
    }

    /// <summary>
    /// Reads the first table whose header starts <c>| workload | LibTorch ms | ours ms |</c> (the comparison table, not
    /// the fractions-of-limits table after it), its columns found by name; the ratio is the bold <c>**r×**</c> cell
    /// (recomputed from the two medians when it does not parse). Also the <c># </c> heading, the <c>- date: …</c> line and
    /// the first load average of <c>- load before:</c>.
    /// </summary>
    public static Table Parse(IEnumerable<string> lines)
    {
        string? heading = null, dateMachine = null, load = null;
        var rows = new List<Row>();
        int iName = -1, iTorch = -1, iOurs = -1, iRatio = -1;
        bool inTable = false, done = false;
        foreach (var raw in lines)
        {
            string line = raw.Trim();
            if (heading == null && line.StartsWith("# ")) heading = line[2..].Trim();
            else if (dateMachine == null && line.StartsWith("- date:")) dateMachine = line["- date:".Length..].Trim();
            else if (load == null && line.StartsWith("- load before:"))
            {
                var m = LoadAvg().Match(line);
                if (m.Success) load = m.Groups[1].Value;
            }
            if (done) continue;
            if (!inTable)
            {
                if (!line.StartsWith('|')) continue;
                var h = Cells(line);
                if (h.Length < 3 || !h[0].Equals("workload", StringComparison.OrdinalIgnoreCase)) continue;
                iName = 0;
                iTorch = Array.FindIndex(h, c => c.Equals("LibTorch ms", StringComparison.OrdinalIgnoreCase));
                iOurs = Array.FindIndex(h, c => c.Equals("ours ms", StringComparison.OrdinalIgnoreCase));
                iRatio = Array.FindIndex(h, c => c.Equals("ratio", StringComparison.OrdinalIgnoreCase));
                inTable = iTorch > 0 && iOurs > 0;
                continue;
            }
            if (!line.StartsWith('|')) { done = rows.Count > 0; continue; }   // the table ends at its first non-table line
            var c = Cells(line);
            if (c.All(x => x.Trim('-', ':').Length == 0)) continue;   // |---|---|
            if (c.Length <= Math.Max(iTorch, iOurs)) continue;
            if (!TryNumber(c[iTorch], out double torchMs) || !TryNumber(c[iOurs], out double oursMs)) continue;
            double ratio = iRatio >= 0 && iRatio < c.Length && TryNumber(c[iRatio], out double r) ? r : torchMs / oursMs;
            rows.Add(new Row(c[iName], torchMs, oursMs, ratio));
        }
        return new Table(heading, dateMachine, load, rows);
    }

    /// <summary>Draws the chart: 1200 px wide, 170 + 40 px per workload tall.</summary>
    public static void Save(Table t, string png)
    {
        var rows = t.Rows;
        int n = rows.Count;
        var plt = new ScottPlot.Plot();
        var faster = ScottPlot.Color.FromHex("#2a7ab9");
        var slower = ScottPlot.Color.FromHex("#d9622b");
        var ink = ScottPlot.Color.FromHex("#202020");

        // The first table row at the top: row i at position n − 1 − i.
        var bars = new List<ScottPlot.Bar>();
        for (int i = 0; i < n; i++)
        {
            double r = rows[i].Ratio;
            bars.Add(new ScottPlot.Bar
            {
                Position = n - 1 - i,
                Value = r,
                Size = 0.7,
                FillColor = r >= 1 ? faster : slower,
                LineWidth = 0,
                Label = r.ToString("0.00", CultureInfo.InvariantCulture) + "×",   // as the table writes it
            });
        }
        var bp = plt.Add.Bars(bars);
        bp.Horizontal = true;
        bp.ValueLabelStyle.FontSize = 14;
        bp.ValueLabelStyle.Bold = true;
        bp.ValueLabelStyle.ForeColor = ink;
        // Labels drawn after everything else, on white: a bar ending near 1× keeps its label readable over the parity line.
        bp.LabelsOnTop = true;
        bp.ValueLabelStyle.BackgroundColor = ScottPlot.Colors.White;

        var parity = plt.Add.VerticalLine(1, 2, ink, ScottPlot.LinePattern.Dashed);
        parity.Text = "parity";
        parity.LabelOppositeAxis = true;
        parity.LabelStyle.FontSize = 13;
        parity.LabelStyle.ForeColor = ScottPlot.Colors.White;
        parity.LabelStyle.BackgroundColor = ink;

        plt.Axes.Left.SetTicks(
            Enumerable.Range(0, n).Select(i => (double)(n - 1 - i)).ToArray(),
            rows.Select(r => r.Workload).ToArray());
        plt.Axes.Left.TickLabelStyle.FontSize = 14;
        plt.Axes.Left.MajorTickStyle.Length = 0;
        plt.Axes.Bottom.TickLabelStyle.FontSize = 13;
        plt.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
        {
            LabelFormatter = x => x.ToString("0.##", CultureInfo.InvariantCulture) + "×",
        };
        plt.Grid.YAxisStyle.IsVisible = false;

        double max = Math.Max(1.0, rows.Max(r => r.Ratio));
        plt.Axes.SetLimits(0, max * 1.1 + 0.2, -0.6, n - 0.4);

        string version = t.Heading != null && TorchVersion().Match(t.Heading) is { Success: true } m ? m.Groups[1].Value : "2.10";
        plt.XLabel($"speed-up over LibTorch {version} (LibTorch time / ours; > 1: ours faster)", 15);
        plt.Axes.Bottom.Label.Bold = false;

        string title = t.Heading ?? "CPU backend vs LibTorch";
        string sub = (t.DateMachine ?? "").Replace(".NET .NET", ".NET");
        if (t.Load != null) sub += (sub.Length > 0 ? "; " : "") + "load before: " + t.Load;
        plt.Title(sub.Length > 0 ? title + "\n" + sub : title, 16);
        plt.Axes.Title.Label.Bold = false;
        plt.Axes.Title.FullFigureCenter = true;   // centred on the figure, not on the data area right of the names
        plt.Axes.Top.MinimumSize = 34;            // room between it and the data area for the "parity" label

        plt.Font.Automatic();   // a font with glyphs for ², →, σ, ×, – (DejaVu Sans on Debian)
        plt.SavePng(png, 1200, 170 + 40 * n);
    }

    private static string[] Cells(string line)
    {
        var s = line.Trim();
        if (s.StartsWith('|')) s = s[1..];
        if (s.EndsWith('|')) s = s[..^1];
        return s.Split('|').Select(c => c.Trim()).ToArray();
    }

    private static bool TryNumber(string cell, out double v) =>
        double.TryParse(cell.Replace("*", "").Replace("×", "").Replace("x", "").Trim(), NumberStyles.Float,
            CultureInfo.InvariantCulture, out v) && double.IsFinite(v) && v > 0;

    [GeneratedRegex(@"loadavg\s+([0-9.]+)")]
    private static partial Regex LoadAvg();

    [GeneratedRegex(@"LibTorch\s+(\d+\.\d+)")]
    private static partial Regex TorchVersion();
}
