using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using GpuAttention.Cli.Imaging;
using Spectre.Console;

namespace GpuAttention.Cli;

/// <summary>
/// <c>gpuattention demo [--backend B] [--image PATH] [--out DIR] [--pixels N] [--repeat N]</c>:
/// runs the operations on a real image, writes PNG pictures into DIR and prints a timing and verification table.
/// The work is split into <see cref="IDemoSection"/>s (SDPA self-attention over pixels, an SDPA training step, Gaussian glimpses,
/// spatial-transformer crops); each adds rows and files.
/// </summary>
public static class DemoCommand
{
    /// <summary>Pixels SDPA attends over on a simulator (at most).</summary>
    internal const int SimulatorPixels = 128;
    /// <summary>Steps of each learning loop on a simulator.</summary>
    internal const int SimulatorSteps = 8;

    /// <summary>The sections run in order. Add SDPA backward, glimpse, grid_sample... here.</summary>
    internal static IReadOnlyList<IDemoSection> Sections { get; } =
        [new SdpaSection(), new SdpaTrainingSection(), new GlimpseSection(), new SpatialSection()];

    public static Command Build()
    {
        var backendOpt = CliOptions.Backend();
        var imageOpt = CliOptions.Text("--image", "The picture to work on, PNG or JPEG (default: the shipped logo).", "PATH");
        var outOpt = CliOptions.Text("--out", "Folder for the pictures, created if needed.", "DIR", "demo-out");
        var pixelsOpt = CliOptions.Int("--pixels", "Pixels of the image SDPA attends over (16..65536).", 16, 3072, 1 << 16);
        var repeatOpt = CliOptions.Int("--repeat", "Timed runs per op, median reported (1..1000).", 1, 5, 1000);
        var cmd = new Command("demo", "Runs every operation on a real image and writes pictures. Each op is verified against the "
            + "double-precision reference and timed; a table shows the results.")
        { backendOpt, imageOpt, outOpt, pixelsOpt, repeatOpt };
        cmd.SetAction(r => Run(new DemoOptions(r.GetValue(backendOpt)!, r.GetValue(imageOpt) ?? DemoOptions.DefaultImage, r.GetValue(outOpt)!, r.GetValue(pixelsOpt), r.GetValue(repeatOpt))));
        return cmd;
    }

    /// <summary>Runs the demo.</summary>
    /// <returns>0 on success, 1 on a failed verification; bad input and unavailable backends throw (the caller prints one line).</returns>
    private static int Run(DemoOptions opt)
    {
        if (File.Exists(opt.OutDir)) throw new InputException($"--out: '{opt.OutDir}' is a file; expected a folder (it is created if missing)");
        var input = Image.Load(opt.ImagePath).ToRgb();
        using var device = CliOptions.OpenDevice(opt.Backend);
        string? simulatorNote = null;
        if (device.IsSimulator)
        {
            // ILGPU's CPU simulator runs each GPU thread as an OS thread: at the default sizes the demo's SDPA section alone did not end
            // within 10 minutes on a 2-core VM; at these sizes the whole demo took 12.8 minutes there (with a test run beside it).
            var small = opt with { Pixels = Math.Min(opt.Pixels, SimulatorPixels), Repeat = 1 };
            simulatorNote = $"{device.Spec} is a simulator (correct, not fast): smaller work so that it ends in minutes — SDPA over {small.Pixels} pixels "
                + $"(--pixels {opt.Pixels} asked), sdpa training over at most {SimulatorPixels / 4} pixels, learning loops of {SimulatorSteps} steps, "
                + "one timed run per op; its times say nothing about a GPU";
            opt = small;
        }
        var ctx = new DemoContext(device, input, opt);
        if (simulatorNote != null) ctx.Notes.Add(simulatorNote);
        try { Directory.CreateDirectory(opt.OutDir); }
        catch (IOException e) { throw new InputException($"--out: cannot create the folder '{opt.OutDir}': {CliErrors.Clean(e)}"); }
        var console = DemoConsole.Create();
        var took = new List<string>();
        void RunSections()
        {
            foreach (var section in Sections)
            {
                ctx.ReportStatus($"{section.Name}: running");
                var sw = Stopwatch.StartNew();
                section.Run(ctx);
                took.Add($"{section.Name} {sw.Elapsed.TotalSeconds:0.0} s");
            }
        }
        if (DemoConsole.IsTerminal)
        {
            // A spinner with the current step, on a terminal only (redirected output gets the report alone).
            console.Status().Spinner(Spinner.Known.Dots).Start("starting", status =>
            {
                ctx.ReportStatus = s => status.Status(Markup.Escape(s));
                RunSections();
            });
        }
        else RunSections();
        ctx.Notes.Add($"wall time per section (with references and pictures): {string.Join(", ", took)}");
        PrintReport(console, ctx);
        var failed = ctx.Rows.Where(r => r.Ok == false).ToList();
        if (failed.Count == 0) return 0;
        Console.Error.WriteLine($"gpuattention: demo: verification failed for {string.Join(", ", failed.Select(r => r.Op))} (relative error above {DemoRow.Tolerance:g2})");
        return 1;
    }

    /// <summary>
    /// The table (at most 100 columns: short op names, numbers only), then one line per row with the full op name and the
    /// shapes, the notes, and the files written.
    /// </summary>
    private static void PrintReport(IAnsiConsole console, DemoContext ctx)
    {
        static string F(double? v, string fmt) => v is { } x ? x.ToString(fmt, CultureInfo.InvariantCulture) : "-";
        string device = ctx.Device.Name.Length > 48 ? ctx.Device.Name[..47] + "…" : ctx.Device.Name;
        var table = new Table().Border(TableBorder.Rounded)
            .Title($"[bold]gpuattention demo[/] on {Markup.Escape(ctx.Device.Spec)} ({Markup.Escape(device)}), {ctx.Input.Width}×{ctx.Input.Height} input");
        table.AddColumn(new TableColumn("#").RightAligned());
        table.AddColumn("op");
        table.AddColumn(new TableColumn("ms").RightAligned());
        table.AddColumn(new TableColumn("GFLOP/s").RightAligned());
        table.AddColumn(new TableColumn("GB/s").RightAligned());
        table.AddColumn(new TableColumn("max err").RightAligned());
        table.AddColumn(new TableColumn("rel err").RightAligned());
        table.AddColumn("check");
        for (int i = 0; i < ctx.Rows.Count; i++)
        {
            var r = ctx.Rows[i];
            table.AddRow((i + 1).ToString(CultureInfo.InvariantCulture), Markup.Escape(ShortName(r.Op) + (r.Fallback ? " *" : "")),
                F(r.Ms, "F3"), F(r.Gflops, "F2"), F(r.GBps, "F2"), F(r.MaxError, "0.0e+00"), F(r.RelError, "0.0e+00"),
                r.Ok switch { true => "[green]ok[/]", false => "[red]FAIL[/]", null => "-" });
        }
        console.Write(table);
        // Below the table: on a terminal through Spectre (colours, wrapped to the window); redirected as plain lines, unwrapped.
        void Line(string markup)
        {
            if (DemoConsole.IsTerminal) console.MarkupLine(markup);
            else Console.Out.WriteLine(Markup.Remove(markup));
        }
        for (int i = 0; i < ctx.Rows.Count; i++)
            Line($"{i + 1,3}  {Markup.Escape(ctx.Rows[i].Op)}: [grey]{Markup.Escape(ctx.Rows[i].Shape)}[/]");
        if (ctx.Rows.Any(r => r.Fallback))
            Line("[grey]* no kernel on this device for the op: it ran on the cpu backend, with copies[/]");
        Line($"[grey]ms: median of {ctx.Options.Repeat} synchronised runs without copies; errors against the double-precision reference, "
            + $"rel err = max err / largest reference magnitude, ok when ≤ {DemoRow.Tolerance:g2}[/]");
        foreach (var note in ctx.Notes) Line($"[grey]{Markup.Escape(note)}[/]");
        Line($"[bold]files written[/] to {Markup.Escape(Path.GetFullPath(ctx.Options.OutDir))}:");
        foreach (var (file, what) in ctx.Files) Line($"  {Markup.Escape(Path.GetFileName(file))}  [grey]{Markup.Escape(what)}[/]");
    }

    /// <summary>"grid_sample backward (input, grid)" → "grid_sample bwd": the table's op column.</summary>
    internal static string ShortName(string op)
    {
        int paren = op.IndexOf(" (", StringComparison.Ordinal);
        string s = paren > 0 ? op[..paren] : op;
        return s.Replace("spatial transform", "spatial tf", StringComparison.Ordinal)
            .Replace(" forward", " fwd", StringComparison.Ordinal).Replace(" backward", " bwd", StringComparison.Ordinal);
    }
}

/// <summary>
/// The demo's console: colours and live displays on a terminal; plain text (no ANSI escape codes, 100 columns, no spinner) when
/// stdout is redirected to a file or a pipe.
/// </summary>
internal static class DemoConsole
{
    /// <summary>Stdout is a terminal.</summary>
    public static bool IsTerminal => !Console.IsOutputRedirected;

    public static IAnsiConsole Create()
    {
        bool tty = IsTerminal;
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = tty ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = tty ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = tty ? InteractionSupport.Detect : InteractionSupport.No,
            Out = new AnsiConsoleOutput(Console.Out),
        });
        console.Profile.Width = tty ? Math.Min(console.Profile.Width, 120) : 100;
        return console;
    }
}

/// <summary>Parsed arguments of <c>gpuattention demo</c>.</summary>
internal sealed record DemoOptions(string Backend, string ImagePath, string OutDir, int Pixels, int Repeat)
{
    public static string DefaultImage => Path.Combine(AppContext.BaseDirectory, "Assets", "logo.png");
}

/// <summary>One line of the demo's table.</summary>
/// <param name="Op">Operation, e.g. "sdpa forward".</param>
/// <param name="Shape">Shapes in words.</param>
/// <param name="Ms">Median time of one call, synchronised, without copies.</param>
/// <param name="Gflops">Useful FLOPs per second, in 10⁹.</param>
/// <param name="MaxError">Largest absolute difference to the double-precision reference.</param>
/// <param name="RelError">MaxError divided by the largest reference magnitude.</param>
/// <param name="Fallback">The device has no kernel for the op; it ran on the CPU backend with copies.</param>
/// <param name="GBps">Bytes of the op's tensors read and written once, per second, in 10⁹ (memory-bound ops).</param>
internal sealed record DemoRow(string Op, string Shape, double? Ms, double? Gflops, double? MaxError, double? RelError, bool Fallback, double? GBps = null)
{
    /// <summary>Relative error above which a row is marked as failed.</summary>
    public const double Tolerance = 1e-3;
    /// <summary>Verification verdict; null when there was nothing to compare.</summary>
    public bool? Ok => RelError is { } r ? r <= Tolerance : null;
}

/// <summary>What the sections share: the device, the input, the options, and what they report.</summary>
internal sealed class DemoContext(Device device, Image input, DemoOptions options)
{
    public Device Device { get; } = device;
    /// <summary>The input image, RGB, full resolution.</summary>
    public Image Input { get; } = input;
    public DemoOptions Options { get; } = options;
    public List<DemoRow> Rows { get; } = [];
    public List<string> Notes { get; } = [];
    public List<(string Path, string What)> Files { get; } = [];
    public Action<string> ReportStatus { get; set; } = _ => { };

    /// <summary>The device is a simulator (<see cref="Device.IsSimulator"/>, ilgpu:cpu): the sections keep every op and picture
    /// but run smaller work (see <see cref="DemoCommand.SimulatorPixels"/>, <see cref="LearningSteps"/>).</summary>
    public bool Simulator => Device.IsSimulator;

    /// <summary>Optimisation steps of a learning loop: <paramref name="full"/>, or <see cref="DemoCommand.SimulatorSteps"/> on a simulator.</summary>
    public int LearningSteps(int full) => Simulator ? Math.Min(full, DemoCommand.SimulatorSteps) : full;

    /// <summary>Writes <paramref name="image"/> as OUT/<paramref name="name"/> and lists it.</summary>
    public void Save(string name, Image image, string what)
    {
        var path = Path.Combine(Options.OutDir, name);
        image.Save(path);
        Files.Add((path, what));
    }

    /// <summary>Runs <paramref name="op"/> once untimed, then <see cref="DemoOptions.Repeat"/> times, each synchronised; returns the median in ms.</summary>
    public double TimeMedian(Action op)
    {
        op(); Device.Synchronize();
        var times = new double[Options.Repeat];
        for (int r = 0; r < times.Length; r++)
        {
            var sw = Stopwatch.StartNew();
            op(); Device.Synchronize();
            times[r] = sw.Elapsed.TotalMilliseconds;
        }
        Array.Sort(times);
        return times.Length % 2 == 1 ? times[times.Length / 2] : (times[times.Length / 2 - 1] + times[times.Length / 2]) / 2;
    }

    /// <summary>Largest |a − ref| and that divided by the largest |ref| (non-finite pairs must match exactly).</summary>
    public static (double MaxAbs, double Rel) Compare(ReadOnlySpan<float> actual, ReadOnlySpan<double> reference)
    {
        double maxAbs = 0, maxRef = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            double r = reference[i], a = actual[i];
            if (!double.IsFinite(r) || !double.IsFinite(a))
            {
                if (!r.Equals(a)) maxAbs = double.PositiveInfinity;
                continue;
            }
            maxAbs = Math.Max(maxAbs, Math.Abs(a - r));
            maxRef = Math.Max(maxRef, Math.Abs(r));
        }
        return (maxAbs, maxRef > 0 ? maxAbs / maxRef : maxAbs);
    }
}

/// <summary>One part of the demo: runs an operation, adds rows to the table and pictures to the output folder.</summary>
internal interface IDemoSection
{
    /// <summary>Short name shown in the status line.</summary>
    string Name { get; }
    /// <summary>Runs the section; throws the library's exceptions on failure.</summary>
    void Run(DemoContext ctx);
}
