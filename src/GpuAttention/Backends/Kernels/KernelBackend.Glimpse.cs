using GpuAttention.Backends.Kernels.Tuning;

namespace GpuAttention.Backends.Kernels;

internal abstract partial class KernelBackend : IGlimpseBackend
{
    private const int GlimpseReduceWg = 64;

    /// <summary>Tests set this to run the GPU tile choice on a CPU OpenCL device (null: by <see cref="IsGpu"/>).</summary>
    internal bool? GlimpseGpuTiles { get; set; }

    /// <summary>
    /// Tuning space of kernels/glimpse.cl's GEMM (TILE_M × TILE_N output tile, TILE_K deep slices, WPT_M × WPT_N outputs per
    /// work-item). Default on GPUs: 32×32 tiles, 4×4 outputs per work-item (64 work-items), K tiles of 16. On CPU devices
    /// (PoCL): 32×32 tiles, 8×8 outputs per work-item (16 work-items), K tiles of 32, measured 4× faster on PoCL than the GPU
    /// choice (N16 C16 128×128 → 32×32: 44 vs 171 ms CPU time per forward); PoCL prefers few, fat work-items.
    /// </summary>
    internal static TuningSpace GlimpseTuning { get; } = new()
    {
        Family = "glimpse",
        Files = ["glimpse.cl"],
        Knobs = [new("TILE_M", [16, 32, 64]), new("TILE_N", [16, 32, 64]), new("TILE_K", [8, 16, 32, 64]), new("WPT_M", [1, 2, 4, 8]), new("WPT_N", [1, 2, 4, 8])],
        DefaultOf = (d, _) =>
        {
            bool gpu = d.IsGpu;
            int tile = 32, wpt = gpu ? 4 : 8, tk = gpu ? 16 : 32;
            while (tile > wpt && (tile / wpt) * (tile / wpt) > d.MaxWorkGroupSize) tile /= 2;
            return TuningParams.Of(("TILE_M", tile), ("TILE_N", tile), ("TILE_K", tk), ("WPT_M", wpt), ("WPT_N", wpt));
        },
        InvalidOf = (p, d, _) =>
        {
            int tm = p["TILE_M"], tn = p["TILE_N"], tk = p["TILE_K"], wm = p["WPT_M"], wn = p["WPT_N"];
            if (tm % wm != 0 || tn % wn != 0) return "TILE_M % WPT_M and TILE_N % WPT_N must be 0";
            int threads = (tm / wm) * (tn / wn);
            if (threads > d.MaxWorkGroupSize) return $"work-group of {threads} > {d.MaxWorkGroupSize}";
            if (wm * wn > 64) return $"{wm * wn} accumulators per work-item (at most 64)";
            long local = 4L * tk * (tm + tn);
            return local > d.LocalMemBytes ? $"{local} B of local memory > {d.LocalMemBytes}" : null;
        },
    };

    /// <summary>Tile defines of kernels/glimpse.cl's GEMM for this device: the tuned winner if cached, else the default of
    /// <see cref="GlimpseTuning"/> (with <see cref="GlimpseGpuTiles"/> set: that kind's default, ignoring the cache).</summary>
    internal (int WgN, int WgM, int TileM, int TileN, string Defines) GlimpseGemmConfig() =>
        GlimpseGemmConfig(GlimpseGpuTiles is bool gpu ? GlimpseTuning.Default(Limits with { IsGpu = gpu }) : Tuned(GlimpseTuning));

    internal static (int WgN, int WgM, int TileM, int TileN, string Defines) GlimpseGemmConfig(KernelDeviceLimits d) =>
        GlimpseGemmConfig(GlimpseTuning.Default(d));

    private static (int WgN, int WgM, int TileM, int TileN, string Defines) GlimpseGemmConfig(TuningParams p) =>
        (p["TILE_N"] / p["WPT_N"], p["TILE_M"] / p["WPT_M"], p["TILE_M"], p["TILE_N"], $"{GlimpseTuning.Defines(p)} -DREDUCE_WG={GlimpseReduceWg}");

    /// <summary>The glimpse.cl configurations for the compile checks: the device's own tiles and the other kind's.</summary>
    private static IEnumerable<KernelConfig> GlimpseShippedConfigs(KernelDeviceLimits d) =>
        new[] { d, d with { IsGpu = !d.IsGpu } }.Select(l => new KernelConfig("glimpse.cl", GlimpseGemmConfig(l).Defines,
            ["glimpse_filterbank", "glimpse_gemm", "glimpse_filterbank_backward", "draw_params", "draw_params_backward"]));

    /// <summary>One strided operand of <see cref="GlimpseGemm"/>: element (b, s, i, k) at (b / Div)·Batch + s·Sub + i·Row + k·Col.</summary>
    private readonly record struct Operand(IDeviceBuffer Buffer, int Div, long Batch, long Sub, long Row, long Col);

    /// <summary>C[b] = scale[b / divS] · Σ_{s &lt; nsum} op(A) · op(B), C[b·bsC + i·ldc + j]; enqueues one glimpse_gemm launch.</summary>
    private void GlimpseGemm(Operand a, Operand b, IDeviceBuffer c, long bsC, long ldc, int batch, int m, int n, int k, int nsum = 1,
        IDeviceBuffer? scale = null, int divS = 1)
    {
        if (batch > 65535) throw new NotSupportedException($"{Kind}: glimpse: {batch} (image, channel) pairs exceed the 65535 grid limit of one launch");
        var (wgN, wgM, tileM, tileN, defines) = GlimpseGemmConfig();
        Launch("glimpse.cl", defines, "glimpse_gemm",
            [(long)(n + tileN - 1) / tileN * wgN, (long)(m + tileM - 1) / tileM * wgM, batch], [wgN, wgM, 1],
        [
            KernelArg.Of(a.Buffer), KernelArg.Of(b.Buffer), KernelArg.Of(c), KernelArg.Of(scale), scale is not null,
            m, n, k, nsum, a.Div, b.Div, divS,
            a.Batch, a.Sub, a.Row, a.Col, b.Batch, b.Sub, b.Row, b.Col, bsC, ldc,
        ]);
    }

    private void GlimpseFilterbanks(in GlimpseShape s, IDeviceBuffer parameters, IDeviceBuffer ay, IDeviceBuffer ax)
    {
        Launch("glimpse.cl", GlimpseGemmConfig().Defines, "glimpse_filterbank", [RoundUp(Math.Max(s.Gh, s.Gw), 64), 2L * s.N], [64, 1],
            [KernelArg.Of(parameters), KernelArg.Of(ay), KernelArg.Of(ax), s.H, s.W, s.Gh, s.Gw]);
    }

    /// <summary>Forward: filterbanks, then two GEMM launches in the cheaper order.</summary>
    public void GlimpseForward(in GlimpseForwardArgs a)
    {
        var s = a.Shape;
        long N = s.N, C = s.C, H = s.H, W = s.W, h = s.Gh, w = s.Gw;
        var ay = Scratch("glimpse.ay", N * H * h);
        var ax = Scratch("glimpse.ax", N * W * w);
        GlimpseFilterbanks(s, a.Params, ay, ax);
        if (s.XFirst)
        {
            var t = Scratch("glimpse.t", N * C * H * w);
            // T[n] = img[n] [C·H, W] · Ax[n] [W, w]
            GlimpseGemm(new(a.Image, 1, C * H * W, 0, W, 1), new(ax, 1, W * w, 0, w, 1), t, C * H * w, w, s.N, s.C * s.H, s.Gw, s.W);
            // out[n, ch] = γ · Ay[n]ᵀ [h, H] · T[n, ch] [H, w]
            GlimpseGemm(new(ay, s.C, H * h, 0, 1, h), new(t, 1, H * w, 0, w, 1), a.Out, h * w, w, s.N * s.C, s.Gh, s.Gw, s.H, 1, a.Gamma, s.C);
        }
        else
        {
            var u = Scratch("glimpse.u", N * C * h * W);
            // U[n, ch] = Ay[n]ᵀ [h, H] · img[n, ch] [H, W]
            GlimpseGemm(new(ay, s.C, H * h, 0, 1, h), new(a.Image, 1, H * W, 0, W, 1), u, h * W, W, s.N * s.C, s.Gh, s.W, s.H);
            // out[n] = γ · U[n] [C·h, W] · Ax[n] [W, w]
            GlimpseGemm(new(u, 1, C * h * W, 0, W, 1), new(ax, 1, W * w, 0, w, 1), a.Out, C * h * w, w, s.N, s.C * s.Gh, s.Gw, s.W, 1, a.Gamma, 1);
        }
    }

    /// <summary>Backward: filterbanks, five GEMM launches in the cheaper order (grad_image, channel-summed dAy and dAx), one reduction per image.</summary>
    public void GlimpseBackward(in GlimpseBackwardArgs a)
    {
        var s = a.Shape;
        long N = s.N, C = s.C, H = s.H, W = s.W, h = s.Gh, w = s.Gw;
        var ay = Scratch("glimpse.ay", N * H * h);
        var ax = Scratch("glimpse.ax", N * W * w);
        var vu = Scratch("glimpse.vu", N * C * Math.Max(h * W, H * w));
        var day = Scratch("glimpse.day", N * H * h);
        var dax = Scratch("glimpse.dax", N * W * w);
        GlimpseFilterbanks(s, a.Params, ay, ax);
        if (s.BackwardXFirst)
        {
            // P[n, ch] = γ · Ay[n] [H, h] · G[n, ch] [h, w]
            GlimpseGemm(new(ay, s.C, H * h, 0, h, 1), new(a.GradOut, 1, h * w, 0, w, 1), vu, H * w, w, s.N * s.C, s.H, s.Gw, s.Gh, 1, a.Gamma, s.C);
            // grad_image[n] = P[n] [C·H, w] · Ax[n]ᵀ [w, W]
            GlimpseGemm(new(vu, 1, C * H * w, 0, w, 1), new(ax, 1, W * w, 0, 1, w), a.GradImage, C * H * W, W, s.N, s.C * s.H, s.W, s.Gw);
            // dAx[n] = img[n]ᵀ [W, C·H] · P[n] [C·H, w]   (the channel sum is part of K)
            GlimpseGemm(new(a.Image, 1, C * H * W, 0, 1, W), new(vu, 1, C * H * w, 0, w, 1), dax, W * w, w, s.N, s.W, s.Gw, s.C * s.H);
            // T[n] = γ · img[n] [C·H, W] · Ax[n] [W, w]   (reuses P's buffer: the queue is in order)
            GlimpseGemm(new(a.Image, 1, C * H * W, 0, W, 1), new(ax, 1, W * w, 0, w, 1), vu, C * H * w, w, s.N, s.C * s.H, s.Gw, s.W, 1, a.Gamma, 1);
            // dAy[n] = Σ_ch T[n, ch] [H, w] · G[n, ch]ᵀ [w, h]
            GlimpseGemm(new(vu, 1, C * H * w, H * w, w, 1), new(a.GradOut, 1, C * h * w, h * w, 1, w), day, H * h, h, s.N, s.H, s.Gh, s.Gw, s.C);
        }
        else
        {
            // V[n] = γ · G[n] [C·h, w] · Ax[n]ᵀ [w, W]
            GlimpseGemm(new(a.GradOut, 1, C * h * w, 0, w, 1), new(ax, 1, W * w, 0, 1, w), vu, C * h * W, W, s.N, s.C * s.Gh, s.W, s.Gw, 1, a.Gamma, 1);
            // grad_image[n, ch] = Ay[n] [H, h] · V[n, ch] [h, W]
            GlimpseGemm(new(ay, s.C, H * h, 0, h, 1), new(vu, 1, h * W, 0, W, 1), a.GradImage, H * W, W, s.N * s.C, s.H, s.W, s.Gh);
            // dAy[n] = Σ_ch img[n, ch] [H, W] · V[n, ch]ᵀ [W, h]
            GlimpseGemm(new(a.Image, 1, C * H * W, H * W, W, 1), new(vu, 1, C * h * W, h * W, 1, W), day, H * h, h, s.N, s.H, s.Gh, s.W, s.C);
            // U[n, ch] = Ay[n]ᵀ [h, H] · img[n, ch] [H, W]   (reuses V's buffer: the queue is in order)
            GlimpseGemm(new(ay, s.C, H * h, 0, 1, h), new(a.Image, 1, H * W, 0, W, 1), vu, h * W, W, s.N * s.C, s.Gh, s.W, s.H);
            // dAx[n] = γ · U[n]ᵀ [W, C·h] · G[n] [C·h, w]
            GlimpseGemm(new(vu, 1, C * h * W, 0, 1, W), new(a.GradOut, 1, C * h * w, 0, w, 1), dax, W * w, w, s.N, s.W, s.Gw, s.C * s.Gh, 1, a.Gamma, 1);
        }
        Launch("glimpse.cl", GlimpseGemmConfig().Defines, "glimpse_filterbank_backward", [GlimpseReduceWg, N], [GlimpseReduceWg, 1],
        [
            KernelArg.Of(a.Params), KernelArg.Of(ay), KernelArg.Of(ax), KernelArg.Of(day), KernelArg.Of(dax),
            KernelArg.Of(a.GradParams), KernelArg.Of(a.GradLogGamma), a.GradLogGamma is not null, s.H, s.W, s.Gh, s.Gw,
        ]);
    }

    public void DrawParams(in DrawParamsArgs a)
    {
        var s = a.Shape;
        Launch("glimpse.cl", GlimpseGemmConfig().Defines, "draw_params", [RoundUp(s.N, 64)], [64],
            [KernelArg.Of(a.Draw), KernelArg.Of(a.Params), KernelArg.Of(a.Gamma), s.N, s.H, s.W, s.Gh, s.Gw]);
    }

    public void DrawParamsBackward(in DrawParamsBackwardArgs a)
    {
        var s = a.Shape;
        Launch("glimpse.cl", GlimpseGemmConfig().Defines, "draw_params_backward", [RoundUp(s.N, 64)], [64],
            [KernelArg.Of(a.Draw), KernelArg.Of(a.GradParams), KernelArg.Of(a.GradLogGamma), KernelArg.Of(a.GradDraw), s.N, s.H, s.W, s.Gh, s.Gw]);
    }
}
