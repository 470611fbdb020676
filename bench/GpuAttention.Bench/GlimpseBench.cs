using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using GpuAttention;
using GpuAttention.Backends;
using GpuAttention.Bench;

/// <summary>
/// Separable Gaussian glimpse, forward and backward, per backend, at N16 C16 128×128 → 32×32 (the shape).
/// The PyTorch peer (masks + two batched matmuls) is bench/peers/glimpse_torch.py, run beside this on the same machine:
///   dotnet run -c Release --project bench/GpuAttention.Bench -- --filter '*Glimpse*'
///   LD_LIBRARY_PATH=.../openblas-pthread python3 bench/peers/glimpse_torch.py bench --threads 2
/// </summary>
[Config(typeof(GlimpseBenchConfig))]
public class GlimpseBench
{
    public const int N = 16, C = 16, S = 128, G = 32;

    public static IEnumerable<string> Backends() => BenchBackends.List();
    [ParamsSource(nameof(Backends))] public string Backend { get; set; } = "cpu";

    private Device _d = null!;
    private Tensor _img = null!, _p = null!, _out = null!, _g = null!, _gi = null!, _gp = null!;

    internal static GlimpseShape Shape => new(N, C, S, S, G, G);

    [GlobalSetup]
    public void Setup()
    {
        _d = Device.Open(Backend);
        var rng = new Random(1);
        var img = new float[N * C * S * S];
        for (int i = 0; i < img.Length; i++) img[i] = (float)rng.NextDouble() * 2 - 1;
        var p = new float[N * 6];
        for (int n = 0; n < N; n++) { p[n * 6] = S * 0.2f; p[n * 6 + 1] = 2; p[n * 6 + 2] = S * 0.6f / G; p[n * 6 + 3] = S * 0.25f; p[n * 6 + 4] = 2.5f; p[n * 6 + 5] = S * 0.55f / G; }
        _img = _d.Upload(img, N, C, S, S);
        _p = _d.Upload(p, N, 6);
        _out = _d.Allocate(N, C, G, G);
        var g = new float[N * C * G * G];
        for (int i = 0; i < g.Length; i++) g[i] = (float)rng.NextDouble() * 2 - 1;
        _g = _d.Upload(g, N, C, G, G);
        _gi = _d.Allocate(N, C, S, S);
        _gp = _d.Allocate(N, 6);
        Forward(); Backward();   // compile kernels outside the timings
    }

    [GlobalCleanup]
    public void Cleanup() { foreach (var t in new[] { _img, _p, _out, _g, _gi, _gp }) t.Dispose(); _d.Dispose(); }

    [Benchmark]
    public void Forward() { _d.Glimpse(_img, _p, _out); _d.Synchronize(); }

    [Benchmark]
    public void Backward() { _d.GlimpseBackward(_img, _p, _g, _gi, _gp); _d.Synchronize(); }
}

internal sealed class GlimpseBenchConfig : ManualConfig
{
    public GlimpseBenchConfig()
    {
        AddJob(Job.ShortRun.WithWarmupCount(2).WithIterationCount(5).WithLaunchCount(1)
            .WithToolchain(BenchmarkDotNet.Toolchains.InProcess.Emit.InProcessEmitToolchain.Instance));
        AddColumn(new RateColumn("GFLOP/s", "products' FLOPs (2 per multiply-add; forward in the cheaper order) / median time",
            c => c.Descriptor.WorkloadMethod.Name == nameof(GlimpseBench.Forward) ? GlimpseBench.Shape.ForwardFlops : GlimpseBench.Shape.BackwardFlops));
    }
}
