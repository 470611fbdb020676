using GpuAttention.Kernels.Ilgpu;
using ILGPU;
using ILGPU.Runtime;

namespace GpuAttention.Backends.Ilgpu;

/// <summary>
/// Host side of the ILGPU glimpse kernels (kernels/ilgpu/Glimpse.cs) on one <see cref="Accelerator"/>: the separable Gaussian
/// glimpse forward and backward and DRAW's read parametrisation, mirroring <see cref="IGlimpseBackend"/> one for one on the
/// caller's stream and <see cref="ArrayView{T}"/>s (an absent optional tensor is <see cref="ArrayView{T}.Empty"/>). The
/// filterbanks are built on the device once per image and shared by all channels; the products run as tiled shared-memory
/// GEMMs in the cheaper order per shape (<see cref="GlimpseShape.XFirst"/>, <see cref="GlimpseShape.BackwardXFirst"/>).
/// Kernels are compiled on first use and cached; scratch is kept across calls. Not thread-safe: one caller at a time.
/// </summary>
internal sealed class IlgpuGlimpse : IDisposable
{
    private readonly Accelerator _acc;
    private readonly IlgpuVisualScratch _scratch;

    private Action<AcceleratorStream, Index2D, ArrayView<float>, ArrayView<float>, ArrayView<float>, GlimpseDims>? _filterbank;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GlimpseGemmParams>? _gemm;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, GlimpseDims>? _filterbankBackward;
    private Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, GlimpseDims>? _drawParams;
    private Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GlimpseDims>? _drawParamsBackward;

    /// <summary>Launchers on <paramref name="accelerator"/> (owned by the caller; it must outlive this object).</summary>
    public IlgpuGlimpse(Accelerator accelerator)
    {
        _acc = accelerator ?? throw new ArgumentNullException(nameof(accelerator));
        _scratch = new IlgpuVisualScratch(accelerator);
    }

    /// <summary>Every kernel configuration this class launches (tile sizes are constants of kernels/ilgpu/Glimpse.cs).</summary>
    internal static IEnumerable<IlgpuKernelConfig> ShippedConfigs()
    {
        const string family = "glimpse";
        IlgpuKernelConfig Of(string name, string label, IlgpuKernelKind kind) =>
            new(family, label, typeof(GlimpseKernels).GetMethod(name) ?? throw new MissingMethodException(nameof(GlimpseKernels), name), kind);
        yield return Of(nameof(GlimpseKernels.Filterbank), "glimpse_filterbank", IlgpuKernelKind.ImplicitlyGrouped);
        yield return Of(nameof(GlimpseKernels.Gemm), $"glimpse_gemm<M{GlimpseKernels.TileM},N{GlimpseKernels.TileN},K{GlimpseKernels.TileK}>", IlgpuKernelKind.ExplicitlyGrouped);
        yield return Of(nameof(GlimpseKernels.FilterbankBackward), "glimpse_filterbank_backward", IlgpuKernelKind.ExplicitlyGrouped);
        yield return Of(nameof(GlimpseKernels.DrawParams), "draw_params", IlgpuKernelKind.ImplicitlyGrouped);
        yield return Of(nameof(GlimpseKernels.DrawParamsBackward), "draw_params_backward", IlgpuKernelKind.ImplicitlyGrouped);
    }

    private static GlimpseDims Dims(in GlimpseShape s) => new() { H = s.H, W = s.W, Gh = s.Gh, Gw = s.Gw };

    /// <summary>One strided operand of <see cref="Gemm"/>: element (b, s, i, k) at (b / Div)·Batch + s·Sub + i·Row + k·Col.</summary>
    private readonly record struct Operand(ArrayView<float> View, int Div, long Batch, long Sub, long Row, long Col);

    /// <summary>C[b] = scale[b / divS] · Σ_{s &lt; nsum} op(A)·op(B), C[b·bsC + i·ldc + j]: one launch of the tiled GEMM.</summary>
    private void Gemm(AcceleratorStream stream, Operand a, Operand b, ArrayView<float> c, long bsC, long ldc, int batch, int m, int n, int k,
        int nsum = 1, ArrayView<float> scale = default, int divS = 1)
    {
        int tilesN = (n + GlimpseKernels.TileN - 1) / GlimpseKernels.TileN, tilesM = (m + GlimpseKernels.TileM - 1) / GlimpseKernels.TileM;
        if ((long)tilesN * batch > int.MaxValue || tilesM > 65535)
            throw new NotSupportedException($"ilgpu: glimpse: a {m}×{n} product over {batch} batches exceeds the grid limits of one launch");
        bool hasScale = scale.IsValid && scale.Length > 0;
        var p = new GlimpseGemmParams
        {
            M = m, Nc = n, K = k, NSum = nsum, DivA = a.Div, DivB = b.Div, DivS = divS, HasScale = hasScale ? 1 : 0, TilesN = tilesN,
            BsA = a.Batch, SsA = a.Sub, RsA = a.Row, CsA = a.Col, BsB = b.Batch, SsB = b.Sub, RsB = b.Row, CsB = b.Col, BsC = bsC, Ldc = ldc,
        };
        _gemm ??= _acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GlimpseGemmParams>(GlimpseKernels.Gemm);
        _gemm(stream, new KernelConfig(new Index2D(tilesN * batch, tilesM), new Index2D(GlimpseKernels.WgN, GlimpseKernels.WgM)), a.View, b.View, c,
            hasScale ? scale : ArrayView<float>.Empty, p);
    }

    private void Filterbanks(AcceleratorStream stream, in GlimpseShape s, ArrayView<float> parameters, ArrayView<float> ay, ArrayView<float> ax)
    {
        _filterbank ??= _acc.LoadAutoGroupedKernel<Index2D, ArrayView<float>, ArrayView<float>, ArrayView<float>, GlimpseDims>(GlimpseKernels.Filterbank);
        _filterbank(stream, new Index2D(Math.Max(s.Gh, s.Gw), 2 * s.N), parameters, ay, ax, Dims(s));
    }

    private static bool Empty(in GlimpseShape s) => s.N == 0 || s.C == 0 || s.H == 0 || s.W == 0 || s.Gh == 0 || s.Gw == 0;

    /// <summary>
    /// Forward: out [N, C, h, w] = γ·Ayᵀ·image·Ax (γ [N] optional: <see cref="ArrayView{T}.Empty"/> for the plain glimpse). Filterbanks,
    /// then two GEMM launches in the cheaper order. With an empty image axis the output is zero.
    /// </summary>
    public void GlimpseForward(AcceleratorStream stream, in GlimpseShape s, ArrayView<float> image, ArrayView<float> parameters, ArrayView<float> gamma, ArrayView<float> output)
    {
        if ((long)s.N * s.C * s.Gh * s.Gw == 0) return;
        if (Empty(s)) { output.MemSetToZero(stream); return; }
        long N = s.N, C = s.C, H = s.H, W = s.W, h = s.Gh, w = s.Gw;
        var ay = _scratch.Get("glimpse.ay", N * H * h, stream);
        var ax = _scratch.Get("glimpse.ax", N * W * w, stream);
        Filterbanks(stream, s, parameters, ay, ax);
        if (s.XFirst)
        {
            var t = _scratch.Get("glimpse.t", N * C * H * w, stream);
            // T[n] = img[n] [C·H, W] · Ax[n] [W, w]
            Gemm(stream, new(image, 1, C * H * W, 0, W, 1), new(ax, 1, W * w, 0, w, 1), t, C * H * w, w, s.N, s.C * s.H, s.Gw, s.W);
            // out[n, ch] = γ · Ay[n]ᵀ [h, H] · T[n, ch] [H, w]
            Gemm(stream, new(ay, s.C, H * h, 0, 1, h), new(t, 1, H * w, 0, w, 1), output, h * w, w, s.N * s.C, s.Gh, s.Gw, s.H, 1, gamma, s.C);
        }
        else
        {
            var u = _scratch.Get("glimpse.u", N * C * h * W, stream);
            // U[n, ch] = Ay[n]ᵀ [h, H] · img[n, ch] [H, W]
            Gemm(stream, new(ay, s.C, H * h, 0, 1, h), new(image, 1, H * W, 0, W, 1), u, h * W, W, s.N * s.C, s.Gh, s.W, s.H);
            // out[n] = γ · U[n] [C·h, W] · Ax[n] [W, w]
            Gemm(stream, new(u, 1, C * h * W, 0, W, 1), new(ax, 1, W * w, 0, w, 1), output, C * h * w, w, s.N, s.C * s.Gh, s.Gw, s.W, 1, gamma, 1);
        }
    }

    /// <summary>
    /// Backward: grad_image [N, C, H, W] and grad_params [N, 6] (with γ: the forward was scaled by γ[n], and
    /// <paramref name="gradLogGamma"/> [N], if non-empty, receives dL/d log γ = Σ grad_out∘out). Filterbanks, five GEMM launches in
    /// the cheaper order (grad_image, channel-summed dAy and dAx), one fixed-order reduction per image. Deterministic.
    /// </summary>
    public void GlimpseBackward(AcceleratorStream stream, in GlimpseShape s, ArrayView<float> image, ArrayView<float> parameters, ArrayView<float> gamma,
        ArrayView<float> gradOut, ArrayView<float> gradImage, ArrayView<float> gradParams, ArrayView<float> gradLogGamma)
    {
        if (s.N == 0) return;
        bool hasGlg = gradLogGamma.IsValid && gradLogGamma.Length > 0;
        if (Empty(s))
        {
            gradParams.MemSetToZero(stream);
            if (gradImage.Length > 0) gradImage.MemSetToZero(stream);
            if (hasGlg) gradLogGamma.MemSetToZero(stream);
            return;
        }
        long N = s.N, C = s.C, H = s.H, W = s.W, h = s.Gh, w = s.Gw;
        var ay = _scratch.Get("glimpse.ay", N * H * h, stream);
        var ax = _scratch.Get("glimpse.ax", N * W * w, stream);
        var vu = _scratch.Get("glimpse.vu", N * C * Math.Max(h * W, H * w), stream);
        var day = _scratch.Get("glimpse.day", N * H * h, stream);
        var dax = _scratch.Get("glimpse.dax", N * W * w, stream);
        Filterbanks(stream, s, parameters, ay, ax);
        if (s.BackwardXFirst)
        {
            // P[n, ch] = γ · Ay[n] [H, h] · G[n, ch] [h, w]
            Gemm(stream, new(ay, s.C, H * h, 0, h, 1), new(gradOut, 1, h * w, 0, w, 1), vu, H * w, w, s.N * s.C, s.H, s.Gw, s.Gh, 1, gamma, s.C);
            // grad_image[n] = P[n] [C·H, w] · Ax[n]ᵀ [w, W]
            Gemm(stream, new(vu, 1, C * H * w, 0, w, 1), new(ax, 1, W * w, 0, 1, w), gradImage, C * H * W, W, s.N, s.C * s.H, s.W, s.Gw);
            // dAx[n] = img[n]ᵀ [W, C·H] · P[n] [C·H, w]   (the channel sum is part of K)
            Gemm(stream, new(image, 1, C * H * W, 0, 1, W), new(vu, 1, C * H * w, 0, w, 1), dax, W * w, w, s.N, s.W, s.Gw, s.C * s.H);
            // T[n] = γ · img[n] [C·H, W] · Ax[n] [W, w]   (reuses P's buffer: the stream is in order)
            Gemm(stream, new(image, 1, C * H * W, 0, W, 1), new(ax, 1, W * w, 0, w, 1), vu, C * H * w, w, s.N, s.C * s.H, s.Gw, s.W, 1, gamma, 1);
            // dAy[n] = Σ_ch T[n, ch] [H, w] · G[n, ch]ᵀ [w, h]
            Gemm(stream, new(vu, 1, C * H * w, H * w, w, 1), new(gradOut, 1, C * h * w, h * w, 1, w), day, H * h, h, s.N, s.H, s.Gh, s.Gw, s.C);
        }
        else
        {
            // V[n] = γ · G[n] [C·h, w] · Ax[n]ᵀ [w, W]
            Gemm(stream, new(gradOut, 1, C * h * w, 0, w, 1), new(ax, 1, W * w, 0, 1, w), vu, C * h * W, W, s.N, s.C * s.Gh, s.W, s.Gw, 1, gamma, 1);
            // grad_image[n, ch] = Ay[n] [H, h] · V[n, ch] [h, W]
            Gemm(stream, new(ay, s.C, H * h, 0, h, 1), new(vu, 1, h * W, 0, W, 1), gradImage, H * W, W, s.N * s.C, s.H, s.W, s.Gh);
            // dAy[n] = Σ_ch img[n, ch] [H, W] · V[n, ch]ᵀ [W, h]
            Gemm(stream, new(image, 1, C * H * W, H * W, W, 1), new(vu, 1, C * h * W, h * W, 1, W), day, H * h, h, s.N, s.H, s.Gh, s.W, s.C);
            // U[n, ch] = Ay[n]ᵀ [h, H] · img[n, ch] [H, W]   (reuses V's buffer: the stream is in order)
            Gemm(stream, new(ay, s.C, H * h, 0, 1, h), new(image, 1, H * W, 0, W, 1), vu, h * W, W, s.N * s.C, s.Gh, s.W, s.H);
            // dAx[n] = γ · U[n]ᵀ [W, C·h] · G[n] [C·h, w]
            Gemm(stream, new(vu, 1, C * h * W, 0, 1, W), new(gradOut, 1, C * h * w, 0, w, 1), dax, W * w, w, s.N, s.W, s.Gw, s.C * s.Gh, 1, gamma, 1);
        }
        _filterbankBackward ??= _acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, GlimpseDims>(
            GlimpseKernels.FilterbankBackward);
        _filterbankBackward(stream, new KernelConfig(s.N, GlimpseKernels.ReduceWg), parameters, ay, ax, day, dax, gradParams,
            hasGlg ? gradLogGamma : ArrayView<float>.Empty, hasGlg ? 1 : 0, Dims(s));
    }

    /// <summary>DRAW's read parametrisation: draw [N, 5] → params [N, 6] and γ [N] (see <see cref="Device.DrawParams"/>).</summary>
    public void DrawParams(AcceleratorStream stream, in GlimpseShape s, ArrayView<float> draw, ArrayView<float> parameters, ArrayView<float> gamma)
    {
        if (s.N == 0) return;
        _drawParams ??= _acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, GlimpseDims>(GlimpseKernels.DrawParams);
        _drawParams(stream, new Index1D(s.N), draw, parameters, gamma, Dims(s));
    }

    /// <summary>Backward of the DRAW mapping: grad_draw [N, 5] from grad_params [N, 6] and dL/d log γ [N].</summary>
    public void DrawParamsBackward(AcceleratorStream stream, in GlimpseShape s, ArrayView<float> draw, ArrayView<float> gradParams, ArrayView<float> gradLogGamma, ArrayView<float> gradDraw)
    {
        if (s.N == 0) return;
        _drawParamsBackward ??= _acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GlimpseDims>(GlimpseKernels.DrawParamsBackward);
        _drawParamsBackward(stream, new Index1D(s.N), draw, gradParams, gradLogGamma, gradDraw, Dims(s));
    }

    /// <summary>Frees the scratch buffers (the accelerator stays the caller's).</summary>
    public void Dispose() => _scratch.Dispose();
}
