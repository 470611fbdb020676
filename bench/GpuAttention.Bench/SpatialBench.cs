using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace GpuAttention.Bench;

/// <summary>
/// grid_sample forward / backward and the fused spatial transformer at N16 C16 128×128 → 64×64 bilinear, zeros
/// padding, on an affine grid (rotation, zoom and shift per image, as a spatial transformer produces). Reports GB/s
/// of the minimum traffic beside the time. The PyTorch 1.13 peer (2 threads) is bench/peers/grid_sample_torch.py bench.
/// Run: dotnet run -c Release --project bench/GpuAttention.Bench -- --filter '*SpatialBench*'
/// </summary>
[Config(typeof(SpatialBenchConfig))]
public class SpatialBench
{
    private const int N = 16, C = 16, H = 128, W = 128, Ho = 64, Wo = 64;
    private Device _device = null!;
    private Tensor _input = null!, _grid = null!, _theta = null!, _gradOut = null!, _out = null!, _gradInput = null!, _gradGrid = null!, _gradTheta = null!;
    private readonly GridSampleOptions _options = new(GridSampleMode.Bilinear, GridSamplePadding.Zeros, false);

    public static IEnumerable<string> Backends() => BenchBackends.List();
    [ParamsSource(nameof(Backends))] public string Backend { get; set; } = "cpu";

    [GlobalSetup]
    public void Setup()
    {
        _device = Device.Open(Backend);
        var rng = new Random(0);
        float[] Rand(long n) { var a = new float[n]; for (long i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1); return a; }
        var theta = new float[N * 6];
        for (int n = 0; n < N; n++)
        {
            double a = rng.NextDouble() - 0.5, s = 0.5 + 0.5 * rng.NextDouble();
            theta[n * 6 + 0] = (float)(s * Math.Cos(a)); theta[n * 6 + 1] = (float)(-s * Math.Sin(a)); theta[n * 6 + 2] = (float)(rng.NextDouble() * 0.6 - 0.3);
            theta[n * 6 + 3] = (float)(s * Math.Sin(a)); theta[n * 6 + 4] = (float)(s * Math.Cos(a)); theta[n * 6 + 5] = (float)(rng.NextDouble() * 0.6 - 0.3);
        }
        _input = _device.Upload(Rand((long)N * C * H * W), N, C, H, W);
        _theta = _device.Upload(theta, N, 2, 3);
        _grid = _device.AffineGrid(_theta, Ho, Wo);
        _gradOut = _device.Upload(Rand((long)N * C * Ho * Wo), N, C, Ho, Wo);
        _out = _device.Allocate(N, C, Ho, Wo);
        _gradInput = _device.Allocate(N, C, H, W);
        _gradGrid = _device.Allocate(N, Ho, Wo, 2);
        _gradTheta = _device.Allocate(N, 2, 3);
    }

    [GlobalCleanup] public void Cleanup() => _device.Dispose();

    /// <summary>Minimum bytes: forward reads input, grid, writes out; backward reads input, grid, grad_out, writes grad_input, grad_grid.</summary>
    internal static double ForwardBytes => 4.0 * ((double)N * C * H * W + N * Ho * Wo * 2 + (double)N * C * Ho * Wo);
    internal static double BackwardBytes => 4.0 * (2.0 * N * C * H * W + 2.0 * N * Ho * Wo * 2 + (double)N * C * Ho * Wo);

    [Benchmark(Description = "grid_sample fwd")]
    public void Forward() { _device.GridSample(_input, _grid, _out, _options); _device.Synchronize(); }

    [Benchmark(Description = "grid_sample bwd")]
    public void Backward() { _device.GridSampleBackward(_input, _grid, _gradOut, _gradInput, _gradGrid, _options); _device.Synchronize(); }

    internal void Backward(GridSampleOptions o) { _device.GridSampleBackward(_input, _grid, _gradOut, _gradInput, _gradGrid, o); _device.Synchronize(); }

    internal void FusedBackward(GridSampleOptions o) { _device.SpatialTransformBackward(_input, _theta, _gradOut, _gradInput, _gradTheta, o); _device.Synchronize(); }

    [Benchmark(Description = "grid_sample fwd+bwd")]
    public void ForwardBackward()
    {
        _device.GridSample(_input, _grid, _out, _options);
        _device.GridSampleBackward(_input, _grid, _gradOut, _gradInput, _gradGrid, _options);
        _device.Synchronize();
    }

    [Benchmark(Description = "spatial transform fwd+bwd (fused)")]
    public void FusedForwardBackward()
    {
        _device.SpatialTransform(_input, _theta, _out, _options);
        _device.SpatialTransformBackward(_input, _theta, _gradOut, _gradInput, _gradTheta, _options);
        _device.Synchronize();
    }
}

/// <summary>
/// grid_sample backward, deterministic (default: chunked scatter into private partial copies, then an ordered sum) vs the opt-in
/// atomic scatter (<see cref="GridSampleBackwardMode.Atomic"/>: float atomic adds straight into grad_input), at the
/// <see cref="SpatialBench"/> shape and grid, with a grid and fused theta. Kernel backends only (on the CPU both modes run the same code).
/// Run: dotnet run -c Release --project bench/GpuAttention.Bench -- --filter '*GridSampleBackwardModeBench*'
/// </summary>
[Config(typeof(SpatialBenchConfig))]
public class GridSampleBackwardModeBench
{
    private readonly SpatialBench _b = new();
    private GridSampleOptions _options;

    [Params("opencl")] public string Backend { get; set; } = "opencl";
    [Params(GridSampleBackwardMode.Deterministic, GridSampleBackwardMode.Atomic)] public GridSampleBackwardMode Mode { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _b.Backend = Backend;
        _b.Setup();
        _options = new GridSampleOptions(GridSampleMode.Bilinear, GridSamplePadding.Zeros, false, Mode);
    }

    [GlobalCleanup] public void Cleanup() => _b.Cleanup();

    [Benchmark(Description = "grid_sample bwd")]
    public void Backward() => _b.Backward(_options);

    [Benchmark(Description = "spatial transform bwd (fused)")]
    public void FusedBackward() => _b.FusedBackward(_options);
}

/// <summary>A short job (2 shared cores) and a GB/s column.</summary>
public class SpatialBenchConfig : ManualConfig
{
    public SpatialBenchConfig()
    {
        AddJob(Job.ShortRun.WithWarmupCount(2).WithIterationCount(5).WithLaunchCount(1));
        AddColumn(new RateColumn("GB/s", "minimum traffic (inputs read once, outputs written once) / median time", c =>
            c.Descriptor.WorkloadMethod.Name switch
                {
                    nameof(SpatialBench.Forward) => SpatialBench.ForwardBytes,
                    nameof(SpatialBench.Backward) => SpatialBench.BackwardBytes,
                    nameof(GridSampleBackwardModeBench.FusedBackward) => SpatialBench.BackwardBytes,
                    _ => SpatialBench.ForwardBytes + SpatialBench.BackwardBytes,
                }));
    }
}
