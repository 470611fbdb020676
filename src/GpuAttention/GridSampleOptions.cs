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
/// Options of grid_sample, with PyTorch's defaults: bilinear, zeros padding, align_corners = false.
/// With <see cref="AlignCorners"/> the extreme grid values −1 and 1 refer to the centres of the corner pixels,
/// without it to the outer edges of the corner pixels.
/// </summary>
public readonly record struct GridSampleOptions(GridSampleMode Mode = GridSampleMode.Bilinear,
    GridSamplePadding Padding = GridSamplePadding.Zeros, bool AlignCorners = false)
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

    public override string ToString() => $"{Mode.ToString().ToLowerInvariant()} {Padding.ToString().ToLowerInvariant()}{(AlignCorners ? " align" : "")}";
}
