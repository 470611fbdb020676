using System.Diagnostics;
using System.Globalization;
using GpuAttention.Imaging;
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
    private const string Usage =
        "usage: gpuattention demo [--backend cpu|opencl[:K]|cuda[:K]|auto] [--image PATH] [--out DIR] [--pixels N] [--repeat N]";

    /// <summary>The sections run in order. Add SDPA backward, glimpse, grid_sample... here.</summary>
    internal static IReadOnlyList<IDemoSection> Sections { get; } =
        [new SdpaSection(), new SdpaTrainingSection(), new GlimpseSection(), new SpatialSection()];

    /// <summary>Runs the demo with the arguments that follow the word <c>demo</c>.</summary>
    /// <returns>0 on success, 1 on bad input, an unavailable backend or a failed verification, 2 on a usage error.</returns>
    public static int Run(string[] args)
    {
        DemoOptions opt;
        try { opt = DemoOptions.Parse(args); }
        catch (UsageException e)
        {
            Console.Error.WriteLine($"demo: {e.Message}");
            Console.Error.WriteLine(Usage);
            return 2;
        }
        if (opt.Help) { Console.WriteLine(Usage); return 0; }

        // Redirected output: Spectre assumes 80 columns, which squeezes the table; give it room.
        if (Console.IsOutputRedirected && AnsiConsole.Profile.Width < 160) AnsiConsole.Profile.Width = 160;
        try
        {
            var input = Image.Load(opt.ImagePath).ToRgb();
            using var device = Device.Open(opt.Backend);
            var ctx = new DemoContext(device, input, opt);
            Directory.CreateDirectory(opt.OutDir);
            AnsiConsole.Status().Spinner(Spinner.Known.Dots).Start("starting", status =>
            {
                ctx.ReportStatus = s => status.Status(Markup.Escape(s));
                var took = new List<string>();
                foreach (var section in Sections)
                {
                    ctx.ReportStatus($"{section.Name}: running");
                    var sw = Stopwatch.StartNew();
                    section.Run(ctx);
                    took.Add($"{section.Name} {sw.Elapsed.TotalSeconds:0.0} s");
                }
                ctx.Notes.Add($"wall time per section (with references and pictures): {string.Join(", ", took)}");
            });
            PrintReport(ctx);
            var failed = ctx.Rows.Where(r => r.Ok == false).ToList();
            if (failed.Count > 0)
            {
                Console.Error.WriteLine($"demo: verification failed for {string.Join(", ", failed.Select(r => r.Op))} (relative error above {DemoRow.Tolerance:g2})");
                return 1;
            }
            return 0;
        }
        catch (Exception e) when (e is BackendUnavailableException or InvalidDataException or ArgumentException or IOException or UnauthorizedAccessException)
        {
            var msg = e is ArgumentException { ParamName: { } p } ? e.Message.Replace($" (Parameter '{p}')", "") : e.Message;
            Console.Error.WriteLine($"demo: {msg.ReplaceLineEndings(" ")}");
            return 1;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"demo: internal error: {e.GetType().Name}: {e.Message}");
            return 1;
        }
    }

    private static void PrintReport(DemoContext ctx)
    {
        static string F(double? v, string fmt) => v is { } x ? x.ToString(fmt, CultureInfo.InvariantCulture) : "-";
        var table = new Table().Border(TableBorder.Rounded).Title($"[bold]gpuattention demo[/] — {Markup.Escape(ctx.Input.Width + "×" + ctx.Input.Height)} input");
        table.AddColumn("op");
        table.AddColumn("backend");
        table.AddColumn("device");
        table.AddColumn("shape");
        table.AddColumn(new TableColumn("time (ms)").RightAligned());
        table.AddColumn(new TableColumn("GFLOP/s").RightAligned());
        table.AddColumn(new TableColumn("GB/s").RightAligned());
        table.AddColumn(new TableColumn("max error").RightAligned());
        table.AddColumn(new TableColumn("rel error").RightAligned());
        table.AddColumn("check");
        string device = ctx.Device.Name;
        foreach (var r in ctx.Rows)
        {
            string dev = r.Fallback ? device + " (CPU fallback)" : device;
            table.AddRow(Markup.Escape(r.Op), Markup.Escape(ctx.Device.Spec), Markup.Escape(dev), Markup.Escape(r.Shape),
                F(r.Ms, "F3"), F(r.Gflops, "F2"), F(r.GBps, "F2"), F(r.MaxError, "0.0e+00"), F(r.RelError, "0.0e+00"),
                r.Ok switch { true => "[green]ok[/]", false => "[red]FAIL[/]", null => "-" });
        }
        AnsiConsole.Write(table);
        foreach (var note in ctx.Notes) AnsiConsole.MarkupLine($"[grey]{Markup.Escape(note)}[/]");
        AnsiConsole.MarkupLine($"[bold]files written[/] to {Markup.Escape(Path.GetFullPath(ctx.Options.OutDir))}:");
        foreach (var (file, what) in ctx.Files) AnsiConsole.MarkupLine($"  {Markup.Escape(Path.GetFileName(file))}  [grey]{Markup.Escape(what)}[/]");
    }
}

/// <summary>Parsed arguments of <c>gpuattention demo</c>.</summary>
internal sealed record DemoOptions(string Backend, string ImagePath, string OutDir, int Pixels, int Repeat, bool Help)
{
    public static string DefaultImage => Path.Combine(AppContext.BaseDirectory, "Assets", "logo.png");

    public static DemoOptions Parse(string[] args)
    {
        string backend = "cpu", image = DefaultImage, outDir = "demo-out";
        int pixels = 3072, repeat = 5;
        bool help = false;
        for (int i = 0; i < args.Length; i++)
        {
            string a = args[i];
            string Value() => i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal)
                ? args[++i] : throw new UsageException($"{a} needs a value");
            int Int(int min, int max)
            {
                var s = Value();
                return int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v >= min && v <= max
                    ? v : throw new UsageException($"{a}: expected an integer in {min}..{max}, got '{s}'");
            }
            switch (a)
            {
                case "--backend": backend = Value(); break;
                case "--image": image = Value(); break;
                case "--out": outDir = Value(); break;
                case "--pixels": pixels = Int(16, 1 << 16); break;
                case "--repeat": repeat = Int(1, 1000); break;
                case "-h" or "--help": help = true; break;
                default: throw new UsageException($"unknown option '{a}'");
            }
        }
        return new DemoOptions(backend, image, outDir, pixels, repeat, help);
    }
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
