using GpuAttention;
using TorchSharp;
using TT = TorchSharp.torch.Tensor;

namespace GpuAttention.Bench.Torch;

/// <summary>grid_sample N·C·H·W → Ho·Wo, bilinear, zero padding, align_corners = false; grid uniform in [−1.1, 1.1].</summary>
public sealed record GridCase(string Name, int N, int C, int H, int W, int Ho, int Wo, bool Backward)
{
    public override string ToString() => Name;
    /// <summary>Compulsory bytes (bench/compare.py's counts): forward input + grid + out; backward adds input, grid,
    /// grad_out read and grad_input, grad_grid written.</summary>
    public double Bytes
    {
        get
        {
            double inp = (double)N * C * H * W, grid = (double)N * Ho * Wo * 2, o = (double)N * C * Ho * Wo;
            double fwd = inp + grid + o, bwd = inp + grid + o + inp + grid;
            return 4 * (Backward ? fwd + bwd : fwd);
        }
    }
}

public sealed class OursGrid : IDisposable
{
    private readonly Device _d; private readonly GridCase _c;
    private readonly GpuAttention.Tensor _in, _grid, _out, _g, _gin, _ggrid;
    private readonly GridSampleOptions _opt = new(GpuAttention.GridSampleMode.Bilinear, GpuAttention.GridSamplePadding.Zeros, false);

    public OursGrid(Device d, GridCase c, float[] input, float[] grid, float[] g)
    {
        _d = d; _c = c;
        _in = d.Upload(input, c.N, c.C, c.H, c.W); _grid = d.Upload(grid, c.N, c.Ho, c.Wo, 2); _g = d.Upload(g, c.N, c.C, c.Ho, c.Wo);
        _out = d.Allocate(c.N, c.C, c.Ho, c.Wo); _gin = d.Allocate(c.N, c.C, c.H, c.W); _ggrid = d.Allocate(c.N, c.Ho, c.Wo, 2);
    }

    public void Run()
    {
        _d.GridSample(_in, _grid, _out, _opt);
        if (_c.Backward) _d.GridSampleBackward(_in, _grid, _g, _gin, _ggrid, _opt);
        _d.Synchronize();
    }

    public float[][] Outputs() => _c.Backward ? [_d.Download(_out), _d.Download(_gin), _d.Download(_ggrid)] : [_d.Download(_out)];
    public void Dispose() { foreach (var t in new[] { _in, _grid, _out, _g, _gin, _ggrid }) t.Dispose(); }
}

public sealed class TorchGrid : IDisposable
{
    private readonly GridCase _c;
    private readonly TT _in, _grid, _g;
    private TT? _o, _gin, _ggrid;

    public TorchGrid(GridCase c, float[] input, float[] grid, float[] g)
    {
        _c = c;
        _in = torch.tensor(input, new long[] { c.N, c.C, c.H, c.W });
        _grid = torch.tensor(grid, new long[] { c.N, c.Ho, c.Wo, 2 });
        _g = torch.tensor(g, new long[] { c.N, c.C, c.Ho, c.Wo });
        if (c.Backward) { _in.requires_grad_(true); _grid.requires_grad_(true); }
    }

    private TT Sample() => torch.nn.functional.grid_sample(_in, _grid, torch.GridSampleMode.Bilinear, torch.GridSamplePaddingMode.Zeros, false);

    public void Run()
    {
        _o?.Dispose(); _gin?.Dispose(); _ggrid?.Dispose();
        if (!_c.Backward)
        {
            using var _ = torch.no_grad();
            _o = Sample();
            return;
        }
        using var scope = torch.NewDisposeScope();
        var o = Sample();
        var grads = torch.autograd.grad(new[] { o }, new[] { _in, _grid }, new[] { _g });
        _o = o.detach().MoveToOuterDisposeScope();
        _gin = grads[0].MoveToOuterDisposeScope(); _ggrid = grads[1].MoveToOuterDisposeScope();
    }

    private static float[] Data(TT t) => t.detach().contiguous().data<float>().ToArray();
    public float[][] Outputs() => _c.Backward ? [Data(_o!), Data(_gin!), Data(_ggrid!)] : [Data(_o!)];
    public void Dispose() { foreach (var t in new[] { _in, _grid, _g, _o, _gin, _ggrid }) t?.Dispose(); }
}
