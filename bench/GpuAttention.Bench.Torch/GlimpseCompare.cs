using System.Runtime.InteropServices;
using GpuAttention;
using TorchSharp;
using TT = TorchSharp.torch.Tensor;

namespace GpuAttention.Bench.Torch;

/// <summary>Separable Gaussian glimpse N·C·H·W → Gh·Gw (CONTRACT.md), per image parameters covering most of the image
/// with σ of 1–2 pixels (<see cref="Params"/>).</summary>
public sealed record GlimpseCase(string Name, int N, int C, int H, int W, int Gh, int Gw, bool Backward)
{
    public override string ToString() => Name;

    /// <summary>Multiply-adds per channel of the two products in the cheaper order (Fy·img first: Gh·H·W + Gh·W·Gw).</summary>
    private double Macs => Math.Min((double)Gh * W * (H + Gw), (double)H * Gw * (W + Gh));

    /// <summary>Useful FLOPs (2 per multiply-add; filterbank build not counted): forward the two products, forward+backward
    /// 3× that (the backward of the two products is 2× the forward, as autograd does it; ours recomputes Fy·img and does
    /// more).</summary>
    public double Flops => 2.0 * N * C * Macs * (Backward ? 3 : 1);

    /// <summary>(uy, sy, dy, ux, sx, dx) per image, deterministic: per axis a stride d of 0.8–1 × size/g (the g centres span
    /// 78–97 % of the image), the first centre u placed so that the last centre stays inside, σ uniform in [1, 2] pixels.</summary>
    public float[] Params(Random rng)
    {
        var p = new float[N * 6];
        for (int n = 0; n < N; n++)
            for (int ax = 0; ax < 2; ax++)
            {
                int size = ax == 0 ? H : W, g = ax == 0 ? Gh : Gw;
                double d = (double)size / g * (0.8 + 0.2 * rng.NextDouble());
                double u = rng.NextDouble() * Math.Max(0, size - 1 - d * (g - 1));
                p[n * 6 + 3 * ax] = (float)u;
                p[n * 6 + 3 * ax + 1] = (float)(1 + rng.NextDouble());
                p[n * 6 + 3 * ax + 2] = (float)d;
            }
        return p;
    }
}

/// <summary>Our side: Device.Glimpse / GlimpseBackward on preallocated tensors.</summary>
public sealed class OursGlimpse : IDisposable
{
    private readonly Device _d; private readonly GlimpseCase _c;
    private readonly GpuAttention.Tensor _img, _p, _out, _g, _gi, _gp;

    public OursGlimpse(Device d, GlimpseCase c, float[] image, float[] p, float[] g)
    {
        _d = d; _c = c;
        _img = d.Upload(image, c.N, c.C, c.H, c.W); _p = d.Upload(p, c.N, 6); _g = d.Upload(g, c.N, c.C, c.Gh, c.Gw);
        _out = d.Allocate(c.N, c.C, c.Gh, c.Gw); _gi = d.Allocate(c.N, c.C, c.H, c.W); _gp = d.Allocate(c.N, 6);
    }

    public void Run()
    {
        _d.Glimpse(_img, _p, _out);
        if (_c.Backward) _d.GlimpseBackward(_img, _p, _g, _gi, _gp);
        _d.Synchronize();
    }

    public float[][] Outputs() => _c.Backward ? [_d.Download(_out), _d.Download(_gi), _d.Download(_gp)] : [_d.Download(_out)];
    public void Dispose() { foreach (var t in new[] { _img, _p, _out, _g, _gi, _gp }) t.Dispose(); }
}

/// <summary>
/// LibTorch's side, the contract's formula in torch ops: per axis F[n, r, c] = e / (Σ_c e + 1e-8) with
/// e = exp(−½((c − (u + r·d))/s)²) (Fy [N, Gh, H], Fx [N, Gw, W]), then out = Fy · img · Fxᵀ with torch.matmul broadcast
/// over C; autograd (torch.autograd.grad) for grad_image and grad_params. No 1e-15 cut (the contract has none; it is our
/// implementation's). While <see cref="FlushDenormals"/> is set, the calling thread's FTZ/DAZ is on during each call.
/// </summary>
public sealed class TorchGlimpse : IDisposable
{
    private readonly GlimpseCase _c;
    private readonly TT _img, _p, _g, _cy, _ry, _cx, _rx;
    private TT? _o, _gi, _gp;
    public bool FlushDenormals { get; set; }

    public TorchGlimpse(GlimpseCase c, float[] image, float[] p, float[] g)
    {
        _c = c;
        _img = torch.tensor(image, new long[] { c.N, c.C, c.H, c.W });
        _p = torch.tensor(p, new long[] { c.N, 6 });
        _g = torch.tensor(g, new long[] { c.N, c.C, c.Gh, c.Gw });
        // Coordinates: image pixel c (last dim) and glimpse row/column r (middle dim), built once.
        _cy = torch.arange(c.H, torch.float32).view(1, 1, c.H); _ry = torch.arange(c.Gh, torch.float32).view(1, c.Gh, 1);
        _cx = torch.arange(c.W, torch.float32).view(1, 1, c.W); _rx = torch.arange(c.Gw, torch.float32).view(1, c.Gw, 1);
        if (c.Backward) { _img.requires_grad_(true); _p.requires_grad_(true); }
    }

    /// <summary>F [N, m, size] for one axis from u, s, d = columns k, k+1, k+2 of the parameters.</summary>
    private TT Filterbank(int k, TT c, TT r)
    {
        TT Col(int j) => _p.select(1, j).view(-1, 1, 1);
        var mu = Col(k) + r * Col(k + 2);                 // [N, m, 1]
        var t = (c - mu) / Col(k + 1);                    // [N, m, size]
        var e = torch.exp(t * t * -0.5);
        return e / (e.sum(-1, keepdim: true) + 1e-8);
    }

    private TT Glimpse()
    {
        var fy = Filterbank(0, _cy, _ry);                 // [N, Gh, H]
        var fx = Filterbank(3, _cx, _rx);                 // [N, Gw, W]
        return torch.matmul(torch.matmul(fy.unsqueeze(1), _img), fx.transpose(1, 2).unsqueeze(1));   // [N, C, Gh, Gw]
    }

    public void Run()
    {
        if (FlushDenormals) LibTorchDenormals.SetThisThread(true);
        try
        {
            _o?.Dispose(); _gi?.Dispose(); _gp?.Dispose();
            using var scope = torch.NewDisposeScope();
            if (!_c.Backward)
            {
                using var _ = torch.no_grad();
                _o = Glimpse().MoveToOuterDisposeScope();
                return;
            }
            var o = Glimpse();
            var grads = torch.autograd.grad(new[] { o }, new[] { _img, _p }, new[] { _g });
            _o = o.detach().MoveToOuterDisposeScope();
            _gi = grads[0].MoveToOuterDisposeScope(); _gp = grads[1].MoveToOuterDisposeScope();
        }
        finally { if (FlushDenormals) LibTorchDenormals.SetThisThread(false); }
    }

    private static float[] Data(TT t) => t.detach().contiguous().data<float>().ToArray();
    public float[][] Outputs() => _c.Backward ? [Data(_o!), Data(_gi!), Data(_gp!)] : [Data(_o!)];
    public void Dispose() { foreach (var t in new[] { _img, _p, _g, _cy, _ry, _cx, _rx, _o, _gi, _gp }) t?.Dispose(); }
}

/// <summary>
/// LibTorch's flush-denormal switch, which TorchSharp 0.107.0 does not wrap: <c>at::Context::setFlushDenormal(bool)</c>
/// (a static member, exported by libtorch_cpu.so), which sets FTZ and DAZ in the MXCSR of the CALLING thread only
/// (<c>at::cpu::set_flush_denormal</c>: _mm_setcsr), as <c>torch.set_flush_denormal</c> does in Python. LibTorch's
/// intra-op OpenMP workers keep their own MXCSR (inherited when they were created), so <see cref="SetAllLibTorchThreads"/>
/// runs the switch on every thread of the OpenMP team (GOMP_parallel, libgomp's entry point of <c>#pragma omp parallel</c>,
/// with the switch itself as the region's body and the flag as its data pointer).
/// </summary>
public static unsafe class LibTorchDenormals
{
    private static readonly nint s_setFlush, s_gompParallel;

    static LibTorchDenormals()
    {
        _ = torch.get_num_threads();   // TorchSharp has loaded LibTorch
        // By soname: dlopen returns the copy LibTorch already loaded; dlsym on it also searches its dependencies (libgomp).
        var h = NativeLibrary.Load("libtorch_cpu.so");
        s_setFlush = NativeLibrary.GetExport(h, "_ZN2at7Context16setFlushDenormalEb");
        s_gompParallel = NativeLibrary.GetExport(h, "GOMP_parallel");
    }

    /// <summary>Sets FTZ/DAZ of the calling thread; false when the CPU has no DAZ (nothing changed).</summary>
    public static bool SetThisThread(bool on) => ((delegate* unmanaged<byte, byte>)s_setFlush)(on ? (byte)1 : (byte)0) != 0;

    /// <summary>Sets FTZ/DAZ on every thread of LibTorch's OpenMP team (the calling thread, its master, included):
    /// GOMP_parallel(fn, data, 0 = the nthreads ICV that torch.set_num_threads set, flags 0) calls fn(data) on each, and
    /// fn = setFlushDenormal reads its bool from the low byte of the data pointer.</summary>
    public static void SetAllLibTorchThreads(bool on) =>
        ((delegate* unmanaged<nint, nint, uint, uint, void>)s_gompParallel)(s_setFlush, on ? 1 : 0, 0, 0);

    /// <summary>Fraction of a LibTorch elementwise product 1e-39f × 0.5 over 2^20 elements (a denormal; at::parallel_for
    /// splits it over all intra-op threads) that comes out exactly 0: 1 when every thread flushes, about 1/threads when
    /// only the calling thread does, 0 when none does. <paramref name="callingThread"/>: the calling thread flushed during
    /// the product, as during <see cref="TorchGlimpse.Run"/>.</summary>
    public static double ProbeFlushedFraction(bool callingThread)
    {
        const int n = 1 << 20;
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var x = torch.full(n, 1e-39f, torch.float32);   // filled before the switch: with FTZ the fill value itself would become 0
        TT y;
        if (callingThread) SetThisThread(true);
        try { y = x * 0.5; }
        finally { if (callingThread) SetThisThread(false); }
        return ZeroFraction(y.data<float>().ToArray());
    }

    /// <summary>Fraction of exact zeros, by bits (a comparison on a DAZ thread would count denormals as 0).</summary>
    public static double ZeroFraction(float[] x) => x.Count(v => (BitConverter.SingleToInt32Bits(v) & 0x7fffffff) == 0) / (double)x.Length;
}
