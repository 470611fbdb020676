// Strided batched GEMM: C = alpha · op(A) · op(B) + beta · C (BLAS sgemm semantics; beta == 0 does not read C).
// Tiled in local memory (Volkov & Demmel 2008; CLBlast's xgemm_direct structure, simplified):
//   a work-group of (TN/WN) x (TM/WM) work-items computes a TM x TN tile of C; every work-item owns WM x WN outputs
//   in registers (strided by the work-group's extent, so neighbouring work-items touch neighbouring columns);
//   per step the group stages a TM x TK slice of op(A) and a TK x TN slice of op(B) in local memory
//   (transposes are resolved while staging), guarded with zeros past M, N and K.
// Grid: dim 0 = ceil(N / TN) * (TN / WN), dim 1 = ceil(M / TM) * (TM / WM), dim 2 = batch.
// Written in the prelude's words only (OpenCL C 1.2 and CUDA via NVRTC).
//
// Compile-time defines (tuning knobs):
//   TM, TN   tile of C per work-group (default 32 x 32)
//   TK       depth of a staged slice (default 16)
//   WM, WN   outputs per work-item along M and N (default 4 x 4); TM % WM == 0, TN % WN == 0
//   TRANS_A, TRANS_B   0 / 1

#ifndef TM
#define TM 32
#endif
#ifndef TN
#define TN 32
#endif
#ifndef TK
#define TK 16
#endif
#ifndef WM
#define WM 4
#endif
#ifndef WN
#define WN 4
#endif
#ifndef TRANS_A
#define TRANS_A 0
#endif
#ifndef TRANS_B
#define TRANS_B 0
#endif

#define RM (TM / WM)           // work-items along M
#define RN (TN / WN)           // work-items along N
#define NTHREADS (RM * RN)

KERNEL gemm_batched(int M, int N, int K, float alpha, float beta,
                    GLOBAL const float* RESTRICT A, int64 offA, int64 strideA, int lda,
                    GLOBAL const float* RESTRICT B, int64 offB, int64 strideB, int ldb,
                    GLOBAL float* RESTRICT C, int64 offC, int64 strideC, int ldc)
{
    LOCAL_ARRAY(float, As, TK * TM);          // As[kk * TM + mm] = op(A)[m0 + mm, k0 + kk]
    LOCAL_ARRAY(float, Bs, TK * TN);          // Bs[kk * TN + nn] = op(B)[k0 + kk, n0 + nn]

    const int tx = LID(0), ty = LID(1);
    const int tid = ty * RN + tx;
    const int n0 = GRP(0) * TN, m0 = GRP(1) * TM;
    const int64 t = GRP(2);
    GLOBAL const float* a = A + offA + t * strideA;
    GLOBAL const float* b = B + offB + t * strideB;
    GLOBAL float* c = C + offC + t * strideC;

    float acc[WM][WN];
    for (int i = 0; i < WM; i++)
        for (int j = 0; j < WN; j++) acc[i][j] = 0.0f;

    // Index splits are written as q = idx / X, r = idx - q * X, not with %: clang turns a / and % pair into a `freeze`
    // instruction that oclgrind's uninitialized-value checker cannot follow (CI runs every kernel under oclgrind).
    for (int k0 = 0; k0 < K; k0 += TK) {
        for (int idx = tid; idx < TK * TM; idx += NTHREADS) {
#if TRANS_A
            const int kk = idx / TM, mm = idx - kk * TM;  // consecutive work-items read consecutive m: coalesced
            const int m = m0 + mm, k = k0 + kk;
            As[kk * TM + mm] = (m < M && k < K) ? a[(int64)k * lda + m] : 0.0f;
#else
            const int mm = idx / TK, kk = idx - mm * TK;  // consecutive k
            const int m = m0 + mm, k = k0 + kk;
            As[kk * TM + mm] = (m < M && k < K) ? a[(int64)m * lda + k] : 0.0f;
#endif
        }
        for (int idx = tid; idx < TK * TN; idx += NTHREADS) {
#if TRANS_B
            const int nn = idx / TK, kk = idx - nn * TK;
            const int n = n0 + nn, k = k0 + kk;
            Bs[kk * TN + nn] = (n < N && k < K) ? b[(int64)n * ldb + k] : 0.0f;
#else
            const int kk = idx / TN, nn = idx - kk * TN;
            const int n = n0 + nn, k = k0 + kk;
            Bs[kk * TN + nn] = (n < N && k < K) ? b[(int64)k * ldb + n] : 0.0f;
#endif
        }
        BARRIER();

        for (int kk = 0; kk < TK; kk++) {
            float ar[WM], br[WN];
            for (int i = 0; i < WM; i++) ar[i] = As[kk * TM + ty + i * RM];
            for (int j = 0; j < WN; j++) br[j] = Bs[kk * TN + tx + j * RN];
            for (int i = 0; i < WM; i++)
                for (int j = 0; j < WN; j++) acc[i][j] += ar[i] * br[j];
        }
        BARRIER();                                       // before the next slice overwrites As / Bs
    }

    for (int i = 0; i < WM; i++) {
        const int m = m0 + ty + i * RM;
        if (m >= M) continue;
        for (int j = 0; j < WN; j++) {
            const int n = n0 + tx + j * RN;
            if (n >= N) continue;
            const int64 o = (int64)m * ldc + n;
            c[o] = beta == 0.0f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * c[o];
        }
    }
}
