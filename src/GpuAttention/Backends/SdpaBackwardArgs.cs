namespace GpuAttention.Backends;

/// <summary>
/// Backends with a fused SDPA backward (FlashAttention-2 style: D = rowsum(dO∘O), a dK/dV pass parallel over key blocks,
/// a dQ pass parallel over query blocks, P recomputed from lse) implement this. The arguments are
/// <see cref="SdpaBackwardArgs"/> (declared beside the forward's in SdpaArgs.cs). Every element of GradQ, GradK and GradV is written.
/// </summary>
internal interface ISdpaBackwardBackend
{
    void SdpaBackward(in SdpaBackwardArgs args);
}
