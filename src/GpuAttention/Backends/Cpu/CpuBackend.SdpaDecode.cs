using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GpuAttention.Backends.Cpu;

/// <summary>
/// SDPA forward for decoding shapes (few query rows per kv head: L·Group ≤ <see cref="DecodeMaxRows"/>), one algorithm
/// generic over the vector width (<see cref="IVec{TV}"/>: 512, 256 or 128 bits, TensorPrimitives style), so AVX2 and
/// ARM machines run the same design as AVX-512 ones. A work item is (batch, kv head, key chunk): the L·Group query rows
/// of the kv head's whole query group are processed together against each block of <see cref="DecodeStep"/> keys, so every
/// K and V row is read from memory once per call (not once per query head), streamed in place in its natural [S][E]
/// layout (no packed copy per call). Scores take 4 rows × 4 keys per step, the first 4 rows with the key norms of the
/// overflow guard in the same pass, and 16 dot products leave through one reduction tree (<see cref="IVec{TV}.StoreSums4x4"/>);
/// the online softmax runs per row in two vector passes, and O += P·V reads each V row once for all rows. The two streams
/// are prefetched one phase ahead (the scores of a block prefetch its V rows, its P·V the next block's K rows;
/// measurements at <see cref="Prefetch"/>). When B·Hkv items are too few for the threads, the keys are split into chunks
/// (flash-decoding) whose partial (m, l, acc) are merged by <see cref="CombineAllSplits"/> in a fixed order, so the
/// result does not depend on thread timing. Memory: per thread O(rows·(E + DecodeKB + Ev)); partials O(B·Hq·L·Ev·splits).
/// </summary>
internal sealed unsafe partial class CpuBackend
{
    /// <summary>Query rows per kv head (L·Group) up to which the decode path runs.</summary>
    internal const int DecodeMaxRows = 16;
    internal const int DecodeKB = 128;   // keys per block: = FKB (ScoreTile4x64, TransposeInto) and = KeyBlock (Scores) strides

    /// <summary>Bound on ‖scale·q_r‖·‖k_j‖ up to which decode scores take the fast SIMD dot products (see DecodeItem).</summary>
    internal const float DecodeSafeNorm = 256f;

    /// <summary>Vector width of the decode kernel: 0 = 512 bits where <see cref="FastSdpa"/>, else the widest other
    /// accelerated; tests force 512, 256 or 128.</summary>
    internal static int DecodeWidth;
    /// <summary>Keys per block of the online softmax (≤ <see cref="DecodeKB"/>, the stride of the score rows). Measured on
    /// the 2-core AVX-512 VM, in-process A/B (GB/s of K/V read once, B1 Hq32 Hkv8 E128): from DRAM (S = 16384) 128 keys
    /// 50.2–50.8, 64 keys 53.8–54.5, 32 keys 54.7; B8 S = 2048 46.7 / 48.7 / 51.9; from cache (S = 1024, 4096) 64 keys within
    /// 2% of 128, 32 keys 2–4% slower.</summary>
    internal const int DecodeStep = 64;

    /// <summary>True when <paramref name="s"/> takes the decode path.</summary>
    internal static bool UsesDecode(in SdpaShape s) => (long)s.L * s.Group <= DecodeMaxRows && s.E > 0 && s.Ev > 0;

    private struct DecodeCtx
    {
        public SdpaShape S;
        public float* Q, K, V, Mask, O, Lse, Parts;
        public int Splits, KeyChunk, KeyEnd, PartStride;
    }

    private static void SdpaDecode(in SdpaForwardArgs a)
    {
        var s = a.Shape;
        int threads = CpuWorkers.Threads;
        long items = (long)s.B * s.Hkv;
        int keyEnd = s.Causal ? Math.Min(s.S, s.L) : s.S;   // key j is kept for query i when j <= i
        // Split the keys when there are fewer than ~4 items per thread (load balance on a shared machine), keeping at
        // least 4 key blocks per chunk so the merge stays cheap.
        int splits = 1;
        if (items < 4L * threads && keyEnd > 0)
            splits = (int)Math.Clamp((4L * threads + items - 1) / items, 1, Math.Max(1, keyEnd / (4 * DecodeKB)));
        int keyChunk = splits == 1 ? Math.Max(keyEnd, 1) : ((keyEnd + splits - 1) / splits + DecodeKB - 1) / DecodeKB * DecodeKB;
        if (splits > 1) splits = (keyEnd + keyChunk - 1) / keyChunk;
        var ctx = new DecodeCtx
        {
            S = s, Q = Ptr(a.Q), K = Ptr(a.K), V = Ptr(a.V), Mask = Ptr(a.Mask), O = Ptr(a.Out), Lse = Ptr(a.Lse),
            Splits = splits, KeyChunk = keyChunk, KeyEnd = keyEnd, PartStride = s.L * (s.Ev + 2),
        };
        int work = WorkItems(items * splits, "attention rows");
        if (splits > 1) ctx.Parts = GrowScratch(ref s_splitParts, (long)s.B * s.Hq * splits * ctx.PartStride);
        // The AVX-512 switch (FastSdpa) picks 512 bits; the portable setting the widest of 256 / 128 bits.
        int width = DecodeWidth != 0 ? DecodeWidth
            : FastSdpa && Vector512.IsHardwareAccelerated ? 512 : Vector256.IsHardwareAccelerated ? 256 : 128;
        if (width == 512) CpuWorkers.For(work, &DecodeItem<W512, Vector512<float>>, &ctx);
        else if (width == 256) CpuWorkers.For(work, &DecodeItem<W256, Vector256<float>>, &ctx);
        else CpuWorkers.For(work, &DecodeItem<W128, Vector128<float>>, &ctx);
        if (splits > 1)
            CombineAllSplits(s, (long)s.B * s.Hq, 1, s.L, splits, ctx.Parts, ctx.PartStride, ctx.O, ctx.Lse);
    }

    /// <summary>Work item (b, kv head, key chunk): all L·Group query rows of the kv head against keys of the chunk.</summary>
    private static void DecodeItem<TW, TV>(void* pctx, int work) where TW : struct, IVec<TV> where TV : unmanaged
    {
        ref DecodeCtx c = ref Unsafe.AsRef<DecodeCtx>(pctx);
        ref readonly SdpaShape s = ref c.S;
        int split = work % c.Splits;
        long bhk = work / c.Splits;
        int b = (int)(bhk / s.Hkv), hk = (int)(bhk % s.Hkv);
        int G = s.Group, L = s.L, E = s.E, Ev = s.Ev;
        int R = G * L;   // row r = g·L + i: query head hk·G + g, query i
        int jBegin = split * c.KeyChunk, jEnd = Math.Min(c.KeyEnd, jBegin + c.KeyChunk);

        int W = TW.Count;
        int evPad = (Ev + W - 1) / W * W;
        // Scores: SIMD dot products over E (generic width) while ‖q_r‖·‖k_j‖ ≤ DecodeSafeNorm for the block; otherwise (huge,
        // infinite or NaN inputs) the block is redone in exactly the order of the backward that may follow, which
        // recomputes P = exp(S − lse) from its own S: at huge scores another rounding would make P overflow. That order is
        // the AVX-512 kernels' (scale·q, one FMA chain over e per key lane: ScoreTile4x64 over a Kᵀ block transposed in
        // L1) where FastSdpa, else the portable kernels' (Scores on q, then × scale; a head's ≤ 16 rows group as in the
        // portable query blocks). Below the bound the two orders differ by rounding only (|ΔS| ≲ E·2⁻²⁴·‖q‖‖k‖).
        bool tile = FastSdpa;
        int Rp = (R + 3) & ~3;
        float* qs = FastScratch((long)Rp * E + (long)Rp * DecodeKB + (long)R * evPad + 2L * R + (tile ? (long)E * DecodeKB : 0) + 64);
        float* sc = qs + (long)Rp * E;
        float* acc = sc + (long)Rp * DecodeKB;
        float* m = acc + (long)R * evPad;
        float* l = m + R;
        float* kt = l + R;

        long qHead0 = (long)b * s.Hq + (long)hk * G;   // first query head of the group
        float qMax2 = 0f;
        for (int r = 0; r < R; r++)
        {
            var dstq = new Span<float>(qs + (long)r * E, E);
            TensorPrimitives.Multiply(new ReadOnlySpan<float>(c.Q + (qHead0 * L + r) * E, E), s.Scale, dstq);
            float q2 = TensorPrimitives.SumOfSquares<float>(dstq);
            qMax2 = q2 > qMax2 || float.IsNaN(q2) ? q2 : qMax2;
        }
        if (Rp > R) new Span<float>(qs + (long)R * E, (Rp - R) * E).Clear();
        new Span<float>(acc, R * evPad).Clear();
        for (int r = 0; r < R; r++) { m[r] = float.NegativeInfinity; l[r] = 0; }

        float* kBase = c.K + bhk * s.S * E;
        float* vBase = c.V + bhk * s.S * Ev;
        int step = DecodeStep;
        for (int j0 = jBegin; j0 < jEnd; j0 += step)
        {
            int kn = Math.Min(step, jEnd - j0);
            float kMax2 = DecodeScores<TW, TV>(qs, R, E, kBase + (long)j0 * E, kn, sc, vBase + (long)j0 * Ev, (long)kn * Ev);
            if (!(qMax2 * kMax2 <= DecodeSafeNorm * DecodeSafeNorm))
            {
                if (tile)
                {
                    if (kn < DecodeKB) new Span<float>(kt, E * DecodeKB).Clear();
                    TransposeInto(kBase + (long)j0 * E, E, kn, kt);
                    int kCols = (kn + 63) & ~63;
                    for (int r = 0; r < Rp; r += 4)
                        for (int cc = 0; cc < kCols; cc += 64)
                            ScoreTile4x64(qs + (long)r * E, E, kt + cc, sc + (long)r * DecodeKB + cc);
                }
                else
                {
                    for (int g = 0; g < G; g++)
                        Scores(c.Q + (qHead0 + g) * L * E, kBase + (long)j0 * E, sc + (long)g * L * DecodeKB, L, kn, E);
                    for (int r = 0; r < R; r++)
                        TensorPrimitives.Multiply(new ReadOnlySpan<float>(sc + (long)r * DecodeKB, kn), s.Scale, new Span<float>(sc + (long)r * DecodeKB, kn));
                }
            }
            for (int r = 0; r < R; r++)
            {
                int g = r / L, i = r % L;
                float* row = sc + (long)r * DecodeKB;
                if (c.Mask != null)
                {
                    float* mrow = c.Mask + b * s.MaskStrideB + (hk * G + g) * s.MaskStrideH + i * s.MaskStrideL;
                    if (s.MaskStrideS == 1) TensorPrimitives.Add(new ReadOnlySpan<float>(row, kn), new ReadOnlySpan<float>(mrow + j0, kn), new Span<float>(row, kn));
                    else { float mv = mrow[0]; for (int j = 0; j < kn; j++) row[j] += mv; }
                }
                if (s.Causal)
                    for (int j = Math.Max(0, i + 1 - j0); j < kn; j++) row[j] = float.NegativeInfinity;
                DecodeSoftmaxRow<TW, TV>(row, kn, ref m[r], ref l[r], acc + (long)r * evPad, evPad);
            }
            int nextKn = Math.Min(step, jEnd - j0 - kn);
            float* nextK = kBase + (long)(j0 + kn) * E;
            long nextLen = nextKn > 0 ? (long)nextKn * E : 0;
            if (TW.Count >= 16 && Ev % TW.Count == 0 && R >= 4)
                DecodePvRows4<TW, TV>(sc, R, vBase + (long)j0 * Ev, Ev, kn, acc, evPad, nextK, nextLen);
            else
                DecodePv<TW, TV>(sc, R, vBase + (long)j0 * Ev, Ev, kn, acc, evPad, nextK, nextLen);
        }

        for (int r = 0; r < R; r++)
        {
            int g = r / L, i = r % L;
            long bh = qHead0 + g;
            if (c.Parts != null)
            {
                float* part = c.Parts + (bh * c.Splits + split) * c.PartStride;
                new ReadOnlySpan<float>(acc + (long)r * evPad, Ev).CopyTo(new Span<float>(part + (long)i * Ev, Ev));
                part[(long)L * Ev + i] = m[r];
                part[(long)L * Ev + L + i] = l[r];
                continue;
            }
            long row = bh * L + i;
            var dst = new Span<float>(c.O + row * Ev, Ev);
            if (l[r] == 0f && !float.IsNaN(m[r])) { dst.Clear(); c.Lse[row] = float.NegativeInfinity; continue; }
            TensorPrimitives.Multiply(new ReadOnlySpan<float>(acc + (long)r * evPad, Ev), 1f / l[r], dst);
            c.Lse[row] = m[r] + MathF.Log(l[r]);
        }
    }

    /// <summary>sc[r·DecodeKB + j] = Σ_e qs[r·E + e]·k[j·E + e] for r &lt; R, j &lt; kn: 4 rows × 1 key per step, each K row
    /// loaded once per 4 rows (from L1), vector partial sums over E reduced once per (row, key). Returns the largest ‖k_j‖² of
    /// the block (NaN if any is NaN).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DecodeScores<TW, TV>(float* qs, int R, int E, float* k, int kn, float* sc, float* pf, long pfLen) where TW : struct, IVec<TV> where TV : unmanaged
    {
        int W = TW.Count;
        int eVec = E - E % W;
        float kMax2 = 0f;
        long pfStep = kn > 0 ? (pfLen + kn - 1) / kn : 0, pfAt = 0;
        int j = 0;
        // 4 keys per step where the registers allow it (AVX-512: 16 accumulators + 4 K vectors): each q load serves 4 keys
        // and 4 rows × 4 keys of scores come out of one reduction tree (Dot4x4), instead of one horizontal sum per (row, key).
        if (TW.Count >= 16 && eVec == E)
        {
            // ‖k‖² of 4 keys per step as one 4-lane vector: the running max drops NaN lanes, the running sum keeps them (norms
            // are ≥ 0, so the sum is NaN exactly when a norm is).
            Vector128<float> kMax4 = Vector128<float>.Zero, kSum4 = Vector128<float>.Zero;
            for (; j + 4 <= kn; j += 4)
            {
                Prefetch(pf, ref pfAt, 4 * pfStep, pfLen);
                float* k0 = k + (long)j * E, k1 = k0 + E, k2 = k1 + E, k3 = k2 + E;
                Vector128<float> nn;
                // The first 4 rows take the key norms along (20 accumulators + 4 K vectors + 1 q vector of 32 registers), so K is
                // read once per step instead of once for the norms and once for the scores.
                int r = 0;
                if (R >= 4) { nn = Dot4x4<TW, TV, WithNorms>(qs, E, k0, sc + j); r = 4; }
                else
                {
                    TV n0 = TW.Zero, n1 = TW.Zero, n2 = TW.Zero, n3 = TW.Zero;
                    for (int e = 0; e < E; e += W)
                    {
                        var x0 = TW.Load(k0 + e); var x1 = TW.Load(k1 + e); var x2 = TW.Load(k2 + e); var x3 = TW.Load(k3 + e);
                        n0 = TW.Fma(x0, x0, n0); n1 = TW.Fma(x1, x1, n1); n2 = TW.Fma(x2, x2, n2); n3 = TW.Fma(x3, x3, n3);
                    }
                    nn = TW.Sum4(n0, n1, n2, n3);
                }
                kMax4 = Vector128.ConditionalSelect(Vector128.GreaterThan(nn, kMax4), nn, kMax4);
                kSum4 += nn;
                for (; r + 4 <= R; r += 4) Dot4x4<TW, TV, NoNorms>(qs + (long)r * E, E, k0, sc + (long)r * DecodeKB + j);
                for (; r < R; r++)
                {
                    float* q0 = qs + (long)r * E;
                    TV a0 = TW.Zero, a1 = TW.Zero, a2 = TW.Zero, a3 = TW.Zero;
                    for (int e = 0; e < E; e += W)
                    {
                        var y = TW.Load(q0 + e);
                        a0 = TW.Fma(y, TW.Load(k0 + e), a0); a1 = TW.Fma(y, TW.Load(k1 + e), a1);
                        a2 = TW.Fma(y, TW.Load(k2 + e), a2); a3 = TW.Fma(y, TW.Load(k3 + e), a3);
                    }
                    TW.Sum4(a0, a1, a2, a3).Store(sc + (long)r * DecodeKB + j);
                }
            }
            float kSum = Vector128.Sum(kSum4);
            kMax2 = float.IsNaN(kSum) ? float.NaN : W128.HMax(kMax4);
        }
        for (; j < kn; j++)
        {
            Prefetch(pf, ref pfAt, pfStep, pfLen);
            float* kr = k + (long)j * E;
            TV kk = TW.Zero;
            for (int e = 0; e < eVec; e += W) { var kv = TW.Load(kr + e); kk = TW.Fma(kv, kv, kk); }
            float k2 = TW.Sum(kk);
            for (int e = eVec; e < E; e++) k2 += kr[e] * kr[e];
            kMax2 = k2 > kMax2 || float.IsNaN(k2) ? k2 : kMax2;   // NaN sticks (it fails the caller's bound)
            int r = 0;
            for (; r + 4 <= R; r += 4)
            {
                float* q0 = qs + (long)r * E;
                float* q1 = q0 + E, q2 = q1 + E, q3 = q2 + E;
                TV a0 = TW.Zero, a1 = TW.Zero, a2 = TW.Zero, a3 = TW.Zero;
                for (int e = 0; e < eVec; e += W)
                {
                    var kv = TW.Load(kr + e);
                    a0 = TW.Fma(TW.Load(q0 + e), kv, a0);
                    a1 = TW.Fma(TW.Load(q1 + e), kv, a1);
                    a2 = TW.Fma(TW.Load(q2 + e), kv, a2);
                    a3 = TW.Fma(TW.Load(q3 + e), kv, a3);
                }
                float s0 = TW.Sum(a0), s1 = TW.Sum(a1), s2 = TW.Sum(a2), s3 = TW.Sum(a3);
                for (int e = eVec; e < E; e++)
                {
                    float kx = kr[e];
                    s0 += q0[e] * kx; s1 += q1[e] * kx; s2 += q2[e] * kx; s3 += q3[e] * kx;
                }
                sc[(long)r * DecodeKB + j] = s0; sc[(long)(r + 1) * DecodeKB + j] = s1;
                sc[(long)(r + 2) * DecodeKB + j] = s2; sc[(long)(r + 3) * DecodeKB + j] = s3;
            }
            for (; r < R; r++)
            {
                float* q0 = qs + (long)r * E;
                TV a0 = TW.Zero;
                for (int e = 0; e < eVec; e += W) a0 = TW.Fma(TW.Load(q0 + e), TW.Load(kr + e), a0);
                float s0 = TW.Sum(a0);
                for (int e = eVec; e < E; e++) s0 += q0[e] * kr[e];
                sc[(long)r * DecodeKB + j] = s0;
            }
        }
        return kMax2;
    }

    /// <summary>dst[i·DecodeKB + t] = Σ_e q[i·E + e]·k[t·E + e] for 4 query rows i and 4 keys t (E a multiple of the width):
    /// 16 accumulators, each K vector loaded once for the 4 rows, the 16 sums through one reduction tree. With
    /// <typeparamref name="TN"/> = <see cref="WithNorms"/> it also returns [‖k_0‖², …, ‖k_3‖²], accumulated in the same pass
    /// (each flag is its own compiled instantiation, so the loop has no branch); with <see cref="NoNorms"/>, zero.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static Vector128<float> Dot4x4<TW, TV, TN>(float* q, int E, float* k, float* dst) where TW : struct, IVec<TV> where TV : unmanaged where TN : struct, IFlag
    {
        bool norms = TN.On;
        int W = TW.Count;
        float* q0 = q, q1 = q0 + E, q2 = q1 + E, q3 = q2 + E;
        float* k0 = k, k1 = k0 + E, k2 = k1 + E, k3 = k2 + E;
        TV n0 = TW.Zero, n1 = TW.Zero, n2 = TW.Zero, n3 = TW.Zero;
        TV a00 = TW.Zero, a01 = TW.Zero, a02 = TW.Zero, a03 = TW.Zero, a10 = TW.Zero, a11 = TW.Zero, a12 = TW.Zero, a13 = TW.Zero;
        TV a20 = TW.Zero, a21 = TW.Zero, a22 = TW.Zero, a23 = TW.Zero, a30 = TW.Zero, a31 = TW.Zero, a32 = TW.Zero, a33 = TW.Zero;
        for (int e = 0; e < E; e += W)
        {
            var x0 = TW.Load(k0 + e); var x1 = TW.Load(k1 + e); var x2 = TW.Load(k2 + e); var x3 = TW.Load(k3 + e);
            if (norms) { n0 = TW.Fma(x0, x0, n0); n1 = TW.Fma(x1, x1, n1); n2 = TW.Fma(x2, x2, n2); n3 = TW.Fma(x3, x3, n3); }
            var y = TW.Load(q0 + e);
            a00 = TW.Fma(y, x0, a00); a01 = TW.Fma(y, x1, a01); a02 = TW.Fma(y, x2, a02); a03 = TW.Fma(y, x3, a03);
            y = TW.Load(q1 + e);
            a10 = TW.Fma(y, x0, a10); a11 = TW.Fma(y, x1, a11); a12 = TW.Fma(y, x2, a12); a13 = TW.Fma(y, x3, a13);
            y = TW.Load(q2 + e);
            a20 = TW.Fma(y, x0, a20); a21 = TW.Fma(y, x1, a21); a22 = TW.Fma(y, x2, a22); a23 = TW.Fma(y, x3, a23);
            y = TW.Load(q3 + e);
            a30 = TW.Fma(y, x0, a30); a31 = TW.Fma(y, x1, a31); a32 = TW.Fma(y, x2, a32); a33 = TW.Fma(y, x3, a33);
        }
        TW.StoreSums4x4(a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33, dst, DecodeKB);
        return norms ? TW.Sum4(n0, n1, n2, n3) : Vector128<float>.Zero;
    }

    /// <summary>A compile-time switch for generic kernels: each implementing struct is a separate specialisation.</summary>
    internal interface IFlag { static abstract bool On { get; } }
    internal struct WithNorms : IFlag { public static bool On => true; }
    internal struct NoNorms : IFlag { public static bool On => false; }

    /// <summary>Online-softmax step of one row of kn scores (entries to drop already −∞): m ← max(m, max row) (NaN scores
    /// ignored by the max, but they reach l and acc through exp(NaN − m)), row ← e^(row − m), l ← l·e^(m_old−m) + Σ row,
    /// acc ← acc·e^(m_old−m). A block of only −∞ and NaN with no finite m so far makes the row NaN when it has a NaN.
    /// Two vector passes (max; exp, store and sum together) with the exp of <c>Vector{N}.Exp</c> (the one TensorPrimitives.Exp
    /// uses), a scalar tail for kn not a multiple of the width.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DecodeSoftmaxRow<TW, TV>(float* row, int kn, ref float m, ref float l, float* accRow, int evPad) where TW : struct, IVec<TV> where TV : unmanaged
    {
        int W = TW.Count;
        int nVec = kn - kn % W;
        TV mx = TW.Splat(float.NegativeInfinity);
        for (int j = 0; j < nVec; j += W) mx = TW.MaxIgnoringNaN(mx, TW.Load(row + j));
        float bmax = TW.HMax(mx);
        for (int j = nVec; j < kn; j++) if (row[j] > bmax) bmax = row[j];
        float mOld = m;
        float mNew = Math.Max(mOld, bmax);   // Math.Max propagates a NaN m (then everything below is NaN)
        if (float.IsNegativeInfinity(mNew))
        {
            bool nan = false;
            for (int j = 0; j < kn; j++) nan |= float.IsNaN(row[j]);
            if (nan) { m = float.NaN; l = float.NaN; }
            new Span<float>(row, kn).Clear();
            return;
        }
        m = mNew;
        var mv = TW.Splat(mNew);
        TV acc = TW.Zero;
        for (int j = 0; j < nVec; j += W)
        {
            var e = TW.Exp(TW.Sub(TW.Load(row + j), mv));
            TW.Store(e, row + j);
            acc = TW.Add(acc, e);
        }
        float sum = TW.Sum(acc);
        for (int j = nVec; j < kn; j++) { float e = MathF.Exp(row[j] - mNew); row[j] = e; sum += e; }
        if (mNew == mOld) { l += sum; return; }
        float corr = float.IsNegativeInfinity(mOld) ? 0f : MathF.Exp(mOld - mNew);
        l = l * corr + sum;
        var cv = TW.Splat(corr);
        for (int e = 0; e < evPad; e += TW.Count) TW.Store(TW.Mul(TW.Load(accRow + e), cv), accRow + e);
    }

    /// <summary>
    /// <see cref="DecodePv"/> with the accumulators in registers (AVX-512: 4 rows × 4 vectors = 16 zmm, 4 broadcasts and 4
    /// V loads per key): per 4 rows and 4 vectors of columns, one pass over the block's keys, each p broadcast once for 4
    /// vectors instead of once per vector, and the accumulators loaded and stored once per block instead of once per 4 keys
    /// (~45% fewer instructions per key). Rows past a multiple of 4 and a last chunk of fewer than 4 vectors take DecodePv's
    /// loops. Needs Ev a multiple of the width and R ≥ 4.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DecodePvRows4<TW, TV>(float* p, int R, float* v, int Ev, int kn, float* acc, int evPad, float* pf, long pfLen) where TW : struct, IVec<TV> where TV : unmanaged
    {
        int W = TW.Count;
        long pfStep = kn > 0 ? (pfLen + kn - 1) / kn : 0, pfAt = 0;
        int r0 = 0;
        for (; r0 + 4 <= R; r0 += 4)
        {
            float* p0 = p + (long)r0 * DecodeKB, p1 = p0 + DecodeKB, p2 = p1 + DecodeKB, p3 = p2 + DecodeKB;
            int e0 = 0;
            for (; e0 + 4 * W <= Ev; e0 += 4 * W)
            {
                float* c0 = acc + (long)r0 * evPad + e0, c1 = c0 + evPad, c2 = c1 + evPad, c3 = c2 + evPad;
                TV a00 = TW.Load(c0), a01 = TW.Load(c0 + W), a02 = TW.Load(c0 + 2 * W), a03 = TW.Load(c0 + 3 * W);
                TV a10 = TW.Load(c1), a11 = TW.Load(c1 + W), a12 = TW.Load(c1 + 2 * W), a13 = TW.Load(c1 + 3 * W);
                TV a20 = TW.Load(c2), a21 = TW.Load(c2 + W), a22 = TW.Load(c2 + 2 * W), a23 = TW.Load(c2 + 3 * W);
                TV a30 = TW.Load(c3), a31 = TW.Load(c3 + W), a32 = TW.Load(c3 + 2 * W), a33 = TW.Load(c3 + 3 * W);
                float* vj = v + e0;
                bool first = r0 == 0 && e0 == 0;   // the first pass spreads the prefetch of the next K block over its keys
                for (int j = 0; j < kn; j++, vj += Ev)
                {
                    if (first) Prefetch(pf, ref pfAt, pfStep, pfLen);
                    TV x0 = TW.Load(vj), x1 = TW.Load(vj + W), x2 = TW.Load(vj + 2 * W), x3 = TW.Load(vj + 3 * W);
                    var b = TW.Splat(p0[j]);
                    a00 = TW.Fma(b, x0, a00); a01 = TW.Fma(b, x1, a01); a02 = TW.Fma(b, x2, a02); a03 = TW.Fma(b, x3, a03);
                    b = TW.Splat(p1[j]);
                    a10 = TW.Fma(b, x0, a10); a11 = TW.Fma(b, x1, a11); a12 = TW.Fma(b, x2, a12); a13 = TW.Fma(b, x3, a13);
                    b = TW.Splat(p2[j]);
                    a20 = TW.Fma(b, x0, a20); a21 = TW.Fma(b, x1, a21); a22 = TW.Fma(b, x2, a22); a23 = TW.Fma(b, x3, a23);
                    b = TW.Splat(p3[j]);
                    a30 = TW.Fma(b, x0, a30); a31 = TW.Fma(b, x1, a31); a32 = TW.Fma(b, x2, a32); a33 = TW.Fma(b, x3, a33);
                }
                TW.Store(a00, c0); TW.Store(a01, c0 + W); TW.Store(a02, c0 + 2 * W); TW.Store(a03, c0 + 3 * W);
                TW.Store(a10, c1); TW.Store(a11, c1 + W); TW.Store(a12, c1 + 2 * W); TW.Store(a13, c1 + 3 * W);
                TW.Store(a20, c2); TW.Store(a21, c2 + W); TW.Store(a22, c2 + 2 * W); TW.Store(a23, c2 + 3 * W);
                TW.Store(a30, c3); TW.Store(a31, c3 + W); TW.Store(a32, c3 + 2 * W); TW.Store(a33, c3 + 3 * W);
            }
            for (; e0 < Ev; e0 += W)
            {
                float* c0 = acc + (long)r0 * evPad + e0, c1 = c0 + evPad, c2 = c1 + evPad, c3 = c2 + evPad;
                TV a0 = TW.Load(c0), a1 = TW.Load(c1), a2 = TW.Load(c2), a3 = TW.Load(c3);
                float* vj = v + e0;
                for (int j = 0; j < kn; j++, vj += Ev)
                {
                    var x = TW.Load(vj);
                    a0 = TW.Fma(TW.Splat(p0[j]), x, a0); a1 = TW.Fma(TW.Splat(p1[j]), x, a1);
                    a2 = TW.Fma(TW.Splat(p2[j]), x, a2); a3 = TW.Fma(TW.Splat(p3[j]), x, a3);
                }
                TW.Store(a0, c0); TW.Store(a1, c1); TW.Store(a2, c2); TW.Store(a3, c3);
            }
        }
        if (r0 < R) DecodePv<TW, TV>(p + (long)r0 * DecodeKB, R - r0, v, Ev, kn, acc + (long)r0 * evPad, evPad, null, 0);
        if (pfAt < pfLen) Prefetch(pf, ref pfAt, pfLen - pfAt, pfLen);
    }

    /// <summary>acc[r] += Σ_j p[r·DecodeKB + j]·v[j] for r &lt; R, j &lt; kn: 4 keys per step, every V row loaded once for all
    /// rows (the accumulators, R·evPad floats, stay in L1). Columns past Ev (to evPad) are read as zero.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DecodePv<TW, TV>(float* p, int R, float* v, int Ev, int kn, float* acc, int evPad, float* pf, long pfLen) where TW : struct, IVec<TV> where TV : unmanaged
    {
        int W = TW.Count;
        int evVec = Ev - Ev % W;
        int j = 0;
        long pfStep = kn > 0 ? 4 * ((pfLen + kn - 1) / kn) : 0, pfAt = 0;
        for (; j + 4 <= kn; j += 4)
        {
            Prefetch(pf, ref pfAt, pfStep, pfLen);
            float* v0 = v + (long)j * Ev, v1 = v0 + Ev, v2 = v1 + Ev, v3 = v2 + Ev;
            for (int e = 0; e < evVec; e += W)
            {
                TV x0 = TW.Load(v0 + e), x1 = TW.Load(v1 + e), x2 = TW.Load(v2 + e), x3 = TW.Load(v3 + e);
                for (int r = 0; r < R; r++)
                {
                    float* pr = p + (long)r * DecodeKB + j;
                    float* ar = acc + (long)r * evPad + e;
                    var t = TW.Fma(TW.Splat(pr[0]), x0, TW.Load(ar));
                    t = TW.Fma(TW.Splat(pr[1]), x1, t);
                    t = TW.Fma(TW.Splat(pr[2]), x2, t);
                    TW.Store(TW.Fma(TW.Splat(pr[3]), x3, t), ar);
                }
            }
            for (int e = evVec; e < Ev; e++)
                for (int r = 0; r < R; r++)
                {
                    float* pr = p + (long)r * DecodeKB + j;
                    acc[(long)r * evPad + e] += pr[0] * v0[e] + pr[1] * v1[e] + pr[2] * v2[e] + pr[3] * v3[e];
                }
        }
        for (; j < kn; j++)
        {
            float* v0 = v + (long)j * Ev;
            for (int e = 0; e < evVec; e += W)
            {
                TV x0 = TW.Load(v0 + e);
                for (int r = 0; r < R; r++)
                {
                    float* ar = acc + (long)r * evPad + e;
                    TW.Store(TW.Fma(TW.Splat(p[(long)r * DecodeKB + j]), x0, TW.Load(ar)), ar);
                }
            }
            for (int e = evVec; e < Ev; e++)
                for (int r = 0; r < R; r++) acc[(long)r * evPad + e] += p[(long)r * DecodeKB + j] * v0[e];
        }
    }

    /// <summary>Prefetches the cache lines of p[at .. at + step) (at most to len) into L1 (prefetcht0) and advances at: spread
    /// over a loop, it brings the next stream of K or V rows in while the current one is computed on (x86; a no-op
    /// elsewhere). Measured on the 2-core VM, in-process A/B (GB/s of K/V read once, B1 Hq32 Hkv8 E128): from DRAM
    /// (S = 16384) 44.8–50.2 with it, 29.2–34.2 without, 34.7 with every other line only; from cache (S = 1024) it costs
    /// 13–14% (80.7–81.5 against 92.9–94.8), which the DRAM case repays many times. Earlier, with slower scores: none 20–24,
    /// prefetcht1 30–34, prefetcht0 34–37, prefetchnta 31–34, prefetcht2 31–35.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Prefetch(float* p, ref long at, long step, long len)
    {
        if (!System.Runtime.Intrinsics.X86.Sse.IsSupported) return;
        long end = Math.Min(len, at + step);
        for (long i = at; i < end; i += 16) System.Runtime.Intrinsics.X86.Sse.Prefetch0(p + i);
        at = end;
    }

    /// <summary>The vector operations the width-generic kernels use (static abstract, so each width is a specialised
    /// instantiation with every call inlined).</summary>
    internal interface IVec<TV> where TV : unmanaged
    {
        static abstract int Count { get; }
        static abstract TV Zero { get; }
        static abstract TV Load(float* p);
        static abstract void Store(TV v, float* p);
        static abstract TV Splat(float x);
        static abstract TV Mul(TV a, TV b);
        static abstract TV Add(TV a, TV b);
        static abstract TV Sub(TV a, TV b);
        /// <summary>e^x per lane (Vector{N}.Exp).</summary>
        static abstract TV Exp(TV x);
        /// <summary>Lane-wise max of acc and x where x &gt; acc; a NaN lane of x leaves acc's lane.</summary>
        static abstract TV MaxIgnoringNaN(TV acc, TV x);
        /// <summary>Largest lane (no NaN lanes).</summary>
        static abstract float HMax(TV v);
        static abstract TV Fma(TV a, TV b, TV c);
        static abstract float Sum(TV v);
        /// <summary>[Σ a, Σ b, Σ c, Σ d]: four horizontal sums in one reduction tree (SSE3 hadd where present).</summary>
        static abstract Vector128<float> Sum4(TV a, TV b, TV c, TV d);
        /// <summary>Stores the horizontal sums of a 4×4 block of vectors: dst[i·stride + t] = Σ a_it (i = row, t = key).</summary>
        static abstract void StoreSums4x4(TV a00, TV a01, TV a02, TV a03, TV a10, TV a11, TV a12, TV a13,
            TV a20, TV a21, TV a22, TV a23, TV a30, TV a31, TV a32, TV a33, float* dst, int stride);
    }

    /// <summary>[Σ a, Σ b, Σ c, Σ d] of four 4-lane vectors.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<float> Sum4(Vector128<float> a, Vector128<float> b, Vector128<float> c, Vector128<float> d)
    {
        if (System.Runtime.Intrinsics.X86.Sse3.IsSupported)
            return System.Runtime.Intrinsics.X86.Sse3.HorizontalAdd(System.Runtime.Intrinsics.X86.Sse3.HorizontalAdd(a, b), System.Runtime.Intrinsics.X86.Sse3.HorizontalAdd(c, d));
        return Vector128.Create(Vector128.Sum(a), Vector128.Sum(b), Vector128.Sum(c), Vector128.Sum(d));
    }

    internal struct W512 : IVec<Vector512<float>>
    {
        public static int Count => Vector512<float>.Count;
        public static Vector512<float> Zero => Vector512<float>.Zero;
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Load(float* p) => Vector512.Load(p);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(Vector512<float> v, float* p) => v.Store(p);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Splat(float x) => Vector512.Create(x);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Mul(Vector512<float> a, Vector512<float> b) => a * b;
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Sub(Vector512<float> a, Vector512<float> b) => a - b;
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Exp(Vector512<float> x) => Vector512.Exp(x);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> MaxIgnoringNaN(Vector512<float> acc, Vector512<float> x) => Vector512.ConditionalSelect(Vector512.GreaterThan(x, acc), x, acc);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float HMax(Vector512<float> v) => W256.HMax(Vector256.Max(v.GetLower(), v.GetUpper()));
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Fma(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Vector512.FusedMultiplyAdd(a, b, c);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Vector512<float> v) => Vector512.Sum(v);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector128<float> Sum4(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) =>
            W256.Sum4(a.GetLower() + a.GetUpper(), b.GetLower() + b.GetUpper(), c.GetLower() + c.GetUpper(), d.GetLower() + d.GetUpper());

        /// <summary>16 horizontal sums in one transpose-and-add tree (45 shuffles and adds, instead of 4 Sum4 trees of ~25):
        /// halves, then 128-bit quarters, then 64-bit and 32-bit pairs of lanes are folded two registers at a time; the
        /// inputs enter in the order that leaves row i's 4 sums in 128-bit lane i.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void StoreSums4x4(Vector512<float> a00, Vector512<float> a01, Vector512<float> a02, Vector512<float> a03,
            Vector512<float> a10, Vector512<float> a11, Vector512<float> a12, Vector512<float> a13,
            Vector512<float> a20, Vector512<float> a21, Vector512<float> a22, Vector512<float> a23,
            Vector512<float> a30, Vector512<float> a31, Vector512<float> a32, Vector512<float> a33, float* dst, int stride)
        {
            if (!Avx512F.IsSupported)
            {
                Sum4(a00, a01, a02, a03).Store(dst); Sum4(a10, a11, a12, a13).Store(dst + stride);
                Sum4(a20, a21, a22, a23).Store(dst + 2 * stride); Sum4(a30, a31, a32, a33).Store(dst + 3 * stride);
                return;
            }
            // Fold 1 (256-bit halves): X = [A's 8 partial lanes | B's 8]. Input k (0..15) = a_{k%4, k/4}.
            var x0 = Halves(a00, a10); var x1 = Halves(a20, a30); var x2 = Halves(a01, a11); var x3 = Halves(a21, a31);
            var x4 = Halves(a02, a12); var x5 = Halves(a22, a32); var x6 = Halves(a03, a13); var x7 = Halves(a23, a33);
            // Fold 2 (128-bit quarters): 128-bit lane t of Z holds the 4 partial lanes of its t-th input.
            var z0 = Quarters(x0, x1); var z1 = Quarters(x2, x3); var z2 = Quarters(x4, x5); var z3 = Quarters(x6, x7);
            // Fold 3 (64-bit pairs within lanes), fold 4 (32-bit pairs): lane t = [in t, in t+4, in t+8, in t+12] = row t.
            var u0 = Pairs64(z0, z1); var u1 = Pairs64(z2, z3);
            var v = Avx512F.Shuffle(u0, u1, 0x88) + Avx512F.Shuffle(u0, u1, 0xDD);
            Avx512F.ExtractVector128(v, 0).Store(dst);
            Avx512F.ExtractVector128(v, 1).Store(dst + stride);
            Avx512F.ExtractVector128(v, 2).Store(dst + 2 * stride);
            Avx512F.ExtractVector128(v, 3).Store(dst + 3 * stride);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector512<float> Halves(Vector512<float> a, Vector512<float> b) =>
            Avx512F.Shuffle4x128(a, b, 0x44) + Avx512F.Shuffle4x128(a, b, 0xEE);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector512<float> Quarters(Vector512<float> x, Vector512<float> y) =>
            Avx512F.Shuffle4x128(x, y, 0x88) + Avx512F.Shuffle4x128(x, y, 0xDD);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector512<float> Pairs64(Vector512<float> z, Vector512<float> w) =>
            Avx512F.UnpackLow(z.AsDouble(), w.AsDouble()).AsSingle() + Avx512F.UnpackHigh(z.AsDouble(), w.AsDouble()).AsSingle();
    }

    internal struct W256 : IVec<Vector256<float>>
    {
        public static int Count => Vector256<float>.Count;
        public static Vector256<float> Zero => Vector256<float>.Zero;
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Load(float* p) => Vector256.Load(p);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(Vector256<float> v, float* p) => v.Store(p);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Splat(float x) => Vector256.Create(x);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Mul(Vector256<float> a, Vector256<float> b) => a * b;
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Sub(Vector256<float> a, Vector256<float> b) => a - b;
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Exp(Vector256<float> x) => Vector256.Exp(x);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> MaxIgnoringNaN(Vector256<float> acc, Vector256<float> x) => Vector256.ConditionalSelect(Vector256.GreaterThan(x, acc), x, acc);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float HMax(Vector256<float> v) => W128.HMax(Vector128.Max(v.GetLower(), v.GetUpper()));
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Fma(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Vector256.FusedMultiplyAdd(a, b, c);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Vector256<float> v) => Vector256.Sum(v);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector128<float> Sum4(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d) =>
            CpuBackend.Sum4(a.GetLower() + a.GetUpper(), b.GetLower() + b.GetUpper(), c.GetLower() + c.GetUpper(), d.GetLower() + d.GetUpper());
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void StoreSums4x4(Vector256<float> a00, Vector256<float> a01, Vector256<float> a02, Vector256<float> a03, Vector256<float> a10, Vector256<float> a11, Vector256<float> a12, Vector256<float> a13,
            Vector256<float> a20, Vector256<float> a21, Vector256<float> a22, Vector256<float> a23, Vector256<float> a30, Vector256<float> a31, Vector256<float> a32, Vector256<float> a33, float* dst, int stride)
        {
            Sum4(a00, a01, a02, a03).Store(dst); Sum4(a10, a11, a12, a13).Store(dst + stride);
            Sum4(a20, a21, a22, a23).Store(dst + 2 * stride); Sum4(a30, a31, a32, a33).Store(dst + 3 * stride);
        }
    }

    internal struct W128 : IVec<Vector128<float>>
    {
        public static int Count => Vector128<float>.Count;
        public static Vector128<float> Zero => Vector128<float>.Zero;
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Load(float* p) => Vector128.Load(p);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(Vector128<float> v, float* p) => v.Store(p);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Splat(float x) => Vector128.Create(x);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Mul(Vector128<float> a, Vector128<float> b) => a * b;
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Add(Vector128<float> a, Vector128<float> b) => a + b;
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Sub(Vector128<float> a, Vector128<float> b) => a - b;
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Exp(Vector128<float> x) => Vector128.Exp(x);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> MaxIgnoringNaN(Vector128<float> acc, Vector128<float> x) => Vector128.ConditionalSelect(Vector128.GreaterThan(x, acc), x, acc);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float HMax(Vector128<float> v) => Math.Max(Math.Max(v.GetElement(0), v.GetElement(1)), Math.Max(v.GetElement(2), v.GetElement(3)));
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Fma(Vector128<float> a, Vector128<float> b, Vector128<float> c) => Vector128.FusedMultiplyAdd(a, b, c);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Vector128<float> v) => Vector128.Sum(v);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector128<float> Sum4(Vector128<float> a, Vector128<float> b, Vector128<float> c, Vector128<float> d) => CpuBackend.Sum4(a, b, c, d);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void StoreSums4x4(Vector128<float> a00, Vector128<float> a01, Vector128<float> a02, Vector128<float> a03, Vector128<float> a10, Vector128<float> a11, Vector128<float> a12, Vector128<float> a13,
            Vector128<float> a20, Vector128<float> a21, Vector128<float> a22, Vector128<float> a23, Vector128<float> a30, Vector128<float> a31, Vector128<float> a32, Vector128<float> a33, float* dst, int stride)
        {
            Sum4(a00, a01, a02, a03).Store(dst); Sum4(a10, a11, a12, a13).Store(dst + stride);
            Sum4(a20, a21, a22, a23).Store(dst + 2 * stride); Sum4(a30, a31, a32, a33).Store(dst + 3 * stride);
        }
    }
}
