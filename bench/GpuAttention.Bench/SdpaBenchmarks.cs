using BenchmarkDotNet.Attributes;
using GpuAttention;

namespace GpuAttention.Bench;

/// <summary>
/// Fused SDPA forward per backend. FLOPs = 2·B·H·L·S·(E+Ev) (causal not discounted), reported by the
/// GFLOP/s column. The PyTorch peer on the same shapes, in the same run, is bench/compare.py.
/// </summary>
[Config(typeof(GflopsConfig))]
public class SdpaForwardBenchmark : IFlopCount
{
    public static IEnumerable<string> Backends() => BenchBackends.List();
    [ParamsSource(nameof(Backends))] public string Backend { get; set; } = "cpu";
    [Params(false, true)] public bool Causal { get; set; }
    public int B = 1, H = 8, L = 1024, S = 1024, E = 64;

    private Device _d = null!;
    private Tensor _q = null!, _k = null!, _v = null!, _o = null!, _lse = null!;

    [GlobalSetup]
    public void Setup()
    {
        _d = Device.Open(Backend);
        var rng = new Random(1);
        float[] R(long n) { var a = new float[n]; for (long i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1); return a; }
        _q = _d.Upload(R((long)B * H * L * E), B, H, L, E);
        _k = _d.Upload(R((long)B * H * S * E), B, H, S, E);
        _v = _d.Upload(R((long)B * H * S * E), B, H, S, E);
        _o = _d.Allocate(B, H, L, E);
        _lse = _d.Allocate(B, H, L);
        Forward();
    }

    public double FlopsOf(string method) => 2.0 * B * H * L * S * (E + E);

    [Benchmark]
    public void Forward()
    {
        _d.Sdpa(_q, _k, _v, _o, _lse, null, new SdpaOptions(Causal));
        _d.Synchronize();
    }

    [GlobalCleanup]
    public void Cleanup() { _q.Dispose(); _k.Dispose(); _v.Dispose(); _o.Dispose(); _lse.Dispose(); _d.Dispose(); }
}
