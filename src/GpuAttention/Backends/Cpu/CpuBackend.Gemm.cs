using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GpuAttention.Backends.Cpu;

/// <summary>
/// Strided batched GEMM on the CPU (GotoBLAS-style blocking, simplified): work items are (batch, group of rows, block of
/// <see cref="GemmColBlock"/> columns) spread over all cores, with as many rows per item as keep about 4 items per core
/// (all M rows when the batch and the column blocks give enough items). Each item packs a <see cref="GemmDepthBlock"/>×GemmColBlock
/// panel of op(B) contiguously once per depth block (which also resolves the transpose) and sweeps all its rows over one
/// 64-column micro-panel (32 KB: it stays in L1) before the next, with a register-blocked micro-kernel of 4 rows × 64
/// columns (AVX-512, 16 zmm accumulators) or 4 rows × 2 SIMD vectors (portable) and broadcast-FMAs, whose accumulators
/// stay in registers (see <see cref="Put(float*, Vector512{float}, float, float)"/>): the 1024³ product went from 53–66 to
/// 294–307 GFLOP/s on the 2-core AVX-512 VM (417 GFLOP/s FMA peak).
/// </summary>
internal sealed unsafe partial class CpuBackend : IGemmBackend
{
    internal const int GemmRowBlock = 64;     // rows per item are a multiple of this
    internal const int GemmColBlock = 128;
    internal const int GemmDepthBlock = 128;  // a 64-column micro-panel of the packed B is GemmDepthBlock·64·4 B = 32 KB

    [ThreadStatic] private static float[]? t_gemmPanel;

    /// <summary>True where the AVX-512 micro-kernel (4 rows × 64 columns, 16 zmm accumulators) runs; tests switch it off.</summary>
    internal static bool FastGemm = Avx512F.IsSupported && Vector512.IsHardwareAccelerated;

    /// <summary>What a GEMM work item reads: <see cref="GemmArgs"/> without its buffers (their pointers instead), and the block counts.</summary>
    private struct GemmCtx
    {
        public float* A, B, C;
        public long OffA, StrideA, OffB, StrideB, OffC, StrideC;
        public int M, N, K, Lda, Ldb, Ldc, RowBlocks, ColBlocks, RowsPerItem;
        public bool TransA, TransB;
        public float Alpha, Beta;
    }

    public void Gemm(in GemmArgs g)
    {
        if (g.Batch == 0 || g.M == 0 || g.N == 0) return;
        int colBlocks = (g.N + GemmColBlock - 1) / GemmColBlock, rowUnits = (g.M + GemmRowBlock - 1) / GemmRowBlock;
        long strips = (long)g.Batch * colBlocks;
        int rowGroups = (int)Math.Clamp((4L * CpuWorkers.Threads + strips - 1) / strips, 1, rowUnits);
        int rowsPerItem = (rowUnits + rowGroups - 1) / rowGroups * GemmRowBlock;
        int rowBlocks = (g.M + rowsPerItem - 1) / rowsPerItem;
        int items = WorkItems(strips * rowBlocks, "GEMM blocks");
        var ctx = new GemmCtx
        {
            A = B(g.A).Pointer, B = B(g.B).Pointer, C = B(g.C).Pointer,
            OffA = g.OffA, StrideA = g.StrideA, OffB = g.OffB, StrideB = g.StrideB, OffC = g.OffC, StrideC = g.StrideC,
            M = g.M, N = g.N, K = g.K, Lda = g.Lda, Ldb = g.Ldb, Ldc = g.Ldc, RowBlocks = rowBlocks, ColBlocks = colBlocks, RowsPerItem = rowsPerItem,
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
        GemmBlock(c, t, rb * c.RowsPerItem, cb * GemmColBlock, c.A, c.B, c.C);
    }

    private static void GemmBlock(in GemmCtx g, int t, int m0, int n0, float* A, float* Bm, float* C)
    {
        int W = Vector<float>.Count;
        int mb = Math.Min(g.RowsPerItem, g.M - m0), nb = Math.Min(GemmColBlock, g.N - n0);
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
        // 64-byte aligned: every zmm load of the panel within one cache line (a pinned array is only 8- or 16-byte aligned,
        // and split loads halved the micro-kernel's rate).
        var panelArr = t_gemmPanel ??= GC.AllocateArray<float>(GemmDepthBlock * (GemmColBlock + 64) + 4 * 64 + 16, pinned: true);
        float* panel = (float*)(((nint)Unsafe.AsPointer(ref panelArr[0]) + 63) & ~(nint)63);
        float* tile = panel + GemmDepthBlock * (GemmColBlock + 64);   // 4 rows × tileW: C of a narrower last micro-panel
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
            // One micro-panel of columns at a time over all the item's rows: the micro-panel stays in L1. The micro-kernels
            // write whole tiles (tileW columns); a last, narrower micro-panel goes through the tile scratch and is copied.
            for (int c = 0; c < nbPad; c += tileW)
            {
                int cols = Math.Min(tileW, nb - c);
                float* pc = panel + c, cc = c0 + c;
                for (int r = 0; r < mb; r += 4)
                {
                    int rows = Math.Min(4, mb - r);
                    float* a = aBlk + r * mStep, cr = cc + (long)r * g.Ldc, dst = cr;
                    long ldc = g.Ldc;
                    if (cols < tileW)
                    {
                        dst = tile; ldc = tileW;
                        if (beta != 0f)
                            for (int i = 0; i < rows; i++) new ReadOnlySpan<float>(cr + i * g.Ldc, cols).CopyTo(new Span<float>(tile + i * tileW, cols));
                    }
                    if (fast)
                    {
                        if (rows == 4) Micro4x64(a, mStep, kStep, pc, nbPad, kb, dst, ldc, g.Alpha, beta);
                        else for (int i = 0; i < rows; i++) Micro1x64(a + i * mStep, kStep, pc, nbPad, kb, dst + i * ldc, g.Alpha, beta);
                    }
                    else
                    {
                        if (rows == 4) Micro4(a, mStep, kStep, pc, nbPad, kb, dst, ldc, g.Alpha, beta);
                        else for (int i = 0; i < rows; i++) Micro1(a + i * mStep, kStep, pc, nbPad, kb, dst + i * ldc, g.Alpha, beta);
                    }
                    if (cols < tileW)
                        for (int i = 0; i < rows; i++) new ReadOnlySpan<float>(tile + i * tileW, cols).CopyTo(new Span<float>(cr + i * g.Ldc, cols));
                }
            }
        }
    }

    // The micro-kernels end in inline stores, no call: accumulators live across a call (a store helper taking them by
    // value) made the JIT keep 12–16 of the 16 on the stack inside the k loop (a store after every FMA, reloads every
    // step): ~4x slower (~50 GFLOP/s per core against ~180).

    /// <summary>c[0..V) = alpha·x + beta·c[0..V) (beta 0: c not read).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put(float* c, Vector<float> x, float alpha, float beta) =>
        (beta == 0f ? x * alpha : x * alpha + Vector.Load(c) * beta).Store(c);

    /// <summary>c[0..16) = alpha·x + beta·c[0..16) (beta 0: c not read).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put(float* c, Vector512<float> x, float alpha, float beta) =>
        (beta == 0f ? x * alpha : Avx512F.FusedMultiplyAdd(Vector512.Load(c), Vector512.Create(beta), x * alpha)).Store(c);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Micro4(float* a, long mStep, long kStep, float* p, int ldp, int kb, float* c, long ldc, float alpha, float beta)
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
        Put(c, c00, alpha, beta); Put(c + W, c01, alpha, beta);
        Put(c + ldc, c10, alpha, beta); Put(c + ldc + W, c11, alpha, beta);
        Put(c + 2 * ldc, c20, alpha, beta); Put(c + 2 * ldc + W, c21, alpha, beta);
        Put(c + 3 * ldc, c30, alpha, beta); Put(c + 3 * ldc + W, c31, alpha, beta);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Micro1(float* a, long kStep, float* p, int ldp, int kb, float* c, float alpha, float beta)
    {
        int W = Vector<float>.Count;
        Vector<float> c0 = default, c1 = default;
        for (int kk = 0; kk < kb; kk++)
        {
            var x = new Vector<float>(a[kk * kStep]);
            c0 = Vector.FusedMultiplyAdd(x, Vector.Load(p + kk * ldp), c0);
            c1 = Vector.FusedMultiplyAdd(x, Vector.Load(p + kk * ldp + W), c1);
        }
        Put(c, c0, alpha, beta); Put(c + W, c1, alpha, beta);
    }

    /// <summary>C[4×64] = alpha·A[4×kb]·P[kb×64] + beta·C with 16 zmm accumulators: 4 panel loads and 4 broadcasts per 16 FMAs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Micro4x64(float* a, long mStep, long kStep, float* p, int ldp, int kb, float* c, long ldc, float alpha, float beta)
    {
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector512<float> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default;
        Vector512<float> c30 = default, c31 = default, c32 = default, c33 = default;
        // Rows 1..3 of A as index registers and pointer steps in nint (as ScoreTile4x64): the loop keeps to two pointer adds
        // and its test beside the loads and FMAs. (The indexed form, a[kk·kStep] per row, ran at ~100 GFLOP/s of 417.)
        nint r1 = (nint)mStep, r2 = 2 * (nint)mStep, r3 = 3 * (nint)mStep, ks = (nint)kStep, ps = ldp;
        float* pa = a;
        for (float* pk = p, pEnd = p + (nint)kb * ldp; pk < pEnd; pk += ps, pa += ks)
        {
            var b0 = Vector512.Load(pk); var b1 = Vector512.Load(pk + 16); var b2 = Vector512.Load(pk + 32); var b3 = Vector512.Load(pk + 48);
            var x = Vector512.Create(pa[0]);
            c00 = Avx512F.FusedMultiplyAdd(x, b0, c00); c01 = Avx512F.FusedMultiplyAdd(x, b1, c01);
            c02 = Avx512F.FusedMultiplyAdd(x, b2, c02); c03 = Avx512F.FusedMultiplyAdd(x, b3, c03);
            x = Vector512.Create(pa[r1]);
            c10 = Avx512F.FusedMultiplyAdd(x, b0, c10); c11 = Avx512F.FusedMultiplyAdd(x, b1, c11);
            c12 = Avx512F.FusedMultiplyAdd(x, b2, c12); c13 = Avx512F.FusedMultiplyAdd(x, b3, c13);
            x = Vector512.Create(pa[r2]);
            c20 = Avx512F.FusedMultiplyAdd(x, b0, c20); c21 = Avx512F.FusedMultiplyAdd(x, b1, c21);
            c22 = Avx512F.FusedMultiplyAdd(x, b2, c22); c23 = Avx512F.FusedMultiplyAdd(x, b3, c23);
            x = Vector512.Create(pa[r3]);
            c30 = Avx512F.FusedMultiplyAdd(x, b0, c30); c31 = Avx512F.FusedMultiplyAdd(x, b1, c31);
            c32 = Avx512F.FusedMultiplyAdd(x, b2, c32); c33 = Avx512F.FusedMultiplyAdd(x, b3, c33);
        }
        Put(c, c00, alpha, beta); Put(c + 16, c01, alpha, beta); Put(c + 32, c02, alpha, beta); Put(c + 48, c03, alpha, beta);
        c += ldc; Put(c, c10, alpha, beta); Put(c + 16, c11, alpha, beta); Put(c + 32, c12, alpha, beta); Put(c + 48, c13, alpha, beta);
        c += ldc; Put(c, c20, alpha, beta); Put(c + 16, c21, alpha, beta); Put(c + 32, c22, alpha, beta); Put(c + 48, c23, alpha, beta);
        c += ldc; Put(c, c30, alpha, beta); Put(c + 16, c31, alpha, beta); Put(c + 32, c32, alpha, beta); Put(c + 48, c33, alpha, beta);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Micro1x64(float* a, long kStep, float* p, int ldp, int kb, float* c, float alpha, float beta)
    {
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default;
        for (int kk = 0; kk < kb; kk++)
        {
            float* pk = p + (long)kk * ldp;
            var x = Vector512.Create(a[kk * kStep]);
            c0 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(pk), c0); c1 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(pk + 16), c1);
            c2 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(pk + 32), c2); c3 = Avx512F.FusedMultiplyAdd(x, Vector512.Load(pk + 48), c3);
        }
        Put(c, c0, alpha, beta); Put(c + 16, c1, alpha, beta); Put(c + 32, c2, alpha, beta); Put(c + 48, c3, alpha, beta);
    }
}
