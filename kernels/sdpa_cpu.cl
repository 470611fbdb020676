// Fused scaled dot-product attention for CPU OpenCL devices (PoCL): forward and backward (FlashAttention-2,
// Dao 2023, arXiv:2307.08691), written like a CPU micro-kernel instead of one row per work-item.
//
// OpenCL only (explicit vector types vload16 / float16 / select; the CUDA backend never launches it). The host runs
// it with work-groups of ONE work-item, so there is no local memory and no barrier: each work-item owns a block of
// CPU_QB query rows (forward, dQ) or CPU_KB key rows (dK/dV) and walks the other sequence in tiles of 16, keeping a
// 16-wide score vector per owned row (scores = rows x 16 keys/queries, one FMA per head-dim element with the row
// value broadcast), the online softmax on it, and then rank-16 updates of its accumulators, 16 columns at a time.
//
// The operands that the micro-kernels read as 16-wide vectors are packed first by the two helper kernels:
//   sdpa_cpu_pack_t   [R, C] -> [C, RP] per head (transposed, rows zero-padded to RP = multiple of 16)
//   sdpa_cpu_pack_pad [R, C] -> [R, CP] per head (columns zero-padded to CP = multiple of 16)
// (the host passes the original buffer instead of a padded copy when C is already a multiple of 16).
//
// Layout as kernels/sdpa.cl and kernels/sdpa_backward.cl: q [B,Hq,L,E], k [B,Hkv,S,E], v [B,Hkv,S,Ev], out/dout
// [B,Hq,L,Ev], lse/D [B,Hq,L], mask element (b,h,i,j) at mask[b*msb + h*msh + i*msl + j*mss]. Semantics (causal
// top-left, fully masked rows, NaN propagation) follow those kernels operation by operation.
//
// Compile-time defines:
//   HEAD_DIM    E  (required)       HEAD_DIM_V  Ev (defaults to E)
//   CPU_QB      query rows per work-item in the forward and dQ kernels (default 8)
//   CPU_KB      key rows per work-item in the dK/dV kernel (default 8)

#ifndef HEAD_DIM
#error "sdpa_cpu.cl: define HEAD_DIM (the q/k head dimension E)"
#endif
#ifndef HEAD_DIM_V
#define HEAD_DIM_V HEAD_DIM
#endif
#ifndef CPU_QB
#define CPU_QB 8
#endif
#ifndef CPU_KB
#define CPU_KB 8
#endif

#define VW 16                                        // vector width = tile of the walked sequence
#define EP (((HEAD_DIM + VW - 1) / VW) * VW)          // padded head dims
#define EVP (((HEAD_DIM_V + VW - 1) / VW) * VW)

#define IOTA16 ((int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))

INLINE float hmax16(float16 v)
{
    float8 a = fmax(v.lo, v.hi);
    float4 b = fmax(a.lo, a.hi);
    float2 c = fmax(b.lo, b.hi);
    return fmax(c.x, c.y);
}

INLINE float hsum16(float16 v)
{
    float8 a = v.lo + v.hi;
    float4 b = a.lo + a.hi;
    float2 c = b.lo + b.hi;
    return c.x + c.y;
}

// Grid: (RP / 16, heads), local (1, 1). dst[h][c][r] = src[h][r][c] for r < R, 0 for R <= r < RP.
KERNEL sdpa_cpu_pack_t(GLOBAL const float* RESTRICT src, GLOBAL float* RESTRICT dst, int R, int C, int RP)
{
    const int r0 = GRP(0) * VW;
    const int64 hd = GRP(1);
    GLOBAL const float* s = src + hd * R * C;
    GLOBAL float* d = dst + hd * C * RP;
    const int n = R - r0 < VW ? R - r0 : VW;
    for (int c = 0; c < C; c++) {
        float t[VW];
        for (int rr = 0; rr < VW; rr++) t[rr] = rr < n ? s[(int64)(r0 + rr) * C + c] : 0.0f;
        vstore16(vload16(0, t), 0, d + (int64)c * RP + r0);
    }
}

// Grid: (R, heads), local (1, 1). dst[h][r][c] = src[h][r][c] for c < C, 0 for C <= c < CP.
KERNEL sdpa_cpu_pack_pad(GLOBAL const float* RESTRICT src, GLOBAL float* RESTRICT dst, int R, int C, int CP)
{
    const int64 r = GRP(0);
    const int64 hd = GRP(1);
    GLOBAL const float* s = src + (hd * R + r) * C;
    GLOBAL float* d = dst + (hd * R + r) * CP;
    for (int c = 0; c < CP; c++) d[c] = c < C ? s[c] : 0.0f;
}

// Scores of CPU_QB query rows (offsets qo[r] into qh) against the 16 keys kb .. kb+15 of the transposed keys kth
// ([E][SP]): s[r] = sum_c q[r][c] * k[kb + .][c] (unscaled).
#define QK_TILE(s, NR, qh, qo, kth, SP, kb)                                                  \
    _Pragma("unroll") for (int r_ = 0; r_ < NR; r_++) s[r_] = (float16)(0.0f);                                \
    for (int c_ = 0; c_ < HEAD_DIM; c_++) {                                                 \
        const float16 kv_ = vload16(0, kth + (int64)c_ * SP + kb);                          \
        _Pragma("unroll") for (int r_ = 0; r_ < NR; r_++) s[r_] = fma((float16)(qh[qo[r_] + c_]), kv_, s[r_]); \
    }

// Grid: (ceil(L / CPU_QB), B * Hq), local (1, 1).
//   kt: keys transposed [B*Hkv][E][SP] (SP = S rounded up to 16, zero-padded); vp: values [B*Hkv][S][EVP].
KERNEL sdpa_cpu_forward(GLOBAL const float* RESTRICT q, GLOBAL const float* RESTRICT kt, GLOBAL const float* RESTRICT vp,
                        GLOBAL const float* RESTRICT mask, GLOBAL float* RESTRICT out, GLOBAL float* RESTRICT lse,
                        int Hq, int Hkv, int L, int S, int SP, float scale, int causal, int has_mask,
                        int64 msb, int64 msh, int64 msl, int64 mss)
{
    const int bh = GRP(1);
    const int b = bh / Hq;
    const int h = bh - b * Hq;
    const int hk = h / (Hq / Hkv);
    const int i0 = GRP(0) * CPU_QB;
    const int nrows = L - i0 < CPU_QB ? L - i0 : CPU_QB;

    const int64 kvhead = (int64)b * Hkv + hk;
    GLOBAL const float* kth = kt + kvhead * HEAD_DIM * SP;
    GLOBAL const float* vh = vp + kvhead * S * EVP;
    GLOBAL const float* qh = q + (int64)bh * L * HEAD_DIM;
    GLOBAL const float* mh = mask + (int64)b * msb + (int64)h * msh;

    int64 qo[CPU_QB];                                 // rows past L repeat row L - 1 (computed, never written)
    int64 mo[CPU_QB];
    for (int r = 0; r < CPU_QB; r++) {
        const int i = r < nrows ? i0 + r : L - 1;
        qo[r] = (int64)i * HEAD_DIM;
        mo[r] = (int64)i * msl;
    }

    float acc[CPU_QB * EVP];
    float ps[CPU_QB * VW];
    float m[CPU_QB], l[CPU_QB];
    for (int x = 0; x < CPU_QB * EVP; x++) acc[x] = 0.0f;
    for (int r = 0; r < CPU_QB; r++) { m[r] = NEG_INF; l[r] = 0.0f; }

    // Causal: keys from the block's last row + 1 on are masked for every row of the block and are skipped.
    int kend = S;
    if (causal) {
        const int last = i0 + nrows;
        kend = last < S ? last : S;
    }

    for (int kb = 0; kb < kend; kb += VW) {
        float16 s[CPU_QB];
        QK_TILE(s, CPU_QB, qh, qo, kth, SP, kb)
        const int nvalid = kend - kb < VW ? kend - kb : VW;
        const int16 jv = IOTA16 + kb;
        for (int r = 0; r < CPU_QB; r++) {
            float16 x = s[r] * scale;
            if (has_mask) {
                float mk[VW];
                for (int t = 0; t < VW; t++) mk[t] = t < nvalid ? mh[mo[r] + (int64)(kb + t) * mss] : 0.0f;
                x += vload16(0, mk);
            }
            int16 dead = jv >= (int16)(kend);
            if (causal) dead |= jv > (int16)(i0 + r);
            x = select(x, (float16)(NEG_INF), dead);
            const float mnew = fmax(m[r], hmax16(x));
            // Guard: while every score so far is -inf, subtract 0 instead of -inf so exp() gives 0, not NaN.
            const float mref = mnew == NEG_INF ? 0.0f : mnew;
            const float alpha = exp(m[r] - mref);
            const float16 p = exp(x - mref);
            l[r] = l[r] * alpha + hsum16(p);
            if (alpha != 1.0f)
                for (int cv = 0; cv < EVP; cv += VW)
                    vstore16(vload16(0, acc + r * EVP + cv) * alpha, 0, acc + r * EVP + cv);
            m[r] = mnew;
            vstore16(p, 0, ps + r * VW);
        }
        // acc[r][:] += sum_j p[r][j] * v[j][:], 16 columns at a time
        for (int cv = 0; cv < EVP; cv += VW) {
            float16 a[CPU_QB];
            #pragma unroll
            for (int r = 0; r < CPU_QB; r++) a[r] = vload16(0, acc + r * EVP + cv);
            for (int jj = 0; jj < nvalid; jj++) {
                const float16 vv = vload16(0, vh + (int64)(kb + jj) * EVP + cv);
                #pragma unroll
                for (int r = 0; r < CPU_QB; r++) a[r] = fma((float16)(ps[r * VW + jj]), vv, a[r]);
            }
            #pragma unroll
            for (int r = 0; r < CPU_QB; r++) vstore16(a[r], 0, acc + r * EVP + cv);
        }
    }

    for (int r = 0; r < nrows; r++) {
        const int64 row = (int64)bh * L + i0 + r;
        if (l[r] == 0.0f) {                            // fully masked row (or S == 0): out 0, lse -inf
            for (int c = 0; c < HEAD_DIM_V; c++) out[row * HEAD_DIM_V + c] = 0.0f;
            lse[row] = NEG_INF;
        } else {
            const float inv = 1.0f / l[r];
            for (int c = 0; c < HEAD_DIM_V; c++) out[row * HEAD_DIM_V + c] = acc[r * EVP + c] * inv;
            lse[row] = m[r] + log(l[r]);
        }
    }
}
