namespace GpuAttention.Backends.Kernels;

internal abstract partial class KernelBackend : ISdpaBackend
{
    /// <summary>Tile sizes and the -D defines of kernels/sdpa.cl for head dims (e, ev) on this device.</summary>
    internal (int BlockM, int BlockN, string Defines) SdpaConfig(int e, int ev)
    {
        int blockM = 32;
        while (blockM > 1 && blockM > MaxWorkGroupSize) blockM /= 2;
        int blockN = e + ev <= 128 ? 64 : e + ev <= 256 ? 32 : e + ev <= 512 ? 16 : 8;
        long localBudget = Math.Min(LocalMemBytes > 0 ? LocalMemBytes : 32 * 1024, 32 * 1024);
        while (blockN > 1 && (long)blockN * (e + ev) * sizeof(float) > localBudget) blockN /= 2;
        return (blockM, blockN, $"-DHEAD_DIM={e} -DHEAD_DIM_V={ev} -DBLOCK_M={blockM} -DBLOCK_N={blockN}");
    }

    /// <summary>Enqueues the fused SDPA forward kernel (does not wait).</summary>
    public void SdpaForward(in SdpaForwardArgs a)
    {
        var s = a.Shape;
        if (s.B == 0 || s.Hq == 0 || s.L == 0) return;
        if (s.E == 0 || s.Ev == 0)
            throw new NotSupportedException($"{Kind}: sdpa with an empty head dimension (E = {s.E}, Ev = {s.Ev}) is not supported");
        if ((long)s.B * s.Hq > int.MaxValue) throw new NotSupportedException($"{Kind}: sdpa: B * Hq exceeds 2^31 - 1");

        var (blockM, _, defines) = SdpaConfig(s.E, s.Ev);
        Launch("sdpa.cl", defines, "sdpa_forward", [RoundUp(s.L, blockM), (long)s.B * s.Hq], [blockM, 1],
        [
            KernelArg.Of(a.Q), KernelArg.Of(a.K), KernelArg.Of(a.V), KernelArg.Of(a.Mask), KernelArg.Of(a.Out), KernelArg.Of(a.Lse),
            s.Hq, s.Hkv, s.L, s.S, s.Scale, s.Causal, a.Mask is not null,
            s.MaskStrideB, s.MaskStrideH, s.MaskStrideL, s.MaskStrideS,
        ]);
    }
}
