namespace GpuAttention.Backends.Kernels;

internal abstract partial class KernelBackend : ISdpaBackwardBackend
{
    /// <summary>Tile sizes and -D defines of kernels/sdpa_backward.cl for head dims (e, ev) on this device.</summary>
    internal (int BlockM, int BlockN, string Defines) SdpaBackwardConfig(int e, int ev) => SdpaBackwardConfig(e, ev, Limits);

    internal static (int BlockM, int BlockN, string Defines) SdpaBackwardConfig(int e, int ev, KernelDeviceLimits d)
    {
        int wg = 32;
        while (wg > 1 && wg > d.MaxWorkGroupSize) wg /= 2;
        // The tile staged in local memory holds (e + ev) floats per row, as in the forward.
        int tile = e + ev <= 128 ? 64 : e + ev <= 256 ? 32 : e + ev <= 512 ? 16 : 8;
        long localBudget = Math.Min(d.LocalMemBytes > 0 ? d.LocalMemBytes : 32 * 1024, 32 * 1024);
        while (tile > 1 && (long)tile * (e + ev + 2) * sizeof(float) > localBudget) tile /= 2;
        // BLOCK_M is the dq work-group size and the dkdv query tile; BLOCK_N the dkdv work-group size and the dq key tile.
        // One number serves both: a work-group of wg work-items staging a tile of as many rows.
        int blk = Math.Min(wg, tile);
        return (blk, blk, $"-DHEAD_DIM={e} -DHEAD_DIM_V={ev} -DBLOCK_M={blk} -DBLOCK_N={blk} -DPRE_WG=64");
    }

    /// <summary>The sdpa_backward.cl configurations for the compile checks (the forward's head dims).</summary>
    private static IEnumerable<KernelConfig> SdpaBackwardShippedConfigs(KernelDeviceLimits d) =>
        SdpaShippedHeadDims.Select(h => new KernelConfig("sdpa_backward.cl", SdpaBackwardConfig(h.E, h.Ev, d).Defines,
            ["sdpa_bwd_preprocess", "sdpa_bwd_dkdv", "sdpa_bwd_dq"]));

    /// <summary>Enqueues the three kernels of the fused SDPA backward (does not wait).</summary>
    public void SdpaBackward(in SdpaBackwardArgs a)
    {
        var s = a.Shape;
        if (s.B == 0 || s.Hkv == 0) return;                 // every output is empty
        if (s.L == 0 || s.S == 0)
        {
            Fill(a.GradQ, 0f); Fill(a.GradK, 0f); Fill(a.GradV, 0f);
            return;
        }
        if (s.E == 0 || s.Ev == 0)
            throw new NotSupportedException($"{Kind}: sdpa-backward with an empty head dimension (E = {s.E}, Ev = {s.Ev}) is not supported");
        if ((long)s.B * s.Hq > int.MaxValue) throw new NotSupportedException($"{Kind}: sdpa-backward: B * Hq exceeds 2^31 - 1");

        var (blockM, blockN, defines) = SdpaBackwardConfig(s.E, s.Ev);
        long rows = (long)s.B * s.Hq * s.L;
        // D = rowsum(dO ∘ O), in a scratch buffer kept across calls (freeing it here would make CUDA synchronise).
        var dsum = Scratch("sdpa_backward.d", rows);
        Launch("sdpa_backward.cl", defines, "sdpa_bwd_preprocess", [RoundUp(rows, 64)], [64],
            [KernelArg.Of(a.Out), KernelArg.Of(a.GradOut), KernelArg.Of(dsum), rows]);
        KernelArg[] tail =
        [
            s.Hq, s.Hkv, s.L, s.S, s.Scale, s.Causal, a.Mask is not null,
            s.MaskStrideB, s.MaskStrideH, s.MaskStrideL, s.MaskStrideS,
        ];
        Launch("sdpa_backward.cl", defines, "sdpa_bwd_dkdv", [RoundUp(s.S, blockN), (long)s.B * s.Hkv], [blockN, 1],
        [
            KernelArg.Of(a.Q), KernelArg.Of(a.K), KernelArg.Of(a.V), KernelArg.Of(a.Mask), KernelArg.Of(a.Lse), KernelArg.Of(dsum),
            KernelArg.Of(a.GradOut), KernelArg.Of(a.GradK), KernelArg.Of(a.GradV), .. tail,
        ]);
        Launch("sdpa_backward.cl", defines, "sdpa_bwd_dq", [RoundUp(s.L, blockM), (long)s.B * s.Hq], [blockM, 1],
        [
            KernelArg.Of(a.Q), KernelArg.Of(a.K), KernelArg.Of(a.V), KernelArg.Of(a.Mask), KernelArg.Of(a.Lse), KernelArg.Of(dsum),
            KernelArg.Of(a.GradOut), KernelArg.Of(a.GradQ), .. tail,
        ]);
    }
}
