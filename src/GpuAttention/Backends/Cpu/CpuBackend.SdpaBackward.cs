using System.Numerics;
using System.Numerics.Tensors;

namespace GpuAttention.Backends.Cpu;

/// <summary>
/// Fused SDPA backward on the CPU, FlashAttention-2's structure (Dao 2023, arXiv:2307.08691) without atomics:
/// (1) D = rowsum(dO∘O) per query row; (2) work items (batch, key head, block of <see cref="BwdKeyBlock"/> keys) own
/// their dK/dV rows and walk the query blocks of every query head of the GQA group; (3) work items (batch, query head,
/// block of <see cref="BwdQueryBlock"/> queries) own their dQ rows and walk the key blocks. Both passes recompute
/// P = exp(scale·q·kᵀ + mask − lse) and dS = P∘(dO·vᵀ − D) tile by tile in thread-local scratch (never L×S), and skip
/// tiles that causal masking hides entirely. Tiles reuse the forward's register-blocked SIMD micro-kernels.
/// </summary>
internal sealed unsafe partial class CpuBackend : ISdpaBackwardBackend
{
    internal const int BwdQueryBlock = 64;
    internal const int BwdKeyBlock = 64;

    [ThreadStatic] private static float[]? t_bwdScratch;
    // D = rowsum(dO∘O) of a backward call (grow-only, per calling thread).
    [ThreadStatic] private static float[]? t_bwdD;

    /// <summary>Query rows per work item of pass (1).</summary>
    private const int DRowChunk = 256;

    public void SdpaBackward(in SdpaBackwardArgs a)
    {
        var s = a.Shape;
        float* dq = Ptr(a.GradQ), dk = Ptr(a.GradK), dv = Ptr(a.GradV);
        // Outputs that no work item reaches (L == 0 leaves dK, dV zero; S == 0 leaves dQ zero) must still be written.
        Clear(dq, a.GradQ.Length); Clear(dk, a.GradK.Length); Clear(dv, a.GradV.Length);
        if (s.B == 0 || s.Hq == 0 || s.L == 0 || s.S == 0) return;

        long rows = (long)s.B * s.Hq * s.L;
        if (rows > Array.MaxLength) throw new NotSupportedException($"too many attention rows for one call ({rows}; at most {Array.MaxLength})");
        var ctx = new BwdCtx
        {
            S = s, Q = Ptr(a.Q), K = Ptr(a.K), V = Ptr(a.V), Mask = Ptr(a.Mask), Out = Ptr(a.Out), Lse = Ptr(a.Lse),
            GradOut = Ptr(a.GradOut), D = GrowScratch(ref t_bwdD, rows), Dq = dq, Dk = dk, Dv = dv, Rows = rows,
        };
        CpuWorkers.For((int)((rows + DRowChunk - 1) / DRowChunk), &BwdDItem, &ctx);

        if (FastSdpa)
        {
            SdpaBackwardFast(ref ctx);
            return;
        }

        ctx.KBlocks = (s.S + BwdKeyBlock - 1) / BwdKeyBlock;
        ctx.QBlocks = (s.L + BwdQueryBlock - 1) / BwdQueryBlock;
        CpuWorkers.For(WorkItems((long)s.B * s.Hkv * ctx.KBlocks, "attention keys"), &BwdKeyBlockItem, &ctx);
        CpuWorkers.For(WorkItems((long)s.B * s.Hq * ctx.QBlocks, "attention rows"), &BwdQueryBlockItem, &ctx);
    }

    /// <summary>Pass (1), rows c·DRowChunk .. : D[r] = Σ dO[r, :]∘O[r, :].</summary>
    private static void BwdDItem(void* pctx, int c)
    {
        ref readonly BwdCtx x = ref *(BwdCtx*)pctx;
        int Ev = x.S.Ev;
        long r1 = Math.Min(x.Rows, (c + 1L) * DRowChunk);
        for (long r = (long)c * DRowChunk; r < r1; r++)
            x.D[r] = Ev == 0 ? 0f : TensorPrimitives.Dot(new ReadOnlySpan<float>(x.GradOut + r * Ev, Ev), new ReadOnlySpan<float>(x.Out + r * Ev, Ev));
    }

    /// <summary>Pass (2) on this path: work item (batch, key head, key block).</summary>
    private static void BwdKeyBlockItem(void* pctx, int item)
    {
        ref readonly BwdCtx c = ref *(BwdCtx*)pctx;
        int kb = item % c.KBlocks;
        int bhk = item / c.KBlocks;
        KeyBlockGrads(c.S, bhk / c.S.Hkv, bhk % c.S.Hkv, kb * BwdKeyBlock, c.Q, c.K, c.V, c.Mask, c.Lse, c.GradOut, c.D, c.Dk, c.Dv);
    }

    /// <summary>Pass (3) on this path: work item (batch, query head, query block).</summary>
    private static void BwdQueryBlockItem(void* pctx, int item)
    {
        ref readonly BwdCtx c = ref *(BwdCtx*)pctx;
        int qb = item % c.QBlocks;
        int bh = item / c.QBlocks;
        QueryBlockGrads(c.S, bh / c.S.Hq, bh % c.S.Hq, qb * BwdQueryBlock, c.Q, c.K, c.V, c.Mask, c.Lse, c.GradOut, c.D, c.Dq);
    }

    private static void Clear(float* p, long n)
    {
        for (long i = 0; i < n; i += int.MaxValue) new Span<float>(p + i, (int)Math.Min(int.MaxValue, n - i)).Clear();
    }

    private static float* BwdScratch()
    {
        int need = 4 * KeyBlock * Math.Max(BwdQueryBlock, BwdKeyBlock);
        var s = t_bwdScratch;
        if (s is null) t_bwdScratch = s = GC.AllocateArray<float>(need, pinned: true);
        return (float*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref s[0]);
    }

    /// <summary>
    /// Turns the score tile sc (qn×kn, row stride KeyBlock, raw q·k dots) into P in place, and the tile dp (dO·vᵀ) into
    /// dS·scale = P∘(dP − D)·scale in place, for query rows i0.. of head (b, h) against keys j0...
    /// </summary>
    private static void ProbabilitiesAndDs(in SdpaShape s, int b, int h, int i0, int qn, int j0, int kn, float* sc, float* dp,
        float* mask, float* lse, float* dRow)
    {
        long row0 = ((long)b * s.Hq + h) * s.L + i0;
        long maskBase = b * s.MaskStrideB + h * s.MaskStrideH;
        for (int r = 0; r < qn; r++)
        {
            var ps = new Span<float>(sc + r * KeyBlock, kn);
            var ds = new Span<float>(dp + r * KeyBlock, kn);
            float l = lse[row0 + r];
            int i = i0 + r;
            int keep = s.Causal ? Math.Clamp(i + 1 - j0, 0, kn) : kn;   // keys j0 + jj with jj < keep are visible
            if (float.IsNegativeInfinity(l) || keep == 0) { ps.Clear(); ds.Clear(); continue; }
            TensorPrimitives.Multiply(ps, s.Scale, ps);
            if (mask != null)
            {
                float* mrow = mask + maskBase + (long)i * s.MaskStrideL;
                if (s.MaskStrideS == 1) TensorPrimitives.Add(ps, new ReadOnlySpan<float>(mrow + j0, kn), ps);
                else TensorPrimitives.Add(ps, mrow[0], ps);
            }
            TensorPrimitives.Subtract(ps, l, ps);
            TensorPrimitives.Exp(ps, ps);
            if (keep < kn) { ps[keep..].Clear(); }
            TensorPrimitives.Subtract(ds, dRow[row0 + r], ds);
            TensorPrimitives.Multiply(ds, ps, ds);
            TensorPrimitives.Multiply(ds, s.Scale, ds);
            for (int j = 0; j < kn; j++) if (ps[j] == 0f) ds[j] = 0f;   // a masked key is absent: no 0·∞ from its v or the row's dO
        }
    }

    /// <summary>
    /// <see cref="AccumulatePV"/>, except that when <paramref name="v"/> holds a non-finite value the products with a coefficient of
    /// exactly 0 (a masked or causal-hidden key, a fully masked row) are skipped, so NaN/∞ stay where the math puts them.
    /// </summary>
    private static void AccumulatePVAbsentZeros(float* p, float* v, float* acc, int qn, int kn, int Ev)
    {
        if (AllFinite(v, (long)kn * Ev)) { AccumulatePV(p, v, acc, qn, kn, Ev); return; }
        for (int r = 0; r < qn; r++)
            for (int j = 0; j < kn; j++)
            {
                float pj = p[r * KeyBlock + j];
                if (pj == 0f) continue;
                float* vr = v + (long)j * Ev;
                float* ar = acc + (long)r * Ev;
                for (int c = 0; c < Ev; c++) ar[c] += pj * vr[c];
            }
    }

    /// <summary>True when none of the <paramref name="n"/> floats at <paramref name="x"/> is NaN or ±∞ (x·0 is 0 only for finite x).</summary>
    internal static bool AllFinite(float* x, long n)
    {
        int W = Vector<float>.Count;
        var acc = Vector<float>.Zero;
        long i = 0;
        for (; i + W <= n; i += W) acc += Vector.Load(x + i) * Vector<float>.Zero;
        float t = 0f;
        for (; i < n; i++) t += x[i] * 0f;
        return Vector.EqualsAll(acc, Vector<float>.Zero) && t == 0f;
    }

    /// <summary>dK, dV rows j0 .. j0+BwdKeyBlock of key head (b, hk), summed over the query heads of its group.</summary>
    private static void KeyBlockGrads(in SdpaShape s, int b, int hk, int j0, float* q, float* k, float* v, float* mask, float* lse,
        float* dout, float* dRow, float* dk, float* dv)
    {
        int kn = Math.Min(BwdKeyBlock, s.S - j0);
        int E = s.E, Ev = s.Ev;
        long kvRow = ((long)b * s.Hkv + hk) * s.S + j0;
        float* kBlk = k + kvRow * E, vBlk = v + kvRow * Ev, dkBlk = dk + kvRow * E, dvBlk = dv + kvRow * Ev;
        float* sc = BwdScratch();
        float* dp = sc + BwdQueryBlock * KeyBlock;
        float* pt = dp + BwdQueryBlock * KeyBlock;      // Pᵀ  [kn][qn], row stride KeyBlock
        float* dst = pt + BwdKeyBlock * KeyBlock;       // dSᵀ [kn][qn]
        // Causal: query rows i < j0 see none of these keys; start at the query block holding row j0.
        int iStart = s.Causal ? j0 / BwdQueryBlock * BwdQueryBlock : 0;
        for (int g = 0; g < s.Group; g++)
        {
            int h = hk * s.Group + g;
            long qRow0 = ((long)b * s.Hq + h) * s.L;
            for (int i0 = iStart; i0 < s.L; i0 += BwdQueryBlock)
            {
                int qn = Math.Min(BwdQueryBlock, s.L - i0);
                float* qBlk = q + (qRow0 + i0) * E, doBlk = dout + (qRow0 + i0) * Ev;
                Scores(qBlk, kBlk, sc, qn, kn, E);
                Scores(doBlk, vBlk, dp, qn, kn, Ev);
                ProbabilitiesAndDs(s, b, h, i0, qn, j0, kn, sc, dp, mask, lse, dRow);
                for (int r = 0; r < qn; r++)
                    for (int j = 0; j < kn; j++)
                    {
                        pt[j * KeyBlock + r] = sc[r * KeyBlock + j];
                        dst[j * KeyBlock + r] = dp[r * KeyBlock + j];
                    }
                AccumulatePVAbsentZeros(pt, doBlk, dvBlk, kn, qn, Ev);    // dV += Pᵀ dO
                AccumulatePVAbsentZeros(dst, qBlk, dkBlk, kn, qn, E);     // dK += scale dSᵀ Q
            }
        }
    }

    /// <summary>dQ rows i0 .. i0+BwdQueryBlock of query head (b, h).</summary>
    private static void QueryBlockGrads(in SdpaShape s, int b, int h, int i0, float* q, float* k, float* v, float* mask, float* lse,
        float* dout, float* dRow, float* dq)
    {
        int qn = Math.Min(BwdQueryBlock, s.L - i0);
        int E = s.E, Ev = s.Ev;
        int hk = h / s.Group;
        long qRow = ((long)b * s.Hq + h) * s.L + i0;
        long kvRow0 = ((long)b * s.Hkv + hk) * s.S;
        float* qBlk = q + qRow * E, doBlk = dout + qRow * Ev, dqBlk = dq + qRow * E;
        float* sc = BwdScratch();
        float* dp = sc + BwdQueryBlock * KeyBlock;
        int kEnd = s.Causal ? Math.Min(s.S, i0 + qn) : s.S;   // causal: later key blocks are hidden from every row here
        for (int j0 = 0; j0 < kEnd; j0 += BwdKeyBlock)
        {
            int kn = Math.Min(BwdKeyBlock, kEnd - j0);
            float* kBlk = k + (kvRow0 + j0) * E;
            Scores(qBlk, kBlk, sc, qn, kn, E);
            Scores(doBlk, v + (kvRow0 + j0) * Ev, dp, qn, kn, Ev);
            ProbabilitiesAndDs(s, b, h, i0, qn, j0, kn, sc, dp, mask, lse, dRow);
            AccumulatePVAbsentZeros(dp, kBlk, dqBlk, qn, kn, E);   // dQ += scale dS K
        }
    }
}
