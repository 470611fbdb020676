using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using GpuAttention.Cli.Ops;
using GpuAttention.IO;

namespace GpuAttention.Cli;

/// <summary>`gpuattention run OP --backend BACKEND --in DIR --out DIR [options] [--warmup N] [--repeat N]` (CONTRACT.md).</summary>
internal static class RunCommand
{
    /// <summary>Every op of `run`, by name.</summary>
    internal static readonly IReadOnlyDictionary<string, ICliOp> Ops = new ICliOp[]
    {
        new SdpaOp(),
        new SdpaBackwardOp(),
        new AffineGridOp(),
        new AffineGridBackwardOp(),
        new GridSampleOp(),
        new GridSampleBackwardOp(),
        new GlimpseOp(),
        new GlimpseBackwardOp(),
    }.ToDictionary(o => o.Name);

    /// <summary>The one line `gpuattention --help` shows for run.</summary>
    internal const string Summary = "Runs one operation (OP) on NumPy files in --in DIR and writes its outputs to --out DIR.";

    private const string Description = """
        Runs one operation on NumPy files: reads --in DIR/NAME.npy (float32 '<f4', masks '|b1' or '<f4'),
        writes --out DIR/NAME.npy. Nothing is written on failure.

          OP                    reads                                  writes
          sdpa                  q, k, v, [mask]                        out, lse
          sdpa-backward         q, k, v, [mask], out, lse, grad_out    grad_q, grad_k, grad_v
          affine-grid           theta                                  grid
          affine-grid-backward  grad_grid                              grad_theta
          grid-sample           input, grid                            out
          grid-sample-backward  input, grid, grad_out                  grad_input, grad_grid
          glimpse               image, params                          out
          glimpse-backward      image, params, grad_out                grad_image, grad_params

        With --repeat N the op runs --warmup times untimed, then N times timed (on the device,
        synchronised, without copies or compilation), and the last line of stdout is one JSON object:
        {"op", "backend", "device", "median_ms", "min_ms", "repeats"}.
        """;

    public static Command Build()
    {
        var op = new Argument<string?>("OP") { Description = $"The operation: {string.Join(", ", Ops.Keys)}.", Arity = ArgumentArity.ZeroOrOne };
        var backend = CliOptions.Backend();
        var inDir = CliOptions.Text("--in", "Folder of the input .npy files (required).", "DIR");
        var outDir = CliOptions.Text("--out", "Folder for the output .npy files, created if needed (required).", "DIR");
        var causal = CliOptions.Flag("--causal", "sdpa: key j is kept for query i when j <= i (top-left aligned).");
        var scale = CliOptions.Number("--scale", "sdpa: the score scale (default 1/sqrt(E)).", "X");
        var size = CliOptions.Parsed<(int H, int W)?>("--size", "affine-grid (required), affine-grid-backward: the grid's height and width; glimpse (required), glimpse-backward: the glimpse size.", "H,W", ParseSize, null);
        var align = CliOptions.Flag("--align-corners", "affine-grid, grid-sample: -1 and 1 are the centres of the corner pixels.");
        var mode = CliOptions.Choice("--mode", "grid-sample: interpolation", "bilinear", "bilinear", "nearest");
        var padding = CliOptions.Choice("--padding", "grid-sample: values outside the input", "zeros", "zeros", "border", "reflection");
        var atomic = CliOptions.Flag("--atomic", "grid-sample-backward: the nondeterministic atomic scatter instead of the deterministic gather.");
        var warmup = CliOptions.Int("--warmup", "Untimed runs before the timed ones.", 0, 1);
        var repeat = CliOptions.OptionalInt("--repeat", "Timed runs; prints the timing JSON as the last line of stdout.", 1);

        var cmd = new Command("run", Description) { op, backend, inDir, outDir, causal, scale, size, align, mode, padding, atomic, warmup, repeat };
        cmd.SetAction(r =>
        {
            string? name = r.GetValue(op);
            if (name is null) throw new UsageException($"run: expected an OP ({string.Join(", ", Ops.Keys)})");
            if (!Ops.TryGetValue(name, out var cliOp)) throw new UsageException($"run: unknown OP '{name}' (expected {CliOptions.Words(Ops.Keys.ToList())})");
            var o = new RunOptions
            {
                Backend = r.GetValue(backend)!,
                InDir = r.GetValue(inDir) ?? throw new UsageException("--in DIR is required"),
                OutDir = r.GetValue(outDir) ?? throw new UsageException("--out DIR is required"),
                Causal = r.GetValue(causal),
                Scale = r.GetValue(scale) is double s ? (float)s : null,
                Size = r.GetValue(size) is (int h, int w) ? [h, w] : null,
                AlignCorners = r.GetValue(align),
                Mode = r.GetValue(mode)!,
                Padding = r.GetValue(padding)!,
                Atomic = r.GetValue(atomic),
                Warmup = r.GetValue(warmup),
                Repeat = r.GetValue(repeat),
            };
            return Run(cliOp, o);
        });
        return cmd;
    }

    private static (int H, int W)? ParseSize(string v)
    {
        var parts = v.Split(',');
        if (parts.Length != 2 || !int.TryParse(parts[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out int h)
            || !int.TryParse(parts[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out int w) || h <= 0 || w <= 0)
            throw new FormatException($"expected H,W with positive integers, got '{v}'");
        return (h, w);
    }

    private static int Run(ICliOp op, RunOptions o)
    {
        if (File.Exists(o.OutDir)) throw new InputException($"--out: '{o.OutDir}' is a file; expected a folder (it is created if missing)");
        if (!Directory.Exists(o.InDir)) throw new InputException($"--in: folder not found: {o.InDir}");

        var inputs = new InputSet(o.InDir!);
        using var device = CliOptions.OpenDevice(o.Backend);
        using var prepared = op.Prepare(device, inputs, o);

        for (int i = 0; i < o.Warmup; i++) prepared.Launch();
        device.Synchronize();
        var times = new List<double>();
        if (o.Repeat is int n)
        {
            // Device-side events where the backend has them (CUDA), else a host stopwatch around launch + synchronise.
            for (int i = 0; i < n; i++) times.Add(device.TimeMs(prepared.Launch));
        }
        else if (o.Warmup == 0)
        {
            prepared.Launch();
        }
        var outputs = prepared.Collect();
        WriteOutputs(o.OutDir!, outputs);
        if (o.Repeat is int r)
            Console.Out.WriteLine(TimingJson(op.Name, device, Median(times), times.Min(), r));
        return 0;
    }

    private static double Median(List<double> times)
    {
        var s = times.Order().ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }

    /// <summary>Writes every output to a temporary folder inside DIR first, then moves them into place: a failure leaves DIR untouched.</summary>
    private static void WriteOutputs(string dir, IReadOnlyList<(string Name, NpyArray Array)> outputs)
    {
        try { Directory.CreateDirectory(dir); }
        catch (IOException e) { throw new InputException($"--out: cannot create the folder '{dir}': {CliErrors.Clean(e)}"); }
        string tmp = Path.Combine(dir, ".gpuattention-tmp-" + Environment.ProcessId);
        Directory.CreateDirectory(tmp);
        try
        {
            foreach (var (name, array) in outputs) Npy.Write(Path.Combine(tmp, name + ".npy"), array);
            foreach (var (name, _) in outputs) File.Move(Path.Combine(tmp, name + ".npy"), Path.Combine(dir, name + ".npy"), overwrite: true);
        }
        finally
        {
            Directory.Delete(tmp, recursive: true);
        }
    }

    internal static string TimingJson(string op, Device device, double median, double min, int repeats)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteString("op", op);
            w.WriteString("backend", device.Spec);
            w.WriteString("device", device.Name);
            w.WriteNumber("median_ms", Math.Round(median, 4));
            w.WriteNumber("min_ms", Math.Round(min, 4));
            w.WriteNumber("repeats", repeats);
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(ms.ToArray());
    }
}
