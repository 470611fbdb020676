namespace GpuAttention.Backends;

/// <summary>
/// Resolved arguments of a fused SDPA call, validated by <see cref="Device"/>.
/// q [B,Hq,L,E], k [B,Hkv,S,E], v [B,Hkv,S,Ev], out [B,Hq,L,Ev], lse [B,Hq,L].
/// The mask (additive float, bool masks are stored as 0 / -inf) is addressed as
/// mask[b*MaskStrideB + h*MaskStrideH + i*MaskStrideL + j*MaskStrideS]; a stride is 0 on a broadcast dimension.
/// </summary>
internal readonly record struct SdpaShape(int B, int Hq, int Hkv, int L, int S, int E, int Ev, float Scale, bool Causal,
    long MaskStrideB, long MaskStrideH, long MaskStrideL, long MaskStrideS)
{
    public int Group => Hq / Hkv;
    /// <summary>FLOPs of the forward pass (2·L·S·(E+Ev) per head, causal not discounted).</summary>
    public double ForwardFlops => 2.0 * B * Hq * (double)L * S * (E + Ev);
}

internal readonly record struct SdpaForwardArgs(SdpaShape Shape,
    IDeviceBuffer Q, IDeviceBuffer K, IDeviceBuffer V, IDeviceBuffer? Mask,
    IDeviceBuffer Out, IDeviceBuffer Lse);

internal readonly record struct SdpaBackwardArgs(SdpaShape Shape,
    IDeviceBuffer Q, IDeviceBuffer K, IDeviceBuffer V, IDeviceBuffer? Mask,
    IDeviceBuffer Out, IDeviceBuffer Lse, IDeviceBuffer GradOut,
    IDeviceBuffer GradQ, IDeviceBuffer GradK, IDeviceBuffer GradV);

/// <summary>Backends with fused SDPA kernels implement this.</summary>
internal interface ISdpaBackend
{
    void SdpaForward(in SdpaForwardArgs args);
}
