// Separable Gaussian glimpse (DRAW, Gregor et al. 2015; Kosiorek's gaussian_glimpse) for ILGPU: forward and backward.
// The ILGPU port of kernels/glimpse.cl (same passes, same operations in the same order); host side:
// src/GpuAttention/Backends/Ilgpu/IlgpuGlimpse.cs.
//
// Layout: image [N,C,H,W], params [N,6] = (uy, sy, dy, ux, sx, dx), out [N,C,h,w];
//         filterbanks ay [N,H,h] and ax [N,W,w]: A[c, r] = exp(-0.5((c - (u + r d))/s)^2) / (sum_c exp(...) + 1e-8),
//         weights below 1e-15 stored as 0 (products of two would be denormal: flushed on GPUs, slow on CPUs).
// Passes:
//   Filterbank            both filterbanks of every image, once per image (shared by all channels); one thread per column
//   Gemm                  strided batched GEMM with an in-kernel sum over sub-batches (the channel sum of the backward) and
//                         an optional per-batch scale (DRAW's gamma); every product of the forward and backward is one
//                         launch of it with other strides
//   FilterbankBackward    dAy, dAx -> grad_params through the normalisation, one group per image, fixed-order reductions
//   DrawParams / DrawParamsBackward   DRAW's read parametrisation and its gradient
// No atomics: every reduction has a fixed order (deterministic).
//
// Gemm tiles: a 32 x 32 output tile per group of 8 x 8 threads, each thread a 4 x 4 register micro-tile held in sixteen
// scalars (per-thread arrays would land in local memory on a GPU), K staged 16 deep in shared memory (2 x 2 KiB). Per
// K step a thread reads 4 + 4 shared values for 16 FMAs. The glimpse's matrices are small (h, w of 5 to 64, H, W of tens to
// hundreds), so 32-wide tiles waste little on tails. ptxas (CUDA 11.8, -v) reports 48 registers, no spills and 4 KiB of
// shared memory for sm_80 and sm_90: 21 groups of 64 threads fit an SM's 64 K registers (two thirds occupancy), enough
// warps to hide the shared-memory latency of this small-K product.

using ILGPU;
using ILGPU.Algorithms;

namespace GpuAttention.Kernels.Ilgpu;

/// <summary>Image and glimpse sizes of a glimpse launch: image H × W, glimpse Gh × Gw.</summary>
internal struct GlimpseDims
{
    public int H, W, Gh, Gw;
}

/// <summary>
/// Strides of one <see cref="GlimpseKernels.Gemm"/> launch: C[b][i, j] = scale[b / DivS] · Σ_{s &lt; NSum} Σ_{k &lt; K} A(b, s, i, k)·B(b, s, k, j),
/// A(b, s, i, k) = A[(b / DivA)·BsA + s·SsA + i·RsA + k·CsA], B likewise, C[b·BsC + i·Ldc + j]; scale = 1 unless HasScale.
/// </summary>
internal struct GlimpseGemmParams
{
    public int M, Nc, K, NSum, DivA, DivB, DivS, HasScale;
    /// <summary>⌈Nc / TileN⌉: grid dimension X is batch × TilesN (no 65535 limit on the batch, which Y and Z have on CUDA).</summary>
    public int TilesN;
    public long BsA, SsA, RsA, CsA, BsB, SsB, RsB, CsB, BsC, Ldc;
}

/// <summary>Gradients of one axis's (u, s, d) and Σ dA∘A (dL/d log γ when the read was scaled by γ).</summary>
internal struct GlimpseAxisGrad
{
    public float U, S, D, Tot;
}

/// <summary>ILGPU kernels of the separable Gaussian glimpse (see the file header for the passes and tiles).</summary>
internal static class GlimpseKernels
{
    /// <summary>GEMM output tile rows / columns per group.</summary>
    public const int TileM = 32, TileN = 32;
    /// <summary>GEMM reduction slice staged in shared memory.</summary>
    public const int TileK = 16;
    /// <summary>GEMM group: 8 × 8 threads, each a 4 × 4 micro-tile (rows ty + 8a, columns tx + 8b).</summary>
    public const int WgM = 8, WgN = 8;
    /// <summary>Threads of the per-image filterbank-backward reduction (a power of two).</summary>
    public const int ReduceWg = 64;
    /// <summary>The normalisation guard of the contract.</summary>
    public const float Eps = 1e-8f;
    /// <summary>Normalised weights below this are stored as 0.</summary>
    public const float Flush = 1e-15f;

    /// <summary>Both filterbanks of every image: index (r, 2n + axis) over (max(h, w), 2N); thread r builds column r of one axis.</summary>
    public static void Filterbank(Index2D index, ArrayView<float> prm, ArrayView<float> ay, ArrayView<float> ax, GlimpseDims d)
    {
        int r = index.X, n = index.Y >> 1, axis = index.Y & 1;
        int size = axis != 0 ? d.W : d.H, m = axis != 0 ? d.Gw : d.Gh;
        if (r >= m) return;
        long pb = (long)n * 6 + axis * 3;
        float mu = prm[pb] + r * prm[pb + 2];
        float s = prm[pb + 1];
        var a = axis != 0 ? ax : ay;
        long ab = (long)n * size * m + r;
        float z = 0.0f;
        for (int c = 0; c < size; c++)
        {
            float t = (c - mu) / s;
            float e = XMath.Exp(-0.5f * t * t);
            a[ab + (long)c * m] = e;
            z += e;
        }
        float inv = 1.0f / (z + Eps);
        for (int c = 0; c < size; c++)
        {
            float v = a[ab + (long)c * m] * inv;
            a[ab + (long)c * m] = v < Flush ? 0.0f : v;
        }
    }

    private static void Store(ArrayView<float> cm, long cb, int gi, int gj, GlimpseGemmParams p, float v)
    {
        if (gi < p.M && gj < p.Nc) cm[cb + gi * p.Ldc + gj] = v;
    }

    /// <summary>
    /// Strided batched GEMM (see <see cref="GlimpseGemmParams"/>). Grid (batch·⌈Nc/TileN⌉, ⌈M/TileM⌉), group (WgN, WgM).
    /// Tiles are staged zero-padded in shared memory, consecutive threads walking the operand's unit-stride direction.
    /// </summary>
    public static void Gemm(ArrayView<float> a, ArrayView<float> b, ArrayView<float> cm, ArrayView<float> scale, GlimpseGemmParams p)
    {
        var As = SharedMemory.Allocate<float>(TileK * TileM);   // As[k][i]
        var Bs = SharedMemory.Allocate<float>(TileK * TileN);   // Bs[k][j]
        int tx = Group.IdxX, ty = Group.IdxY;
        int tid = ty * WgN + tx;
        const int nThreads = WgM * WgN;
        int bi = Grid.IdxX / p.TilesN;
        int i0 = Grid.IdxY * TileM, j0 = (Grid.IdxX - bi * p.TilesN) * TileN;

        float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;

        for (int s = 0; s < p.NSum; s++)
        {
            long ab = (long)(bi / p.DivA) * p.BsA + s * p.SsA;
            long bb = (long)(bi / p.DivB) * p.BsB + s * p.SsB;
            for (int k0 = 0; k0 < p.K; k0 += TileK)
            {
                for (int idx = tid; idx < TileK * TileM; idx += nThreads)
                {
                    int kk, ii;
                    if (p.CsA == 1) { ii = idx / TileK; kk = idx - ii * TileK; } else { kk = idx / TileM; ii = idx - kk * TileM; }
                    int gi = i0 + ii, gk = k0 + kk;
                    As[kk * TileM + ii] = gi < p.M && gk < p.K ? a[ab + gi * p.RsA + gk * p.CsA] : 0.0f;
                }
                for (int idx = tid; idx < TileK * TileN; idx += nThreads)
                {
                    int kk, jj;
                    if (p.RsB == 1) { jj = idx / TileK; kk = idx - jj * TileK; } else { kk = idx / TileN; jj = idx - kk * TileN; }
                    int gj = j0 + jj, gk = k0 + kk;
                    Bs[kk * TileN + jj] = gj < p.Nc && gk < p.K ? b[bb + gk * p.RsB + gj * p.CsB] : 0.0f;
                }
                Group.Barrier();
                for (int kk = 0; kk < TileK; kk++)
                {
                    int ao = kk * TileM + ty, bo = kk * TileN + tx;
                    float a0 = As[ao], a1 = As[ao + WgM], a2 = As[ao + 2 * WgM], a3 = As[ao + 3 * WgM];
                    float b0 = Bs[bo], b1 = Bs[bo + WgN], b2 = Bs[bo + 2 * WgN], b3 = Bs[bo + 3 * WgN];
                    c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
                    c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
                    c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
                    c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
                }
                Group.Barrier();
            }
        }

        float alpha = p.HasScale != 0 ? scale[bi / p.DivS] : 1.0f;
        long cb = (long)bi * p.BsC;
        int r0 = i0 + ty, q0 = j0 + tx;
        Store(cm, cb, r0, q0, p, alpha * c00); Store(cm, cb, r0, q0 + WgN, p, alpha * c01);
        Store(cm, cb, r0, q0 + 2 * WgN, p, alpha * c02); Store(cm, cb, r0, q0 + 3 * WgN, p, alpha * c03);
        Store(cm, cb, r0 + WgM, q0, p, alpha * c10); Store(cm, cb, r0 + WgM, q0 + WgN, p, alpha * c11);
        Store(cm, cb, r0 + WgM, q0 + 2 * WgN, p, alpha * c12); Store(cm, cb, r0 + WgM, q0 + 3 * WgN, p, alpha * c13);
        Store(cm, cb, r0 + 2 * WgM, q0, p, alpha * c20); Store(cm, cb, r0 + 2 * WgM, q0 + WgN, p, alpha * c21);
        Store(cm, cb, r0 + 2 * WgM, q0 + 2 * WgN, p, alpha * c22); Store(cm, cb, r0 + 2 * WgM, q0 + 3 * WgN, p, alpha * c23);
        Store(cm, cb, r0 + 3 * WgM, q0, p, alpha * c30); Store(cm, cb, r0 + 3 * WgM, q0 + WgN, p, alpha * c31);
        Store(cm, cb, r0 + 3 * WgM, q0 + 2 * WgN, p, alpha * c32); Store(cm, cb, r0 + 3 * WgM, q0 + 3 * WgN, p, alpha * c33);
    }

    /// <summary>
    /// One axis of one image: the gradients of (u, s, d) from dA and A (both [size, m] at <paramref name="off"/>), summed over
    /// the filter columns by the group; also Σ_r Σ_c dA∘A. Every thread of the group calls this (it contains barriers).
    /// </summary>
    private static GlimpseAxisGrad AxisBackward(ArrayView<float> a, ArrayView<float> da, long off, int size, int m, float u, float s, float d, ArrayView<float> red)
    {
        int tid = Group.IdxX;
        float gu = 0.0f, gs = 0.0f, gd = 0.0f, tot = 0.0f;
        for (int r = tid; r < m; r += ReduceWg)
        {
            float s1 = 0.0f;
            for (int c = 0; c < size; c++) s1 += da[off + (long)c * m + r] * a[off + (long)c * m + r];
            tot += s1;
            float mu = u + r * d;
            float dmu = 0.0f, dsr = 0.0f;
            for (int c = 0; c < size; c++)
            {
                float av = a[off + (long)c * m + r];
                if (av == 0.0f) continue;          // e underflowed: e·t → 0 while t may overflow (tiny s, huge d): no 0·inf
                float t = (c - mu) / s;
                float ge = av * (da[off + (long)c * m + r] - s1) * t;
                dmu += ge;
                dsr += ge * t;
            }
            gu += dmu; gd += r * dmu; gs += dsr;
        }
        red[tid] = gu; red[ReduceWg + tid] = gs; red[2 * ReduceWg + tid] = gd; red[3 * ReduceWg + tid] = tot;
        Group.Barrier();
        for (int stride = ReduceWg / 2; stride > 0; stride >>= 1)
        {
            if (tid < stride)
                for (int q = 0; q < 4; q++) red[q * ReduceWg + tid] += red[q * ReduceWg + tid + stride];
            Group.Barrier();
        }
        GlimpseAxisGrad g;
        g.U = red[0] / s; g.S = red[ReduceWg] / s; g.D = red[2 * ReduceWg] / s; g.Tot = red[3 * ReduceWg];
        Group.Barrier();                           // red is reused by the next call
        return g;
    }

    /// <summary>
    /// grad_params [N, 6] (and, with <paramref name="hasGlg"/>, dL/d log γ [N]) from the channel-summed dAy [N,H,h], dAx [N,W,w]
    /// and the filterbanks. Grid N, group <see cref="ReduceWg"/>.
    /// </summary>
    public static void FilterbankBackward(ArrayView<float> prm, ArrayView<float> ay, ArrayView<float> ax, ArrayView<float> day, ArrayView<float> dax,
        ArrayView<float> gradParams, ArrayView<float> gradLogGamma, int hasGlg, GlimpseDims dims)
    {
        var red = SharedMemory.Allocate<float>(4 * ReduceWg);
        int n = Grid.IdxX;
        long pb = (long)n * 6;
        var gy = AxisBackward(ay, day, (long)n * dims.H * dims.Gh, dims.H, dims.Gh, prm[pb], prm[pb + 1], prm[pb + 2], red);
        var gx = AxisBackward(ax, dax, (long)n * dims.W * dims.Gw, dims.W, dims.Gw, prm[pb + 3], prm[pb + 4], prm[pb + 5], red);
        if (Group.IdxX == 0)
        {
            gradParams[pb] = gy.U; gradParams[pb + 1] = gy.S; gradParams[pb + 2] = gy.D;
            gradParams[pb + 3] = gx.U; gradParams[pb + 4] = gx.S; gradParams[pb + 5] = gx.D;
            if (hasGlg != 0) gradLogGamma[n] = gy.Tot;
        }
    }

    /// <summary>
    /// DRAW (Gregor et al. 2015, §3.2): draw [N,5] = (g̃X, g̃Y, log σ², log δ̃, log γ) → params [N,6], γ [N], one thread per
    /// image; 1-based paper coordinates converted to 0-based pixels (see Device.DrawParams).
    /// </summary>
    public static void DrawParams(Index1D n, ArrayView<float> draw, ArrayView<float> prm, ArrayView<float> gamma, GlimpseDims d)
    {
        long db = (long)n.X * 5, pb = (long)n.X * 6;
        float gx = (d.W + 1) * 0.5f * (draw[db] + 1.0f), gy = (d.H + 1) * 0.5f * (draw[db + 1] + 1.0f);
        float sigma = XMath.Exp(0.5f * draw[db + 2]), delta = XMath.Exp(draw[db + 3]);
        float span = (d.H > d.W ? d.H : d.W) - 1.0f;
        float dx = span / (d.Gw > 1 ? d.Gw - 1 : 1) * delta, dy = span / (d.Gh > 1 ? d.Gh - 1 : 1) * delta;
        prm[pb] = gy - 1.0f - (d.Gh - 1) * 0.5f * dy; prm[pb + 1] = sigma; prm[pb + 2] = dy;
        prm[pb + 3] = gx - 1.0f - (d.Gw - 1) * 0.5f * dx; prm[pb + 4] = sigma; prm[pb + 5] = dx;
        gamma[n] = XMath.Exp(draw[db + 4]);
    }

    /// <summary>Backward of <see cref="DrawParams"/>: grad_draw [N,5] from grad_params [N,6] and dL/d log γ [N], one thread per image.</summary>
    public static void DrawParamsBackward(Index1D n, ArrayView<float> draw, ArrayView<float> gradParams, ArrayView<float> gradLogGamma, ArrayView<float> gradDraw, GlimpseDims d)
    {
        long db = (long)n.X * 5, pb = (long)n.X * 6;
        float sigma = XMath.Exp(0.5f * draw[db + 2]), delta = XMath.Exp(draw[db + 3]);
        float span = (d.H > d.W ? d.H : d.W) - 1.0f;
        float dx = span / (d.Gw > 1 ? d.Gw - 1 : 1) * delta, dy = span / (d.Gh > 1 ? d.Gh - 1 : 1) * delta;
        float g0 = gradParams[pb], g1 = gradParams[pb + 1], g2 = gradParams[pb + 2], g3 = gradParams[pb + 3], g4 = gradParams[pb + 4], g5 = gradParams[pb + 5];
        gradDraw[db] = g3 * (d.W + 1) * 0.5f;
        gradDraw[db + 1] = g0 * (d.H + 1) * 0.5f;
        gradDraw[db + 2] = (g1 + g4) * sigma * 0.5f;
        gradDraw[db + 3] = (g5 - (d.Gw - 1) * 0.5f * g3) * dx + (g2 - (d.Gh - 1) * 0.5f * g0) * dy;
        gradDraw[db + 4] = gradLogGamma[n];
    }
}
