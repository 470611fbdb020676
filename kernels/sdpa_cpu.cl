// Fused scaled dot-product attention for CPU OpenCL devices (PoCL): forward and backward (FlashAttention-2,
// Dao 2023, arXiv:2307.08691), written like a CPU micro-kernel instead of one row per work-item.
//
// OpenCL only (explicit vector types float16 / vload16 / vstore16; the CUDA backend never launches it). The host runs
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
//   CPU_KB      key rows per work-item in the dK/dV kernel (default 16)

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
#define CPU_KB 16
#endif

#define VW 16                                        // vector width = tile of the walked sequence
#define EP (((HEAD_DIM + VW - 1) / VW) * VW)          // padded head dims
#define EVP (((HEAD_DIM_V + VW - 1) / VW) * VW)

// oclgrind 21.10's uninitialized-value plugin crashed (and reported false uninitialized values) on this file's first
// version, which used vector compares, select() and the swizzles .lo / .hi; the code below avoids all three.

// Sets w[t] (t < 16, private) to `dead` where t >= nlive (past the end) or, when causal, base + t > last (a key after
// row `last`). Scalar: only tiles on an edge or on the causal diagonal take it.
INLINE void kill_lanes(float* w, int nlive, int causal, int base, int last, float dead)
{
    for (int t = 0; t < VW; t++)
        if (t >= nlive || (causal && base + t > last)) w[t] = dead;
}

// Horizontal max / sum, pairwise through private memory; PoCL's compiler turns the round trips into register shuffles.
#define HREDUCE16(name, OP)                                                     \
    INLINE float name(float16 v)                                                \
    {                                                                           \
        float t[VW];                                                            \
        vstore16(v, 0, t);                                                      \
        vstore8(OP(vload8(0, t), vload8(1, t)), 0, t);                          \
        vstore4(OP(vload4(0, t), vload4(1, t)), 0, t);                          \
        vstore2(OP(vload2(0, t), vload2(1, t)), 0, t);                          \
        return OP(t[0], t[1]);                                                  \
    }
#define ADD_(a, b) ((a) + (b))
HREDUCE16(hmax16, fmax)
HREDUCE16(hsum16, ADD_)

// Grid: (RP / 16, heads), local (1, 1). dst[h][c][r] = src[h][r][c] for r < R, 0 for R <= r < RP.
KERNEL sdpa_cpu_pack_t(GLOBAL const float* RESTRICT src, GLOBAL float* RESTRICT dst, int R, int C, int RP)
{
    const int r0 = GRP(0) * VW;
    const int64 hd = GRP(1);
    GLOBAL const float* s = src + hd * R * C;
    GLOBAL float* d = dst + hd * C * RP;
    const int n = R - r0 < VW ? R - r0 : VW;
    for (int c = 0; c < C; c++)
        for (int rr = 0; rr < VW; rr++) d[(int64)c * RP + r0 + rr] = rr < n ? s[(int64)(r0 + rr) * C + c] : 0.0f;
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

// Dot products of NR rows (offsets qo[r] into qh) with the 16 columns kb .. kb+15 of the transposed operand kth
// ([D][SP]): s[r] = sum_{c < D} qh[qo[r] + c] * kth[c * SP + kb + .] (e.g. the unscaled scores of a query block).
#define QK_TILE(s, NR, D, qh, qo, kth, SP, kb)                                               \
    _Pragma("unroll") for (int r_ = 0; r_ < NR; r_++) s[r_] = (float16)(0.0f);                                \
    for (int c_ = 0; c_ < D; c_++) {                                                        \
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
        QK_TILE(s, CPU_QB, HEAD_DIM, qh, qo, kth, SP, kb)
        const int nvalid = kend - kb < VW ? kend - kb : VW;
        for (int r = 0; r < CPU_QB; r++) {
            float16 x = s[r] * scale;
            if (has_mask) {
                float mk[VW];
                for (int t = 0; t < VW; t++) mk[t] = t < nvalid ? mh[mo[r] + (int64)(kb + t) * mss] : 0.0f;
                x += vload16(0, mk);
            }
            if (nvalid < VW || (causal && kb + VW - 1 > i0 + r)) {   // keys past kend, or causally hidden: -inf
                vstore16(x, 0, ps + r * VW);
                kill_lanes(ps + r * VW, nvalid, causal, kb, i0 + r, NEG_INF);
                x = vload16(0, ps + r * VW);
            }
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

// ---------------------------------------------------------------------------------------------------------
// Backward (FlashAttention-2, Algorithm 2, without atomics): D = rowsum(dO ∘ O) comes from sdpa_backward.cl's
// sdpa_bwd_preprocess; then sdpa_cpu_bwd_dkdv (a block of CPU_KB keys per work-item, over every query row of every
// head of its GQA group) and sdpa_cpu_bwd_dq (a block of CPU_QB query rows per work-item, over every key). Both
// recompute P = exp(scale·q·kᵀ + mask − lse) and dS = P ∘ (dO·vᵀ − D) 16 at a time; a row whose lse is −∞ (fully
// masked) and a causally hidden pair give P = dS = 0, as in sdpa_backward.cl.

// 16 floats from p[0 .. n-1] (n <= 16), the rest `fill`.
INLINE float16 load_tail16(GLOBAL const float* p, int n, float fill)
{
    if (n >= VW) return vload16(0, p);
    float t[VW];
    for (int x = 0; x < VW; x++) t[x] = x < n ? p[x] : fill;
    return vload16(0, t);
}

// acc[r][0 .. NC) += sum_{t < n} w[r][t] * src[t][0 .. NC) for r < NR (src rows NC floats apart, NC a multiple of 16).
#define RANK_UPDATE(acc, NR, NC, w, src, n)                                                  \
    for (int cv_ = 0; cv_ < NC; cv_ += VW) {                                                 \
        float16 a_[NR];                                                                      \
        _Pragma("unroll") for (int r_ = 0; r_ < NR; r_++) a_[r_] = vload16(0, acc + r_ * NC + cv_); \
        for (int t_ = 0; t_ < n; t_++) {                                                     \
            const float16 x_ = vload16(0, src + (int64)t_ * NC + cv_);                       \
            _Pragma("unroll") for (int r_ = 0; r_ < NR; r_++) a_[r_] = fma((float16)(w[r_ * VW + t_]), x_, a_[r_]); \
        }                                                                                    \
        _Pragma("unroll") for (int r_ = 0; r_ < NR; r_++) vstore16(a_[r_], 0, acc + r_ * NC + cv_); \
    }

// The same update with the coefficients taken one by one, skipping those that are exactly 0: used only for a tile that
// holds a non-finite operand, where 0 · ∞ or 0 · NaN must not reach a key or row that P = 0 keeps out (masked, causally
// hidden, or a fully masked row), as in sdpa_backward.cl's `if (p == 0) continue`.
#define RANK_UPDATE_SKIP0(acc, NR, NC, w, src, n)                                            \
    for (int t_ = 0; t_ < n; t_++)                                                           \
        for (int r_ = 0; r_ < NR; r_++) {                                                    \
            const float w_ = w[r_ * VW + t_];                                                \
            if (w_ != 0.0f)                                                                  \
                for (int c_ = 0; c_ < NC; c_++)                                              \
                    acc[r_ * NC + c_] = fma(w_, src[(int64)t_ * NC + c_], acc[r_ * NC + c_]); \
        }

// 1 if any lane of v is ∞ or NaN (v · 0 is NaN exactly there; no vector compare, which oclgrind cannot check).
INLINE int any_nonfinite16(float16 v)
{
    float t[VW];
    vstore16(v * 0.0f, 0, t);
    int bad = 0;
    for (int x = 0; x < VW; x++) bad |= t[x] != t[x];
    return bad;
}

// Grid: (ceil(S / CPU_KB), B * Hkv), local (1, 1).
//   qt [B*Hq][E][LP], dot [B*Hq][Ev][LP] (transposed, LP = L rounded up to 16, zero-padded);
//   qp [B*Hq][L][EP], dop [B*Hq][L][EVP] (columns zero-padded); k, v, lse, dsum as given.
KERNEL sdpa_cpu_bwd_dkdv(GLOBAL const float* RESTRICT qt, GLOBAL const float* RESTRICT qp, GLOBAL const float* RESTRICT k,
                         GLOBAL const float* RESTRICT v, GLOBAL const float* RESTRICT mask, GLOBAL const float* RESTRICT lse,
                         GLOBAL const float* RESTRICT dsum, GLOBAL const float* RESTRICT dot, GLOBAL const float* RESTRICT dop,
                         GLOBAL float* RESTRICT dk, GLOBAL float* RESTRICT dv,
                         int Hq, int Hkv, int L, int S, int LP, float scale, int causal, int has_mask,
                         int64 msb, int64 msh, int64 msl, int64 mss)
{
    const int bhk = GRP(1);
    const int b = bhk / Hkv;
    const int hk = bhk - b * Hkv;
    const int group = Hq / Hkv;
    const int j0 = GRP(0) * CPU_KB;
    const int ncols = S - j0 < CPU_KB ? S - j0 : CPU_KB;
    GLOBAL const float* kh = k + (int64)bhk * S * HEAD_DIM;
    GLOBAL const float* vh = v + (int64)bhk * S * HEAD_DIM_V;

    int64 ko[CPU_KB], vo[CPU_KB], jo[CPU_KB];         // keys past S repeat key S - 1 (computed, never written)
    for (int r = 0; r < CPU_KB; r++) {
        const int j = r < ncols ? j0 + r : S - 1;
        ko[r] = (int64)j * HEAD_DIM;
        vo[r] = (int64)j * HEAD_DIM_V;
        jo[r] = (int64)j * mss;
    }
    float dka[CPU_KB * EP], dva[CPU_KB * EVP];
    float pw[CPU_KB * VW], dsw[CPU_KB * VW];
    for (int x = 0; x < CPU_KB * EP; x++) dka[x] = 0.0f;
    for (int x = 0; x < CPU_KB * EVP; x++) dva[x] = 0.0f;

    // Causal: rows i < j0 see none of this block's keys; start at the tile holding row j0.
    const int istart = causal ? j0 / VW * VW : 0;

    for (int g = 0; g < group; g++) {
        const int h = hk * group + g;
        const int64 bh = (int64)b * Hq + h;
        GLOBAL const float* qth = qt + bh * HEAD_DIM * LP;
        GLOBAL const float* qph = qp + bh * L * EP;
        GLOBAL const float* doth = dot + bh * HEAD_DIM_V * LP;
        GLOBAL const float* doph = dop + bh * L * EVP;
        GLOBAL const float* mh = mask + (int64)b * msb + (int64)h * msh;
        for (int i0 = istart; i0 < L; i0 += VW) {
            const int nq = L - i0 < VW ? L - i0 : VW;
            const float16 lv = load_tail16(lse + bh * L + i0, nq, NEG_INF);   // rows past L: lse -inf, so P = 0
            const float16 dd = load_tail16(dsum + bh * L + i0, nq, 0.0f);
            float16 s[CPU_KB], dp[CPU_KB];
            QK_TILE(s, CPU_KB, HEAD_DIM, kh, ko, qth, LP, i0)
            QK_TILE(dp, CPU_KB, HEAD_DIM_V, vh, vo, doth, LP, i0)
            // Rows whose lse is -inf (fully masked, or past L) give P = dS = 0, as do causally hidden pairs (key j0 + r after row i0 + t).
            // A non-finite q, dO or D in the tile (or k, v of this block) shows in s, dp or dd: then dS is zeroed where P is
            // 0 and the updates skip zero coefficients (the finite case keeps the vector path).
            float16 chk = dd * 0.0f;
            for (int r = 0; r < CPU_KB; r++) chk += s[r] * 0.0f + dp[r] * 0.0f;
            const int nonfinite = any_nonfinite16(chk);
            float lt[VW];
            vstore16(lv, 0, lt);
            int nlost = 0;
            for (int t = 0; t < VW; t++) nlost += lt[t] == NEG_INF;
            for (int r = 0; r < CPU_KB; r++) {
                float16 x = s[r] * scale;
                if (has_mask) {
                    float mk[VW];
                    for (int t = 0; t < VW; t++) mk[t] = t < nq ? mh[(int64)(i0 + t) * msl + jo[r]] : 0.0f;
                    x += vload16(0, mk);
                }
                const float16 p = exp(x - lv);
                vstore16(p, 0, pw + r * VW);
                vstore16(p * (dp[r] - dd), 0, dsw + r * VW);
                if (nlost || (causal && j0 + r > i0)) {
                    for (int t = 0; t < VW; t++)
                        if (lt[t] == NEG_INF || (causal && j0 + r > i0 + t)) { pw[r * VW + t] = 0.0f; dsw[r * VW + t] = 0.0f; }
                }
                if (nonfinite)
                    for (int t = 0; t < VW; t++)
                        if (pw[r * VW + t] == 0.0f) dsw[r * VW + t] = 0.0f;
            }
            if (nonfinite) {
                RANK_UPDATE_SKIP0(dva, CPU_KB, EVP, pw, (doph + (int64)i0 * EVP), nq)
                RANK_UPDATE_SKIP0(dka, CPU_KB, EP, dsw, (qph + (int64)i0 * EP), nq)
            } else {
                RANK_UPDATE(dva, CPU_KB, EVP, pw, (doph + (int64)i0 * EVP), nq)
                RANK_UPDATE(dka, CPU_KB, EP, dsw, (qph + (int64)i0 * EP), nq)
            }
        }
    }

    for (int r = 0; r < ncols; r++) {
        const int64 krow = (int64)bhk * S + j0 + r;
        for (int c = 0; c < HEAD_DIM; c++) dk[krow * HEAD_DIM + c] = dka[r * EP + c] * scale;
        for (int c = 0; c < HEAD_DIM_V; c++) dv[krow * HEAD_DIM_V + c] = dva[r * EVP + c];
    }
}

// Grid: (ceil(L / CPU_QB), B * Hq), local (1, 1).
//   kt [B*Hkv][E][SP], vt [B*Hkv][Ev][SP] (transposed, zero-padded); kp [B*Hkv][S][EP] (columns zero-padded).
KERNEL sdpa_cpu_bwd_dq(GLOBAL const float* RESTRICT q, GLOBAL const float* RESTRICT kt, GLOBAL const float* RESTRICT vt,
                       GLOBAL const float* RESTRICT kp, GLOBAL const float* RESTRICT mask, GLOBAL const float* RESTRICT lse,
                       GLOBAL const float* RESTRICT dsum, GLOBAL const float* RESTRICT dout, GLOBAL float* RESTRICT dq,
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
    GLOBAL const float* vth = vt + kvhead * HEAD_DIM_V * SP;
    GLOBAL const float* kph = kp + kvhead * S * EP;
    GLOBAL const float* qh = q + (int64)bh * L * HEAD_DIM;
    GLOBAL const float* doh = dout + (int64)bh * L * HEAD_DIM_V;
    GLOBAL const float* mh = mask + (int64)b * msb + (int64)h * msh;

    int64 qo[CPU_QB], oo[CPU_QB], mo[CPU_QB];
    float lr[CPU_QB], dr[CPU_QB];
    for (int r = 0; r < CPU_QB; r++) {
        const int i = r < nrows ? i0 + r : L - 1;
        qo[r] = (int64)i * HEAD_DIM;
        oo[r] = (int64)i * HEAD_DIM_V;
        mo[r] = (int64)i * msl;
        lr[r] = r < nrows ? lse[(int64)bh * L + i] : NEG_INF;   // rows past L: P = 0
        dr[r] = dsum[(int64)bh * L + i];
    }
    float acc[CPU_QB * EP];
    float dsw[CPU_QB * VW];
    for (int x = 0; x < CPU_QB * EP; x++) acc[x] = 0.0f;

    int kend = S;                                     // causal: keys past the block's last row are hidden from all its rows
    if (causal) {
        const int last = i0 + nrows;
        kend = last < S ? last : S;
    }

    for (int kb = 0; kb < kend; kb += VW) {
        float16 s[CPU_QB], dp[CPU_QB];
        QK_TILE(s, CPU_QB, HEAD_DIM, qh, qo, kth, SP, kb)
        QK_TILE(dp, CPU_QB, HEAD_DIM_V, doh, oo, vth, SP, kb)
        const int nvalid = kend - kb < VW ? kend - kb : VW;
        float16 chk = (float16)(0.0f);                 // non-finite k, v, q, dO or D: see sdpa_cpu_bwd_dkdv
        for (int r = 0; r < CPU_QB; r++) chk += s[r] * 0.0f + dp[r] * 0.0f + (float16)(dr[r] * 0.0f);
        const int nonfinite = any_nonfinite16(chk);
        for (int r = 0; r < CPU_QB; r++) {
            float16 x = s[r] * scale;
            if (has_mask) {
                float mk[VW];
                for (int t = 0; t < VW; t++) mk[t] = t < nvalid ? mh[mo[r] + (int64)(kb + t) * mss] : 0.0f;
                x += vload16(0, mk);
            }
            const float16 p = exp(x - lr[r]);
            vstore16(p * (dp[r] - dr[r]), 0, dsw + r * VW);
            // lse -inf (fully masked row, or past L), keys past kend, causally hidden keys: dS = 0
            if (lr[r] == NEG_INF) kill_lanes(dsw + r * VW, 0, 0, 0, 0, 0.0f);
            else if (nvalid < VW || (causal && kb + VW - 1 > i0 + r)) kill_lanes(dsw + r * VW, nvalid, causal, kb, i0 + r, 0.0f);
            if (nonfinite) {
                float pt[VW];
                vstore16(p, 0, pt);
                for (int t = 0; t < VW; t++)
                    if (pt[t] == 0.0f) dsw[r * VW + t] = 0.0f;
            }
        }
        if (nonfinite) { RANK_UPDATE_SKIP0(acc, CPU_QB, EP, dsw, (kph + (int64)kb * EP), nvalid) }
        else { RANK_UPDATE(acc, CPU_QB, EP, dsw, (kph + (int64)kb * EP), nvalid) }
    }

    for (int r = 0; r < nrows; r++) {
        const int64 row = (int64)bh * L + i0 + r;
        for (int c = 0; c < HEAD_DIM; c++) dq[row * HEAD_DIM + c] = acc[r * EP + c] * scale;
    }
}
