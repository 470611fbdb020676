namespace GpuAttention.Backends;

/// <summary>
/// Resolved shape of a grid_sample call, validated by <see cref="Device"/>: input [N, C, H, W], grid [N, Hout, Wout, 2]
/// (or theta [N, 2, 3] for the fused spatial transformer), out [N, C, Hout, Wout].
/// </summary>
internal readonly record struct GridSampleShape(int N, int C, int H, int W, int Hout, int Wout,
    GridSampleMode Mode, GridSamplePadding Padding, bool AlignCorners)
{
    public long OutPoints => (long)Hout * Wout;
    /// <summary>Bytes a forward pass must move at least: input once, grid once, output once.</summary>
    public double ForwardBytes => 4.0 * ((double)N * C * H * W + (double)N * OutPoints * 2 + (double)N * C * OutPoints);
}

/// <summary>affine_grid: theta [N, 2, 3] → grid [N, H, W, 2].</summary>
internal readonly record struct AffineGridArgs(int N, int H, int W, bool AlignCorners, IDeviceBuffer Theta, IDeviceBuffer Grid);

/// <summary>affine_grid backward: grad_grid [N, H, W, 2] → grad_theta [N, 2, 3].</summary>
internal readonly record struct AffineGridBackwardArgs(int N, int H, int W, bool AlignCorners, IDeviceBuffer GradGrid, IDeviceBuffer GradTheta);

/// <summary>
/// grid_sample forward. Exactly one of <see cref="Grid"/> [N, Hout, Wout, 2] and <see cref="Theta"/> [N, 2, 3] is set;
/// with theta the sampling points are affine_grid(theta, (Hout, Wout), align_corners), computed on the fly.
/// </summary>
internal readonly record struct GridSampleArgs(GridSampleShape Shape, IDeviceBuffer Input, IDeviceBuffer? Grid, IDeviceBuffer? Theta, IDeviceBuffer Out);

/// <summary>
/// grid_sample backward: grad_out [N, C, Hout, Wout] → grad_input [N, C, H, W] and grad_grid [N, Hout, Wout, 2]
/// (with <see cref="Theta"/> instead of <see cref="Grid"/>: grad_theta [N, 2, 3] in <see cref="GradTheta"/>, no grad_grid).
/// Deterministic (no floating-point atomics) unless <see cref="Atomic"/>: then kernel backends may scatter grad_input with float
/// atomic adds (nondeterministic order); the CPU backend ignores it.
/// </summary>
internal readonly record struct GridSampleBackwardArgs(GridSampleShape Shape, IDeviceBuffer Input, IDeviceBuffer? Grid, IDeviceBuffer? Theta,
    IDeviceBuffer GradOut, IDeviceBuffer GradInput, IDeviceBuffer? GradGrid, IDeviceBuffer? GradTheta, bool Atomic = false);

/// <summary>Backends with spatial-transformer kernels (affine_grid, grid_sample) implement this.</summary>
internal interface ISpatialBackend
{
    void AffineGrid(in AffineGridArgs args);
    void AffineGridBackward(in AffineGridBackwardArgs args);
    void GridSample(in GridSampleArgs args);
    void GridSampleBackward(in GridSampleBackwardArgs args);
}
