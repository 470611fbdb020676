using BenchmarkDotNet.Attributes;
using GpuAttention;
using TorchSharp;
using TT = TorchSharp.torch.Tensor;

namespace GpuAttention.Bench.Torch;

/// <summary>
/// C = A·B, square N×N (2·N³ FLOPs): ours (<see cref="Device.Gemm"/>, the tiled GEMM under the MHA projections) against
/// LibTorch 2.10's <c>torch.matmul</c> (MKL sgemm, the baseline); the GEMM workload of bench/GpuAttention.Bench's GemmBench.
/// </summary>
public class GemmVsLibTorch : LibTorchPairBench
{
    [Params(512, 1024)] public int N { get; set; }

    private Device _d = null!;
    private GpuAttention.Tensor _a = null!, _b = null!, _c = null!;
    private TT _ta = null!, _tb = null!;
    private TT? _tc;

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(2);
        float[] R() { var x = new float[N * N]; for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1); return x; }
        float[] a = R(), b = R();
        _d = OpenCpu();
        _a = Own(_d.Upload(a, N, N)); _b = Own(_d.Upload(b, N, N)); _c = Own(_d.Allocate(N, N));
        _ta = Own(torch.tensor(a, new long[] { N, N })); _tb = Own(torch.tensor(b, new long[] { N, N }));
        Compare.CheckSame($"gemm {N}", RunOurs, () => [_d.Download(_c)], RunTorch, () => [_tc!.contiguous().data<float>().ToArray()], 1e-4);
        Pair(RunOurs, RunTorch);
    }

    private void RunTorch()
    {
        using var _ = torch.no_grad();
        _tc?.Dispose();
        _tc = torch.matmul(_ta, _tb);
    }

    private void RunOurs() { _d.Gemm(_a, _b, _c); _d.Synchronize(); }

    public override void Cleanup() { _tc?.Dispose(); _tc = null; base.Cleanup(); }
}

/// <summary>
/// Multi-head self-attention layer forward+backward (bench/GpuAttention.Bench's MhaBench workload, and a longer one):
/// ours (<see cref="MultiHeadAttention"/>: GEMM projections, fused SDPA forward and backward) against the same layer in
/// LibTorch 2.10 ops (the baseline): <c>linear</c> projections, <c>scaled_dot_product_attention</c>, <c>linear</c> out
/// projection, <c>torch.autograd.grad</c> for the input and all 8 parameters. Same weights (ours, downloaded), same input
/// and grad_output; the output and every gradient checked equal in setup (ours: grad_query + grad_key + grad_value, since
/// query = key = value).
/// </summary>
public class MhaVsLibTorch : LibTorchPairBench
{
    public sealed record MhaCase(int B, int L, int E, int H, bool Causal)
    {
        public override string ToString() => $"B{B} L{L} E{E} H{H}{(Causal ? " causal" : "")}";
        /// <summary>Forward+backward FLOPs: four projections (2·B·L·E² each) forward, twice that backward; the SDPA's
        /// 4·B·L²·E forward (causal: half), 3.5× that with its backward.</summary>
        public double Flops => 3.0 * 4 * 2.0 * B * L * E * E + 3.5 * 4.0 * B * L * L * E * (Causal ? 0.5 : 1);
    }

    public static IEnumerable<MhaCase> Cases() => [new(2, 256, 256, 4, true), new(1, 1024, 512, 8, true)];

    [ParamsSource(nameof(Cases))] public MhaCase Case { get; set; } = null!;

    private Device _d = null!;
    private MultiHeadAttention _m = null!;
    private GpuAttention.Tensor _x = null!, _g = null!;
    private TT _tx = null!, _tg = null!;
    private TT[] _tw = null!;   // Wq, Wk, Wv, Wo, bq, bk, bv, bo (PyTorch's names: q/k/v_proj_weight, out_proj.weight, ...)
    private TT? _to;
    private TT[]? _tgrads;

    [GlobalSetup]
    public void Setup()
    {
        var c = Case;
        var rng = new Random(3);
        float[] R(int n) { var a = new float[n]; for (int i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1); return a; }
        float[] x = R(c.B * c.L * c.E), g = R(c.B * c.L * c.E);
        _d = OpenCpu();
        _m = Own(new MultiHeadAttention(_d, c.E, c.H, seed: 7));
        // Nonzero biases, so that the bias gradients and the bias paths are compared too.
        foreach (var (name, t) in _m.Parameters)
            if (name.EndsWith("bias", StringComparison.Ordinal)) _d.Upload(t, R(c.E));
        _x = Own(_d.Upload(x, c.B, c.L, c.E)); _g = Own(_d.Upload(g, c.B, c.L, c.E));
        _tx = Own(torch.tensor(x, new long[] { c.B, c.L, c.E }).requires_grad_(true));
        _tg = Own(torch.tensor(g, new long[] { c.B, c.L, c.E }));
        _tw = _m.Parameters.Select(p => Own(torch.tensor(_d.Download(p.Tensor), Enumerable.Range(0, p.Tensor.Rank).Select(i => (long)p.Tensor.Dim(i)).ToArray()).requires_grad_(true))).ToArray();

        float[][]? ours = null;
        void RunOursChecked()
        {
            using var f = _m.Forward(_x, _x, _x, null, c.Causal);
            using var gr = _m.Backward(f, _g);
            var dx = _d.Download(gr.Query);
            var dk = _d.Download(gr.Key); var dv = _d.Download(gr.Value);
            for (int i = 0; i < dx.Length; i++) dx[i] += dk[i] + dv[i];
            ours = [_d.Download(f.Output), dx, .. gr.Parameters.Select(p => _d.Download(p.Gradient))];
        }
        Compare.CheckSame(c.ToString(), RunOursChecked, () => ours!, RunTorch,
            () => [Data(_to!), .. _tgrads!.Select(Data)], 1e-3);
        Pair(RunOurs, RunTorch);
    }

    private static float[] Data(TT t) => t.detach().contiguous().data<float>().ToArray();

    private void DisposeResults()
    {
        _to?.Dispose(); _to = null;
        if (_tgrads != null) foreach (var t in _tgrads) t.Dispose();
        _tgrads = null;
    }

    private void RunTorch()
    {
        var c = Case;
        DisposeResults();
        using var scope = torch.NewDisposeScope();
        int D = c.E / c.H;
        TT Heads(TT t) => t.reshape(c.B, c.L, c.H, D).transpose(1, 2);
        var q = Heads(torch.nn.functional.linear(_tx, _tw[0], _tw[4]));
        var k = Heads(torch.nn.functional.linear(_tx, _tw[1], _tw[5]));
        var v = Heads(torch.nn.functional.linear(_tx, _tw[2], _tw[6]));
        var o = torch.nn.functional.scaled_dot_product_attention(q, k, v, null, 0.0, c.Causal).transpose(1, 2).reshape(c.B, c.L, c.E);
        var y = torch.nn.functional.linear(o, _tw[3], _tw[7]);
        var grads = torch.autograd.grad(new[] { y }, new[] { _tx }.Concat(_tw).ToArray(), new[] { _tg });
        _to = y.detach().MoveToOuterDisposeScope();
        _tgrads = grads.Select(t => t.MoveToOuterDisposeScope()).ToArray();
    }

    private void RunOurs()
    {
        using var f = _m.Forward(_x, _x, _x, null, Case.Causal);
        using var g = _m.Backward(f, _g);
        _d.Synchronize();
    }

    public override void Cleanup() { DisposeResults(); base.Cleanup(); }
}
