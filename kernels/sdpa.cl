// Fused scaled dot-product attention, forward (FlashAttention-2, Dao 2023, arXiv:2307.08691).
//
// Written in the prelude's words only, so the same text compiles as OpenCL C 1.2 and as CUDA (NVRTC).
//
// Layout: q [B,Hq,L,E], k [B,Hkv,S,E], v [B,Hkv,S,Ev], out [B,Hq,L,Ev], lse [B,Hq,L] (natural log).
// Grid:   dim 0 = ceil(L / BLOCK_M) work-groups of BLOCK_M work-items, dim 1 = B * Hq work-groups of 1.
//         Work-item t of group (gm, bh) owns query row i = gm * BLOCK_M + t of head bh: its q row and its
//         output accumulator live in private memory; the work-group stages BLOCK_N keys and values in
//         local memory per step and every work-item runs the online softmax over them. No L x S buffer.
//
// Compile-time defines:
//   HEAD_DIM    E  (required; any value >= 1)
//   HEAD_DIM_V  Ev (defaults to HEAD_DIM)
//   BLOCK_M     query rows per work-group = work-group size (default 32)
//   BLOCK_N     keys per local-memory tile (default chosen from the head dims to keep the tiles <= 32 KiB)

#ifndef HEAD_DIM
#error "sdpa.cl: define HEAD_DIM (the q/k head dimension E)"
#endif
#ifndef HEAD_DIM_V
#define HEAD_DIM_V HEAD_DIM
#endif
#ifndef BLOCK_M
#define BLOCK_M 32
#endif
#ifndef BLOCK_N
  #if HEAD_DIM + HEAD_DIM_V <= 128
    #define BLOCK_N 64
  #elif HEAD_DIM + HEAD_DIM_V <= 256
    #define BLOCK_N 32
  #elif HEAD_DIM + HEAD_DIM_V <= 512
    #define BLOCK_N 16
  #else
    #define BLOCK_N 8
  #endif
#endif

// scale: softmax scale; causal: 0/1; has_mask: 0/1 (when 0, mask points at a dummy buffer and is not read).
// Mask element (b, h, i, j) is mask[b*msb + h*msh + i*msl + j*mss] (strides 0 on broadcast dims).
KERNEL sdpa_forward(GLOBAL const float* RESTRICT q, GLOBAL const float* RESTRICT k, GLOBAL const float* RESTRICT v,
                    GLOBAL const float* RESTRICT mask, GLOBAL float* RESTRICT out, GLOBAL float* RESTRICT lse,
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
    const int valid = i < L;                      // tail rows still take part in every barrier

    const int64 kvhead = (int64)b * Hkv + hk;
    GLOBAL const float* kh = k + kvhead * S * HEAD_DIM;
    GLOBAL const float* vh = v + kvhead * S * HEAD_DIM_V;
    const int64 row = (int64)bh * L + i;          // index of (b, h, i) in [B, Hq, L]

    float qr[HEAD_DIM];
    float acc[HEAD_DIM_V];
    for (int c = 0; c < HEAD_DIM; c++) qr[c] = valid ? q[row * HEAD_DIM + c] : 0.0f;
    for (int c = 0; c < HEAD_DIM_V; c++) acc[c] = 0.0f;
    float m = NEG_INF;                            // running max of the scores seen so far
    float l = 0.0f;                               // running sum of exp(score - m)

    GLOBAL const float* mrow = mask + (int64)b * msb + (int64)h * msh + (int64)i * msl;

    // Causal: the last row of this block is min(L, row0 + BLOCK_M) - 1, so keys from there on are masked for
    // every row of the block; those key blocks are skipped entirely (uniform over the work-group).
    int kend = S;
    if (causal) {
        int last = row0 + BLOCK_M < L ? row0 + BLOCK_M : L;
        kend = last < S ? last : S;
    }

    for (int kb = 0; kb < kend; kb += BLOCK_N) {
        // Stage K and V rows kb .. kb+BLOCK_N-1 (contiguous in memory); zero past S.
        const int64 nk = (int64)(S - kb);
        for (int idx = tid; idx < BLOCK_N * HEAD_DIM; idx += BLOCK_M)
            ks[idx] = idx < nk * HEAD_DIM ? kh[(int64)kb * HEAD_DIM + idx] : 0.0f;
        for (int idx = tid; idx < BLOCK_N * HEAD_DIM_V; idx += BLOCK_M)
            vs[idx] = idx < nk * HEAD_DIM_V ? vh[(int64)kb * HEAD_DIM_V + idx] : 0.0f;
        BARRIER();

        if (valid) {
            const int nvalid = kend - kb < BLOCK_N ? kend - kb : BLOCK_N;
            float s[BLOCK_N];
            float mt = NEG_INF;
            for (int jj = 0; jj < nvalid; jj++) {
                const int j = kb + jj;
                float d = 0.0f;
                for (int c = 0; c < HEAD_DIM; c++) d += qr[c] * ks[jj * HEAD_DIM + c];
                float x = d * scale;
                if (has_mask) x += mrow[(int64)j * mss];
                if (causal && j > i) x = NEG_INF;
                s[jj] = x;
                mt = FMAX(mt, x);
            }
            const float mnew = FMAX(m, mt);
            // Guard: while every score so far is -inf, subtract 0 instead of -inf so exp() gives 0, not NaN.
            const float mref = mnew == NEG_INF ? 0.0f : mnew;
            const float alpha = EXP(m - mref);
            l *= alpha;
            for (int c = 0; c < HEAD_DIM_V; c++) acc[c] *= alpha;
            for (int jj = 0; jj < nvalid; jj++) {
                const float p = EXP(s[jj] - mref);
                l += p;
                for (int c = 0; c < HEAD_DIM_V; c++) acc[c] += p * vs[jj * HEAD_DIM_V + c];
            }
            m = mnew;
        }
        BARRIER();                                // before the next step overwrites ks / vs
    }

    if (valid) {
        if (l == 0.0f) {                          // fully masked row (or S == 0): FlashAttention's convention
            for (int c = 0; c < HEAD_DIM_V; c++) out[row * HEAD_DIM_V + c] = 0.0f;
            lse[row] = NEG_INF;
        } else {                                  // NaN in l (NaN scores) propagates into this row only
            const float inv = 1.0f / l;
            for (int c = 0; c < HEAD_DIM_V; c++) out[row * HEAD_DIM_V + c] = acc[c] * inv;
            lse[row] = m + LOG(l);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Decoding (L == 1): one query row per (b, h) leaves a plain forward launch with one busy work-item per
// group, so the keys are split instead (flash-decoding): sdpa_decode_partial gives each work-group one chunk
// of DEC_CHUNK keys of one (b, h) and writes that chunk's max m, sum l and unnormalised accumulator;
// sdpa_decode_combine merges the chunks of each (b, h) with the same online-softmax rescaling.
//   part_acc [B*Hq, nsplit, HEAD_DIM_V], part_ml [B*Hq, nsplit, 2] (m, l).
// Grids: partial = (nsplit * DEC_WG, B*Hq) with local (DEC_WG, 1); combine = (B*Hq * DEC_WG) with local DEC_WG.
#ifndef DEC_WG
#define DEC_WG 64
#endif
#ifndef DEC_CHUNK
#define DEC_CHUNK 128
#endif

KERNEL sdpa_decode_partial(GLOBAL const float* RESTRICT q, GLOBAL const float* RESTRICT k, GLOBAL const float* RESTRICT v,
                           GLOBAL const float* RESTRICT mask, GLOBAL float* RESTRICT part_acc, GLOBAL float* RESTRICT part_ml,
                           int Hq, int Hkv, int S, float scale, int causal, int has_mask,
                           int64 msb, int64 msh, int64 mss, int nsplit)
{
    LOCAL_ARRAY(float, qs, HEAD_DIM);
    LOCAL_ARRAY(float, ps, DEC_CHUNK);

    const int tid = LID(0);
    const int split = GRP(0);
    const int bh = GRP(1);
    const int b = bh / Hq;
    const int h = bh - b * Hq;
    const int hk = h / (Hq / Hkv);
    const int64 kvhead = (int64)b * Hkv + hk;
    GLOBAL const float* kh = k + kvhead * S * HEAD_DIM;
    GLOBAL const float* vh = v + kvhead * S * HEAD_DIM_V;
    GLOBAL const float* mrow = mask + (int64)b * msb + (int64)h * msh;   // query row i = 0

    const int kend = causal ? (S < 1 ? S : 1) : S;  // causal, top-left aligned: row 0 keeps key 0 only
    const int j0 = split * DEC_CHUNK;
    int n = kend - j0;
    n = n < 0 ? 0 : n > DEC_CHUNK ? DEC_CHUNK : n;

    for (int c = tid; c < HEAD_DIM; c += DEC_WG) qs[c] = q[(int64)bh * HEAD_DIM + c];
    BARRIER();

    for (int jj = tid; jj < n; jj += DEC_WG) {
        const int64 j = j0 + jj;
        float d = 0.0f;
        for (int c = 0; c < HEAD_DIM; c++) d += qs[c] * kh[j * HEAD_DIM + c];
        float x = d * scale;
        if (has_mask) x += mrow[j * mss];
        ps[jj] = x;
    }
    BARRIER();

    float m = NEG_INF;
    for (int jj = 0; jj < n; jj++) m = FMAX(m, ps[jj]);
    const float mref = m == NEG_INF ? 0.0f : m;    // all -inf: exp(-inf - 0) = 0, never NaN
    BARRIER();                                    // everyone has read the scores before they become weights
    for (int jj = tid; jj < n; jj += DEC_WG) ps[jj] = EXP(ps[jj] - mref);
    BARRIER();

    const int64 part = (int64)bh * nsplit + split;
    for (int c = tid; c < HEAD_DIM_V; c += DEC_WG) {
        float acc = 0.0f;
        for (int jj = 0; jj < n; jj++) acc += ps[jj] * vh[(int64)(j0 + jj) * HEAD_DIM_V + c];
        part_acc[part * HEAD_DIM_V + c] = acc;
    }
    if (tid == 0) {
        float l = 0.0f;
        for (int jj = 0; jj < n; jj++) l += ps[jj];
        part_ml[part * 2] = m;
        part_ml[part * 2 + 1] = l;
    }
}

KERNEL sdpa_decode_combine(GLOBAL const float* RESTRICT part_acc, GLOBAL const float* RESTRICT part_ml,
                           GLOBAL float* RESTRICT out, GLOBAL float* RESTRICT lse, int nsplit)
{
    const int tid = LID(0);
    const int bh = GRP(0);
    GLOBAL const float* ml = part_ml + (int64)bh * nsplit * 2;
    float M = NEG_INF;
    for (int s = 0; s < nsplit; s++) M = FMAX(M, ml[2 * s]);
    const float mref = M == NEG_INF ? 0.0f : M;
    float l = 0.0f;
    for (int s = 0; s < nsplit; s++) l += ml[2 * s + 1] * EXP(ml[2 * s] - mref);
    const int full = l != 0.0f;                   // 0: fully masked row (or S == 0) -> out 0, lse -inf
    const float inv = full ? 1.0f / l : 0.0f;
    GLOBAL const float* acc = part_acc + (int64)bh * nsplit * HEAD_DIM_V;
    for (int c = tid; c < HEAD_DIM_V; c += DEC_WG) {
        float o = 0.0f;
        for (int s = 0; s < nsplit; s++) o += acc[(int64)s * HEAD_DIM_V + c] * EXP(ml[2 * s] - mref);
        out[(int64)bh * HEAD_DIM_V + c] = full ? o * inv : 0.0f;
    }
    if (tid == 0) lse[bh] = full ? M + LOG(l) : NEG_INF;
}
