using System.Text.Json;
using GpuAttention.Cli.Ops;
using GpuAttention.IO;

namespace GpuAttention.Cli;

/// <summary>Entry point of `gpuattention` (CONTRACT.md, "Command line").</summary>
public static class Program
{
    private const string Usage = """
        usage:
          gpuattention run OP --backend BACKEND --in DIR --out DIR [options] [--warmup N] [--repeat N]
          gpuattention devices
          gpuattention verify [--backend BACKEND] [--seed N] [--only OP,...]
          gpuattention demo [--backend B] [--image PATH] [--out DIR]
          gpuattention soak [--backend BACKEND] (--minutes N | --iterations N) [--interval S] [--case TEXT] [--skip TEXT] | --list
          gpuattention tune --backend opencl[:K]|cuda[:K] [--op gemm,grid-sample,glimpse] [--budget SECONDS] [--repeat N] [--dry-run]
          gpuattention tune --show [--backend BACKEND]
          gpuattention ptx --arch sm_80|sm_90 --out DIR | --report FILE
        OP: {0}
        BACKEND: cpu | opencl[:K] | cuda[:K] | ilgpu | ilgpu:cuda[:K] | ilgpu:opencl[:K] | ilgpu:cpu | auto
        options: --causal --scale X --size H,W --align-corners --mode bilinear|nearest --padding zeros|border|reflection --atomic
        tune: searches the kernels' tile sizes (-D defines) and work-group sizes on the device; every candidate is checked against
          the reference, then timed (median); the winners go to a per-device cache that the backend reads when it opens:
          $GPUATTENTION_TUNING_DIR, else $XDG_CACHE_HOME/gpuattention/tuning, else ~/.cache/gpuattention/tuning (default budget 120 s).
        """;

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

    public static int Main(string[] args)
    {
        try
        {
            if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
            {
                Console.Out.WriteLine(UsageText());
                return args.Length == 0 ? 2 : 0;
            }
            return args[0] switch
            {
                "run" => Run(args.AsSpan(1)),
                "devices" => Devices(),
                "demo" => DemoCommand.Run(args[1..]),
                "verify" => Verify.VerifyCommand.Run(args.AsSpan(1)),
                "soak" => Soak.SoakCommand.Run(args.AsSpan(1)),
                "tune" => Tune.TuneCommand.Run(args.AsSpan(1)),
                "ptx" => Ptx.PtxCommand.Run(args.AsSpan(1)),
                _ => throw new UsageException($"unknown command '{args[0]}' (expected run, devices, verify, demo, soak, tune or ptx)"),
            };
        }
        catch (UsageException e) { return Fail(2, e.Message + "\n" + UsageText()); }
        catch (Exception e) when (IsInputError(e)) { return Fail(1, e.Message); }
        catch (Exception e) { return Fail(1, $"internal error: {e.GetType().Name}: {e.Message}"); }
    }

    internal static bool IsInputError(Exception e) => e is InputException or TensorShapeException or ArgumentException
        or InvalidDataException or FileNotFoundException or DirectoryNotFoundException or BackendUnavailableException or IOException
        or UnauthorizedAccessException or ObjectDisposedException or NotSupportedException or OutOfMemoryException;

    private static string UsageText() => string.Format(Usage, string.Join(" | ", Ops.Keys));

    private static int Fail(int code, string message)
    {
        // One short message: the first line for input errors, full usage text only for usage errors.
        Console.Error.WriteLine("gpuattention: " + (code == 2 ? message : message.ReplaceLineEndings(" ")));
        return code;
    }

    private static int Devices()
    {
        foreach (var d in Device.Probe())
            Console.Out.WriteLine(d.Available ? $"{d.Spec,-10} {d.Name}" : $"{d.Spec,-10} (missing) {d.Reason}");
        string dir = Backends.Kernels.Tuning.TuningCache.Directory;
        int files = Directory.Exists(dir) ? Directory.GetFiles(dir, "*.json").Length : 0;
        Console.Out.WriteLine($"tuning cache: {dir} ({files} device file{(files == 1 ? "" : "s")}; `gpuattention tune --show` prints them)");
        return 0;
    }

    private static int Run(ReadOnlySpan<string> args)
    {
        if (args.Length == 0) throw new UsageException("run: expected an OP");
        if (!Ops.TryGetValue(args[0], out var op)) throw new UsageException($"run: unknown OP '{args[0]}'");
        var o = RunOptions.Parse(args[1..].ToArray());
        if (!Directory.Exists(o.InDir)) throw new InputException($"--in: directory not found: {o.InDir}");
        ValidateBackendName(o.Backend);

        var inputs = new InputSet(o.InDir!);
        using var device = Device.Open(o.Backend);
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
        {
            Console.Out.WriteLine(TimingJson(op.Name, device, Backends.Kernels.Tuning.Tuner.Median(times), times.Min(), r));
        }
        return 0;
    }

    /// <summary>Unknown backend words are usage errors (exit 2); a known backend that is absent is exit 1.</summary>
    internal static void ValidateBackendName(string b)
    {
        string s = b.ToLowerInvariant();
        if (s == "ilgpu" || s.StartsWith("ilgpu:", StringComparison.Ordinal))
        {
            try { Backends.Ilgpu.IlgpuRuntime.ParseSpec(s); return; }
            catch (ArgumentException e) { throw new UsageException("--" + e.Message); }
        }
        int c = s.IndexOf(':');
        string name = c < 0 ? s : s[..c];
        if (name is not ("cpu" or "opencl" or "cuda" or "auto") || c >= 0 && (name == "auto" || !int.TryParse(s[(c + 1)..], out int k) || k < 0))
            throw new UsageException($"--backend: expected cpu, opencl[:K], cuda[:K], ilgpu[:cuda[:K]|:opencl[:K]|:cpu] or auto, got '{b}'");
    }

    /// <summary>Writes every output to a temporary folder inside DIR first, then moves them into place: a failure leaves DIR untouched.</summary>
    private static void WriteOutputs(string dir, IReadOnlyList<(string Name, NpyArray Array)> outputs)
    {
        Directory.CreateDirectory(dir);
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
