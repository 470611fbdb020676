using GpuAttention.Backends.Kernels.Tuning;

namespace GpuAttention.Backends.Kernels;

internal abstract partial class KernelBackend : ISpatialBackend
{
    /// <summary>
    /// Tuning space of kernels/spatial.cl: CB (most channels per work-group of the grad_input scatter) and TILE_P (points
    /// staged per scatter step) are <c>-D</c> defines; WG_P (work-group size of the one-work-item-per-point kernels:
    /// affine_grid, grid_sample forward, grad_grid, atomic scatter, partial sums) and SCATTER_GROUPS (how many scatter
    /// work-groups the point chunking aims for) are host launch parameters. Defaults: CB = WG_P = 64 (or the largest power of
    /// two the device allows), TILE_P = 64, SCATTER_GROUPS = 512 on GPUs and 16 on CPU devices.
    /// </summary>
    internal static TuningSpace SpatialTuning { get; } = new()
    {
        Family = "grid-sample",
        Files = ["spatial.cl"],
        Knobs = [new("CB", [8, 16, 32, 64, 128]), new("TILE_P", [16, 32, 64, 128, 256]), new("WG_P", [16, 32, 64, 128, 256], IsDefine: false),
                 new("SCATTER_GROUPS", [4, 8, 16, 32, 64, 512], IsDefine: false)],
        DefaultOf = (d, _) =>
        {
            int g = Math.Min(64, PowerOfTwoAtMost(d.MaxWorkGroupSize)), tileP = 64;
            while (tileP > 16 && 4L * tileP * (8 + g) > d.LocalMemBytes) tileP /= 2;    // only on devices with under 18 KiB of local memory
            return TuningParams.Of(("CB", g), ("TILE_P", tileP), ("WG_P", g), ("SCATTER_GROUPS", d.IsGpu ? 512 : 16));
        },
        InvalidOf = (p, d, _) =>
        {
            if (p["CB"] > d.MaxWorkGroupSize) return $"CB={p["CB"]} > work-group limit {d.MaxWorkGroupSize}";
            if (p["WG_P"] > d.MaxWorkGroupSize) return $"WG_P={p["WG_P"]} > work-group limit {d.MaxWorkGroupSize}";
            long local = 4L * p["TILE_P"] * (8 + p["CB"]);
            return local > d.LocalMemBytes ? $"{local} B of local memory > {d.LocalMemBytes}" : null;
        },
    };

    /// <summary>This device's spatial knobs: the tuned winner if cached, else the default of <see cref="SpatialTuning"/>.</summary>
    private TuningParams SpatialParams => Tuned(SpatialTuning);

    /// <summary>Work-group size of the one-work-item-per-point kernels.</summary>
    private int PointGroup => SpatialParams["WG_P"];

    /// <summary>The scatter's most channels per work-group (its work-group size is the channel block, at most this).</summary>
    private int MaxChannelBlock => SpatialParams["CB"];

    /// <summary>The -D defines of kernels/spatial.cl on this device (mode, padding and align are kernel arguments: one program).</summary>
    internal string SpatialDefines => SpatialDefinesFor(SpatialParams, Limits);

    private static string SpatialDefinesFor(TuningParams p, KernelDeviceLimits d) =>
        $"{SpatialTuning.Defines(p)} -DRED_WG={Math.Min(64, PowerOfTwoAtMost(d.MaxWorkGroupSize))}";

    /// <summary>The spatial.cl configuration for the compile checks (one program per device).</summary>
    private static IEnumerable<KernelConfig> SpatialShippedConfigs(KernelDeviceLimits d) =>
        [new KernelConfig("spatial.cl", SpatialDefinesFor(SpatialTuning.Default(d), d), ["affine_grid_forward", "affine_grid_backward", "grid_sample_forward",
            "grid_sample_backward_grid", "grid_sample_backward_input", "grid_sample_sum_partials",
            "grid_sample_backward_input_atomic"])];

    private int RedGroup => Math.Min(64, PowerOfTwoAtMost(MaxWorkGroupSize));

    private static int PowerOfTwoAtMost(int n)
    {
        int p = 1;
        while (p * 2 <= n) p *= 2;
        return p;
    }

    public void AffineGrid(in AffineGridArgs a)
    {
        long P = (long)a.H * a.W;
        if (a.N == 0 || P == 0) return;
        int wg = PointGroup;
        Launch("spatial.cl", SpatialDefines, "affine_grid_forward", [RoundUp(P, wg), a.N], [wg, 1],
            [KernelArg.Of(a.Theta), KernelArg.Of(a.Grid), a.H, a.W, a.AlignCorners]);
    }

    public void AffineGridBackward(in AffineGridBackwardArgs a)
    {
        if (a.N == 0) return;
        int red = RedGroup;
        Launch("spatial.cl", SpatialDefines, "affine_grid_backward", [red, a.N], [red, 1],
            [KernelArg.Of(a.GradGrid), KernelArg.Of(a.GradTheta), a.H, a.W, a.AlignCorners]);
    }

    public void GridSample(in GridSampleArgs a)
    {
        var s = a.Shape;
        long P = s.OutPoints;
        if (s.N == 0 || s.C == 0 || P == 0) return;
        int wg = PointGroup;
        Launch("spatial.cl", SpatialDefines, "grid_sample_forward", [RoundUp(P, wg), s.N], [wg, 1],
            [KernelArg.Of(a.Input), KernelArg.Of(a.Grid), KernelArg.Of(a.Theta), KernelArg.Of(a.Out), s.C, s.H, s.W, s.Hout, s.Wout, a.Theta is not null, (int)s.Mode, (int)s.Padding, s.AlignCorners]);
    }

    /// <summary>
    /// Channel block (work-group size) and number of point chunks of the grad_input scatter: a function of the shape
    /// and the device only, so results repeat bit for bit. Chunks add parallelism when N · channel blocks is small,
    /// bounded by the partial copies' memory (≤ 256 MiB) and by one tile of points per chunk.
    /// </summary>
    internal (int Cb, int Chunks, long ChunkPoints) ScatterConfig(in GridSampleShape s)
    {
        int cb = 1;
        while (cb < s.C && cb < MaxChannelBlock) cb *= 2;
        long groups = (long)s.N * ((s.C + cb - 1) / cb);
        long target = SpatialParams["SCATTER_GROUPS"];
        long perCopy = (long)s.N * s.C * s.H * s.W;
        long chunks = groups >= target ? 1 : (target + groups - 1) / groups;
        chunks = Math.Min(chunks, Math.Max(1, (s.OutPoints + 255) / 256));
        chunks = Math.Min(chunks, Math.Max(1, (256L << 20) / 4 / Math.Max(1, perCopy)));
        if (chunks > 1 && perCopy * chunks > MaxBufferElements) chunks = 1;
        long chunkPoints = (s.OutPoints + chunks - 1) / chunks;
        chunks = (s.OutPoints + chunkPoints - 1) / chunkPoints;
        return (cb, (int)chunks, chunkPoints);
    }

    public void GridSampleBackward(in GridSampleBackwardArgs a)
    {
        var s = a.Shape;
        long P = s.OutPoints;
        long len = (long)s.N * s.C * s.H * s.W;
        bool fused = a.Theta is not null;
        Fill(a.GradInput, 0f);                              // the scatters add into zeros
        if (s.N == 0) return;
        if (P == 0)
        {
            if (fused) Fill(a.GradTheta!, 0f);
            return;
        }
        int wg = PointGroup;
        // Scratch buffers are kept across calls (freeing them here would make CUDA synchronise).
        IDeviceBuffer? gridGrad = fused ? Scratch("spatial.grad_grid", s.N * P * 2) : a.GradGrid;
        IDeviceBuffer? partial = null;
        string d = SpatialDefines;
        KernelArg[] gridArgs = [KernelArg.Of(a.Input), KernelArg.Of(a.Grid), KernelArg.Of(a.Theta), KernelArg.Of(a.GradOut), KernelArg.Of(gridGrad),
            s.C, s.H, s.W, s.Hout, s.Wout, fused, (int)s.Mode, (int)s.Padding, s.AlignCorners];
        Launch("spatial.cl", d, "grid_sample_backward_grid", [RoundUp(P, wg), s.N], [wg, 1], gridArgs);
        if (s.C > 0 && a.Atomic)
        {
            // Opt-in: one work-item per output point, float atomic adds into grad_input (zeroed above). Nondeterministic order.
            Launch("spatial.cl", d, "grid_sample_backward_input_atomic", [RoundUp(P, wg), s.N], [wg, 1],
                [KernelArg.Of(a.Grid), KernelArg.Of(a.Theta), KernelArg.Of(a.GradOut), KernelArg.Of(a.GradInput),
                 s.C, s.H, s.W, s.Hout, s.Wout, fused, (int)s.Mode, (int)s.Padding, s.AlignCorners]);
        }
        else if (s.C > 0)
        {
            var (cb, chunks, chunkPoints) = ScatterConfig(s);
            IDeviceBuffer dst = a.GradInput;
            if (chunks > 1)
            {
                partial = Scratch("spatial.partial", len * chunks);
                Fill(partial, 0f);
                dst = partial;
            }
            int nCb = (s.C + cb - 1) / cb;
            Launch("spatial.cl", d, "grid_sample_backward_input", [(long)nCb * cb, s.N, chunks], [cb, 1, 1],
                [KernelArg.Of(a.Grid), KernelArg.Of(a.Theta), KernelArg.Of(a.GradOut), KernelArg.Of(dst),
                 s.C, s.H, s.W, s.Hout, s.Wout, fused, (int)s.Mode, (int)s.Padding, s.AlignCorners, chunkPoints, chunks > 1 ? len : 0L]);
            if (chunks > 1)
                Launch("spatial.cl", d, "grid_sample_sum_partials", [RoundUp(len, wg)], [wg],
                    [KernelArg.Of(partial), KernelArg.Of(a.GradInput), chunks, len]);
        }
        if (fused)
            AffineGridBackward(new AffineGridBackwardArgs(s.N, s.Hout, s.Wout, s.AlignCorners, gridGrad!, a.GradTheta!));
    }
}
