using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;

namespace GpuAttention.Bench;

/// <summary>A short job for the 2-core machine: 1 warm-up, 5 measured iterations, one process.</summary>
public sealed class ShortConfig : ManualConfig
{
    public ShortConfig() => AddJob(Job.Default.WithLaunchCount(1).WithWarmupCount(1).WithIterationCount(5).WithInvocationCount(1).WithUnrollFactor(1));
}

/// <summary>
/// Fused SDPA forward, backward and forward+backward, B1 H8 L=S E64 (non-causal). FLOPs: forward 4·B·H·L·S·E
/// (2·L·S·(E+Ev)); backward counted as 2.5× forward, FlashAttention-2's convention. The PyTorch peer
/// (autograd of matmul-softmax-matmul, 2 threads) is measured by bench/peers/torch_sdpa_peer.py in the same session.
/// </summary>
[Config(typeof(ShortConfig))]
public class SdpaBackwardBench
{
    public record Shape(string Backend, int L)
    {
        public override string ToString() => $"{Backend} B1 H8 L=S={L} E64";
    }

    public static IEnumerable<Shape> Shapes() => [new("cpu", 1024), new("opencl", 256), .. BenchBackends.List().Where(b => b.StartsWith("ilgpu", StringComparison.Ordinal)).Select(b => new Shape(b, 1024))];

    [ParamsSource(nameof(Shapes))] public Shape Case { get; set; } = null!;

    private Device _d = null!;
    private Tensor _q = null!, _k = null!, _v = null!, _o = null!, _l = null!, _g = null!, _dq = null!, _dk = null!, _dv = null!;

    [GlobalSetup]
    public void Setup()
    {
        _d = Device.Open(Case.Backend);
        var rng = new Random(1);
        float[] R(int n) { var a = new float[n]; for (int i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1); return a; }
        int n = 8 * Case.L * 64;
        _q = _d.Upload(R(n), 1, 8, Case.L, 64); _k = _d.Upload(R(n), 1, 8, Case.L, 64); _v = _d.Upload(R(n), 1, 8, Case.L, 64);
        _g = _d.Upload(R(n), 1, 8, Case.L, 64);
        _o = _d.Allocate(1, 8, Case.L, 64); _l = _d.Allocate(1, 8, Case.L);
        _dq = _d.Allocate(1, 8, Case.L, 64); _dk = _d.Allocate(1, 8, Case.L, 64); _dv = _d.Allocate(1, 8, Case.L, 64);
        Forward(); Backward(); _d.Synchronize();
    }

    [Benchmark] public void Forward() { _d.Sdpa(_q, _k, _v, _o, _l); _d.Synchronize(); }
    [Benchmark] public void Backward() { _d.SdpaBackward(_q, _k, _v, _o, _l, _g, _dq, _dk, _dv); _d.Synchronize(); }
    [Benchmark] public void ForwardBackward()
    {
        _d.Sdpa(_q, _k, _v, _o, _l);
        _d.SdpaBackward(_q, _k, _v, _o, _l, _g, _dq, _dk, _dv);
        _d.Synchronize();
    }

    [GlobalCleanup] public void Cleanup() => _d.Dispose();
}
