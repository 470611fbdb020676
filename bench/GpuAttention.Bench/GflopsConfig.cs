using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace GpuAttention.Bench;

/// <summary>A short job (2 shared cores make long runs costly), the memory diagnoser, and a GFLOP/s column.</summary>
public class GflopsConfig : ManualConfig
{
    public GflopsConfig()
    {
        AddJob(Job.Default.WithWarmupCount(2).WithIterationCount(5).WithLaunchCount(1).WithInvocationCount(1).WithUnrollFactor(1));
        AddDiagnoser(MemoryDiagnoser.Default);
        AddColumn(new RateColumn("GFLOP/s", "useful FLOPs of one call (2·L·S·(E+Ev) per head for SDPA forward) / median time", FlopsOf));
    }

    /// <summary>FLOPs of one call of the case's method: a benchmark instance made with the case's parameters is asked.</summary>
    private static double FlopsOf(BenchmarkCase c)
    {
        var inst = Activator.CreateInstance(c.Descriptor.Type);
        foreach (var p in c.Parameters.Items)
            c.Descriptor.Type.GetProperty(p.Name)?.SetValue(inst, p.Value);
        return inst is IFlopCount f ? f.FlopsOf(c.Descriptor.WorkloadMethod.Name) : 0;
    }
}

/// <summary>Benchmarks report the FLOPs of one call of a method (for the GFLOP/s column).</summary>
public interface IFlopCount
{
    double FlopsOf(string method);
}

/// <summary>
/// A rate column: work of one call (FLOPs or bytes, from <paramref name="workPerCall"/>) divided by the median time,
/// i.e. GFLOP/s or GB/s (work per nanosecond). Shared by every benchmark family.
/// </summary>
public sealed class RateColumn(string columnName, string legend, Func<BenchmarkCase, double> workPerCall) : IColumn
{
    public string Id => "Rate" + columnName;
    public string ColumnName => columnName;
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => legend;
    public bool IsAvailable(Summary summary) => true;
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var report = summary[benchmarkCase];
        double work = workPerCall(benchmarkCase);
        if (report?.ResultStatistics is null || work <= 0) return "-";
        return (work / report.ResultStatistics.Median).ToString("F2");   // per ns = G per s
    }
}
