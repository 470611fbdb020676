// Fused scaled dot-product attention, backward (FlashAttention-2, Dao 2023, arXiv:2307.08691, Algorithm 2),
// split into three kernels so that no floating-point atomics are needed (deterministic):
//
//   sdpa_bwd_preprocess  D[row] = rowsum(dO ∘ O)                                 one work-item per query row
//   sdpa_bwd_dkdv        dK, dV for a block of keys, over every query row of      one work-item per key row
//                        every query head of the GQA group
//   sdpa_bwd_dq          dQ for a block of query rows, over every key             one work-item per query row
//
// Both main kernels recompute P = exp(scale·q·kᵀ + mask − lse) and dS = P ∘ (dO·vᵀ − D) tile by tile; nothing of
// size L x S is ever stored. A row whose lse is −∞ (fully masked) contributes nothing, nor does a key whose P is exactly 0
// (masked or causal-hidden: NaN/∞ in its k, v or in the row's dO must not reach it through 0·∞). In causal mode tiles that the
// mask hides entirely are skipped (uniformly over the work-group, so every work-item reaches every barrier).
// Written in the prelude's words only (OpenCL C 1.2 and CUDA via NVRTC).
//
// Layout: q [B,Hq,L,E], k [B,Hkv,S,E], v [B,Hkv,S,Ev], out/dout [B,Hq,L,Ev], lse/D [B,Hq,L],
//         dq [B,Hq,L,E], dk [B,Hkv,S,E], dv [B,Hkv,S,Ev]. Mask element (b,h,i,j) at mask[b*msb + h*msh + i*msl + j*mss].
//
// Compile-time defines:
//   HEAD_DIM    E  (required)       HEAD_DIM_V  Ev (defaults to E)
//   BLOCK_M     dq: query rows per work-group (= its size); dkdv: query rows per local-memory tile
//   BLOCK_N     dkdv: key rows per work-group (= its size); dq: key rows per local-memory tile
//   PRE_WG      work-group size of the preprocess kernel (default 64)

#ifndef HEAD_DIM
#error "sdpa_backward.cl: define HEAD_DIM (the q/k head dimension E)"
#endif
#ifndef HEAD_DIM_V
#define HEAD_DIM_V HEAD_DIM
#endif
#ifndef BLOCK_M
#define BLOCK_M 32
#endif
#ifndef BLOCK_N
#define BLOCK_N 32
#endif
#ifndef PRE_WG
#define PRE_WG 64
#endif

KERNEL sdpa_bwd_preprocess(GLOBAL const float* RESTRICT out, GLOBAL const float* RESTRICT dout, GLOBAL float* RESTRICT dsum, int64 rows)
{
    const int64 r = (int64)GRP(0) * PRE_WG + LID(0);
    if (r >= rows) return;
    float acc = 0.0f;
    for (int c = 0; c < HEAD_DIM_V; c++) acc += dout[r * HEAD_DIM_V + c] * out[r * HEAD_DIM_V + c];
    dsum[r] = acc;
}

// Grid: dim 0 = ceil(S / BLOCK_N) groups of BLOCK_N work-items, dim 1 = B * Hkv groups of 1.
KERNEL sdpa_bwd_dkdv(GLOBAL const float* RESTRICT q, GLOBAL const float* RESTRICT k, GLOBAL const float* RESTRICT v,
                     GLOBAL const float* RESTRICT mask, GLOBAL const float* RESTRICT lse, GLOBAL const float* RESTRICT dsum,
                     GLOBAL const float* RESTRICT dout, GLOBAL float* RESTRICT dk, GLOBAL float* RESTRICT dv,
                     int Hq, int Hkv, int L, int S, float scale, int causal, int has_mask,
                     int64 msb, int64 msh, int64 msl, int64 mss)
{
    LOCAL_ARRAY(float, qs, BLOCK_M * HEAD_DIM);
    LOCAL_ARRAY(float, dos, BLOCK_M * HEAD_DIM_V);
    LOCAL_ARRAY(float, ls, BLOCK_M);
    LOCAL_ARRAY(float, ds, BLOCK_M);

    const int tid = LID(0);
    const int bhk = GRP(1);
    const int b = bhk / Hkv;
    const int hk = bhk - b * Hkv;
    const int group = Hq / Hkv;
    const int j0 = GRP(0) * BLOCK_N;
    const int j = j0 + tid;
    const int valid = j < S;

    const int64 krow = (int64)bhk * S + j;          // (b, hk, j) in [B, Hkv, S]
    float kr[HEAD_DIM], vr[HEAD_DIM_V], dka[HEAD_DIM], dva[HEAD_DIM_V];
    for (int c = 0; c < HEAD_DIM; c++) { kr[c] = valid ? k[krow * HEAD_DIM + c] : 0.0f; dka[c] = 0.0f; }
    for (int c = 0; c < HEAD_DIM_V; c++) { vr[c] = valid ? v[krow * HEAD_DIM_V + c] : 0.0f; dva[c] = 0.0f; }

    // Causal: rows i < j0 see none of this block's keys; start at the tile holding row j0.
    const int istart = causal ? j0 / BLOCK_M * BLOCK_M : 0;

    for (int g = 0; g < group; g++) {
        const int h = hk * group + g;
        const int64 qrow0 = ((int64)b * Hq + h) * L;   // (b, h, 0) in [B, Hq, L]
        GLOBAL const float* mhead = mask + (int64)b * msb + (int64)h * msh + (int64)j * mss;
        for (int i0 = istart; i0 < L; i0 += BLOCK_M) {
            const int64 nq = (int64)(L - i0);
            GLOBAL const float* qt = q + (qrow0 + i0) * HEAD_DIM;
            GLOBAL const float* dot_ = dout + (qrow0 + i0) * HEAD_DIM_V;
            for (int idx = tid; idx < BLOCK_M * HEAD_DIM; idx += BLOCK_N)
                qs[idx] = idx < nq * HEAD_DIM ? qt[idx] : 0.0f;
            for (int idx = tid; idx < BLOCK_M * HEAD_DIM_V; idx += BLOCK_N)
                dos[idx] = idx < nq * HEAD_DIM_V ? dot_[idx] : 0.0f;
            for (int idx = tid; idx < BLOCK_M; idx += BLOCK_N) {
                ls[idx] = idx < nq ? lse[qrow0 + i0 + idx] : NEG_INF;
                ds[idx] = idx < nq ? dsum[qrow0 + i0 + idx] : 0.0f;
            }
            BARRIER();

            if (valid) {
                const int nrows = nq < BLOCK_M ? (int)nq : BLOCK_M;
                for (int ii = 0; ii < nrows; ii++) {
                    const int i = i0 + ii;
                    const float l = ls[ii];
                    if (l == NEG_INF || (causal && j > i)) continue;     // p = 0
                    float s = 0.0f;
                    for (int c = 0; c < HEAD_DIM; c++) s += qs[ii * HEAD_DIM + c] * kr[c];
                    s *= scale;
                    if (has_mask) s += mhead[(int64)i * msl];
                    const float p = EXP(s - l);
                    if (p == 0.0f) continue;                    // masked key: absent, also for a non-finite dO row or value
                    float dp = 0.0f;
                    for (int c = 0; c < HEAD_DIM_V; c++) dp += dos[ii * HEAD_DIM_V + c] * vr[c];
                    const float dsv = p * (dp - ds[ii]);
                    for (int c = 0; c < HEAD_DIM_V; c++) dva[c] += p * dos[ii * HEAD_DIM_V + c];
                    for (int c = 0; c < HEAD_DIM; c++) dka[c] += dsv * qs[ii * HEAD_DIM + c];
                }
            }
            BARRIER();                                   // before the next tile overwrites qs / dos
        }
    }

    if (valid) {
        for (int c = 0; c < HEAD_DIM; c++) dk[krow * HEAD_DIM + c] = dka[c] * scale;
        for (int c = 0; c < HEAD_DIM_V; c++) dv[krow * HEAD_DIM_V + c] = dva[c];
    }
}

// Grid: dim 0 = ceil(L / BLOCK_M) groups of BLOCK_M work-items, dim 1 = B * Hq groups of 1.
KERNEL sdpa_bwd_dq(GLOBAL const float* RESTRICT q, GLOBAL const float* RESTRICT k, GLOBAL const float* RESTRICT v,
                   GLOBAL const float* RESTRICT mask, GLOBAL const float* RESTRICT lse, GLOBAL const float* RESTRICT dsum,
                   GLOBAL const float* RESTRICT dout, GLOBAL float* RESTRICT dq,
                   int Hq, int Hkv, int L, int S, float scale, int causal, int has_mask,
                   int64 msb, int64 msh, int64 msl, int64 mss)
{
    LOCAL_ARRAY(float, ks, BLOCK_N * HEAD_DIM);
    LOCAL_ARRAY(float, vs, BLOCK_N * HEAD_DIM_V);

    const int tid = LID(0);
    const int bh = GRP(1);
    const int b = bh / Hq;
    const int h = bh - b * Hq;
    const int hk = h / (Hq / Hkv);
    const int row0 = GRP(0) * BLOCK_M;
    const int i = row0 + tid;
    const int valid = i < L;

    const int64 kvhead = (int64)b * Hkv + hk;
    GLOBAL const float* kh = k + kvhead * S * HEAD_DIM;
    GLOBAL const float* vh = v + kvhead * S * HEAD_DIM_V;
    const int64 row = (int64)bh * L + i;

    float qr[HEAD_DIM], dor[HEAD_DIM_V], dqa[HEAD_DIM];
    for (int c = 0; c < HEAD_DIM; c++) { qr[c] = valid ? q[row * HEAD_DIM + c] : 0.0f; dqa[c] = 0.0f; }
    for (int c = 0; c < HEAD_DIM_V; c++) dor[c] = valid ? dout[row * HEAD_DIM_V + c] : 0.0f;
    const float l = valid ? lse[row] : NEG_INF;
    const float dsr = valid ? dsum[row] : 0.0f;
    GLOBAL const float* mrow = mask + (int64)b * msb + (int64)h * msh + (int64)i * msl;

    int kend = S;                                    // causal: keys past the block's last row are hidden from all its rows
    if (causal) {
        int last = row0 + BLOCK_M < L ? row0 + BLOCK_M : L;
        kend = last < S ? last : S;
    }

    for (int kb = 0; kb < kend; kb += BLOCK_N) {
        const int64 nk = (int64)(S - kb);
        for (int idx = tid; idx < BLOCK_N * HEAD_DIM; idx += BLOCK_M)
            ks[idx] = idx < nk * HEAD_DIM ? kh[(int64)kb * HEAD_DIM + idx] : 0.0f;
        for (int idx = tid; idx < BLOCK_N * HEAD_DIM_V; idx += BLOCK_M)
            vs[idx] = idx < nk * HEAD_DIM_V ? vh[(int64)kb * HEAD_DIM_V + idx] : 0.0f;
        BARRIER();

        if (valid && l != NEG_INF) {
            const int nvalid = kend - kb < BLOCK_N ? kend - kb : BLOCK_N;
            for (int jj = 0; jj < nvalid; jj++) {
                const int j = kb + jj;
                if (causal && j > i) break;
                float s = 0.0f;
                for (int c = 0; c < HEAD_DIM; c++) s += qr[c] * ks[jj * HEAD_DIM + c];
                s *= scale;
                if (has_mask) s += mrow[(int64)j * mss];
                const float p = EXP(s - l);
                if (p == 0.0f) continue;                        // masked key: absent, also for a non-finite key or value
                float dp = 0.0f;
                for (int c = 0; c < HEAD_DIM_V; c++) dp += dor[c] * vs[jj * HEAD_DIM_V + c];
                const float dsv = p * (dp - dsr);
                for (int c = 0; c < HEAD_DIM; c++) dqa[c] += dsv * ks[jj * HEAD_DIM + c];
            }
        }
        BARRIER();
    }

    if (valid)
        for (int c = 0; c < HEAD_DIM; c++) dq[row * HEAD_DIM + c] = dqa[c] * scale;
}
