using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;

namespace GpuAttention.Backends.Cpu;

/// <summary>
/// Fused SDPA forward on the CPU: FlashAttention-2's loop order. Work items are (batch, head, block of
/// <see cref="QueryBlock"/> queries) spread over all cores; each walks the keys in blocks of <see cref="KeyBlock"/>
/// with an online softmax, so memory per thread is O(QueryBlock·(KeyBlock + Ev)), never L×S.
/// Inner loops are register-blocked 4 queries at a time with <see cref="Vector{T}"/> FMAs.
/// </summary>
internal sealed unsafe partial class CpuBackend : ISdpaBackend
{
    internal const int QueryBlock = 16;
    internal const int KeyBlock = 128;

    [ThreadStatic] private static float[]? t_scratch;

    private static float* Ptr(IDeviceBuffer? b) => b is null ? null : B(b).Pointer;

    /// <summary>What a portable SDPA forward work item reads (Parts: null unless the keys are split).</summary>
    private struct SdpaCtx
    {
        public SdpaShape S;
        public float* Q, K, V, Mask, O, Lse, Parts;
        public int QBlocks, Splits, KeyChunk, PartStride;
    }

    public void SdpaForward(in SdpaForwardArgs a)
    {
        var s = a.Shape;
        if (s.B == 0 || s.Hq == 0 || s.L == 0) return;
        if (UsesDecode(s)) { SdpaDecode(a); return; }
        if (FastSdpa) { SdpaForwardFast(a); return; }
        int qBlocks = (s.L + QueryBlock - 1) / QueryBlock;
        long items = (long)s.B * s.Hq * qBlocks;

        // Few query blocks (decoding, L = 1): split the keys into chunks so every core has work (flash-decoding),
        // then combine the partial (max, sum, accumulator) triples of each row.
        int threads = Environment.ProcessorCount;
        int splits = items >= 2 * threads ? 1 : (int)Math.Min((2 * threads + items - 1) / items, Math.Max(1, s.S / (2 * KeyBlock)));
        if (s.Causal) splits = 1;
        var ctx = new SdpaCtx
        {
            S = s, Q = Ptr(a.Q), K = Ptr(a.K), V = Ptr(a.V), Mask = Ptr(a.Mask), O = Ptr(a.Out), Lse = Ptr(a.Lse),
            QBlocks = qBlocks, Splits = splits, KeyChunk = (s.S + splits - 1) / splits, PartStride = QueryBlock * (s.Ev + 2),
        };
        int work = WorkItems(items * splits, "attention rows");
        if (splits == 1)
        {
            CpuWorkers.For(work, &SdpaItem, &ctx);
            return;
        }
        float* pp = ctx.Parts = GrowScratch(ref s_splitParts, items * splits * ctx.PartStride);
        CpuWorkers.For(work, &SdpaItem, &ctx);
        CombineAllSplits(s, items, qBlocks, QueryBlock, splits, pp, ctx.PartStride, ctx.O, ctx.Lse);
    }

    /// <summary>
    /// <see cref="CombineSplits"/> for every item of a split-key call: item = bh·chunksPerHead + chunk covers rows
    /// chunk·rowsPerChunk .. of head bh, and its <paramref name="splits"/> partials follow each other in <paramref name="parts"/>.
    /// </summary>
    private static void CombineAllSplits(in SdpaShape s, long items, int chunksPerHead, int rowsPerChunk, int splits, float* parts, int partStride, float* o, float* lse)
    {
        for (long item = 0; item < items; item++)
        {
            int chunk = (int)(item % chunksPerHead);
            long bh = item / chunksPerHead;
            int i0 = chunk * rowsPerChunk, qn = Math.Min(rowsPerChunk, s.L - i0);
            CombineSplits(s, bh, i0, qn, rowsPerChunk, splits, parts + item * splits * partStride, partStride, o, lse);
        }
    }

    /// <summary>Work item (batch·head, query block[, key chunk]): one <see cref="SdpaBlock"/>, to out/lse or to its partial.</summary>
    private static void SdpaItem(void* pctx, int work)
    {
        ref readonly SdpaCtx c = ref *(SdpaCtx*)pctx;
        ref readonly SdpaShape s = ref c.S;
        int item = work / c.Splits, split = work % c.Splits;
        int qb = item % c.QBlocks;
        int bh = item / c.QBlocks;
        int j0 = split * c.KeyChunk, j1 = Math.Min(s.S, j0 + c.KeyChunk);
        SdpaBlock(s, bh / s.Hq, bh % s.Hq, qb * QueryBlock, j0, Math.Max(j0, j1),
            c.Q, c.K, c.V, c.Mask, c.O, c.Lse, c.Parts == null ? null : c.Parts + (long)work * c.PartStride);
    }

    /// <summary>
    /// Merges per-chunk (m, l, acc) of rows i0..i0+qn of head bh: M = max m_c, l = Σ l_c e^(m_c−M), acc = Σ acc_c e^(m_c−M).
    /// Each chunk's partial holds acc [rows][Ev], then m [rows], then l [rows] (both CPU SDPA paths write this layout).
    /// </summary>
    private static void CombineSplits(in SdpaShape s, long bh, int i0, int qn, int rows, int splits, float* parts, int partStride, float* o, float* lse)
    {
        int Ev = s.Ev;
        for (int r = 0; r < qn; r++)
        {
            long row = bh * s.L + i0 + r;
            var dst = new Span<float>(o + row * Ev, Ev);
            float M = float.NegativeInfinity;
            bool nan = false;
            for (int c = 0; c < splits; c++)
            {
                float m = parts[c * partStride + rows * Ev + r];
                nan |= float.IsNaN(m);
                if (m > M) M = m;
            }
            if (nan) { dst.Fill(float.NaN); lse[row] = float.NaN; continue; }
            if (float.IsNegativeInfinity(M)) { dst.Clear(); lse[row] = float.NegativeInfinity; continue; }
            dst.Clear();
            float l = 0;
            for (int c = 0; c < splits; c++)
            {
                float* part = parts + c * partStride;
                float m = part[rows * Ev + r];
                if (float.IsNegativeInfinity(m)) continue;
                float w = MathF.Exp(m - M);
                l += part[rows * Ev + rows + r] * w;
                TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(part + r * Ev, Ev), w, dst, dst);
            }
            TensorPrimitives.Multiply(dst, 1f / l, dst);
            lse[row] = M + MathF.Log(l);
        }
    }


    /// <summary>
    /// One (b, h), up to QueryBlock queries starting at i0, keys [jBegin, jEnd). With <paramref name="partial"/> null the
    /// normalised rows are written to out and lse; otherwise the unnormalised (acc, m, l) go to <paramref name="partial"/>.
    /// </summary>
    private static void SdpaBlock(in SdpaShape s, int b, int h, int i0, int jBegin, int jEnd,
        float* q, float* k, float* v, float* mask, float* o, float* lse, float* partial)
    {
        int qn = Math.Min(QueryBlock, s.L - i0);
        int E = s.E, Ev = s.Ev, S = s.S;
        int hk = h / s.Group;
        float* qBase = q + (((long)b * s.Hq + h) * s.L + i0) * E;
        float* kBase = k + ((long)b * s.Hkv + hk) * S * E;
        float* vBase = v + ((long)b * s.Hkv + hk) * S * Ev;
        long maskRow0 = b * s.MaskStrideB + h * s.MaskStrideH;

        int need = QueryBlock * KeyBlock + QueryBlock * Ev + 2 * QueryBlock;
        var scratch = t_scratch;
        if (scratch is null || scratch.Length < need) t_scratch = scratch = new float[Math.Max(need, 4096)];
        fixed (float* sp = scratch)
        {
            float* sc = sp;                                            // [QueryBlock][KeyBlock] scores, then probabilities
            float* acc = partial != null ? partial : sc + QueryBlock * KeyBlock;   // [QueryBlock][Ev]
            float* m = acc + QueryBlock * Ev;                          // running max
            float* l = m + QueryBlock;                                 // running sum
            new Span<float>(acc, qn * Ev).Clear();
            for (int r = 0; r < qn; r++) { m[r] = float.NegativeInfinity; l[r] = 0; }

            int kEnd = s.Causal ? Math.Min(jEnd, i0 + qn) : jEnd;   // causal: key j kept for query i when j <= i
            for (int j0 = jBegin; j0 < kEnd; j0 += KeyBlock)
            {
                int kn = Math.Min(KeyBlock, kEnd - j0);
                Scores(qBase, kBase + (long)j0 * E, sc, qn, kn, E);
                for (int r = 0; r < qn; r++)
                {
                    float* row = sc + r * KeyBlock;
                    var rs = new Span<float>(row, kn);
                    TensorPrimitives.Multiply(rs, s.Scale, rs);
                    if (mask != null)
                    {
                        float* mrow = mask + maskRow0 + (long)(i0 + r) * s.MaskStrideL;
                        if (s.MaskStrideS == 1) TensorPrimitives.Add(rs, new ReadOnlySpan<float>(mrow + j0, kn), rs);
                        else { float mv = mrow[0]; for (int j = 0; j < kn; j++) row[j] += mv; }
                    }
                    if (s.Causal)
                        for (int j = Math.Max(0, i0 + r + 1 - j0); j < kn; j++) row[j] = float.NegativeInfinity;
                    float bmax = MaxOrNaN(rs);
                    float mOld = m[r];
                    float mNew = float.IsNaN(bmax) ? bmax : Math.Max(mOld, bmax);
                    if (float.IsNegativeInfinity(mNew)) { rs.Clear(); continue; }   // all masked so far: p = 0
                    float corr = float.IsNegativeInfinity(mOld) ? 0f : MathF.Exp(mOld - mNew);
                    m[r] = mNew;
                    TensorPrimitives.Subtract(rs, mNew, rs);
                    TensorPrimitives.Exp(rs, rs);
                    float sum = TensorPrimitives.Sum(rs);
                    l[r] = l[r] * corr + sum;
                    if (corr != 1f)
                    {
                        var ar = new Span<float>(acc + r * Ev, Ev);
                        TensorPrimitives.Multiply(ar, corr, ar);
                    }
                }
                AccumulatePV(sc, vBase + (long)j0 * Ev, acc, qn, kn, Ev);
            }

            if (partial != null) return;
            for (int r = 0; r < qn; r++)
            {
                long row = ((long)b * s.Hq + h) * s.L + i0 + r;
                var dst = new Span<float>(o + row * Ev, Ev);
                if (l[r] == 0f && !float.IsNaN(m[r])) { dst.Clear(); lse[row] = float.NegativeInfinity; continue; }
                TensorPrimitives.Multiply(new ReadOnlySpan<float>(acc + r * Ev, Ev), 1f / l[r], dst);
                lse[row] = m[r] + MathF.Log(l[r]);
            }
        }
    }

    private static float MaxOrNaN(ReadOnlySpan<float> x)
    {
        // TensorPrimitives.Max propagates NaN, as the row must.
        return x.Length == 0 ? float.NegativeInfinity : TensorPrimitives.Max(x);
    }

    /// <summary>sc[r, j] = q_r · k_j for r &lt; qn, j &lt; kn (row stride KeyBlock), 4 queries per pass sharing each k load.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Scores(float* q, float* k, float* sc, int qn, int kn, int E)
    {
        int W = Vector<float>.Count;
        int eVec = E - E % W;
        int r = 0;
        for (; r + 4 <= qn; r += 4)
        {
            float* q0 = q + (long)r * E, q1 = q0 + E, q2 = q1 + E, q3 = q2 + E;
            for (int j = 0; j < kn; j++)
            {
                float* kj = k + (long)j * E;
                Vector<float> a0 = default, a1 = default, a2 = default, a3 = default;
                for (int e = 0; e < eVec; e += W)
                {
                    var kv = Vector.Load(kj + e);
                    a0 = Vector.FusedMultiplyAdd(Vector.Load(q0 + e), kv, a0);
                    a1 = Vector.FusedMultiplyAdd(Vector.Load(q1 + e), kv, a1);
                    a2 = Vector.FusedMultiplyAdd(Vector.Load(q2 + e), kv, a2);
                    a3 = Vector.FusedMultiplyAdd(Vector.Load(q3 + e), kv, a3);
                }
                float s0 = Vector.Sum(a0), s1 = Vector.Sum(a1), s2 = Vector.Sum(a2), s3 = Vector.Sum(a3);
                for (int e = eVec; e < E; e++)
                {
                    float kv = kj[e];
                    s0 += q0[e] * kv; s1 += q1[e] * kv; s2 += q2[e] * kv; s3 += q3[e] * kv;
                }
                sc[r * KeyBlock + j] = s0;
                sc[(r + 1) * KeyBlock + j] = s1;
                sc[(r + 2) * KeyBlock + j] = s2;
                sc[(r + 3) * KeyBlock + j] = s3;
            }
        }
        for (; r < qn; r++)
        {
            var qr = new ReadOnlySpan<float>(q + (long)r * E, E);
            for (int j = 0; j < kn; j++)
                sc[r * KeyBlock + j] = TensorPrimitives.Dot(qr, new ReadOnlySpan<float>(k + (long)j * E, E));
        }
    }

    /// <summary>acc[r, :] += Σ_j p[r, j] · v_j, 4 queries per pass sharing each v load, Ev in SIMD chunks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AccumulatePV(float* p, float* v, float* acc, int qn, int kn, int Ev)
    {
        int W = Vector<float>.Count;
        int cVec = Ev - Ev % W;
        int r = 0;
        for (; r + 4 <= qn; r += 4)
        {
            float* p0 = p + r * KeyBlock, p1 = p0 + KeyBlock, p2 = p1 + KeyBlock, p3 = p2 + KeyBlock;
            float* c0 = acc + (long)r * Ev, c1 = c0 + Ev, c2 = c1 + Ev, c3 = c2 + Ev;
            for (int c = 0; c < cVec; c += W)
            {
                var a0 = Vector.Load(c0 + c); var a1 = Vector.Load(c1 + c);
                var a2 = Vector.Load(c2 + c); var a3 = Vector.Load(c3 + c);
                for (int j = 0; j < kn; j++)
                {
                    var vv = Vector.Load(v + (long)j * Ev + c);
                    a0 = Vector.FusedMultiplyAdd(new Vector<float>(p0[j]), vv, a0);
                    a1 = Vector.FusedMultiplyAdd(new Vector<float>(p1[j]), vv, a1);
                    a2 = Vector.FusedMultiplyAdd(new Vector<float>(p2[j]), vv, a2);
                    a3 = Vector.FusedMultiplyAdd(new Vector<float>(p3[j]), vv, a3);
                }
                a0.Store(c0 + c); a1.Store(c1 + c); a2.Store(c2 + c); a3.Store(c3 + c);
            }
            for (int c = cVec; c < Ev; c++)
            {
                float s0 = c0[c], s1 = c1[c], s2 = c2[c], s3 = c3[c];
                for (int j = 0; j < kn; j++)
                {
                    float vv = v[(long)j * Ev + c];
                    s0 += p0[j] * vv; s1 += p1[j] * vv; s2 += p2[j] * vv; s3 += p3[j] * vv;
                }
                c0[c] = s0; c1[c] = s1; c2[c] = s2; c3[c] = s3;
            }
        }
        for (; r < qn; r++)
        {
            float* pr = p + r * KeyBlock;
            var ar = new Span<float>(acc + (long)r * Ev, Ev);
            for (int j = 0; j < kn; j++)
                TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(v + (long)j * Ev, Ev), pr[j], ar, ar);
        }
    }
}
