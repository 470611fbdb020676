namespace GpuAttention.Backends;

/// <summary>
/// Resolved sizes of a separable Gaussian glimpse: image [N, C, H, W], params [N, 6] = (uy, sy, dy, ux, sx, dx),
/// glimpse [N, C, Gh, Gw]. Filterbanks Ay [N, H, Gh] and Ax [N, W, Gw].
/// </summary>
internal readonly record struct GlimpseShape(int N, int C, int H, int W, int Gh, int Gw)
{
    /// <summary>Multiply-adds of Ayᵀ·img first (then ·Ax), per channel: Gh·W·(H + Gw).</summary>
    public double CostYFirst => (double)Gh * W * ((double)H + Gw);
    /// <summary>Multiply-adds of img·Ax first (then Ayᵀ·), per channel: H·Gw·(W + Gh).</summary>
    public double CostXFirst => (double)H * Gw * ((double)W + Gh);
    /// <summary>True when the image is multiplied by Ax first (the cheaper order for this shape).</summary>
    public bool XFirst => CostXFirst < CostYFirst;
    /// <summary>FLOPs of the forward products (2 per multiply-add, cheaper order; filterbank build not counted).</summary>
    public double ForwardFlops => 2.0 * N * C * Math.Min(CostXFirst, CostYFirst);
    /// <summary>Backward multiply-adds per channel with V = G·Axᵀ [h, W]: Ay·V, img·Vᵀ, Ayᵀ·img (H·W·h each) and G·Axᵀ, Uᵀ·G.</summary>
    public double BackwardCostYFirst => 3.0 * H * W * Gh + 2.0 * Gh * Gw * W;
    /// <summary>Backward multiply-adds per channel with P = Ay·G [H, w]: P·Axᵀ, imgᵀ·P, img·Ax (H·W·w each) and Ay·G, T·Gᵀ.</summary>
    public double BackwardCostXFirst => 3.0 * H * W * Gw + 2.0 * H * Gh * Gw;
    /// <summary>True when the backward goes through P = Ay·G (the cheaper order for this shape).</summary>
    public bool BackwardXFirst => BackwardCostXFirst < BackwardCostYFirst;
    /// <summary>FLOPs of the backward products in the order used.</summary>
    public double BackwardFlops => 2.0 * N * C * Math.Min(BackwardCostXFirst, BackwardCostYFirst);
}

/// <summary>
/// Glimpse forward: out = gamma[n] · Ayᵀ·image[n, ch]·Ax. <see cref="Gamma"/> (linear scale [N]) is null for the plain glimpse.
/// </summary>
internal readonly record struct GlimpseForwardArgs(GlimpseShape Shape, IDeviceBuffer Image, IDeviceBuffer Params, IDeviceBuffer? Gamma, IDeviceBuffer Out);

/// <summary>
/// Glimpse backward: grad_image [N,C,H,W] and grad_params [N,6]; with <see cref="Gamma"/> the forward was scaled by gamma[n],
/// and <see cref="GradLogGamma"/> [N] (optional) receives dL/d(log gamma) = Σ grad_out ∘ out.
/// </summary>
internal readonly record struct GlimpseBackwardArgs(GlimpseShape Shape, IDeviceBuffer Image, IDeviceBuffer Params, IDeviceBuffer? Gamma,
    IDeviceBuffer GradOut, IDeviceBuffer GradImage, IDeviceBuffer GradParams, IDeviceBuffer? GradLogGamma);

/// <summary>DRAW's read parametrisation [N, 5] → glimpse params [N, 6] and gamma [N] (see <see cref="Device.DrawParams"/>).</summary>
internal readonly record struct DrawParamsArgs(GlimpseShape Shape, IDeviceBuffer Draw, IDeviceBuffer Params, IDeviceBuffer Gamma);

/// <summary>Backward of the DRAW mapping: grad_draw [N, 5] from grad_params [N, 6] and dL/d(log gamma) [N].</summary>
internal readonly record struct DrawParamsBackwardArgs(GlimpseShape Shape, IDeviceBuffer Draw, IDeviceBuffer GradParams, IDeviceBuffer GradLogGamma, IDeviceBuffer GradDraw);

/// <summary>Backends with glimpse kernels implement this.</summary>
internal interface IGlimpseBackend
{
    void GlimpseForward(in GlimpseForwardArgs args);
    void GlimpseBackward(in GlimpseBackwardArgs args);
    void DrawParams(in DrawParamsArgs args);
    void DrawParamsBackward(in DrawParamsBackwardArgs args);
}
