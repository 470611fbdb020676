using BenchmarkDotNet.Attributes;

namespace GpuAttention.Bench;

/// <summary>MultiHeadAttention layer forward+backward, self-attention B2 L=S=256 E=256 H=4 (head dim 64), per backend.</summary>
[Config(typeof(ShortConfig))]
public class MhaBench
{
    public static IEnumerable<string> Backends() => BenchBackends.List();
    [ParamsSource(nameof(Backends))] public string Backend { get; set; } = "cpu";

    private Device _d = null!;
    private MultiHeadAttention _m = null!;
    private Tensor _x = null!, _g = null!;

    [GlobalSetup]
    public void Setup()
    {
        _d = Device.Open(Backend);
        _m = new MultiHeadAttention(_d, 256, 4);
        var rng = new Random(3);
        float[] R(int n) { var a = new float[n]; for (int i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1); return a; }
        _x = _d.Upload(R(2 * 256 * 256), 2, 256, 256);
        _g = _d.Upload(R(2 * 256 * 256), 2, 256, 256);
        ForwardBackward();
    }

    [Benchmark]
    public void ForwardBackward()
    {
        using var f = _m.Forward(_x, _x, _x, null, true);
        using var g = _m.Backward(f, _g);
        _d.Synchronize();
    }

    [GlobalCleanup] public void Cleanup() { _m.Dispose(); _d.Dispose(); }
}
