namespace GpuAttention.Backends.Kernels;

internal abstract partial class KernelBackend : ISdpaBackend
{
    /// <summary>Forces the SDPA tile sizes (tests use small tiles to exercise many tiles and tails on small shapes).</summary>
    internal (int BlockM, int BlockN)? SdpaTileOverride { get; set; }

    /// <summary>L == 1 calls with at least this many keys take the split-key decoding kernels.</summary>
    internal int SdpaDecodeMinKeys { get; set; } = 256;

    /// <summary>Keys per work-group of the decoding kernels (DEC_CHUNK).</summary>
    internal int SdpaDecodeChunk { get; set; } = 128;

    /// <summary>Tile sizes and the -D defines of kernels/sdpa.cl for head dims (e, ev) on this device.</summary>
    internal (int BlockM, int BlockN, string Defines) SdpaConfig(int e, int ev) =>
        SdpaTileOverride is { } t ? (t.BlockM, t.BlockN, SdpaDefines(e, ev, t.BlockM, t.BlockN)) : SdpaConfig(e, ev, Limits);

    /// <summary>Tile sizes and the -D defines of kernels/sdpa.cl for head dims (e, ev) on a device with <paramref name="d"/>.</summary>
    internal static (int BlockM, int BlockN, string Defines) SdpaConfig(int e, int ev, KernelDeviceLimits d)
    {
        int blockM = 32;
        while (blockM > 1 && blockM > d.MaxWorkGroupSize) blockM /= 2;
        int blockN = e + ev <= 128 ? 64 : e + ev <= 256 ? 32 : e + ev <= 512 ? 16 : 8;
        long localBudget = Math.Min(d.LocalMemBytes > 0 ? d.LocalMemBytes : 32 * 1024, 32 * 1024);
        while (blockN > 1 && (long)blockN * (e + ev) * sizeof(float) > localBudget) blockN /= 2;
        return (blockM, blockN, SdpaDefines(e, ev, blockM, blockN));
    }

    private static string SdpaDefines(int e, int ev, int blockM, int blockN) => $"-DHEAD_DIM={e} -DHEAD_DIM_V={ev} -DBLOCK_M={blockM} -DBLOCK_N={blockN}";

    private const int DecodeWorkGroup = 64;

    private static string SdpaDecodeDefines(int e, int ev, int chunk, int wg) => $"-DHEAD_DIM={e} -DHEAD_DIM_V={ev} -DDEC_CHUNK={chunk} -DDEC_WG={wg}";

    /// <summary>Head dims (E, Ev) whose SDPA kernels the compile checks build: every E of a representative list with Ev = E, and some E != Ev.</summary>
    internal static readonly (int E, int Ev)[] SdpaShippedHeadDims =
    [
        (1, 1), (3, 3), (16, 16), (17, 17), (32, 32), (64, 64), (65, 65), (96, 96), (128, 128), (200, 200), (256, 256),
        (3, 5), (17, 23), (128, 96), (200, 256),
    ];

    /// <summary>The sdpa.cl configurations the host code launches on a device with <paramref name="d"/> (see <see cref="ShippedKernelConfigs"/>).</summary>
    private static IEnumerable<KernelConfig> SdpaShippedConfigs(KernelDeviceLimits d) =>
        SdpaShippedHeadDims.SelectMany(h => new[]
        {
            new KernelConfig("sdpa.cl", SdpaConfig(h.E, h.Ev, d).Defines, ["sdpa_forward"]),
            new KernelConfig("sdpa.cl", SdpaDecodeDefines(h.E, h.Ev, 128, Math.Min(DecodeWorkGroup, d.MaxWorkGroupSize)), ["sdpa_decode_partial", "sdpa_decode_combine"]),
        });

    /// <summary>Enqueues the fused SDPA forward (does not wait).</summary>
    public void SdpaForward(in SdpaForwardArgs a)
    {
        var s = a.Shape;
        if (s.B == 0 || s.Hq == 0 || s.L == 0) return;
        if (s.E == 0 || s.Ev == 0)
            throw new NotSupportedException($"{Kind}: sdpa with an empty head dimension (E = {s.E}, Ev = {s.Ev}) is not supported");
        if ((long)s.B * s.Hq > int.MaxValue) throw new NotSupportedException($"{Kind}: sdpa: B * Hq exceeds 2^31 - 1");

        int keys = s.Causal ? Math.Min(s.S, 1) : s.S;
        if (s.L == 1 && keys >= SdpaDecodeMinKeys && keys > 0) { SdpaDecode(a, keys); return; }

        var (blockM, _, defines) = SdpaConfig(s.E, s.Ev);
        Launch("sdpa.cl", defines, "sdpa_forward", [RoundUp(s.L, blockM), (long)s.B * s.Hq], [blockM, 1],
        [
            KernelArg.Of(a.Q), KernelArg.Of(a.K), KernelArg.Of(a.V), KernelArg.Of(a.Mask), KernelArg.Of(a.Out), KernelArg.Of(a.Lse),
            s.Hq, s.Hkv, s.L, s.S, s.Scale, s.Causal, a.Mask is not null,
            s.MaskStrideB, s.MaskStrideH, s.MaskStrideL, s.MaskStrideS,
        ]);
    }

    /// <summary>Split-key decoding (L == 1): partial softmax per chunk of keys, then a combine per (b, h) (flash-decoding).</summary>
    private void SdpaDecode(in SdpaForwardArgs a, int keys)
    {
        var s = a.Shape;
        int chunk = SdpaDecodeChunk;
        int wg = Math.Min(DecodeWorkGroup, MaxWorkGroupSize);
        int nsplit = (keys + chunk - 1) / chunk;
        long rows = (long)s.B * s.Hq;
        string defines = SdpaDecodeDefines(s.E, s.Ev, chunk, wg);
        var partAcc = Scratch("sdpa.partial_acc", rows * nsplit * s.Ev);
        var partMl = Scratch("sdpa.partial_ml", rows * nsplit * 2);
        Launch("sdpa.cl", defines, "sdpa_decode_partial", [(long)nsplit * wg, rows], [wg, 1],
        [
            KernelArg.Of(a.Q), KernelArg.Of(a.K), KernelArg.Of(a.V), KernelArg.Of(a.Mask), KernelArg.Of(partAcc), KernelArg.Of(partMl),
            s.Hq, s.Hkv, s.S, s.Scale, s.Causal, a.Mask is not null,
            s.MaskStrideB, s.MaskStrideH, s.MaskStrideS, nsplit,
        ]);
        Launch("sdpa.cl", defines, "sdpa_decode_combine", [rows * wg], [wg],
            [KernelArg.Of(partAcc), KernelArg.Of(partMl), KernelArg.Of(a.Out), KernelArg.Of(a.Lse), nsplit]);
    }
}
