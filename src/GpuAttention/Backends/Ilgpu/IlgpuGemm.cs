using ILGPU;
using ILGPU.Runtime;
using GpuAttention.Kernels.Ilgpu;

namespace GpuAttention.Backends.Ilgpu;

/// <summary>The tile configurations of <see cref="GemmKernels.Gemm{TBM, TBN, TBK}"/> that <see cref="IlgpuGemm"/> launches.</summary>
internal enum IlgpuGemmTile
{
    /// <summary>Chosen per problem (see <see cref="IlgpuGemm.Choose"/>).</summary>
    Auto,
    /// <summary>64×64 tile, BK = 16, 256 threads: large problems.</summary>
    Large,
    /// <summary>32×32 tile, BK = 16, 64 threads: small or skinny problems.</summary>
    Small,
}

/// <summary>
/// Host side of the ILGPU GEMM (kernel: <c>kernels/ilgpu/Gemm.cs</c>): picks a tile configuration, loads (compiles) its kernel
/// once per accelerator and launches it on the caller's stream over the caller's views. Implements the full
/// <see cref="GemmArgs"/> semantics: transposes, leading dimensions, 64-bit offsets and batch strides (0 = broadcast), alpha, and
/// beta with beta = 0 never reading C.
/// </summary>
internal sealed class IlgpuGemm(Accelerator acc)
{
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmParams>? _large, _small;

    /// <summary>Forces one tile configuration (tests run both on the same shapes); <see cref="IlgpuGemmTile.Auto"/> by default.</summary>
    internal IlgpuGemmTile Force { get; set; }

    /// <summary>Every configuration <see cref="Run"/> can launch, for the PTX gate.</summary>
    public static IEnumerable<IlgpuKernelConfig> ShippedConfigs()
    {
        yield return Config(IlgpuGemmTile.Large);
        yield return Config(IlgpuGemmTile.Small);
    }

    private static IlgpuKernelConfig Config(IlgpuGemmTile tile) => tile == IlgpuGemmTile.Large
        ? new("gemm", "gemm<BM64,BN64,BK16>", Method<T64, T64, T16>(), IlgpuKernelKind.ExplicitlyGrouped)
        : new("gemm", "gemm<BM32,BN32,BK16>", Method<T32, T32, T16>(), IlgpuKernelKind.ExplicitlyGrouped);

    private static System.Reflection.MethodInfo Method<TM, TN, TK>() where TM : struct, ITile where TN : struct, ITile where TK : struct, ITile =>
        ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmParams>)GemmKernels.Gemm<TM, TN, TK>).Method;

    /// <summary>64×64 tiles unless they would give fewer groups than two per multiprocessor (or M or N fits in 32): then 32×32.</summary>
    internal IlgpuGemmTile Choose(in GemmArgs g)
    {
        if (Force != IlgpuGemmTile.Auto) return Force;
        if (g.M <= 32 || g.N <= 32) return IlgpuGemmTile.Small;
        long groups64 = (long)g.Batch * ((g.M + 63) / 64) * ((g.N + 63) / 64);
        return groups64 < 2L * Math.Max(1, acc.NumMultiprocessors) ? IlgpuGemmTile.Small : IlgpuGemmTile.Large;
    }

    /// <summary>Enqueues C = Alpha·op(A)·op(B) + Beta·C on <paramref name="stream"/>; <paramref name="a"/>, <paramref name="b"/>,
    /// <paramref name="c"/> are the whole buffers the args' offsets index (bounds were checked by the caller).</summary>
    public void Run(AcceleratorStream stream, in GemmArgs g, ArrayView<float> a, ArrayView<float> b, ArrayView<float> c)
    {
        if (g.Batch == 0 || g.M == 0 || g.N == 0) return;
        var tile = Choose(g);
        int bm = tile == IlgpuGemmTile.Large ? 64 : 32, bn = bm;
        var kernel = tile == IlgpuGemmTile.Large
            ? _large ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmParams>(GemmKernels.Gemm<T64, T64, T16>)
            : _small ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmParams>(GemmKernels.Gemm<T32, T32, T16>);
        int tilesN = (g.N + bn - 1) / bn;
        long groups = (long)g.Batch * ((g.M + bm - 1) / bm) * tilesN;
        // Grid-stride loop in the kernel: cap the grid (CUDA's x limit is 2³¹−1; the simulator runs each group on the host).
        int grid = (int)Math.Min(groups, acc.AcceleratorType == AcceleratorType.CPU ? 4L * Environment.ProcessorCount : 1L << 24);
        var p = new GemmParams
        {
            Batch = g.Batch, M = g.M, N = g.N, K = g.K, Lda = g.Lda, Ldb = g.Ldb, Ldc = g.Ldc,
            TransA = g.TransA ? 1 : 0, TransB = g.TransB ? 1 : 0, TilesN = tilesN,
            OffA = g.OffA, StrideA = g.StrideA, OffB = g.OffB, StrideB = g.StrideB, OffC = g.OffC, StrideC = g.StrideC,
            Alpha = g.Alpha, Beta = g.Beta,
        };
        // An empty K (or A/B of zero elements) still writes C = Beta·C: pass a 1-element dummy view where a view is empty.
        kernel(stream, new KernelConfig(grid, (bm / GemmKernels.MicroTile) * (bn / GemmKernels.MicroTile)), NonEmpty(a, c), NonEmpty(b, c), c, p);
    }

    private static ArrayView<float> NonEmpty(ArrayView<float> v, ArrayView<float> fallback) => v.Length > 0 ? v : fallback;
}
