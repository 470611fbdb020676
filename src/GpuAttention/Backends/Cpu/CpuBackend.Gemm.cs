using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GpuAttention.Backends.Cpu;

/// <summary>
/// Strided batched GEMM on the CPU (GotoBLAS-style blocking, simplified): work items are (batch, block of
/// <see cref="GemmRowBlock"/> rows, block of <see cref="GemmColBlock"/> columns) spread over all cores; each packs a
/// <see cref="GemmDepthBlock"/>×GemmColBlock panel of op(B) contiguously (which also resolves the transpose), then a
/// register-blocked micro-kernel computes 4 rows × 2 SIMD vectors of C per pass with broadcast-FMAs.
/// </summary>
internal sealed unsafe partial class CpuBackend : IGemmBackend
{
    internal const int GemmRowBlock = 64;
    internal const int GemmColBlock = 128;
    internal const int GemmDepthBlock = 256;

    [ThreadStatic] private static float[]? t_gemmPanel;

    /// <summary>True where the AVX-512 micro-kernel (4 rows × 64 columns, 16 zmm accumulators) runs; tests switch it off.</summary>
    internal static bool FastGemm = Avx512F.IsSupported && Vector512.IsHardwareAccelerated;

    /// <summary>What a GEMM work item reads: <see cref="GemmArgs"/> without its buffers (their pointers instead), and the block counts.</summary>
    private struct GemmCtx
    {
        public float* A, B, C;
        public long OffA, StrideA, OffB, StrideB, OffC, StrideC;
        public int M, N, K, Lda, Ldb, Ldc, RowBlocks, ColBlocks;
        public bool TransA, TransB;
        public float Alpha, Beta;
    }

    public void Gemm(in GemmArgs g)
    {
        if (g.Batch == 0 || g.M == 0 || g.N == 0) return;
        int rowBlocks = (g.M + GemmRowBlock - 1) / GemmRowBlock, colBlocks = (g.N + GemmColBlock - 1) / GemmColBlock;
        int items = WorkItems((long)g.Batch * rowBlocks * colBlocks, "GEMM blocks");
        var ctx = new GemmCtx
        {
            A = B(g.A).Pointer, B = B(g.B).Pointer, C = B(g.C).Pointer,
            OffA = g.OffA, StrideA = g.StrideA, OffB = g.OffB, StrideB = g.StrideB, OffC = g.OffC, StrideC = g.StrideC,
            M = g.M, N = g.N, K = g.K, Lda = g.Lda, Ldb = g.Ldb, Ldc = g.Ldc, RowBlocks = rowBlocks, ColBlocks = colBlocks,
            TransA = g.TransA, TransB = g.TransB, Alpha = g.Alpha, Beta = g.Beta,
        };
        CpuWorkers.For(items, &GemmItem, &ctx);
    }

    /// <summary>Work item (batch t, row block rb, column block cb), column blocks fastest.</summary>
    private static void GemmItem(void* pctx, int item)
    {
        ref readonly GemmCtx c = ref *(GemmCtx*)pctx;
        int cb = item % c.ColBlocks;
        int rest = item / c.ColBlocks;
        int rb = rest % c.RowBlocks;
        int t = rest / c.RowBlocks;
        GemmBlock(c, t, rb * GemmRowBlock, cb * GemmColBlock, c.A, c.B, c.C);
    }

    private static void GemmBlock(in GemmCtx g, int t, int m0, int n0, float* A, float* Bm, float* C)
    {
        int W = Vector<float>.Count;
        int mb = Math.Min(GemmRowBlock, g.M - m0), nb = Math.Min(GemmColBlock, g.N - n0);
        bool fast = FastGemm;
        int tileW = fast ? 64 : 2 * W;
        int nbPad = (nb + tileW - 1) / tileW * tileW;
        float* a0 = A + g.OffA + t * g.StrideA;
        float* b0 = Bm + g.OffB + t * g.StrideB;
        float* c0 = C + g.OffC + t * g.StrideC + (long)m0 * g.Ldc + n0;
        long mStep = g.TransA ? 1 : g.Lda, kStep = g.TransA ? g.Lda : 1;
        if (g.K == 0)
        {
            for (int r = 0; r < mb; r++)
            {
                var row = new Span<float>(c0 + (long)r * g.Ldc, nb);
                if (g.Beta == 0) row.Clear(); else System.Numerics.Tensors.TensorPrimitives.Multiply(row, g.Beta, row);
            }
            return;
        }
        var panelArr = t_gemmPanel ??= GC.AllocateArray<float>(GemmDepthBlock * (GemmColBlock + 64), pinned: true);
        float* panel = (float*)Unsafe.AsPointer(ref panelArr[0]);
        for (int k0 = 0; k0 < g.K; k0 += GemmDepthBlock)
        {
            int kb = Math.Min(GemmDepthBlock, g.K - k0);
            // Pack op(B)[k0 .. k0+kb, n0 .. n0+nb] as kb rows of nbPad floats (zero padded).
            for (int kk = 0; kk < kb; kk++)
            {
                float* dst = panel + kk * nbPad;
                if (!g.TransB)
                {
                    new ReadOnlySpan<float>(b0 + (long)(k0 + kk) * g.Ldb + n0, nb).CopyTo(new Span<float>(dst, nb));
                }
                else
                {
                    float* src = b0 + (long)n0 * g.Ldb + k0 + kk;
                    for (int j = 0; j < nb; j++) dst[j] = src[(long)j * g.Ldb];
                }
                for (int j = nb; j < nbPad; j++) dst[j] = 0;
            }
            float beta = k0 == 0 ? g.Beta : 1f;
            float* aBlk = a0 + (long)m0 * mStep + (long)k0 * kStep;
            int r = 0;
            if (fast)
            {
                for (; r + 4 <= mb; r += 4)
                    for (int c = 0; c < nbPad; c += 64)
                        Micro4x64(aBlk + r * mStep, mStep, kStep, panel + c, nbPad, kb, c0 + (long)r * g.Ldc + c, g.Ldc, Math.Min(64, nb - c), g.Alpha, beta);
                for (; r < mb; r++)
                    for (int c = 0; c < nbPad; c += 64)
                        Micro1x64(aBlk + r * mStep, kStep, panel + c, nbPad, kb, c0 + (long)r * g.Ldc + c, Math.Min(64, nb - c), g.Alpha, beta);
                continue;
            }
            for (; r + 4 <= mb; r += 4)
                for (int c = 0; c < nbPad; c += 2 * W)
                    Micro4(aBlk + r * mStep, mStep, kStep, panel + c, nbPad, kb, c0 + (long)r * g.Ldc + c, g.Ldc, Math.Min(2 * W, nb - c), g.Alpha, beta);
            for (; r < mb; r++)
                for (int c = 0; c < nbPad; c += 2 * W)
                    Micro1(aBlk + r * mStep, kStep, panel + c, nbPad, kb, c0 + (long)r * g.Ldc + c, Math.Min(2 * W, nb - c), g.Alpha, beta);
        }
    }

    /// <summary>Stores alpha·acc + beta·C for up to 2W columns (beta 0: C not read).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreC(float* c, int cols, Vector<float> lo, Vector<float> hi, float alpha, float beta)
    {
        int W = Vector<float>.Count;
        lo *= alpha; hi *= alpha;
        if (cols == 2 * W)
        {
            if (beta != 0) { lo += Vector.Load(c) * beta; hi += Vector.Load(c + W) * beta; }
            lo.Store(c); hi.Store(c + W);
            return;
        }
        float* tmp = stackalloc float[2 * W];
        lo.Store(tmp); hi.Store(tmp + W);
        for (int j = 0; j < cols; j++) c[j] = beta == 0 ? tmp[j] : tmp[j] + beta * c[j];
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Micro4(float* a, long mStep, long kStep, float* p, int ldp, int kb, float* c, int ldc, int cols, float alpha, float beta)
    {
        int W = Vector<float>.Count;
        Vector<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        float* a1 = a + mStep, a2 = a1 + mStep, a3 = a2 + mStep;
        for (int kk = 0; kk < kb; kk++)
        {
            var b0 = Vector.Load(p + kk * ldp);
            var b1 = Vector.Load(p + kk * ldp + W);
            long ko = kk * kStep;
            var x = new Vector<float>(a[ko]);
            c00 = Vector.FusedMultiplyAdd(x, b0, c00); c01 = Vector.FusedMultiplyAdd(x, b1, c01);
            x = new Vector<float>(a1[ko]);
            c10 = Vector.FusedMultiplyAdd(x, b0, c10); c11 = Vector.FusedMultiplyAdd(x, b1, c11);
            x = new Vector<float>(a2[ko]);
            c20 = Vector.FusedMultiplyAdd(x, b0, c20); c21 = Vector.FusedMultiplyAdd(x, b1, c21);
            x = new Vector<float>(a3[ko]);
            c30 = Vector.FusedMultiplyAdd(x, b0, c30); c31 = Vector.FusedMultiplyAdd(x, b1, c31);
        }
        StoreC(c, cols, c00, c01, alpha, beta);
        StoreC(c + ldc, cols, c10, c11, alpha, beta);
        StoreC(c + 2L * ldc, cols, c20, c21, alpha, beta);
        StoreC(c + 3L * ldc, cols, c30, c31, alpha, beta);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Micro1(float* a, long kStep, float* p, int ldp, int kb, float* c, int cols, float alpha, float beta)
    {
        int W = Vector<float>.Count;
        Vector<float> c0 = default, c1 = default;
        for (int kk = 0; kk < kb; kk++)
        {
            var x = new Vector<float>(a[kk * kStep]);
            c0 = Vector.FusedMultiplyAdd(x, Vector.Load(p + kk * ldp), c0);
            c1 = Vector.FusedMultiplyAdd(x, Vector.Load(p + kk * ldp + W), c1);
        }
        StoreC(c, cols, c0, c1, alpha, beta);
    }

    /// <summary>Stores alpha·acc + beta·C for up to 64 columns (beta 0: C not read).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreC64(float* c, int cols, Vector512<float> x0, Vector512<float> x1, Vector512<float> x2, Vector512<float> x3, float alpha, float beta)
    {
        var al = Vector512.Create(alpha);
        x0 *= al; x1 *= al; x2 *= al; x3 *= al;
        if (cols == 64)
        {
            if (beta != 0)
            {
                var be = Vector512.Create(beta);
                x0 = Avx512F.FusedMultiplyAdd(Vector512.Load(c), be, x0); x1 = Avx512F.FusedMultiplyAdd(Vector512.Load(c + 16), be, x1);
                x2 = Avx512F.FusedMultiplyAdd(Vector512.Load(c + 32), be, x2); x3 = Avx512F.FusedMultiplyAdd(Vector512.Load(c + 48), be, x3);
            }
            x0.Store(c); x1.Store(c + 16); x2.Store(c + 32); x3.Store(c + 48);
            return;
        }
        float* tmp = stackalloc float[64];
        x0.Store(tmp); x1.Store(tmp + 16); x2.Store(tmp + 32); x3.Store(tmp + 48);
        for (int j = 0; j < cols; j++) c[j] = beta == 0 ? tmp[j] : tmp[j] + beta * c[j];
    }

    /// <summary>C[4×64] = alpha·A[4×kb]·P[kb×64] + beta·C with 16 zmm accumulators: 4 panel loads and 4 broadcasts per 16 FMAs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Micro4x64(float* a, long mStep, long kStep, float* p, int ldp, int kb, float* c, int ldc, int cols, float alpha, float beta)
    {
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector512<float> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default;
        Vector512<float> c30 = default, c31 = default, c32 = default, c33 = default;
        float* a1 = a + mStep, a2 = a1 + mStep, a3 = a2 + mStep;
        for (int kk = 0; kk < kb; kk++)
        {
            float* pk = p + (long)kk * ldp;
            var b0 = Vector512.Load(pk); var b1 = Vector512.Load(pk + 16); var b2 = Vector512.Load(pk + 32); var b3 = Vector512.Load(pk + 48);
            long ko = kk * kStep;
            var x = Vector512.Create(a[ko]);
            c00 = Avx512F.FusedMultiplyAdd(x, b0, c00); c01 = Avx512F.FusedMultiplyAdd(x, b1, c01);
            c02 = Avx512F.FusedMultiplyAdd(x, b2, c02); c03 = Avx512F.FusedMultiplyAdd(x, b3, c03);
            x = Vector512.Create(a1[ko]);
            c10 = Avx512F.FusedMultiplyAdd(x, b0, c10); c11 = Avx512F.FusedMultiplyAdd(x, b1, c11);
            c12 = Avx512F.FusedMultiplyAdd(x, b2, c12); c13 = Avx512F.FusedMultiplyAdd(x, b3, c13);
            x = Vector512.Create(a2[ko]);
            c20 = Avx512F.FusedMultiplyAdd(x, b0, c20); c21 = Avx512F.FusedMultiplyAdd(x, b1, c21);
            c22 = Avx512F.FusedMultiplyAdd(x, b2, c22); c23 = Avx512F.FusedMultiplyAdd(x, b3, c23);
            x = Vector512.Create(a3[ko]);
            c30 = Avx512F.FusedMultiplyAdd(x, b0, c30); c31 = Avx512F.FusedMultiplyAdd(x, b1, c31);
            c32 = Avx512F.FusedMultiplyAdd(x, b2, c32); c33 = Avx512F.FusedMultiplyAdd(x, b3, c33);
        }
        StoreC64(c, cols, c00, c01, c02, c03, alpha, beta);
        StoreC64(c + ldc, cols, c10, c11, c12, c13, alpha, beta);
        StoreC64(c + 2L * ldc, cols, c20, c21, c22, c23, alpha, beta);
        StoreC64(c + 3L * ldc, cols, c30, c31, c32, c33, alpha, beta);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Micro1x64(float* a, long kStep, float* p, int ldp, int kb, float* c, int cols, float alpha, float beta)
    {
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default;
        for (int kk = 0; kk < kb; kk++)
        {
            float* pk = p + (long)kk * ldp;
            var x = Vector512.Create(a[kk * kStep]);
            c0 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(pk), c0); c1 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(pk + 16), c1);
            c2 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(pk + 32), c2); c3 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(pk + 48), c3);
        }
        StoreC64(c, cols, c0, c1, c2, c3, alpha, beta);
    }
}
