namespace GpuAttention;

/// <summary>Interpolation of <see cref="Device.GridSample(Tensor, Tensor, Tensor, GridSampleOptions)"/> (PyTorch's <c>mode</c>).</summary>
public enum GridSampleMode
{
    /// <summary>Bilinear interpolation of the four neighbouring pixels.</summary>
    Bilinear = 0,
    /// <summary>The nearest pixel, ties rounded half to even (C's <c>nearbyint</c>, as PyTorch). Its grid gradient is zero.</summary>
    Nearest = 1,
}

/// <summary>What a sample outside the image reads (PyTorch's <c>padding_mode</c>).</summary>
public enum GridSamplePadding
{
    /// <summary>Pixels outside the image are 0.</summary>
    Zeros = 0,
    /// <summary>Coordinates are clamped to the image (NaN becomes 0, the first pixel).</summary>
    Border = 1,
    /// <summary>Coordinates are reflected at the image border (at pixel centres with align_corners, else at the pixel edges), then clamped.</summary>
    Reflection = 2,
}

/// <summary>
/// How the grad_input scatter of grid_sample backward (and of the fused spatial transform backward) accumulates
/// contributions of output points that land on the same input pixel.
/// </summary>
public enum GridSampleBackwardMode
{
    /// <summary>
    /// The default: no floating-point atomics, a fixed summation order, results bit-for-bit repeatable on a device
    /// (private partial copies of grad_input summed in a fixed order on the kernel backends, per-thread slices on the CPU).
    /// </summary>
    Deterministic = 0,
    /// <summary>
    /// Opt-in, kernel backends (OpenCL, CUDA): one work-item per output point scatters into grad_input with a float atomic add
    /// (CUDA <c>atomicAdd</c>; OpenCL 1.2 a compare-and-swap loop on the bits). The summation order then depends on scheduling,
    /// so grad_input may differ between runs in the last bits (still within float rounding of the exact sum); usually faster on
    /// GPUs, where it needs no partial copies and no second pass. grad_grid / grad_theta are unaffected (they stay deterministic).
    /// The CPU backend accepts it and runs its deterministic path: each of its threads already owns its grad_input slice, so
    /// there is nothing for atomics to save.
    /// </summary>
    Atomic = 1,
}

/// <summary>
/// Options of grid_sample, with PyTorch's defaults: bilinear, zeros padding, align_corners = false.
/// With <see cref="AlignCorners"/> the extreme grid values −1 and 1 refer to the centres of the corner pixels,
/// without it to the outer edges of the corner pixels. <see cref="Backward"/> only affects the backward ops:
/// <see cref="GridSampleBackwardMode.Deterministic"/> (the default) or the opt-in, nondeterministic
/// <see cref="GridSampleBackwardMode.Atomic"/> scatter.
/// </summary>
public readonly record struct GridSampleOptions(GridSampleMode Mode = GridSampleMode.Bilinear,
    GridSamplePadding Padding = GridSamplePadding.Zeros, bool AlignCorners = false,
    GridSampleBackwardMode Backward = GridSampleBackwardMode.Deterministic)
{
    /// <summary>Parses PyTorch's words: mode "bilinear" | "nearest", padding "zeros" | "border" | "reflection".</summary>
    public static GridSampleOptions Parse(string mode, string padding, bool alignCorners) => new(
        mode switch
        {
            "bilinear" => GridSampleMode.Bilinear,
            "nearest" => GridSampleMode.Nearest,
            _ => throw new ArgumentException($"mode: expected bilinear or nearest, got '{mode}'", nameof(mode)),
        },
        padding switch
        {
            "zeros" => GridSamplePadding.Zeros,
            "border" => GridSamplePadding.Border,
            "reflection" => GridSamplePadding.Reflection,
            _ => throw new ArgumentException($"padding: expected zeros, border or reflection, got '{padding}'", nameof(padding)),
        },
        alignCorners);

    public override string ToString() => $"{Mode.ToString().ToLowerInvariant()} {Padding.ToString().ToLowerInvariant()}{(AlignCorners ? " align" : "")}{(Backward == GridSampleBackwardMode.Atomic ? " atomic" : "")}";
}
