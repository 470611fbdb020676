using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;

namespace GpuAttention.Kernels.Ilgpu;

/// <summary>A compile-time integer: tile sizes are struct type arguments, so ILGPU specialises each kernel instance with them as
/// constants (fixed-size shared arrays, shifts for divisions, known loop trip counts).</summary>
internal interface ITile { int Value { get; } }

/// <summary>8.</summary>
internal readonly struct T8 : ITile { public int Value => 8; }
/// <summary>16.</summary>
internal readonly struct T16 : ITile { public int Value => 16; }
/// <summary>32.</summary>
internal readonly struct T32 : ITile { public int Value => 32; }
/// <summary>64.</summary>
internal readonly struct T64 : ITile { public int Value => 64; }
/// <summary>128.</summary>
internal readonly struct T128 : ITile { public int Value => 128; }

/// <summary>Scalar arguments of <see cref="GemmKernels.Gemm{TBM, TBN, TBK}"/>: the strided batched GEMM of
/// <c>GemmArgs</c> (element offsets and batch strides are 64-bit; a stride of 0 broadcasts an operand).</summary>
internal struct GemmParams
{
    public int Batch, M, N, K, Lda, Ldb, Ldc;
    /// <summary>Non-zero: A is stored K×M (op(A) = Aᵀ) / B is stored N×K.</summary>
    public int TransA, TransB;
    /// <summary>Number of BN-wide column tiles (ceil(N / BN)).</summary>
    public int TilesN;
    public long OffA, StrideA, OffB, StrideB, OffC, StrideC;
    public float Alpha, Beta;
}

/// <summary>
/// Tiled batched SGEMM for ILGPU, in the style of CUTLASS's SIMT kernels:
/// <c>C[t] = Alpha·op(A[t])·op(B[t]) + Beta·C[t]</c> (C not read when Beta = 0). Host code: <c>src/GpuAttention/Backends/Ilgpu/IlgpuGemm.cs</c>.
/// <para>
/// One thread group of (BM/4)·(BN/4) threads owns a BM×BN tile of C. Per step of BK along K it stages op(A)'s BM×BK and op(B)'s
/// BK×BN blocks in shared memory, both stored k-major (<c>As[k][m]</c>, <c>Bs[k][n]</c>) so that the inner product reads rows;
/// the leading strides are padded by 2 floats (BM+2, BN+2): when A is not transposed (B transposed) the global read runs along k
/// and the store into shared memory is a transpose, 16 consecutive k × 2 rows per warp; with a stride ≡ 2 (mod 32) those 32
/// stores hit 32 different banks (stride BM would put k and k+8 … on one bank). Every global load is zero-filled outside the
/// matrix, so tails off every tile need no special path.
/// </para>
/// <para>
/// Each thread accumulates a 4×4 register micro-tile as 16 scalars (a per-thread array would live in local memory, i.e. DRAM,
/// on a GPU). Its rows are ty, ty+BM/4, ty+2·BM/4, ty+3·BM/4 and its columns tx, tx+BN/4, …: strided, not contiguous, so that
/// per k a warp reads Bs at 16 consecutive addresses (conflict-free) and As at 2 addresses (broadcast), and the final stores of C
/// are coalesced along n for every (i, j). Per k: 8 shared loads, 16 FMAs.
/// </para>
/// <para>
/// Why these tiles (no GPU here to tune on; reasoning from the sm_80 / sm_90 limits): the 4×4 micro-tile needs 16 accumulators +
/// 8 operands + addressing, about 40–64 registers (see <c>bench/results/ptxas-report.txt</c>), so 256 threads × 64 regs = 16 K
/// registers of the SM's 64 K: 4 groups (1024 threads, 50 % occupancy) per SM on both sm_80 and sm_90, enough to hide
/// shared-memory latency for a SIMT FMA loop. Shared memory per group is BK·(BM+2 + BN+2)·4 B = 8.4 KB for 64×64×16, 33 KB for
/// 4 groups: far below sm_80's 164 KB and sm_90's 228 KB, so registers, not shared memory, bound occupancy. BK = 16 halves the
/// barriers per FLOP against BK = 8 at that small cost. The 64×64 tile is for large problems; 32×32 (64 threads) for small or
/// skinny ones (the MHA layer's per-head products), where 64×64 tiles would leave most of the 108 (A100) / 132 (H100) SMs idle.
/// A CUTLASS-sized 128×128 tile with 8×8 micro-tiles (more FMAs per shared load: 64 per 16 instead of 16 per 8) needs ~128
/// registers and is the next step once a GPU can time it; so is cp.async double buffering on sm_80+.
/// </para>
/// Grid: 1-D, a grid-stride loop over batch × row tiles × column tiles (no 65 535 limit of grid y/z on CUDA).
/// </summary>
internal static class GemmKernels
{
    /// <summary>Micro-tile rows and columns per thread (fixed: the accumulators are named scalars).</summary>
    public const int MicroTile = 4;

    /// <summary>Padding of the shared tiles' leading stride (see the class remarks).</summary>
    public const int SmemPad = 2;

    /// <summary>The kernel; group size must be (BM/4)·(BN/4), any grid size (≥ 1).</summary>
    public static void Gemm<TBM, TBN, TBK>(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, GemmParams p)
        where TBM : struct, ITile
        where TBN : struct, ITile
        where TBK : struct, ITile
    {
        int bm = default(TBM).Value, bn = default(TBN).Value, bk = default(TBK).Value;
        int threadsM = bm / MicroTile, threadsN = bn / MicroTile, threads = threadsM * threadsN;
        int sa = bm + SmemPad, sb = bn + SmemPad;
        var aS = SharedMemory.Allocate<float>(bk * (bm + SmemPad));
        var bS = SharedMemory.Allocate<float>(bk * (bn + SmemPad));

        int tid = Group.IdxX;
        int tx = tid % threadsN, ty = tid / threadsN;
        int tilesM = (p.M + bm - 1) / bm;
        long tilesPerBatch = (long)tilesM * p.TilesN;
        long total = tilesPerBatch * p.Batch;

        for (long blk = Grid.IdxX; blk < total; blk += Grid.DimX)
        {
            long t = blk / tilesPerBatch;
            long r = blk - t * tilesPerBatch;
            int m0 = (int)(r / p.TilesN) * bm, n0 = (int)(r % p.TilesN) * bn;
            long baseA = p.OffA + t * p.StrideA, baseB = p.OffB + t * p.StrideB, baseC = p.OffC + t * p.StrideC;

            float c00 = 0, c01 = 0, c02 = 0, c03 = 0;
            float c10 = 0, c11 = 0, c12 = 0, c13 = 0;
            float c20 = 0, c21 = 0, c22 = 0, c23 = 0;
            float c30 = 0, c31 = 0, c32 = 0, c33 = 0;

            for (int k0 = 0; k0 < p.K; k0 += bk)
            {
                // Stage op(A)[m0.., k0..] as aS[k][m]: read along the contiguous dimension of A.
                for (int e = tid; e < bm * bk; e += threads)
                {
                    int kk, mm;
                    if (p.TransA != 0) { mm = e % bm; kk = e / bm; }
                    else { kk = e % bk; mm = e / bk; }
                    int gm = m0 + mm, gk = k0 + kk;
                    float v = 0f;
                    if (gm < p.M & gk < p.K)
                        v = p.TransA != 0 ? a[baseA + (long)gk * p.Lda + gm] : a[baseA + (long)gm * p.Lda + gk];
                    aS[kk * sa + mm] = v;
                }
                // Stage op(B)[k0.., n0..] as bS[k][n].
                for (int e = tid; e < bk * bn; e += threads)
                {
                    int kk, nn;
                    if (p.TransB != 0) { kk = e % bk; nn = e / bk; }
                    else { nn = e % bn; kk = e / bn; }
                    int gn = n0 + nn, gk = k0 + kk;
                    float v = 0f;
                    if (gn < p.N & gk < p.K)
                        v = p.TransB != 0 ? b[baseB + (long)gn * p.Ldb + gk] : b[baseB + (long)gk * p.Ldb + gn];
                    bS[kk * sb + nn] = v;
                }
                Group.Barrier();

                for (int kk = 0; kk < bk; kk++)
                {
                    int ia = kk * sa + ty, ib = kk * sb + tx;
                    float a0 = aS[ia], a1 = aS[ia + threadsM], a2 = aS[ia + 2 * threadsM], a3 = aS[ia + 3 * threadsM];
                    float b0 = bS[ib], b1 = bS[ib + threadsN], b2 = bS[ib + 2 * threadsN], b3 = bS[ib + 3 * threadsN];
                    c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
                    c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
                    c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
                    c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
                }
                Group.Barrier();
            }

            int r0 = m0 + ty, q0 = n0 + tx;
            int r1 = r0 + threadsM, r2 = r1 + threadsM, r3 = r2 + threadsM;
            int q1 = q0 + threadsN, q2 = q1 + threadsN, q3 = q2 + threadsN;
            Store(c, p, baseC, r0, q0, c00); Store(c, p, baseC, r0, q1, c01); Store(c, p, baseC, r0, q2, c02); Store(c, p, baseC, r0, q3, c03);
            Store(c, p, baseC, r1, q0, c10); Store(c, p, baseC, r1, q1, c11); Store(c, p, baseC, r1, q2, c12); Store(c, p, baseC, r1, q3, c13);
            Store(c, p, baseC, r2, q0, c20); Store(c, p, baseC, r2, q1, c21); Store(c, p, baseC, r2, q2, c22); Store(c, p, baseC, r2, q3, c23);
            Store(c, p, baseC, r3, q0, c30); Store(c, p, baseC, r3, q1, c31); Store(c, p, baseC, r3, q2, c32); Store(c, p, baseC, r3, q3, c33);
        }
    }

    /// <summary>C[m, n] = Alpha·acc (+ Beta·C[m, n] when Beta ≠ 0: BLAS semantics, C is not read otherwise), inside the matrix only.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(ArrayView<float> c, GemmParams p, long baseC, int m, int n, float acc)
    {
        if (m >= p.M | n >= p.N) return;
        long i = baseC + (long)m * p.Ldc + n;
        c[i] = p.Beta == 0f ? p.Alpha * acc : p.Alpha * acc + p.Beta * c[i];
    }
}
