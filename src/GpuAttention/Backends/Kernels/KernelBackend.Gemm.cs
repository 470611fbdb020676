using GpuAttention.Backends.Kernels.Tuning;

namespace GpuAttention.Backends.Kernels;

internal abstract partial class KernelBackend : IGemmBackend
{
    /// <summary>
    /// Tuning space of kernels/gemm.cl (tile TM × TN per work-group, TK deep slices, WM × WN outputs per work-item). Default: a
    /// 64×64 tile per work-group of 16×16 work-items with 4×4 outputs each on GPUs; 32×32 (8×8 work-items) on CPU devices such as
    /// PoCL, where fewer, fatter work-items are cheaper; halved while the work-group would exceed the device's limit.
    /// </summary>
    internal static TuningSpace GemmTuning { get; } = new()
    {
        Family = "gemm",
        Files = ["gemm.cl"],
        Knobs = [new("TM", [16, 32, 64, 128]), new("TN", [16, 32, 64, 128]), new("TK", [8, 16, 32]), new("WM", [1, 2, 4, 8]), new("WN", [1, 2, 4, 8])],
        DefaultOf = (d, _) =>
        {
            int tm = d.IsGpu ? 64 : 32, wm = 4;
            while ((tm / wm) * (tm / wm) > d.MaxWorkGroupSize && tm > wm) tm /= 2;
            return TuningParams.Of(("TM", tm), ("TN", tm), ("TK", 16), ("WM", wm), ("WN", wm));
        },
        InvalidOf = (p, d, _) =>
        {
            int tm = p["TM"], tn = p["TN"], tk = p["TK"], wm = p["WM"], wn = p["WN"];
            if (tm % wm != 0 || tn % wn != 0) return "TM % WM and TN % WN must be 0";
            int threads = (tm / wm) * (tn / wn);
            if (threads > d.MaxWorkGroupSize) return $"work-group of {threads} > {d.MaxWorkGroupSize}";
            if (wm * wn > 64) return $"{wm * wn} accumulators per work-item (at most 64)";
            long local = 4L * tk * (tm + tn);
            return local > d.LocalMemBytes ? $"{local} B of local memory > {d.LocalMemBytes}" : null;
        },
    };

    /// <summary>Tile sizes and -D defines of kernels/gemm.cl on this device: the tuned winner if cached, else the default of <see cref="GemmTuning"/>.</summary>
    internal (int TM, int TN, int WM, int WN, string Defines) GemmConfig(bool transA, bool transB) => GemmConfig(transA, transB, Tuned(GemmTuning));

    internal static (int TM, int TN, int WM, int WN, string Defines) GemmConfig(bool transA, bool transB, KernelDeviceLimits d) =>
        GemmConfig(transA, transB, GemmTuning.Default(d));

    private static (int TM, int TN, int WM, int WN, string Defines) GemmConfig(bool transA, bool transB, TuningParams p) =>
        (p["TM"], p["TN"], p["WM"], p["WN"], $"{GemmTuning.Defines(p)} -DTRANS_A={(transA ? 1 : 0)} -DTRANS_B={(transB ? 1 : 0)}");

    /// <summary>The gemm.cl configurations (every transpose pair) for the compile checks.</summary>
    private static IEnumerable<KernelConfig> GemmShippedConfigs(KernelDeviceLimits d) =>
        from ta in new[] { false, true } from tb in new[] { false, true }
        select new KernelConfig("gemm.cl", GemmConfig(ta, tb, d).Defines, ["gemm_batched"]);

    /// <summary>Enqueues the tiled batched GEMM (does not wait).</summary>
    public void Gemm(in GemmArgs g)
    {
        if (g.Batch == 0 || g.M == 0 || g.N == 0) return;
        var (tm, tn, wm, wn, defines) = GemmConfig(g.TransA, g.TransB);
        Launch("gemm.cl", defines, "gemm_batched",
            [RoundUp(g.N, tn) / wn, RoundUp(g.M, tm) / wm, g.Batch], [tn / wn, tm / wm, 1],
            [
                g.M, g.N, g.K, g.Alpha, g.Beta,
                KernelArg.Of(g.A), g.OffA, g.StrideA, g.Lda,
                KernelArg.Of(g.B), g.OffB, g.StrideB, g.Ldb,
                KernelArg.Of(g.C), g.OffC, g.StrideC, g.Ldc,
            ]);
    }
}
