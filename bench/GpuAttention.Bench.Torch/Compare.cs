using System.Diagnostics;
using System.Runtime.InteropServices;
using GpuAttention;
using TorchSharp;
using static TorchSharp.torch;
using TT = TorchSharp.torch.Tensor;

namespace GpuAttention.Bench.Torch;

/// <summary>One workload: SDPA forward, forward+backward, or decode (forward with L small), with GQA K/V expanded for LibTorch.</summary>
public sealed record SdpaCase(string Name, int B, int Hq, int Hkv, int L, int S, int E, bool Causal, bool Backward)
{
    public override string ToString() => Name;
    public bool Decode => L <= 4;
    /// <summary>Useful FLOPs: forward 4·B·Hq·L·S·E (halved when causal and L = S), backward 2.5× forward.</summary>
    public double Flops => 4.0 * B * Hq * L * S * E * (Causal && L == S ? 0.5 : 1) * (Backward ? 3.5 : 1);
    /// <summary>Compulsory bytes of decode: every K and V head once (per query group), plus q and out.</summary>
    public double Bytes => 4.0 * ((double)B * Hkv * S * 2 * E + 2.0 * B * Hq * L * E);
}

/// <summary>
/// Same-process comparison of the CPU backend with LibTorch 2.10 (TorchSharp 0.107.0): identical inputs, outputs checked
/// against each other first, then ours and LibTorch's alternate call by call (the order flipping every repetition), and
/// the ratio of the medians is reported (LibTorch time / ours: &gt; 1 means we are faster).
/// </summary>
public static unsafe class Compare
{
    public static readonly SdpaCase[] Cases =
    [
        new("SDPA forward B1 H8 L=S=1024 E64", 1, 8, 8, 1024, 1024, 64, false, false),
        new("SDPA forward, causal", 1, 8, 8, 1024, 1024, 64, true, false),
        new("SDPA forward+backward B1 H8 L=S=1024 E64", 1, 8, 8, 1024, 1024, 64, false, true),
        new("SDPA forward+backward, causal", 1, 8, 8, 1024, 1024, 64, true, true),
        new("SDPA forward+backward B1 H8 L=S=1024 E128", 1, 8, 8, 1024, 1024, 128, false, true),
        new("SDPA forward B1 H8 L=S=4096 E64", 1, 8, 8, 4096, 4096, 64, false, false),
        new("GQA prefill Hq32/Hkv8 L=S=2048 E128 causal", 1, 32, 8, 2048, 2048, 128, true, false),
        new("GQA decode L=1 Hq32/Hkv8 S=4096 E128 B1", 1, 32, 8, 1, 4096, 128, false, false),
        new("GQA decode L=1 Hq32/Hkv8 S=2048 E128 B8", 8, 32, 8, 1, 2048, 128, false, false),
        new("GQA decode L=1 Hq32/Hkv8 S=16384 E128 B1", 1, 32, 8, 1, 16384, 128, false, false),
    ];

    public static readonly GridCase[] GridCases =
    [
        new("grid_sample forward N16 C16 128²→64² bilinear", 16, 16, 128, 128, 64, 64, false),
        new("grid_sample forward+backward, same", 16, 16, 128, 128, 64, 64, true),
    ];

    public static readonly GlimpseCase[] GlimpseCases =
    [
        new("glimpse forward N16 C16 128²→32², σ 1–2 px", 16, 16, 128, 128, 32, 32, false),
        new("glimpse forward+backward, same", 16, 16, 128, 128, 32, 32, true),
    ];

    public static int Run(string[] args)
    {
        int reps = 15;
        string? only = null, outPath = null;
        for (int i = 1; i < args.Length; i++)
        {
            if (args[i] == "--reps") reps = int.Parse(args[++i]);
            else if (args[i] == "--only") only = args[++i];
            else if (args[i] == "--out") outPath = args[++i];
        }
        int threads = Environment.ProcessorCount;
        torch.set_num_threads(threads);
        torch.set_num_interop_threads(1);
        var lines = new List<string>();
        void Emit(string s) { Console.WriteLine(s); lines.Add(s); }

        Emit($"# CPU backend vs LibTorch {torch.__version__} (TorchSharp {typeof(torch).Assembly.GetName().Version}), same process");
        Emit("");
        Emit($"- date: {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC; machine: {CpuModel()}, {threads} logical CPUs, {MachineLimitsSimd()}; {RuntimeInformation.FrameworkDescription}");
        Emit($"- threads: ours {threads} (CpuWorkers), LibTorch {torch.get_num_threads()} intra-op (OpenMP), OMP_WAIT_POLICY={Environment.GetEnvironmentVariable("OMP_WAIT_POLICY") ?? "(unset: workers spin after each call)"}; DOTNET_TieredCompilation={Environment.GetEnvironmentVariable("DOTNET_TieredCompilation") ?? "(unset: tiered JIT, first calls may run tier-0 code)"}");
        Emit($"- load before: {Load()}");
        Emit($"- method: per workload, outputs (and gradients) checked against each other, 3 warm-up pairs, then {reps} repetitions of one call each, ours and LibTorch's alternating (order flipped every repetition); median wall time per call; ratio = LibTorch median / ours. GQA: LibTorch gets K/V expanded with repeat_interleave (outside the timing; it has no enable_gqa here). Denormals: not flushed in the SDPA and grid_sample rows (their inputs produce none). Glimpse rows: LibTorch's switch (at::Context::setFlushDenormal, FTZ + DAZ; TorchSharp 0.107 does not wrap it, so P/Invoke) is set on every thread of its OpenMP pool before them and cleared after (it sets the calling thread's MXCSR only, so it runs inside an OpenMP parallel region; on the calling thread, which our calls share, only during LibTorch's calls); ours is not flushed (.NET cannot set FTZ/DAZ) but stores normalised filterbank weights below 1e-15 as 0, so no denormal operands reach its products (only its filterbank build, O(H·h + W·w) exps per work item, meets them). Checked by probes whose results follow the table when glimpse rows run.");
        Emit("- CPU ms: process CPU time (getrusage, all threads) per call, median; less disturbed by other processes than wall time.");
        Emit("- FLOPs: forward 4·B·Hq·L·S·E (causal L = S: half), forward+backward 3.5× forward. Decode bytes: every K/V head once + q + out; grid_sample bytes: compulsory traffic as bench/compare.py counts it. Glimpse FLOPs: the two products in the cheaper order, 2·N·C·h·W·(H + w) (square shapes: either order), forward+backward 3× forward (the backward of two products as autograd does it; filterbank builds not counted). LibTorch does these dense products; ours skips the multiply-adds by filter weights that are exactly 0 (it sums over the bands of nonzero weights: a σ of 1–2 px covers ~35 of 128 pixels), so its glimpse rate is dense-equivalent (the same FLOP count over its time) and its fraction of the FMA peak below is not the share of the FMA units it keeps busy.");
        Emit("");
        Emit("| workload | LibTorch ms | ours ms | ratio | ours rate | LibTorch rate | CPU ms LibTorch / ours (ratio) | max rel diff |");
        Emit("|---|---|---|---|---|---|---|---|");
        using var dev = Device.Open("cpu");
        var rows = new List<(string Name, double Work, bool Bytes, Result R)>();
        foreach (var c in Cases)
        {
            if (only != null && !c.Name.Contains(only, StringComparison.OrdinalIgnoreCase)) continue;
            var r = RunCase(dev, c, reps);
            rows.Add((c.Name, c.Decode ? c.Bytes : c.Flops, c.Decode, r));
            string rate(double ms) => c.Decode ? $"{c.Bytes / ms / 1e6:F1} GB/s" : $"{c.Flops / ms / 1e6:F1} GFLOP/s";
            Emit($"| {c.Name} | {r.TorchMs:F3} | {r.OursMs:F3} | **{r.TorchMs / r.OursMs:F2}×** | {rate(r.OursMs)} | {rate(r.TorchMs)} | {r.TorchCpuMs:F1} / {r.OursCpuMs:F1} ({r.TorchCpuMs / r.OursCpuMs:F2}×) | {r.MaxRel:E1} |");
        }
        foreach (var c in GridCases)
        {
            if (only != null && !c.Name.Contains(only, StringComparison.OrdinalIgnoreCase)) continue;
            var r = RunGrid(dev, c, reps);
            rows.Add((c.Name, c.Bytes, true, r));
            string rate(double ms) => $"{c.Bytes / ms / 1e6:F1} GB/s";
            Emit($"| {c.Name} | {r.TorchMs:F3} | {r.OursMs:F3} | **{r.TorchMs / r.OursMs:F2}×** | {rate(r.OursMs)} | {rate(r.TorchMs)} | {r.TorchCpuMs:F1} / {r.OursCpuMs:F1} ({r.TorchCpuMs / r.OursCpuMs:F2}×) | {r.MaxRel:E1} |");
        }
        var glimpses = GlimpseCases.Where(c => only == null || c.Name.Contains(only, StringComparison.OrdinalIgnoreCase)).ToArray();
        string? glimpseNote = null;
        if (glimpses.Length > 0)
        {
            double torchOff0 = LibTorchDenormals.ProbeFlushedFraction(false);
            LibTorchDenormals.SetAllLibTorchThreads(true);
            bool daz = LibTorchDenormals.SetThisThread(false);   // our calls run on this thread too: flushed only inside LibTorch's calls
            double torchOn, oursOn;
            try
            {
                torchOn = LibTorchDenormals.ProbeFlushedFraction(true);
                oursOn = OursFlushProbe(dev, glimpses[0]);
                foreach (var c in glimpses)
                {
                    var r = RunGlimpse(dev, c, reps);
                    rows.Add((c.Name, c.Flops, false, r));
                    string rate(double ms) => $"{c.Flops / ms / 1e6:F1} GFLOP/s";
                    Emit($"| {c.Name} | {r.TorchMs:F3} | {r.OursMs:F3} | **{r.TorchMs / r.OursMs:F2}×** | {rate(r.OursMs)} | {rate(r.TorchMs)} | {r.TorchCpuMs:F1} / {r.OursCpuMs:F1} ({r.TorchCpuMs / r.OursCpuMs:F2}×) | {r.MaxRel:E1} |");
                }
            }
            finally { LibTorchDenormals.SetAllLibTorchThreads(false); }
            double torchOff = LibTorchDenormals.ProbeFlushedFraction(false);
            glimpseNote = $"- glimpse rows, denormals (CPU {(daz ? "has" : "LACKS")} DAZ), checked: a LibTorch product of 2^20 denormals (1e-39f × 0.5, split over its {torch.get_num_threads()} threads) came out {100 * torchOff0:F0}% zero before the rows, {100 * torchOn:F0}% with the switch set as in the rows (100% = every thread flushes; the calling thread alone would give ~{100.0 / torch.get_num_threads():F0}%), {100 * torchOff:F0}% after it was cleared; our forward glimpse of an image of 1e-39f came out {100 * oursOn:F0}% zero (0% = not flushed). Parameters per image (fixed seed): stride 0.8–1 × size/h (the h centres span 78–97% of the image), σ uniform in 1–2 px, the last centre inside.";
        }
        Emit("");
        if (glimpseNote != null) Emit(glimpseNote);
        Emit($"- load after: {Load()}");
        if (!args.Contains("--no-limits"))
        {
            var lim = GpuAttention.Bench.MachineLimits.Measure();
            Emit("");
            Emit($"## Fractions of the machine limits (`limits` probe right after: FMA peak {lim.FmaGflopsAll:F1} GFLOP/s with {lim.Threads} threads, {lim.FmaGflops1:F1} with 1; copy bandwidth {lim.CopyGBsDram:F1} GB/s read + write; load {Load()})");
            Emit("");
            Emit("Wall: our rate over the {threads}-thread limit. Per core-second: the work over our process CPU time, over the 1-thread FMA peak (compute) or the copy bandwidth over the threads (a rough per-core rate): what a loaded machine disturbs least.".Replace("{threads}", lim.Threads.ToString()));
            Emit("");
            Emit("| workload | ours, wall | fraction of limit | ours per core-second | fraction of 1-core limit |");
            Emit("|---|---|---|---|---|");
            foreach (var (name, work, bytes, r) in rows)
            {
                double wall = work / r.OursMs / 1e6, core = work / r.OursCpuMs / 1e6;
                double lAll = bytes ? lim.CopyGBsDram : lim.FmaGflopsAll, l1 = bytes ? lim.CopyGBsDram / lim.Threads : lim.FmaGflops1;
                string u = bytes ? "GB/s" : "GFLOP/s";
                Emit($"| {name} | {wall:F1} {u} | {100 * wall / lAll:F0}% | {core:F1} {u} | {100 * core / l1:F0}% |");
            }
        }
        if (outPath != null)
        {
            File.WriteAllLines(outPath, lines);
            // The chart beside it (same stem, .png), drawn from these very lines, as `chart FILE.md` would.
            string png = Path.ChangeExtension(outPath, ".png");
            try { if (CompareChart.Save(lines, png)) Console.Error.WriteLine($"wrote {png}"); }
            catch (Exception e) { Console.Error.WriteLine($"no chart ({e.GetType().Name}: {e.Message}); the Markdown is written"); }
        }
        return 0;
    }

    private static string MachineLimitsSimd() =>
        System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated ? "AVX-512" : System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated ? "AVX2" : "128-bit SIMD";

    private static string CpuModel()
    {
        try { return File.ReadLines("/proc/cpuinfo").First(l => l.StartsWith("model name")).Split(':', 2)[1].Trim(); }
        catch { return RuntimeInformation.ProcessArchitecture.ToString(); }
    }

    private static string Load()
    {
        try { return "loadavg " + File.ReadAllText("/proc/loadavg").Trim(); } catch { return "?"; }
    }

    public record struct Result(double OursMs, double TorchMs, double MaxRel, double OursCpuMs, double TorchCpuMs);

    private static float[] Rand(Random rng, long n)
    {
        var a = new float[n];
        for (long i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1);
        return a;
    }

    private static double MaxRel(float[] a, float[] b, double floor = 1e-30)
    {
        double maxDiff = 0, maxRef = 0;
        for (int i = 0; i < a.Length; i++)
        {
            maxDiff = Math.Max(maxDiff, Math.Abs((double)a[i] - b[i]));
            maxRef = Math.Max(maxRef, Math.Abs((double)b[i]));
        }
        return maxDiff / Math.Max(maxRef, Math.Max(floor, 1e-30));
    }

    /// <summary>SDPA inputs of a case (fixed seed): q, k, v and grad_out uniform in [−1, 1].</summary>
    public static (float[] Q, float[] K, float[] V, float[] GradOut) SdpaInputs(SdpaCase c)
    {
        var rng = new Random(12345);
        float[] q = Rand(rng, (long)c.B * c.Hq * c.L * c.E), k = Rand(rng, (long)c.B * c.Hkv * c.S * c.E);
        float[] v = Rand(rng, (long)c.B * c.Hkv * c.S * c.E), g = Rand(rng, (long)c.B * c.Hq * c.L * c.E);
        return (q, k, v, g);
    }

    public static Result RunCase(Device dev, SdpaCase c, int reps)
    {
        var (q, k, v, g) = SdpaInputs(c);
        using var ours = new OursSdpa(dev, c, q, k, v, g);
        using var peer = new TorchSdpa(c, q, k, v, g);
        double maxRel = CheckSame(c.Name, ours.Run, ours.Outputs, peer.Run, peer.Outputs, 1e-3);
        return Interleave(ours.Run, peer.Run, reps, maxRel);
    }

    /// <summary>grid_sample inputs of a case (fixed seed): input and grad_out uniform in [−1, 1], grid in [−1.1, 1.1].</summary>
    public static (float[] Input, float[] Grid, float[] GradOut) GridInputs(GridCase c)
    {
        var rng = new Random(12345);
        float[] input = Rand(rng, (long)c.N * c.C * c.H * c.W), g = Rand(rng, (long)c.N * c.C * c.Ho * c.Wo);
        float[] grid = Rand(rng, (long)c.N * c.Ho * c.Wo * 2);
        for (int i = 0; i < grid.Length; i++) grid[i] *= 1.1f;
        return (input, grid, g);
    }

    /// <summary>Glimpse inputs of a case (fixed seed): image and grad_out uniform in [−1, 1], parameters by <see cref="GlimpseCase.Params"/>.</summary>
    public static (float[] Image, float[] Params, float[] GradOut) GlimpseInputs(GlimpseCase c)
    {
        var rng = new Random(12345);
        float[] image = Rand(rng, (long)c.N * c.C * c.H * c.W), g = Rand(rng, (long)c.N * c.C * c.Gh * c.Gw);
        return (image, c.Params(rng), g);
    }

    /// <summary>Runs both once and returns the largest relative difference of their outputs; throws past <paramref name="bound"/>.</summary>
    public static double CheckSame(string name, Action ours, Func<float[][]> oursOut, Action peer, Func<float[][]> peerOut, double bound)
    {
        ours(); peer();
        double maxRel = 0;
        var a = oursOut(); var b = peerOut();
        if (a.Length != b.Length) throw new InvalidOperationException($"{name}: {a.Length} outputs against {b.Length}");
        // An output far smaller than the others is measured against 1e-3 of the largest: e.g. the MHA key bias's gradient,
        // 0 up to rounding (softmax is invariant to adding q·b_k to a whole row of scores), whose relative error is noise.
        double scale = b.Max(x => x.Length == 0 ? 0 : x.Max(v => Math.Abs((double)v)));
        for (int i = 0; i < a.Length; i++)
        {
            double r = MaxRel(a[i], b[i], 1e-3 * scale);
            if (!(r <= bound)) throw new InvalidOperationException($"{name}: output {i} differs (max rel {r:E2})");
            maxRel = Math.Max(maxRel, r);
        }
        return maxRel;
    }

    public static Result RunGrid(Device dev, GridCase c, int reps)
    {
        var (input, grid, g) = GridInputs(c);
        using var ours = new OursGrid(dev, c, input, grid, g);
        using var peer = new TorchGrid(c, input, grid, g);
        double maxRel = CheckSame(c.Name, ours.Run, ours.Outputs, peer.Run, peer.Outputs, 1e-3);
        return Interleave(ours.Run, peer.Run, reps, maxRel);
    }

    public static Result RunGlimpse(Device dev, GlimpseCase c, int reps)
    {
        var (image, p, g) = GlimpseInputs(c);
        using var ours = new OursGlimpse(dev, c, image, p, g);
        using var peer = new TorchGlimpse(c, image, p, g) { FlushDenormals = true };
        double maxRel = CheckSame(c.Name, ours.Run, ours.Outputs, peer.Run, peer.Outputs, 1e-4);
        return Interleave(ours.Run, peer.Run, reps, maxRel);
    }

    /// <summary>Fraction of zero outputs of our forward glimpse on an image of 1e-39f (a denormal): the outputs are
    /// ~1e-39 (not 0) unless the threads that computed them flush denormals.</summary>
    private static double OursFlushProbe(Device dev, GlimpseCase c)
    {
        var f = c with { Backward = false };
        var image = new float[(long)f.N * f.C * f.H * f.W];
        Array.Fill(image, 1e-39f);
        using var ours = new OursGlimpse(dev, f, image, f.Params(new Random(12345)), new float[(long)f.N * f.C * f.Gh * f.Gw]);
        ours.Run();
        return LibTorchDenormals.ZeroFraction(ours.Outputs()[0]);
    }

    private static Result Interleave(Action ours, Action peer, int reps, double maxRel)
    {
        for (int w = 0; w < 3; w++) { ours(); peer(); }
        var to = new double[reps]; var tt = new double[reps]; var co = new double[reps]; var ct = new double[reps];
        for (int r = 0; r < reps; r++)
        {
            if (r % 2 == 0) { to[r] = Time(ours, ref co[r]); tt[r] = Time(peer, ref ct[r]); }
            else { tt[r] = Time(peer, ref ct[r]); to[r] = Time(ours, ref co[r]); }
        }
        return new Result(Median(to), Median(tt), maxRel, Median(co), Median(ct));
    }

    private static double Time(Action a, ref double cpuMs)
    {
        double c0 = ProcessCpuMs();
        long t0 = Stopwatch.GetTimestamp();
        a();
        double wall = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        cpuMs = ProcessCpuMs() - c0;
        return wall;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct RUsage { public long UtimeSec, UtimeUsec, StimeSec, StimeUsec; public fixed long Rest[14]; }

    [DllImport("libc", EntryPoint = "getrusage")]
    private static extern int GetRUsage(int who, out RUsage usage);

    /// <summary>CPU time of the whole process (all threads, user + system), ms: what a call costs in core time, which
    /// other processes on a loaded machine disturb far less than wall time.</summary>
    private static double ProcessCpuMs()
    {
        if (!OperatingSystem.IsLinux() || GetRUsage(0, out var u) != 0) return double.NaN;
        return (u.UtimeSec + u.StimeSec) * 1e3 + (u.UtimeUsec + u.StimeUsec) * 1e-3;
    }

    private static double Median(double[] x)
    {
        var s = (double[])x.Clone();
        Array.Sort(s);
        return s.Length % 2 == 1 ? s[s.Length / 2] : 0.5 * (s[s.Length / 2 - 1] + s[s.Length / 2]);
    }
}

/// <summary>Our side of a case: tensors uploaded once, outputs preallocated (a call allocates nothing).</summary>
public sealed class OursSdpa : IDisposable
{
    private readonly Device _d;
    private readonly SdpaCase _c;
    private readonly GpuAttention.Tensor _q, _k, _v, _g, _o, _l;
    private readonly GpuAttention.Tensor? _dq, _dk, _dv;
    private readonly SdpaOptions _opt;

    public OursSdpa(Device d, SdpaCase c, float[] q, float[] k, float[] v, float[] g)
    {
        _d = d; _c = c; _opt = new SdpaOptions(c.Causal);
        _q = d.Upload(q, c.B, c.Hq, c.L, c.E); _k = d.Upload(k, c.B, c.Hkv, c.S, c.E); _v = d.Upload(v, c.B, c.Hkv, c.S, c.E);
        _g = d.Upload(g, c.B, c.Hq, c.L, c.E);
        _o = d.Allocate(c.B, c.Hq, c.L, c.E); _l = d.Allocate(c.B, c.Hq, c.L);
        if (c.Backward) { _dq = d.Allocate(c.B, c.Hq, c.L, c.E); _dk = d.Allocate(c.B, c.Hkv, c.S, c.E); _dv = d.Allocate(c.B, c.Hkv, c.S, c.E); }
    }

    public void Run()
    {
        _d.Sdpa(_q, _k, _v, _o, _l, null, _opt);
        if (_c.Backward) _d.SdpaBackward(_q, _k, _v, _o, _l, _g, _dq!, _dk!, _dv!, null, _opt);
        _d.Synchronize();
    }

    /// <summary>out, and grad_q, grad_k, grad_v when the case has a backward.</summary>
    public float[][] Outputs() => _c.Backward ? [_d.Download(_o), _d.Download(_dq!), _d.Download(_dk!), _d.Download(_dv!)] : [_d.Download(_o)];

    public void Dispose()
    {
        foreach (var t in new[] { _q, _k, _v, _g, _o, _l, _dq, _dk, _dv }) t?.Dispose();
    }
}

/// <summary>LibTorch's side: scaled_dot_product_attention (its fused CPU flash kernel) and autograd for the backward;
/// GQA K/V expanded with repeat_interleave once, outside the timing (grad_k/grad_v summed back over the group for the check).</summary>
public sealed class TorchSdpa : IDisposable
{
    private readonly SdpaCase _c;
    private readonly TT _q, _k, _v, _g;
    private TT? _o, _dq, _dk, _dv;

    public TorchSdpa(SdpaCase c, float[] q, float[] k, float[] v, float[] g)
    {
        _c = c;
        int G = c.Hq / c.Hkv;
        _q = torch.tensor(q, new long[] { c.B, c.Hq, c.L, c.E });
        var k0 = torch.tensor(k, new long[] { c.B, c.Hkv, c.S, c.E });
        var v0 = torch.tensor(v, new long[] { c.B, c.Hkv, c.S, c.E });
        _k = G == 1 ? k0 : k0.repeat_interleave(G, 1).contiguous();
        _v = G == 1 ? v0 : v0.repeat_interleave(G, 1).contiguous();
        _g = torch.tensor(g, new long[] { c.B, c.Hq, c.L, c.E });
        if (c.Backward) { _q.requires_grad_(true); _k.requires_grad_(true); _v.requires_grad_(true); }
    }

    public void Run()
    {
        _o?.Dispose(); _dq?.Dispose(); _dk?.Dispose(); _dv?.Dispose();
        if (!_c.Backward)
        {
            using var _ = torch.no_grad();
            _o = torch.nn.functional.scaled_dot_product_attention(_q, _k, _v, null, 0.0, _c.Causal);
            return;
        }
        using (var scope = torch.NewDisposeScope())
        {
            var o = torch.nn.functional.scaled_dot_product_attention(_q, _k, _v, null, 0.0, _c.Causal);
            var grads = torch.autograd.grad(new[] { o }, new[] { _q, _k, _v }, new[] { _g });
            _o = o.detach().MoveToOuterDisposeScope();
            _dq = grads[0].MoveToOuterDisposeScope(); _dk = grads[1].MoveToOuterDisposeScope(); _dv = grads[2].MoveToOuterDisposeScope();
        }
    }

    private static float[] Data(TT t) => t.detach().contiguous().data<float>().ToArray();

    /// <summary>out, and grad_q, grad_k, grad_v (grad_k, grad_v summed back over the query group) when the case has a backward.</summary>
    public float[][] Outputs()
    {
        if (!_c.Backward) return [Data(_o!)];
        int G = _c.Hq / _c.Hkv;
        TT Fold(TT t) => G == 1 ? t : t.reshape(_c.B, _c.Hkv, G, _c.S, _c.E).sum(2);
        return [Data(_o!), Data(_dq!), Data(Fold(_dk!)), Data(Fold(_dv!))];
    }

    public void Dispose()
    {
        foreach (var t in new[] { _q, _k, _v, _g, _o, _dq, _dk, _dv }) t?.Dispose();
    }
}
