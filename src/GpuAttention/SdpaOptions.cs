namespace GpuAttention;

/// <summary>
/// Options of <see cref="Device.Sdpa(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor?, SdpaOptions)"/>,
/// as in PyTorch's <c>scaled_dot_product_attention</c>.
/// </summary>
/// <param name="IsCausal">Keep key j for query i only when j ≤ i (top-left aligned, also when L ≠ S).</param>
/// <param name="Scale">Multiplier of q·kᵀ; null means 1/√E.</param>
public readonly record struct SdpaOptions(bool IsCausal = false, float? Scale = null);
