namespace GpuAttention.Backends.Kernels;

internal abstract partial class KernelBackend : IGemmBackend
{
    /// <summary>Tile sizes and -D defines of kernels/gemm.cl: a 64×64 tile per work-group of 16×16 work-items with 4×4 outputs each
    /// on GPUs; 32×32 (8×8 work-items) on CPU devices such as PoCL, where fewer, fatter work-items are cheaper.</summary>
    internal (int TM, int TN, int WM, int WN, string Defines) GemmConfig(bool transA, bool transB) => GemmConfig(transA, transB, Limits);

    internal static (int TM, int TN, int WM, int WN, string Defines) GemmConfig(bool transA, bool transB, KernelDeviceLimits d)
    {
        int tm = d.IsGpu ? 64 : 32, tn = tm, wm = 4, wn = 4, tk = 16;
        while ((tm / wm) * (tn / wn) > d.MaxWorkGroupSize && tm > wm) { tm /= 2; tn /= 2; }
        return (tm, tn, wm, wn, $"-DTM={tm} -DTN={tn} -DTK={tk} -DWM={wm} -DWN={wn} -DTRANS_A={(transA ? 1 : 0)} -DTRANS_B={(transB ? 1 : 0)}");
    }

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
