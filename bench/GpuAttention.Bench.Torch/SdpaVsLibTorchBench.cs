using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using GpuAttention;

namespace GpuAttention.Bench.Torch;

/// <summary>
/// In-process job (no child build of a project that carries 600 MB of natives), 2 warm-ups, 7 measured iterations of
/// one call each; the ratio column is BenchmarkDotNet's against the LibTorch baseline; a rate column (GFLOP/s for
/// compute-bound cases, GB/s of compulsory K/V traffic for decode).
/// </summary>
public sealed class LibTorchBaselineConfig : ManualConfig
{
    public LibTorchBaselineConfig()
    {
        AddJob(Job.Default.WithToolchain(InProcessEmitToolchain.Instance).WithWarmupCount(2).WithIterationCount(7)
            .WithLaunchCount(1).WithInvocationCount(1).WithUnrollFactor(1));
        AddDiagnoser(MemoryDiagnoser.Default);
        AddColumn(new RateColumn());
        WithSummaryStyle(SummaryStyle.Default.WithMaxParameterColumnWidth(64));   // whole workload names, not "GQA d(...)28 B1"
    }

    private sealed class RateColumn : IColumn
    {
        public string Id => "Rate"; public string ColumnName => "Rate";
        public bool AlwaysShow => true; public ColumnCategory Category => ColumnCategory.Custom; public int PriorityInCategory => 0;
        public bool IsNumeric => false; public UnitType UnitType => UnitType.Dimensionless;
        public string Legend => "SDPA: GFLOP/s (forward 4·B·Hq·L·S·E, causal halved, backward 2.5× forward) or, for decode, GB/s of K/V read once; grid_sample: GB/s of compulsory traffic; glimpse: GFLOP/s of the two dense products; GEMM: 2·N³; MHA: projections 24·B·L·E² (forward + backward) plus the SDPA's";
        public bool IsAvailable(Summary summary) => true;
        public bool IsDefault(Summary summary, BenchmarkCase c) => false;
        public string GetValue(Summary summary, BenchmarkCase c) => GetValue(summary, c, SummaryStyle.Default);
        public string GetValue(Summary summary, BenchmarkCase c, SummaryStyle style)
        {
            var r = summary[c];
            if (r?.ResultStatistics is null) return "-";
            double ms = r.ResultStatistics.Median / 1e6;
            return c.Parameters["Case"] switch
            {
                SdpaCase k => k.Decode ? $"{k.Bytes / ms / 1e6:F1} GB/s" : $"{k.Flops / ms / 1e6:F1} GFLOP/s",
                GridCase g => $"{g.Bytes / ms / 1e6:F1} GB/s",
                GlimpseCase g => $"{g.Flops / ms / 1e6:F1} GFLOP/s",
                MhaVsLibTorch.MhaCase m => $"{m.Flops / ms / 1e6:F1} GFLOP/s",
                _ when c.Parameters["N"] is int n => $"{2.0 * n * n * n / ms / 1e6:F1} GFLOP/s",
                _ => "-",
            };
        }
    }
}

/// <summary>
/// What the LibTorch-baseline classes share: the two benchmarks (LibTorch as <c>Baseline</c>, ours) over the runs a derived
/// class's setup installs with <see cref="Pair"/>, and the cleanup of what it created.
/// </summary>
[Config(typeof(LibTorchBaselineConfig))]
public abstract class LibTorchPairBench
{
    private readonly List<IDisposable> _owned = [];
    private Action _ours = null!, _torch = null!;

    /// <summary>Opens the CPU device (and sets LibTorch's intra-op threads to the same count); disposed by the cleanup.</summary>
    protected Device OpenCpu()
    {
        TorchSharp.torch.set_num_threads(Environment.ProcessorCount);
        return Own(Device.Open("cpu"));
    }

    /// <summary>Keeps <paramref name="x"/> for the cleanup (disposed in reverse order) and returns it.</summary>
    protected T Own<T>(T x) where T : IDisposable { _owned.Add(x); return x; }

    /// <summary>Installs the two runs the benchmarks time.</summary>
    protected void Pair(Action ours, Action torch) { _ours = ours; _torch = torch; }

    [Benchmark(Baseline = true)] public void LibTorch() => _torch();
    [Benchmark] public void Ours() => _ours();

    [GlobalCleanup]
    public virtual void Cleanup()
    {
        for (int i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
        _owned.Clear();
    }
}

/// <summary>The workloads of <paramref name="all"/> whose name contains $GPUATTENTION_BENCH_ONLY (all when unset).</summary>
internal static class BenchOnly
{
    public static IEnumerable<T> Filter<T>(IEnumerable<T> all, Func<T, string> name)
    {
        string? only = Environment.GetEnvironmentVariable("GPUATTENTION_BENCH_ONLY");
        return all.Where(c => string.IsNullOrEmpty(only) || name(c).Contains(only, StringComparison.OrdinalIgnoreCase));
    }
}

/// <summary>SDPA workloads of issue 15: ours against LibTorch 2.10's scaled_dot_product_attention (the baseline), same
/// inputs, outputs (and gradients) checked equal in setup; GQA K/V expanded for LibTorch in setup.</summary>
public class SdpaVsLibTorch : LibTorchPairBench
{
    /// <summary>Every case of <see cref="Compare.Cases"/>, or those whose name contains $GPUATTENTION_BENCH_ONLY.</summary>
    public static IEnumerable<SdpaCase> Cases() => BenchOnly.Filter(Compare.Cases, c => c.Name);

    [ParamsSource(nameof(Cases))] public SdpaCase Case { get; set; } = null!;

    [GlobalSetup]
    public void Setup()
    {
        var (q, k, v, g) = Compare.SdpaInputs(Case);
        var d = OpenCpu();
        var ours = Own(new OursSdpa(d, Case, q, k, v, g));
        var torch = Own(new TorchSdpa(Case, q, k, v, g));
        Compare.CheckSame(Case.Name, ours.Run, ours.Outputs, torch.Run, torch.Outputs, 1e-3);
        Pair(ours.Run, torch.Run);
    }
}

/// <summary>grid_sample workloads of issue 15 (bilinear, zeros, align_corners = false; forward and forward+backward):
/// ours against LibTorch 2.10's grid_sample and autograd (the baseline), same inputs, outputs checked equal in setup.</summary>
public class GridSampleVsLibTorch : LibTorchPairBench
{
    public static IEnumerable<GridCase> Cases() => BenchOnly.Filter(Compare.GridCases, c => c.Name);

    [ParamsSource(nameof(Cases))] public GridCase Case { get; set; } = null!;

    [GlobalSetup]
    public void Setup()
    {
        var (input, grid, g) = Compare.GridInputs(Case);
        var d = OpenCpu();
        var ours = Own(new OursGrid(d, Case, input, grid, g));
        var torch = Own(new TorchGrid(Case, input, grid, g));
        Compare.CheckSame(Case.Name, ours.Run, ours.Outputs, torch.Run, torch.Outputs, 1e-3);
        Pair(ours.Run, torch.Run);
    }
}

/// <summary>Gaussian glimpse workloads of issue 15 (forward and forward+backward): ours against the contract's formula in
/// LibTorch 2.10 ops and autograd (the baseline), same inputs and parameters, outputs checked equal in setup. LibTorch's
/// denormals are flushed on every thread of its pool for the whole class (as in the compare mode's glimpse rows).</summary>
public class GlimpseVsLibTorch : LibTorchPairBench
{
    public static IEnumerable<GlimpseCase> Cases() => BenchOnly.Filter(Compare.GlimpseCases, c => c.Name);

    [ParamsSource(nameof(Cases))] public GlimpseCase Case { get; set; } = null!;

    [GlobalSetup]
    public void Setup()
    {
        var (image, p, g) = Compare.GlimpseInputs(Case);
        var d = OpenCpu();
        var ours = Own(new OursGlimpse(d, Case, image, p, g));
        var torch = Own(new TorchGlimpse(Case, image, p, g) { FlushDenormals = true });
        LibTorchDenormals.SetAllLibTorchThreads(true);
        LibTorchDenormals.SetThisThread(false);
        Compare.CheckSame(Case.Name, ours.Run, ours.Outputs, torch.Run, torch.Outputs, 1e-4);
        Pair(ours.Run, torch.Run);
    }

    public override void Cleanup() { LibTorchDenormals.SetAllLibTorchThreads(false); base.Cleanup(); }
}
