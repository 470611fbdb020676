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
        AddColumn(new GflopsColumn());
    }

    private sealed class GflopsColumn : IColumn
    {
        public string Id => "GFLOPs";
        public string ColumnName => "GFLOP/s";
        public bool AlwaysShow => true;
        public ColumnCategory Category => ColumnCategory.Custom;
        public int PriorityInCategory => 0;
        public bool IsNumeric => true;
        public UnitType UnitType => UnitType.Dimensionless;
        public string Legend => "Useful FLOPs per second (2·L·S·(E+Ev) per head for SDPA forward)";
        public bool IsAvailable(Summary summary) => true;
        public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
        public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);
        public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
        {
            var report = summary[benchmarkCase];
            if (report?.ResultStatistics is null) return "-";
            // The host process has no benchmark instance: make one with the case's parameters and ask it.
            double flops = FlopsOf(benchmarkCase);
            return flops <= 0 ? "-" : (flops / report.ResultStatistics.Median).ToString("F1");   // FLOP/ns = GFLOP/s
        }

        private static double FlopsOf(BenchmarkCase c)
        {
            var inst = Activator.CreateInstance(c.Descriptor.Type);
            foreach (var p in c.Parameters.Items)
                c.Descriptor.Type.GetProperty(p.Name)?.SetValue(inst, p.Value);
            return inst is IFlopCount f ? f.FlopsOf(c.Descriptor.WorkloadMethod.Name) : 0;
        }
    }
}

/// <summary>Benchmarks report the FLOPs of one call of a method (for the GFLOP/s column).</summary>
public interface IFlopCount
{
    double FlopsOf(string method);
}
