using System.Numerics;
using System.Runtime.CompilerServices;

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

    public void Gemm(in GemmArgs g)
    {
        if (g.Batch == 0 || g.M == 0 || g.N == 0) return;
        var a = g;
        nint ap = (nint)B(g.A).Pointer, bp = (nint)B(g.B).Pointer, cp = (nint)B(g.C).Pointer;
        int rowBlocks = (g.M + GemmRowBlock - 1) / GemmRowBlock, colBlocks = (g.N + GemmColBlock - 1) / GemmColBlock;
        long items = (long)g.Batch * rowBlocks * colBlocks;
        Parallel.For(0L, items, item =>
        {
            int cb = (int)(item % colBlocks);
            long rest = item / colBlocks;
            int rb = (int)(rest % rowBlocks);
            int t = (int)(rest / rowBlocks);
            GemmBlock(a, t, rb * GemmRowBlock, cb * GemmColBlock, (float*)ap, (float*)bp, (float*)cp);
        });
    }

    private static void GemmBlock(in GemmArgs g, int t, int m0, int n0, float* A, float* Bm, float* C)
    {
        int W = Vector<float>.Count;
        int mb = Math.Min(GemmRowBlock, g.M - m0), nb = Math.Min(GemmColBlock, g.N - n0);
        int nbPad = (nb + 2 * W - 1) / (2 * W) * (2 * W);
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
}
