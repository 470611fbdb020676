using BenchmarkDotNet.Attributes;
using MathNet.Numerics.LinearAlgebra.Single;

namespace GpuAttention.Bench;

/// <summary>
/// C = A·B, square N×N (2·N³ FLOPs), on each backend, beside a naive triple loop (i-k-j order, one thread) and
/// MathNet.Numerics' managed matrix product (its default managed provider) on the same shape in the same run.
/// </summary>
[Config(typeof(ShortConfig))]
public class GemmBench
{
    [Params(512)] public int N { get; set; }

    private Device _cpu = null!, _cl = null!;
    private Tensor _a = null!, _b = null!, _c = null!, _ca = null!, _cb = null!, _cc = null!;
    private float[] _ha = null!, _hb = null!, _hc = null!;
    private DenseMatrix _ma = null!, _mb = null!, _mc = null!;

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(2);
        _ha = new float[N * N]; _hb = new float[N * N]; _hc = new float[N * N];
        for (int i = 0; i < _ha.Length; i++) { _ha[i] = (float)rng.NextDouble(); _hb[i] = (float)rng.NextDouble(); }
        _cpu = Device.Open("cpu");
        _a = _cpu.Upload(_ha, N, N); _b = _cpu.Upload(_hb, N, N); _c = _cpu.Allocate(N, N);
        _cl = Device.Open("opencl");
        _ca = _cl.Upload(_ha, N, N); _cb = _cl.Upload(_hb, N, N); _cc = _cl.Allocate(N, N);
        _ma = DenseMatrix.OfColumnMajor(N, N, _ha); _mb = DenseMatrix.OfColumnMajor(N, N, _hb); _mc = new DenseMatrix(N, N);
        OpenCl();
    }

    [Benchmark] public void Cpu() => _cpu.Gemm(_a, _b, _c);
    [Benchmark] public void OpenCl() { _cl.Gemm(_ca, _cb, _cc); _cl.Synchronize(); }
    [Benchmark] public void MathNetManaged() => _ma.Multiply(_mb, _mc);

    [Benchmark]
    public void NaiveTripleLoop()
    {
        int n = N;
        Array.Clear(_hc);
        for (int i = 0; i < n; i++)
            for (int k = 0; k < n; k++)
            {
                float a = _ha[i * n + k];
                for (int j = 0; j < n; j++) _hc[i * n + j] += a * _hb[k * n + j];
            }
    }

    [GlobalCleanup] public void Cleanup() { _cpu.Dispose(); _cl.Dispose(); }
}
