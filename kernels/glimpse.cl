// Separable Gaussian glimpse (DRAW, Gregor et al. 2015; Kosiorek's gaussian_glimpse): forward and backward.
//
// Written in the prelude's words only, so the same text compiles as OpenCL C 1.2 and as CUDA (NVRTC).
//
// Layout: image [N,C,H,W], params [N,6] = (uy, sy, dy, ux, sx, dx), out [N,C,h,w];
//         filterbanks ay [N,H,h] and ax [N,W,w]: A[c, r] = exp(-0.5((c - (u + r d))/s)^2) / (sum_c exp(...) + 1e-8).
// Passes (host side: KernelBackend.Glimpse.cs):
//   glimpse_filterbank           both filterbanks of every image (one work-item per filter column)
//   glimpse_gemm                 strided batched GEMM with an in-kernel sum over sub-batches (the channel sum of the
//                                backward) and an optional per-batch scale (DRAW's gamma); every product of the
//                                forward and backward is one launch of it with different strides
//   glimpse_filterbank_backward  dAy, dAx -> grad_params through the normalisation, one work-group per image
//   draw_params / draw_params_backward   DRAW's parametrisation and its gradient
// No atomics: every reduction has a fixed order (deterministic).
//
// Compile-time defines (glimpse_gemm):
//   TILE_M, TILE_N  output tile per work-group (default 32 x 32)
//   TILE_K          reduction tile staged in local memory (default 16)
//   WPT_M, WPT_N    outputs per work-item along M and N (default 4 x 4); work-group = (TILE_N/WPT_N) x (TILE_M/WPT_M)
// glimpse_filterbank_backward: REDUCE_WG work-items per work-group (power of two, default 64).

#ifndef TILE_M
#define TILE_M 32
#endif
#ifndef TILE_N
#define TILE_N 32
#endif
#ifndef TILE_K
#define TILE_K 16
#endif
#ifndef WPT_M
#define WPT_M 4
#endif
#ifndef WPT_N
#define WPT_N 4
#endif
#ifndef REDUCE_WG
#define REDUCE_WG 64
#endif
#define GLIMPSE_EPS 1e-8f
// Normalised weights below this are stored as 0: products of two of them would be denormal (slow on CPUs, flushed on GPUs).
#ifndef GLIMPSE_FLUSH
#define GLIMPSE_FLUSH 1e-15f
#endif

#define WG_M (TILE_M / WPT_M)
#define WG_N (TILE_N / WPT_N)

// Grid: dim 0 over filter columns r (>= max(h, w)), dim 1 = N * 2 (image n, axis 0 = y, 1 = x).
KERNEL glimpse_filterbank(GLOBAL const float* RESTRICT params, GLOBAL float* RESTRICT ay, GLOBAL float* RESTRICT ax,
                          int H, int W, int h, int w)
{
    const int r = GID(0);
    const int n = GID(1) >> 1;
    const int axis = GID(1) & 1;
    const int size = axis ? W : H;
    const int m = axis ? w : h;
    if (r >= m) return;                        // no barriers in this kernel
    GLOBAL const float* p = params + (int64)n * 6 + axis * 3;
    const float mu = p[0] + (float)r * p[2];
    const float s = p[1];
    GLOBAL float* a = (axis ? ax : ay) + (int64)n * size * m;
    float z = 0.0f;
    for (int c = 0; c < size; c++) {
        const float t = ((float)c - mu) / s;
        const float e = EXP(-0.5f * t * t);
        a[(int64)c * m + r] = e;
        z += e;
    }
    const float inv = 1.0f / (z + GLIMPSE_EPS);
    for (int c = 0; c < size; c++) {
        const float v = a[(int64)c * m + r] * inv;
        a[(int64)c * m + r] = v < GLIMPSE_FLUSH ? 0.0f : v;
    }
}

// C[b][i, j] = scale[b / divS] * sum_{s < nsum} sum_{k < K} A(b, s, i, k) * B(b, s, k, j)   (scale = 1 when !has_scale)
//   A(b, s, i, k) = A[(b / divA) * bsA + s * ssA + i * rsA + k * csA], B likewise, C[b * bsC + i * ldc + j].
// Grid: dim 0 = ceil(Nc / TILE_N) * WG_N, dim 1 = ceil(M / TILE_M) * WG_M, dim 2 = batch.
// Work-item (tx, ty) owns rows ty + a*WG_M and columns tx + b*WG_N of the tile (WPT_M x WPT_N outputs).
KERNEL glimpse_gemm(GLOBAL const float* RESTRICT A, GLOBAL const float* RESTRICT B, GLOBAL float* RESTRICT Cm,
                    GLOBAL const float* RESTRICT scale, int has_scale,
                    int M, int Nc, int K, int nsum, int divA, int divB, int divS,
                    int64 bsA, int64 ssA, int64 rsA, int64 csA,
                    int64 bsB, int64 ssB, int64 rsB, int64 csB,
                    int64 bsC, int64 ldc)
{
    LOCAL_ARRAY(float, As, TILE_K * TILE_M);   // As[k][i]
    LOCAL_ARRAY(float, Bs, TILE_K * TILE_N);   // Bs[k][j]

    const int tx = LID(0), ty = LID(1);
    const int tid = ty * WG_N + tx;
    const int nthreads = WG_M * WG_N;
    const int b = GRP(2);
    const int i0 = GRP(1) * TILE_M, j0 = GRP(0) * TILE_N;

    float acc[WPT_M][WPT_N];
    for (int a = 0; a < WPT_M; a++)
        for (int c = 0; c < WPT_N; c++) acc[a][c] = 0.0f;

    for (int s = 0; s < nsum; s++) {
        GLOBAL const float* Ab = A + (int64)(b / divA) * bsA + (int64)s * ssA;
        GLOBAL const float* Bb = B + (int64)(b / divB) * bsB + (int64)s * ssB;
        for (int k0 = 0; k0 < K; k0 += TILE_K) {
            // Stage the tiles, zero outside the matrices; consecutive work-items walk the unit-stride direction.
            for (int idx = tid; idx < TILE_K * TILE_M; idx += nthreads) {
                int kk, ii;
                if (csA == 1) { ii = idx / TILE_K; kk = idx - ii * TILE_K; } else { kk = idx / TILE_M; ii = idx - kk * TILE_M; }
                const int gi = i0 + ii, gk = k0 + kk;
                As[kk * TILE_M + ii] = (gi < M && gk < K) ? Ab[(int64)gi * rsA + (int64)gk * csA] : 0.0f;
            }
            for (int idx = tid; idx < TILE_K * TILE_N; idx += nthreads) {
                int kk, jj;
                if (rsB == 1) { jj = idx / TILE_K; kk = idx - jj * TILE_K; } else { kk = idx / TILE_N; jj = idx - kk * TILE_N; }
                const int gj = j0 + jj, gk = k0 + kk;
                Bs[kk * TILE_N + jj] = (gj < Nc && gk < K) ? Bb[(int64)gk * rsB + (int64)gj * csB] : 0.0f;
            }
            BARRIER();
            for (int kk = 0; kk < TILE_K; kk++) {
                float av[WPT_M], bv[WPT_N];
                for (int a = 0; a < WPT_M; a++) av[a] = As[kk * TILE_M + ty + a * WG_M];
                for (int c = 0; c < WPT_N; c++) bv[c] = Bs[kk * TILE_N + tx + c * WG_N];
                for (int a = 0; a < WPT_M; a++)
                    for (int c = 0; c < WPT_N; c++) acc[a][c] += av[a] * bv[c];
            }
            BARRIER();
        }
    }

    const float alpha = has_scale ? scale[b / divS] : 1.0f;
    GLOBAL float* Cb = Cm + (int64)b * bsC;
    for (int a = 0; a < WPT_M; a++) {
        const int gi = i0 + ty + a * WG_M;
        if (gi >= M) continue;
        for (int c = 0; c < WPT_N; c++) {
            const int gj = j0 + tx + c * WG_N;
            if (gj < Nc) Cb[(int64)gi * ldc + gj] = alpha * acc[a][c];
        }
    }
}

// One axis of one image: the gradients of (u, s, d) from dA and A (both [size, m] per image), summed over the filter
// columns by the work-group; also sum_r sum_c dA*A (= dL/dlog gamma when the read was scaled by gamma).
// Every work-item of the group calls this (it contains barriers); red has 4 * REDUCE_WG floats.
INLINE void glimpse_axis_backward(GLOBAL const float* RESTRICT a, GLOBAL const float* RESTRICT da, int size, int m,
                                  float u, float s, float d, LOCAL float* red, float* out4)
{
    const int tid = LID(0);
    float gu = 0.0f, gs = 0.0f, gd = 0.0f, tot = 0.0f;
    for (int r = tid; r < m; r += REDUCE_WG) {
        float s1 = 0.0f;
        for (int c = 0; c < size; c++) s1 += da[(int64)c * m + r] * a[(int64)c * m + r];
        tot += s1;
        const float mu = u + (float)r * d;
        float dmu = 0.0f, dsr = 0.0f;
        for (int c = 0; c < size; c++) {
            const float av = a[(int64)c * m + r];
            if (av == 0.0f) continue;           // e underflowed: e*t -> 0, while t may overflow (tiny s, huge d): no 0*inf
            const float t = ((float)c - mu) / s;
            const float ge = av * (da[(int64)c * m + r] - s1) * t;
            dmu += ge;
            dsr += ge * t;
        }
        gu += dmu; gd += (float)r * dmu; gs += dsr;
    }
    red[tid] = gu; red[REDUCE_WG + tid] = gs; red[2 * REDUCE_WG + tid] = gd; red[3 * REDUCE_WG + tid] = tot;
    BARRIER();
    for (int stride = REDUCE_WG / 2; stride > 0; stride >>= 1) {
        if (tid < stride)
            for (int q = 0; q < 4; q++) red[q * REDUCE_WG + tid] += red[q * REDUCE_WG + tid + stride];
        BARRIER();
    }
    out4[0] = red[0] / s; out4[1] = red[REDUCE_WG] / s; out4[2] = red[2 * REDUCE_WG] / s; out4[3] = red[3 * REDUCE_WG];
    BARRIER();                                  // red is reused by the next call
}

// Grid: dim 0 = REDUCE_WG (one work-group), dim 1 = N. day [N,H,h], dax [N,W,w] (channel-summed), ay, ax as forward.
KERNEL glimpse_filterbank_backward(GLOBAL const float* RESTRICT params, GLOBAL const float* RESTRICT ay, GLOBAL const float* RESTRICT ax,
                                   GLOBAL const float* RESTRICT day, GLOBAL const float* RESTRICT dax,
                                   GLOBAL float* RESTRICT grad_params, GLOBAL float* RESTRICT grad_log_gamma, int has_glg,
                                   int H, int W, int h, int w)
{
    LOCAL_ARRAY(float, red, 4 * REDUCE_WG);
    const int n = GRP(1);
    GLOBAL const float* p = params + (int64)n * 6;
    float gy[4], gx[4];
    glimpse_axis_backward(ay + (int64)n * H * h, day + (int64)n * H * h, H, h, p[0], p[1], p[2], red, gy);
    glimpse_axis_backward(ax + (int64)n * W * w, dax + (int64)n * W * w, W, w, p[3], p[4], p[5], red, gx);
    if (LID(0) == 0) {
        GLOBAL float* g = grad_params + (int64)n * 6;
        g[0] = gy[0]; g[1] = gy[1]; g[2] = gy[2];
        g[3] = gx[0]; g[4] = gx[1]; g[5] = gx[2];
        if (has_glg) grad_log_gamma[n] = gy[3];
    }
}

// DRAW (Gregor et al. 2015, section 3.2): draw [N,5] = (gx~, gy~, log sigma^2, log delta~, log gamma) -> params [N,6], gamma [N].
// 1-based paper coordinates converted to 0-based pixels (see Device.DrawParams). One work-item per image.
KERNEL draw_params(GLOBAL const float* RESTRICT draw, GLOBAL float* RESTRICT params, GLOBAL float* RESTRICT gamma,
                   int N, int H, int W, int h, int w)
{
    const int n = GID(0);
    if (n >= N) return;
    GLOBAL const float* dn = draw + (int64)n * 5;
    GLOBAL float* pn = params + (int64)n * 6;
    const float gx = (float)(W + 1) * 0.5f * (dn[0] + 1.0f), gy = (float)(H + 1) * 0.5f * (dn[1] + 1.0f);
    const float sigma = EXP(0.5f * dn[2]), delta = EXP(dn[3]);
    const float span = (float)(H > W ? H : W) - 1.0f;
    const float dx = span / (float)(w > 1 ? w - 1 : 1) * delta, dy = span / (float)(h > 1 ? h - 1 : 1) * delta;
    pn[0] = gy - 1.0f - (float)(h - 1) * 0.5f * dy; pn[1] = sigma; pn[2] = dy;
    pn[3] = gx - 1.0f - (float)(w - 1) * 0.5f * dx; pn[4] = sigma; pn[5] = dx;
    gamma[n] = EXP(dn[4]);
}

KERNEL draw_params_backward(GLOBAL const float* RESTRICT draw, GLOBAL const float* RESTRICT grad_params,
                            GLOBAL const float* RESTRICT grad_log_gamma, GLOBAL float* RESTRICT grad_draw,
                            int N, int H, int W, int h, int w)
{
    const int n = GID(0);
    if (n >= N) return;
    GLOBAL const float* dn = draw + (int64)n * 5;
    GLOBAL const float* g = grad_params + (int64)n * 6;
    GLOBAL float* o = grad_draw + (int64)n * 5;
    const float sigma = EXP(0.5f * dn[2]), delta = EXP(dn[3]);
    const float span = (float)(H > W ? H : W) - 1.0f;
    const float dx = span / (float)(w > 1 ? w - 1 : 1) * delta, dy = span / (float)(h > 1 ? h - 1 : 1) * delta;
    o[0] = g[3] * (float)(W + 1) * 0.5f;
    o[1] = g[0] * (float)(H + 1) * 0.5f;
    o[2] = (g[1] + g[4]) * sigma * 0.5f;
    o[3] = (g[5] - (float)(w - 1) * 0.5f * g[3]) * dx + (g[2] - (float)(h - 1) * 0.5f * g[0]) * dy;
    o[4] = grad_log_gamma[n];
}
