using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GpuAttention.Backends.Cpu;

/// <summary>
/// SDPA backward with AVX-512 micro-kernels (runs where <see cref="FastSdpa"/> is on; otherwise the portable path of
/// CpuBackend.SdpaBackward.cs). Same two passes as the portable path, on <see cref="CpuWorkers"/>: Kᵀ and Vᵀ are packed
/// once per call into blocks [EPad][<see cref="FKB"/>] (zero padded: O(S·E) memory), so S = (scale·Q)·Kᵀ and
/// dP = dO·Vᵀ use the forward's 4×64 score micro-kernel; P = exp(S + mask − lse) and dS = P∘(dP − D) use the vectorised
/// <see cref="Exp"/>; dV += Pᵀ·dO, dK += dSᵀ·(scale·Q) and dQ += dS·K use a 4-row rank-update micro-kernel that reads
/// its left operand through strides (so Pᵀ, dSᵀ are never formed).
/// </summary>
internal sealed unsafe partial class CpuBackend
{
    internal const int BQB = 64;   // query rows per backward tile (a multiple of 4)

    /// <summary>
    /// What a backward work item reads: the op's tensors and D (set by <see cref="SdpaBackward"/>), then the blocking of
    /// the path that runs (KBlocks, QBlocks) and, on this path, the packed operands.
    /// </summary>
    private struct BwdCtx
    {
        public SdpaShape S;
        public float* Q, K, V, Mask, Out, Lse, GradOut, D, Dq, Dk, Dv, Kt, Vt, Kp;
        public long Rows;
        public int EPad, EvPad, KBlocks, QBlocks, KpStride;
    }

    // The packed Kᵀ / Vᵀ (and padded K) of a backward call (grow-only, per calling thread: no allocation in steady state).
    [ThreadStatic] private static float[]? t_bwdPack;

    /// <summary>Passes 2 and 3 on this path; <paramref name="ctx"/> holds the tensors and D.</summary>
    private static void SdpaBackwardFast(ref BwdCtx ctx)
    {
        ref readonly SdpaShape s = ref ctx.S;
        int EPad = (s.E + 15) & ~15, EvPad = (s.Ev + 15) & ~15;
        int kBlocks = (s.S + FKB - 1) / FKB;
        long heads = (long)s.B * s.Hkv;
        long ktLen = heads * kBlocks * EPad * FKB, vtLen = heads * kBlocks * EvPad * FKB;
        bool padK = EPad != s.E;
        long kpLen = padK ? heads * s.S * EPad : 0;
        long total = ktLen + vtLen + kpLen + 16;
        float* baseP = (float*)(((nint)GrowScratch(ref t_bwdPack, total) + 63) & ~(nint)63);   // 64-byte aligned
        ctx.Kt = baseP; ctx.Vt = baseP + ktLen; ctx.Kp = padK ? baseP + ktLen + vtLen : ctx.K; ctx.KpStride = padK ? EPad : s.E;
        ctx.EPad = EPad; ctx.EvPad = EvPad; ctx.KBlocks = kBlocks; ctx.QBlocks = (s.L + BQB - 1) / BQB;
        if (heads * kBlocks > int.MaxValue || (long)s.B * s.Hq * ctx.QBlocks > int.MaxValue)
            throw new NotSupportedException("too many attention rows for one call");
        fixed (BwdCtx* pc = &ctx)
        {
            CpuWorkers.For((int)(heads * kBlocks), &BwdPackItem, pc);
            if (heads >= BwdFusedMinItemsPerThread * CpuWorkers.Threads)
            {
                CpuWorkers.For((int)heads, &BwdFusedItem, pc);   // one pass: dK, dV and dQ from each tile
                return;
            }
            CpuWorkers.For((int)(heads * kBlocks), &BwdKeyItem, pc);
            CpuWorkers.For((int)((long)s.B * s.Hq * ctx.QBlocks), &BwdQueryItem, pc);
        }
    }

    /// <summary>Work items per thread from which the backward runs as one pass per kv head (<see cref="BwdFusedItem"/>);
    /// with fewer kv heads it runs the two passes (more, smaller items: every core busy).</summary>
    internal static int BwdFusedMinItemsPerThread = 4;

    // dQ accumulators of a fused backward item: the group's G·L rows (grow-only, per thread).
    [ThreadStatic] private static float[]? t_bwdDq;

    /// <summary>
    /// The backward of one kv head (b, hk) in one pass: for each key block, for each query block of each query head of the
    /// group, one tile gives P and dS (S and dP computed once, not twice as in the two-pass form), then dV += Pᵀ·dO,
    /// dK += dSᵀ·(scale·Q) and dQ += dS·K. The item owns dK, dV of its kv head and dQ of the G query heads of its group
    /// (accumulated over key blocks in order, in a per-thread O(G·L·E) buffer): no atomics, and the sums' order does not
    /// depend on the threads (bitwise repeatable). 5 tile GEMMs per (query block, key block) instead of 7.
    /// </summary>
    private static void BwdFusedItem(void* pctx, int work)
    {
        ref BwdCtx c = ref Unsafe.AsRef<BwdCtx>(pctx);
        ref readonly SdpaShape s = ref c.S;
        long bhk = work;
        int b = (int)(bhk / s.Hkv), hk = (int)(bhk % s.Hkv);
        int EPad = c.EPad, EvPad = c.EvPad, G = s.Group, L = s.L;
        float* dkAcc = FastScratch((long)FKB * (EPad + EvPad) + BQB * (EPad + EvPad + 2 * FKB));
        float* dvAcc = dkAcc + FKB * EPad;
        float* qs = dvAcc + FKB * EvPad;
        float* dos = qs + BQB * EPad;
        float* sc = dos + BQB * EvPad;
        float* dp = sc + BQB * FKB;
        // G·L rows plus 4 (the last query block's padding rows receive exact zeros).
        float* dqAll = GrowScratch(ref t_bwdDq, ((long)G * L + 4) * EPad);
        new Span<float>(dqAll, (G * L + 4) * EPad).Clear();
        float* kHead = c.Kp + bhk * s.S * c.KpStride;
        for (int blk = 0; blk < c.KBlocks; blk++)
        {
            int j0 = blk * FKB, kn = Math.Min(FKB, s.S - j0);
            float* kt = c.Kt + (bhk * c.KBlocks + blk) * EPad * FKB;
            float* vt = c.Vt + (bhk * c.KBlocks + blk) * EvPad * FKB;
            float* kb = kHead + (long)j0 * c.KpStride;
            bool kFinite = AllFinite(kb, (long)kn * EPad);
            int kr = (kn + 3) & ~3;
            new Span<float>(dkAcc, kr * EPad).Clear();
            new Span<float>(dvAcc, kr * EvPad).Clear();
            int iStart = s.Causal ? j0 / BQB * BQB : 0;
            for (int g = 0; g < G; g++)
            {
                int h = hk * G + g;
                long qRow0 = ((long)b * s.Hq + h) * L;
                for (int i0 = iStart; i0 < L; i0 += BQB)
                {
                    int qn = Math.Min(BQB, L - i0), qr = (qn + 3) & ~3;
                    BwdPackRows(ref c, qRow0 + i0, qn, qr, qs, dos);
                    BwdTile(ref c, b, h, i0, qn, qr, j0, kn, qs, dos, kt, vt, sc, dp);
                    bool dosFinite = AllFinite(dos, (long)qr * EvPad), qsFinite = AllFinite(qs, (long)qr * EPad);
                    for (int t = 0; t < kr; t += 4)
                    {
                        RankUpdate4Checked(dosFinite, sc + t, 1, FKB, dos, EvPad, qr, dvAcc + t * EvPad, EvPad);   // dV += Pᵀ dO
                        RankUpdate4Checked(qsFinite, dp + t, 1, FKB, qs, EPad, qr, dkAcc + t * EPad, EPad);       // dK += dSᵀ (scale Q)
                    }
                    float* dqRows = dqAll + ((long)g * L + i0) * EPad;
                    for (int r = 0; r < qr; r += 4)
                        RankUpdate4Checked(kFinite, dp + r * FKB, FKB, 1, kb, EPad, kn, dqRows + r * EPad, EPad);   // dQ += dS K
                }
            }
            long kvRow = bhk * s.S + j0;
            for (int j = 0; j < kn; j++)
            {
                new ReadOnlySpan<float>(dkAcc + j * EPad, s.E).CopyTo(new Span<float>(c.Dk + (kvRow + j) * s.E, s.E));
                new ReadOnlySpan<float>(dvAcc + j * EvPad, s.Ev).CopyTo(new Span<float>(c.Dv + (kvRow + j) * s.Ev, s.Ev));
            }
        }
        float sv = s.Scale;
        for (int g = 0; g < G; g++)
        {
            long qRow0 = ((long)b * s.Hq + hk * G + g) * L;
            for (int i = 0; i < L; i++)
                TensorPrimitives.Multiply(new ReadOnlySpan<float>(dqAll + ((long)g * L + i) * EPad, s.E), sv, new Span<float>(c.Dq + (qRow0 + i) * s.E, s.E));
        }
    }

    private static void BwdPackItem(void* pctx, int work)
    {
        ref BwdCtx c = ref Unsafe.AsRef<BwdCtx>(pctx);
        ref readonly SdpaShape s = ref c.S;
        int blk = work % c.KBlocks;
        long bhk = work / c.KBlocks;
        int j0 = blk * FKB, kn = Math.Min(FKB, s.S - j0);
        float* kt = c.Kt + (bhk * c.KBlocks + blk) * c.EPad * FKB;
        float* vt = c.Vt + (bhk * c.KBlocks + blk) * c.EvPad * FKB;
        new Span<float>(kt, c.EPad * FKB).Clear();
        new Span<float>(vt, c.EvPad * FKB).Clear();
        TransposeInto(c.K + (bhk * s.S + j0) * s.E, s.E, kn, kt);
        TransposeInto(c.V + (bhk * s.S + j0) * s.Ev, s.Ev, kn, vt);
        if (c.Kp != c.K)
            for (int j = 0; j < kn; j++)
            {
                float* dst = c.Kp + (bhk * s.S + j0 + j) * c.EPad;
                new ReadOnlySpan<float>(c.K + (bhk * s.S + j0 + j) * s.E, s.E).CopyTo(new Span<float>(dst, s.E));
                new Span<float>(dst + s.E, c.EPad - s.E).Clear();
            }
    }

    /// <summary>Packs rows i0..i0+qn of head (b, h): qs = scale·Q, dos = dO, both zero padded to qr rows and EPad/EvPad columns.</summary>
    private static void BwdPackRows(ref BwdCtx c, long qRow, int qn, int qr, float* qs, float* dos)
    {
        ref readonly SdpaShape s = ref c.S;
        new Span<float>(qs, qr * c.EPad).Clear();
        new Span<float>(dos, qr * c.EvPad).Clear();
        for (int r = 0; r < qn; r++)
        {
            TensorPrimitives.Multiply(new ReadOnlySpan<float>(c.Q + (qRow + r) * s.E, s.E), s.Scale, new Span<float>(qs + r * c.EPad, s.E));
            new ReadOnlySpan<float>(c.GradOut + (qRow + r) * s.Ev, s.Ev).CopyTo(new Span<float>(dos + r * c.EvPad, s.Ev));
        }
    }

    /// <summary>
    /// sc = S tile, dp = dP tile (qr × kCols, row stride FKB) for rows i0.. of head (b, h) against keys j0.. of block
    /// kt/vt; turns them into P and dS = P∘(dP − D) in place (zero outside the kn visible keys and rows ≥ qn).
    /// </summary>
    private static void BwdTile(ref BwdCtx c, int b, int h, int i0, int qn, int qr, int j0, int kn, float* qs, float* dos,
        float* kt, float* vt, float* sc, float* dp)
    {
        ref readonly SdpaShape s = ref c.S;
        int kCols = (kn + 63) & ~63;
        for (int r = 0; r < qr; r += 4)
            for (int cc = 0; cc < kCols; cc += 64)
            {
                ScoreTile4x64(qs + r * c.EPad, c.EPad, kt + cc, sc + r * FKB + cc);
                ScoreTile4x64(dos + r * c.EvPad, c.EvPad, vt + cc, dp + r * FKB + cc);
            }
        long row0 = ((long)b * s.Hq + h) * s.L + i0;
        long maskBase = b * s.MaskStrideB + h * s.MaskStrideH;
        for (int r = 0; r < qr; r++)
        {
            float* ps = sc + r * FKB, ds = dp + r * FKB;
            int i = i0 + r;
            float l = r < qn ? c.Lse[row0 + r] : float.NegativeInfinity;
            int keep = s.Causal ? Math.Clamp(i + 1 - j0, 0, kn) : kn;
            if (float.IsNegativeInfinity(l) || keep == 0)
            {
                new Span<float>(ps, kCols).Clear(); new Span<float>(ds, kCols).Clear();
                continue;
            }
            if (c.Mask != null)
            {
                float* mrow = c.Mask + maskBase + (long)i * s.MaskStrideL;
                if (s.MaskStrideS == 1) TensorPrimitives.Add(new ReadOnlySpan<float>(ps, kn), new ReadOnlySpan<float>(mrow + j0, kn), new Span<float>(ps, kn));
                else TensorPrimitives.Add(new ReadOnlySpan<float>(ps, kn), mrow[0], new Span<float>(ps, kn));
            }
            for (int j = keep; j < kCols; j++) ps[j] = float.NegativeInfinity;
            var lv = Vector512.Create(l);
            var dv = Vector512.Create(c.D[row0 + r]);
            for (int j = 0; j < kCols; j += 16)
            {
                var p = Exp(Vector512.Load(ps + j) - lv);
                p.Store(ps + j);
                // a key with P = 0 is absent: dS = 0 there even when dP is ∞ or NaN
                Vector512.ConditionalSelect(Vector512.Equals(p, Vector512<float>.Zero), Vector512<float>.Zero, (Vector512.Load(ds + j) - dv) * p).Store(ds + j);
            }
        }
    }

    private static void BwdKeyItem(void* pctx, int work)
    {
        ref BwdCtx c = ref Unsafe.AsRef<BwdCtx>(pctx);
        ref readonly SdpaShape s = ref c.S;
        int blk = work % c.KBlocks;
        long bhk = work / c.KBlocks;
        int b = (int)(bhk / s.Hkv), hk = (int)(bhk % s.Hkv);
        int j0 = blk * FKB, kn = Math.Min(FKB, s.S - j0);
        int EPad = c.EPad, EvPad = c.EvPad;
        float* kt = c.Kt + (bhk * c.KBlocks + blk) * EPad * FKB;
        float* vt = c.Vt + (bhk * c.KBlocks + blk) * EvPad * FKB;
        float* dkAcc = FastScratch((long)FKB * (EPad + EvPad) + BQB * (EPad + EvPad + 2 * FKB));
        float* dvAcc = dkAcc + FKB * EPad;
        float* qs = dvAcc + FKB * EvPad;
        float* dos = qs + BQB * EPad;
        float* sc = dos + BQB * EvPad;
        float* dp = sc + BQB * FKB;
        int kr = (kn + 3) & ~3;
        new Span<float>(dkAcc, kr * EPad).Clear();
        new Span<float>(dvAcc, kr * EvPad).Clear();
        int iStart = s.Causal ? j0 / BQB * BQB : 0;
        for (int g = 0; g < s.Group; g++)
        {
            int h = hk * s.Group + g;
            long qRow0 = ((long)b * s.Hq + h) * s.L;
            for (int i0 = iStart; i0 < s.L; i0 += BQB)
            {
                int qn = Math.Min(BQB, s.L - i0), qr = (qn + 3) & ~3;
                BwdPackRows(ref c, qRow0 + i0, qn, qr, qs, dos);
                BwdTile(ref c, b, h, i0, qn, qr, j0, kn, qs, dos, kt, vt, sc, dp);
                bool dosFinite = AllFinite(dos, (long)qr * EvPad), qsFinite = AllFinite(qs, (long)qr * EPad);
                for (int t = 0; t < kr; t += 4)
                {
                    RankUpdate4Checked(dosFinite, sc + t, 1, FKB, dos, EvPad, qr, dvAcc + t * EvPad, EvPad);   // dV += Pᵀ dO
                    RankUpdate4Checked(qsFinite, dp + t, 1, FKB, qs, EPad, qr, dkAcc + t * EPad, EPad);       // dK += dSᵀ (scale Q)
                }
            }
        }
        long kvRow = bhk * s.S + j0;
        for (int j = 0; j < kn; j++)
        {
            new ReadOnlySpan<float>(dkAcc + j * EPad, s.E).CopyTo(new Span<float>(c.Dk + (kvRow + j) * s.E, s.E));
            new ReadOnlySpan<float>(dvAcc + j * EvPad, s.Ev).CopyTo(new Span<float>(c.Dv + (kvRow + j) * s.Ev, s.Ev));
        }
    }

    private static void BwdQueryItem(void* pctx, int work)
    {
        ref BwdCtx c = ref Unsafe.AsRef<BwdCtx>(pctx);
        ref readonly SdpaShape s = ref c.S;
        int qb = work % c.QBlocks;
        long bh = work / c.QBlocks;
        int b = (int)(bh / s.Hq), h = (int)(bh % s.Hq), hk = h / s.Group;
        long bhk = (long)b * s.Hkv + hk;
        int i0 = qb * BQB, qn = Math.Min(BQB, s.L - i0), qr = (qn + 3) & ~3;
        int EPad = c.EPad, EvPad = c.EvPad;
        float* dqAcc = FastScratch(BQB * (2 * EPad + EvPad + 2 * FKB));
        float* qs = dqAcc + BQB * EPad;
        float* dos = qs + BQB * EPad;
        float* sc = dos + BQB * EvPad;
        float* dp = sc + BQB * FKB;
        new Span<float>(dqAcc, qr * EPad).Clear();
        long qRow = bh * s.L + i0;
        BwdPackRows(ref c, qRow, qn, qr, qs, dos);
        int kEnd = s.Causal ? Math.Min(s.S, i0 + qn) : s.S;
        float* kHead = c.Kp + bhk * s.S * c.KpStride;
        for (int j0 = 0; j0 < kEnd; j0 += FKB)
        {
            int blk = j0 / FKB, kn = Math.Min(FKB, kEnd - j0);
            float* kt = c.Kt + (bhk * c.KBlocks + blk) * EPad * FKB;
            float* vt = c.Vt + (bhk * c.KBlocks + blk) * EvPad * FKB;
            BwdTile(ref c, b, h, i0, qn, qr, j0, kn, qs, dos, kt, vt, sc, dp);
            float* kb = kHead + (long)j0 * c.KpStride;
            bool kFinite = AllFinite(kb, (long)kn * EPad);
            for (int r = 0; r < qr; r += 4)   // KpStride == EPad: K itself when E % 16 == 0, else its padded copy
                RankUpdate4Checked(kFinite, dp + r * FKB, FKB, 1, kb, EPad, kn, dqAcc + r * EPad, EPad);   // dQ += dS K
        }
        var sv = s.Scale;
        for (int r = 0; r < qn; r++)
            TensorPrimitives.Multiply(new ReadOnlySpan<float>(dqAcc + r * EPad, s.E), sv, new Span<float>(c.Dq + (qRow + r) * s.E, s.E));
    }

    /// <summary>
    /// <see cref="RankUpdate4"/> when <paramref name="mFinite"/>; otherwise (m holds NaN or ±∞, rare) a scalar loop that skips the
    /// coefficients that are exactly 0 (masked or causal-hidden keys are absent: no 0·∞ = NaN from them).
    /// </summary>
    private static void RankUpdate4Checked(bool mFinite, float* a, int at, int ax, float* m, int mStride, int n, float* acc, int cols)
    {
        if (mFinite) { RankUpdate4(a, at, ax, m, mStride, n, acc, cols); return; }
        for (int t = 0; t < 4; t++)
            for (int x = 0; x < n; x++)
            {
                float s = a[t * at + (long)x * ax];
                if (s == 0f) continue;
                float* mr = m + (long)x * mStride, ar = acc + (long)t * cols;
                for (int col = 0; col < cols; col++) ar[col] += s * mr[col];
            }
    }

    /// <summary>
    /// acc[t·accStride + col] += Σ_x a[t·at + x·ax] · m[x·mStride + col] for t = 0..3, col &lt; cols (a multiple of 16).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RankUpdate4(float* a, int at, int ax, float* m, int mStride, int n, float* acc, int cols)
    {
        // Rows 1..3 of a as index registers and pointer steps in nint: the inner loops keep to two pointer adds and the
        // loop test beside the loads and FMAs (the JIT spilled a counter of the indexed form).
        nint t1 = at, t2 = 2 * (nint)at, t3 = 3 * (nint)at, step = ax, ms = mStride;
        int accStride = cols;
        int col = 0;
        for (; col + 64 <= cols; col += 64)
        {
            float* a0 = acc + col, a1 = a0 + accStride, a2 = a1 + accStride, a3 = a2 + accStride;
            Vector512<float> c00 = Vector512.Load(a0), c01 = Vector512.Load(a0 + 16), c02 = Vector512.Load(a0 + 32), c03 = Vector512.Load(a0 + 48);
            Vector512<float> c10 = Vector512.Load(a1), c11 = Vector512.Load(a1 + 16), c12 = Vector512.Load(a1 + 32), c13 = Vector512.Load(a1 + 48);
            Vector512<float> c20 = Vector512.Load(a2), c21 = Vector512.Load(a2 + 16), c22 = Vector512.Load(a2 + 32), c23 = Vector512.Load(a2 + 48);
            Vector512<float> c30 = Vector512.Load(a3), c31 = Vector512.Load(a3 + 16), c32 = Vector512.Load(a3 + 32), c33 = Vector512.Load(a3 + 48);
            float* mj = m + col, pa = a;
            for (int x = n; x > 0; x--, mj += ms, pa += step)
            {
                var v0 = Vector512.Load(mj); var v1 = Vector512.Load(mj + 16); var v2 = Vector512.Load(mj + 32); var v3 = Vector512.Load(mj + 48);
                var s = Vector512.Create(pa[0]);
                c00 = Avx512F.FusedMultiplyAdd(s, v0, c00); c01 = Avx512F.FusedMultiplyAdd(s, v1, c01);
                c02 = Avx512F.FusedMultiplyAdd(s, v2, c02); c03 = Avx512F.FusedMultiplyAdd(s, v3, c03);
                s = Vector512.Create(pa[t1]);
                c10 = Avx512F.FusedMultiplyAdd(s, v0, c10); c11 = Avx512F.FusedMultiplyAdd(s, v1, c11);
                c12 = Avx512F.FusedMultiplyAdd(s, v2, c12); c13 = Avx512F.FusedMultiplyAdd(s, v3, c13);
                s = Vector512.Create(pa[t2]);
                c20 = Avx512F.FusedMultiplyAdd(s, v0, c20); c21 = Avx512F.FusedMultiplyAdd(s, v1, c21);
                c22 = Avx512F.FusedMultiplyAdd(s, v2, c22); c23 = Avx512F.FusedMultiplyAdd(s, v3, c23);
                s = Vector512.Create(pa[t3]);
                c30 = Avx512F.FusedMultiplyAdd(s, v0, c30); c31 = Avx512F.FusedMultiplyAdd(s, v1, c31);
                c32 = Avx512F.FusedMultiplyAdd(s, v2, c32); c33 = Avx512F.FusedMultiplyAdd(s, v3, c33);
            }
            c00.Store(a0); c01.Store(a0 + 16); c02.Store(a0 + 32); c03.Store(a0 + 48);
            c10.Store(a1); c11.Store(a1 + 16); c12.Store(a1 + 32); c13.Store(a1 + 48);
            c20.Store(a2); c21.Store(a2 + 16); c22.Store(a2 + 32); c23.Store(a2 + 48);
            c30.Store(a3); c31.Store(a3 + 16); c32.Store(a3 + 32); c33.Store(a3 + 48);
        }
        for (; col < cols; col += 16)
        {
            float* a0 = acc + col, a1 = a0 + accStride, a2 = a1 + accStride, a3 = a2 + accStride;
            Vector512<float> c0 = Vector512.Load(a0), c1 = Vector512.Load(a1), c2 = Vector512.Load(a2), c3 = Vector512.Load(a3);
            float* mj = m + col, pa = a;
            for (int x = n; x > 0; x--, mj += ms, pa += step)
            {
                var vv = Vector512.Load(mj);
                c0 = Avx512F.FusedMultiplyAdd(Vector512.Create(pa[0]), vv, c0);
                c1 = Avx512F.FusedMultiplyAdd(Vector512.Create(pa[t1]), vv, c1);
                c2 = Avx512F.FusedMultiplyAdd(Vector512.Create(pa[t2]), vv, c2);
                c3 = Avx512F.FusedMultiplyAdd(Vector512.Create(pa[t3]), vv, c3);
            }
            c0.Store(a0); c1.Store(a1); c2.Store(a2); c3.Store(a3);
        }
    }
}
