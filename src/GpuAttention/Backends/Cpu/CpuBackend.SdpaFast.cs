using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GpuAttention.Backends.Cpu;

/// <summary>
/// SDPA forward with AVX-512 micro-kernels (used when <see cref="Avx512F"/> is present; otherwise the portable
/// <see cref="System.Numerics.Vector{T}"/> path of CpuBackend.Sdpa.cs runs). Work items are (batch·head, chunk of queries[, chunk of
/// keys]) run on <see cref="CpuWorkers"/>, after one parallel pass that packs the keys of every kv head, transposed into
/// blocks Kᵀ[E][<see cref="FKB"/>] (zero padded), so the score micro-kernel (4 queries × 64 keys, 16 zmm accumulators, one broadcast of q per query
/// and four contiguous Kᵀ loads per e) streams contiguous vectors; V rows are used as vectors in place (copied to a
/// 16-float padded layout only when Ev % 16 ≠ 0). Per sub-block of <see cref="FQB"/> queries (pre-scaled by the
/// softmax scale) it walks the key blocks with an online softmax whose exp is a vectorised polynomial
/// (<see cref="Exp"/>), and accumulates O += P·V with a 4 queries × 64 columns micro-kernel. Memory per thread is
/// O(FQB·(E + FKB + Ev)) per thread plus one packed copy of K (and of V when Ev % 16 ≠ 0), never L×S.
/// </summary>
internal sealed unsafe partial class CpuBackend
{
    /// <summary>True where the AVX-512 SDPA forward runs; tests switch it off to cover the portable path.</summary>
    internal static bool FastSdpa = Avx512F.IsSupported && Vector512.IsHardwareAccelerated;

    internal const int FQB = 32;    // queries per sub-block (a multiple of 4)
    internal const int FKB = 128;   // keys per block (a multiple of 64)

    [ThreadStatic] private static float[]? t_fastArr;
    [ThreadStatic] private static nint t_fastPtr;

    /// <summary>A 64-byte aligned per-thread scratch of at least n floats, grown (never shrunk) on demand.</summary>
    private static float* FastScratch(long n)
    {
        var arr = t_fastArr;
        if (arr is null || arr.Length < n + 16)
        {
            arr = t_fastArr = GC.AllocateUninitializedArray<float>(checked((int)Math.Max(n + 16, 1 << 14)), pinned: true);
            fixed (float* p = arr) t_fastPtr = ((nint)p + 63) & ~(nint)63;
        }
        return (float*)t_fastPtr;
    }

    private struct FastCtx
    {
        public SdpaShape S;
        public float* Q, K, V, Mask, O, Lse, Parts;
        public float* Kt, Vp;      // packed once per call: Kᵀ blocks of every kv head, and V rows padded to EvPad (null: V in place)
        public int QChunks, ChunkRows, Splits, KeyChunk, PartStride, KBlocks, EvPad;
    }

    // The packed Kᵀ / padded V of a forward call (grow-only, per calling thread).
    [ThreadStatic] private static float[]? t_fwdPack;

    private static void SdpaForwardFast(in SdpaForwardArgs a)
    {
        var s = a.Shape;
        int threads = CpuWorkers.Threads;
        long heads = (long)s.B * s.Hq;
        // Query chunks: about 16 items per thread, each a multiple of FQB rows, so a thread that is slowed down (another
        // process, a noisy neighbour on a VM; causal rows also differ in cost) leaves little of the work to wait for. Keys
        // are packed once per call, so a chunk costs no extra packing.
        int maxChunks = (s.L + FQB - 1) / FQB;
        int qChunks = (int)Math.Clamp((16L * threads + heads - 1) / heads, 1, maxChunks);
        int chunkRows = ((s.L + qChunks - 1) / qChunks + FQB - 1) / FQB * FQB;
        qChunks = (s.L + chunkRows - 1) / chunkRows;
        long items = heads * qChunks;
        // Few items (decoding): split the keys too, then merge the partial (m, l, acc) of each row (flash-decoding).
        int splits = 1;
        if (!s.Causal && items < 2 * threads)
            splits = (int)Math.Min((2 * threads + items - 1) / items, Math.Max(1, s.S / (2 * FKB)));
        int keyChunk = splits == 1 ? s.S : ((s.S + splits - 1) / splits + FKB - 1) / FKB * FKB;
        if (splits > 1) splits = (s.S + keyChunk - 1) / keyChunk;
        if (items * splits > int.MaxValue) throw new NotSupportedException("too many attention rows for one call");

        // Kᵀ blocks and padded V of every kv head, packed once (in parallel) and shared by all items of the head.
        int kBlocks = (s.S + FKB - 1) / FKB;
        int evPad = (s.Ev + 15) & ~15;
        long kvHeads = (long)s.B * s.Hkv;
        long ktLen = kvHeads * kBlocks * s.E * FKB, vpLen = evPad != s.Ev ? kvHeads * s.S * evPad : 0;
        if (kvHeads * kBlocks > int.MaxValue) throw new NotSupportedException("too many attention keys for one call");
        float* kt = (float*)(((nint)GrowScratch(ref t_fwdPack, ktLen + vpLen + 16) + 63) & ~(nint)63);   // 64-byte aligned
        var ctx = new FastCtx
        {
            S = s, Q = Ptr(a.Q), K = Ptr(a.K), V = Ptr(a.V), Mask = Ptr(a.Mask), O = Ptr(a.Out), Lse = Ptr(a.Lse),
            QChunks = qChunks, ChunkRows = chunkRows, Splits = splits, KeyChunk = keyChunk,
            PartStride = chunkRows * (s.Ev + 2), Kt = kt, Vp = vpLen > 0 ? kt + ktLen : null, KBlocks = kBlocks, EvPad = evPad,
        };
        CpuWorkers.For((int)(kvHeads * kBlocks), &FastPackItem, &ctx);
        if (splits == 1)
        {
            CpuWorkers.For((int)items, &FastItem, &ctx);
            return;
        }
        float* pp = ctx.Parts = GrowScratch(ref s_splitParts, items * splits * ctx.PartStride);
        CpuWorkers.For((int)(items * splits), &FastItem, &ctx);
        CombineAllSplits(s, items, qChunks, chunkRows, splits, pp, ctx.PartStride, ctx.O, ctx.Lse);
    }

    /// <summary>Packs key block blk of kv head bhk: Kᵀ[E][FKB] (zero beyond the last key) and, when Ev % 16 ≠ 0, its V rows padded to EvPad.</summary>
    private static void FastPackItem(void* pctx, int work)
    {
        ref FastCtx c = ref Unsafe.AsRef<FastCtx>(pctx);
        ref readonly SdpaShape s = ref c.S;
        int blk = work % c.KBlocks;
        long bhk = work / c.KBlocks;
        int j0 = blk * FKB, kn = Math.Min(FKB, s.S - j0);
        float* dst = c.Kt + (bhk * c.KBlocks + blk) * s.E * FKB;
        if (kn < FKB) new Span<float>(dst, s.E * FKB).Clear();
        TransposeInto(c.K + (bhk * s.S + j0) * s.E, s.E, kn, dst);
        if (c.Vp == null) return;
        for (int j = j0; j < j0 + kn; j++)
        {
            float* d = c.Vp + (bhk * s.S + j) * c.EvPad;
            new ReadOnlySpan<float>(c.V + (bhk * s.S + j) * s.Ev, s.Ev).CopyTo(new Span<float>(d, s.Ev));
            new Span<float>(d + s.Ev, c.EvPad - s.Ev).Clear();
        }
    }

    // Split-key partials of both SDPA forward paths (grow-only, per calling thread; only decoding shapes use them).
    [ThreadStatic] private static float[]? s_splitParts;

    private static void FastItem(void* pctx, int work)
    {
        ref FastCtx c = ref Unsafe.AsRef<FastCtx>(pctx);
        ref readonly SdpaShape s = ref c.S;
        int split = work % c.Splits;
        int item = work / c.Splits;
        int qc = item % c.QChunks;
        long bh = item / c.QChunks;
        int b = (int)(bh / s.Hq), h = (int)(bh % s.Hq), hk = h / s.Group;
        int rowBegin = qc * c.ChunkRows, rowEnd = Math.Min(s.L, rowBegin + c.ChunkRows);
        int jBegin = split * c.KeyChunk, jEnd = Math.Min(s.S, jBegin + c.KeyChunk);
        if (s.Causal) jEnd = Math.Min(jEnd, rowEnd);   // key j is kept for query i when j <= i
        int E = s.E, Ev = s.Ev;
        int EvPad = c.EvPad;
        long tileLen = FQB * E + FQB * FKB + FQB * EvPad + FQB + 32 * FQB;
        float* qp = FastScratch(tileLen + 64);
        float* sc = qp + FQB * E;
        float* acc = sc + FQB * FKB;
        float* m = acc + FQB * EvPad;
        float* lv = m + FQB;   // running sums, 16 lanes per row
        float* mxb = lv + 16 * FQB;   // block row maxima from the score tiles, 16 lanes per row

        long bhk = (long)b * s.Hkv + hk;
        float* kt = c.Kt + (bhk * c.KBlocks + jBegin / FKB) * E * FKB;     // jBegin is a multiple of FKB
        int vStride = c.Vp != null ? EvPad : Ev;
        float* vBase = (c.Vp != null ? c.Vp : c.V) + (bhk * s.S + jBegin) * vStride;

        long maskBase = b * s.MaskStrideB + h * s.MaskStrideH;
        float scale = s.Scale;
        for (int i0 = rowBegin; i0 < rowEnd; i0 += FQB)
        {
            int qn = Math.Min(FQB, rowEnd - i0);
            int qr = (qn + 3) & ~3;
            // Pack the queries, pre-scaled; padding rows are zero.
            float* qSrc = c.Q + (((long)b * s.Hq + h) * s.L + i0) * E;
            for (int r = 0; r < qn; r++) ScaleInto(qSrc + (long)r * E, scale, qp + r * E, E);
            if (qr > qn) new Span<float>(qp + qn * E, (qr - qn) * E).Clear();
            new Span<float>(acc, qr * EvPad).Clear();
            for (int r = 0; r < FQB; r++) m[r] = float.NegativeInfinity;
            new Span<float>(lv, 16 * FQB).Clear();

            int kEnd = s.Causal ? Math.Min(jEnd, i0 + qn) : jEnd;
            for (int j0 = jBegin; j0 < kEnd; j0 += FKB)
            {
                int blk = (j0 - jBegin) / FKB;
                int kn = Math.Min(FKB, kEnd - j0);
                int kCols = (kn + 63) & ~63;
                float* ktb = kt + (long)blk * E * FKB;
                // A full block that no mask or causal edge changes after the tile: the tile also takes the row maxima.
                bool fusedMax = kn == FKB && c.Mask == null && (!s.Causal || j0 + kn - 1 <= i0);
                float* mxt = null;
                if (fusedMax)
                {
                    mxt = mxb;
                    new Span<float>(mxb, 16 * qr).Fill(float.NegativeInfinity);
                }
                for (int r = 0; r < qr; r += 4)
                    for (int cc = 0; cc < kCols; cc += 64)
                        ScoreTile4x64(qp + r * E, E, ktb + cc, sc + r * FKB + cc, mxt == null ? null : mxt + 16 * r);

                int k16 = (kn + 15) & ~15;
                // Mask added, causal edge and the key tail set to −∞ (nothing to do for a full block without either).
                bool edits = c.Mask != null || kn < k16 || (s.Causal && j0 + kn - 1 > i0);
                for (int r = 0; edits && r < qn; r++)
                {
                    float* row = sc + r * FKB;
                    if (c.Mask != null)
                    {
                        float* mrow = c.Mask + maskBase + (long)(i0 + r) * s.MaskStrideL;
                        if (s.MaskStrideS == 1) TensorPrimitives.Add(new ReadOnlySpan<float>(row, kn), new ReadOnlySpan<float>(mrow + j0, kn), new Span<float>(row, kn));
                        else { float mv = mrow[0]; for (int j = 0; j < kn; j++) row[j] += mv; }
                    }
                    int keep = s.Causal ? Math.Min(kn, i0 + r + 1 - j0) : kn;
                    for (int j = Math.Max(keep, 0); j < k16; j++) row[j] = float.NegativeInfinity;
                }
                int r4 = 0;
                for (; r4 + 4 <= qn; r4 += 4)
                    SoftmaxRows4(sc + r4 * FKB, k16, m + r4, lv + 16 * r4, acc + r4 * EvPad, EvPad, mxt == null ? null : mxt + 16 * r4);
                for (int r = r4; r < qn; r++)
                    SoftmaxRow(sc + r * FKB, k16, ref m[r], lv + 16 * r, acc + r * EvPad, EvPad, mxt == null ? null : mxt + 16 * r);
                for (int r = qn; r < qr; r++) new Span<float>(sc + r * FKB, k16).Clear();
                float* vb = vBase + (long)(j0 - jBegin) * vStride;
                for (int r = 0; r < qr; r += 4)
                    RankUpdate4(sc + r * FKB, FKB, 1, vb, vStride, kn, acc + r * EvPad, EvPad);   // O += P V
            }

            for (int r = 0; r < qn; r++) lv[r] = Vector512.Sum(Vector512.Load(lv + 16 * r));   // l[r], in place (r ≤ 16r)
            float* l = lv;
            if (c.Parts != null)
            {
                float* part = c.Parts + (long)work * c.PartStride;
                int rows = c.ChunkRows, off = i0 - rowBegin;
                for (int r = 0; r < qn; r++)
                {
                    new ReadOnlySpan<float>(acc + r * EvPad, Ev).CopyTo(new Span<float>(part + (long)(off + r) * Ev, Ev));
                    part[rows * Ev + off + r] = m[r];
                    part[rows * Ev + rows + off + r] = l[r];
                }
                continue;
            }
            for (int r = 0; r < qn; r++)
            {
                long row = bh * s.L + i0 + r;
                var dst = new Span<float>(c.O + row * Ev, Ev);
                if (l[r] == 0f && !float.IsNaN(m[r])) { dst.Clear(); c.Lse[row] = float.NegativeInfinity; continue; }
                ScaleInto(acc + r * EvPad, 1f / l[r], c.O + row * Ev, Ev);
                c.Lse[row] = m[r] + MathF.Log(l[r]);
            }
        }
    }

    /// <summary>d[i] = s[i]·a for i &lt; n, inline (a TensorPrimitives call per 64-float row cost ~3% of the forward in its
    /// per-call overhead).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScaleInto(float* s, float a, float* d, int n)
    {
        var av = Vector512.Create(a);
        int i = 0;
        for (; i + 16 <= n; i += 16) (Vector512.Load(s + i) * av).Store(d + i);
        for (; i < n; i++) d[i] = s[i] * a;
    }

    /// <summary>dst[e·FKB + j] = src[j·E + e] for j &lt; kn, e &lt; E: full 16×16 tiles in registers (<see cref="Transpose16x16"/>),
    /// edge tiles one element at a time.</summary>
    private static void TransposeInto(float* src, int E, int kn, float* dst)
    {
        for (int j0 = 0; j0 < kn; j0 += 16)
        {
            int jn = Math.Min(16, kn - j0);
            for (int e0 = 0; e0 < E; e0 += 16)
            {
                int en = Math.Min(16, E - e0);
                if (jn == 16 && en == 16 && Avx512F.IsSupported)
                {
                    Transpose16x16(src + (long)j0 * E + e0, E, dst + (long)e0 * FKB + j0, FKB);
                    continue;
                }
                for (int j = 0; j < jn; j++)
                {
                    float* srow = src + (long)(j0 + j) * E + e0;
                    float* d = dst + (long)e0 * FKB + j0 + j;
                    for (int e = 0; e < en; e++) d[e * FKB] = srow[e];
                }
            }
        }
    }

    /// <summary>
    /// d[e·ldd + j] = s[j·lds + e] for j, e &lt; 16 in zmm registers: unpack pairs of rows (ps, then pd) so that each 128-bit
    /// lane holds 4 rows of one column, then two rounds of vshuff32x4 gather the four lanes of a column: 64 shuffles for 256
    /// floats, against one strided scalar store per float (16 cache lines in flight per source row).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Transpose16x16(float* s, int lds, float* d, int ldd)
    {
        // U[g·4 + i]: lane k = rows 4g..4g+3 at column 4k + i. Sixteen locals, not a stackalloc'd array: the array cost a
        // 1 KB zeroing call and a store and load of every U per call.
        Unpack4(s, lds, out var u0, out var u1, out var u2, out var u3);
        Unpack4(s + 4L * lds, lds, out var u4, out var u5, out var u6, out var u7);
        Unpack4(s + 8L * lds, lds, out var u8, out var u9, out var u10, out var u11);
        Unpack4(s + 12L * lds, lds, out var u12, out var u13, out var u14, out var u15);
        Gather4(u0, u4, u8, u12, d, ldd);
        Gather4(u1, u5, u9, u13, d + ldd, ldd);
        Gather4(u2, u6, u10, u14, d + 2L * ldd, ldd);
        Gather4(u3, u7, u11, u15, d + 3L * ldd, ldd);
    }

    /// <summary>Rows r0..r3 (lds apart) into four vectors whose 128-bit lane k holds the 4 rows at column 4k + i (i = 0..3).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Unpack4(float* r, int lds, out Vector512<float> c0, out Vector512<float> c1, out Vector512<float> c2, out Vector512<float> c3)
    {
        var r0 = Vector512.Load(r); var r1 = Vector512.Load(r + lds); var r2 = Vector512.Load(r + 2L * lds); var r3 = Vector512.Load(r + 3L * lds);
        var t0 = Avx512F.UnpackLow(r0, r1).AsDouble(); var t1 = Avx512F.UnpackHigh(r0, r1).AsDouble();
        var t2 = Avx512F.UnpackLow(r2, r3).AsDouble(); var t3 = Avx512F.UnpackHigh(r2, r3).AsDouble();
        c0 = Avx512F.UnpackLow(t0, t2).AsSingle(); c1 = Avx512F.UnpackHigh(t0, t2).AsSingle();
        c2 = Avx512F.UnpackLow(t1, t3).AsSingle(); c3 = Avx512F.UnpackHigh(t1, t3).AsSingle();
    }

    /// <summary>Columns i, 4 + i, 8 + i, 12 + i (stored at d, d + 4·ldd, d + 8·ldd, d + 12·ldd) from the U vectors of column
    /// phase i of the four row groups.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Gather4(Vector512<float> g0, Vector512<float> g1, Vector512<float> g2, Vector512<float> g3, float* d, int ldd)
    {
        var a = Avx512F.Shuffle4x128(g0, g1, 0x88); var b = Avx512F.Shuffle4x128(g0, g1, 0xDD);
        var c = Avx512F.Shuffle4x128(g2, g3, 0x88); var e = Avx512F.Shuffle4x128(g2, g3, 0xDD);
        Avx512F.Shuffle4x128(a, c, 0x88).Store(d);                  // column i       (lanes k = 0)
        Avx512F.Shuffle4x128(b, e, 0x88).Store(d + 4L * ldd);       // column 4 + i   (k = 1)
        Avx512F.Shuffle4x128(a, c, 0xDD).Store(d + 8L * ldd);       // column 8 + i   (k = 2)
        Avx512F.Shuffle4x128(b, e, 0xDD).Store(d + 12L * ldd);      // column 12 + i  (k = 3)
    }

    /// <summary>
    /// Online-softmax step of one score row (n a multiple of 16, entries to drop already −∞): m ← max(m, max row),
    /// row ← exp(row − m) = 2^((row − m)·log2 e), l ← l·e^(m_old−m) + Σ row, acc row ← acc row · e^(m_old−m). The running sum l
    /// is kept as 16 lanes (<paramref name="lRow"/>), summed once per row at the end. The max ignores NaN scores (vmaxps),
    /// which still reach l and acc through exp(NaN − m) = NaN; a block whose scores are all NaN or −∞ is checked for NaN
    /// explicitly. (row − m is formed first and then scaled: scores near the float limit cannot overflow.) <paramref name="rowMax"/>, when not null, holds 16 lanes whose max is the row's (taken by the score tile).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void SoftmaxRow(float* row, int n, ref float m, float* lRow, float* accRow, int EvPad, float* rowMax)
    {
        float* end = row + n;
        Vector512<float> mx;
        if (rowMax != null) mx = Vector512.Load(rowMax);
        else
        {
            mx = Vector512.Create(float.NegativeInfinity);
            for (float* p = row; p < end; p += 16) mx = Avx512F.Max(Vector512.Load(p), mx);   // a NaN lane keeps mx
        }
        float bmax = HMax(mx);
        float mOld = m;
        float mNew = Math.Max(mOld, bmax);
        if (float.IsNegativeInfinity(mNew))
        {
            // All masked so far (p = 0) — unless a score is NaN, which must reach the output as NaN.
            var nan = Vector512<float>.Zero;
            for (float* p = row; p < end; p += 16) { var x = Vector512.Load(p); nan |= ~Vector512.Equals(x, x); }
            if (nan != Vector512<float>.Zero) { m = float.NaN; Vector512.Create(float.NaN).Store(lRow); }
            new Span<float>(row, n).Clear();
            return;
        }
        if (float.IsNaN(mOld)) mNew = mOld;
        var mv = Vector512.Create(mNew);
        var l2e = Vector512.Create(Log2Ef);
        var sum = Vector512<float>.Zero;
        for (float* p = row; p < end; p += 16)
        {
            var e = Exp2((Vector512.Load(p) - mv) * l2e);
            e.Store(p);
            sum += e;
        }
        Rescale(ref m, mNew, lRow, sum, accRow, EvPad);
    }

    /// <summary>
    /// <see cref="SoftmaxRow"/> for 4 consecutive rows (row stride <see cref="FKB"/>, running sums 16 lanes apart, acc rows
    /// <paramref name="EvPad"/> apart, block maxima 16 lanes apart when given): one call instead of four, the 4 row maxima
    /// from one transpose-and-max tree, and the exps of the 4 rows interleaved (4 independent dependency chains per step).
    /// When a row is all −∞ so far (fully masked), the 4 rows go through <see cref="SoftmaxRow"/> one by one. Measured
    /// in-process A/B on the 2-core AVX-512 VM (B1 H8 L=S=1024 E64 forward): 6.82–6.89 ms against 7.07–7.09 ms per row.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void SoftmaxRows4(float* row, int n, float* m, float* lRow, float* accRow, int EvPad, float* rowMax)
    {
        Vector512<float> x0, x1, x2, x3;
        if (rowMax != null)
        {
            x0 = Vector512.Load(rowMax); x1 = Vector512.Load(rowMax + 16); x2 = Vector512.Load(rowMax + 32); x3 = Vector512.Load(rowMax + 48);
        }
        else
        {
            x0 = x1 = x2 = x3 = Vector512.Create(float.NegativeInfinity);
            for (int j = 0; j < n; j += 16)   // a NaN lane keeps the running max (vmaxps returns its second operand)
            {
                x0 = Avx512F.Max(Vector512.Load(row + j), x0); x1 = Avx512F.Max(Vector512.Load(row + FKB + j), x1);
                x2 = Avx512F.Max(Vector512.Load(row + 2 * FKB + j), x2); x3 = Avx512F.Max(Vector512.Load(row + 3 * FKB + j), x3);
            }
        }
        // Halves, then 128-bit quarters of two rows at a time: 128-bit lane t holds row t's 4 partial maxima; then within lanes.
        var h0 = Avx512F.Max(Avx512F.Shuffle4x128(x0, x1, 0x44), Avx512F.Shuffle4x128(x0, x1, 0xEE));
        var h1 = Avx512F.Max(Avx512F.Shuffle4x128(x2, x3, 0x44), Avx512F.Shuffle4x128(x2, x3, 0xEE));
        var q = Avx512F.Max(Avx512F.Shuffle4x128(h0, h1, 0x88), Avx512F.Shuffle4x128(h0, h1, 0xDD));
        q = Avx512F.Max(q, Avx512F.Permute4x32(q, 0x4E));
        q = Avx512F.Max(q, Avx512F.Permute4x32(q, 0xB1));
        // Math.Max propagates a NaN m: that row's exps, l and acc become NaN, as in SoftmaxRow.
        float mNew0 = Math.Max(m[0], q.GetElement(0)), mNew1 = Math.Max(m[1], q.GetElement(4));
        float mNew2 = Math.Max(m[2], q.GetElement(8)), mNew3 = Math.Max(m[3], q.GetElement(12));
        if (float.IsNegativeInfinity(mNew0) || float.IsNegativeInfinity(mNew1) || float.IsNegativeInfinity(mNew2) || float.IsNegativeInfinity(mNew3))
        {
            for (int t = 0; t < 4; t++)
                SoftmaxRow(row + t * FKB, n, ref m[t], lRow + 16 * t, accRow + t * EvPad, EvPad, rowMax == null ? null : rowMax + 16 * t);
            return;
        }
        var l2e = Vector512.Create(Log2Ef);
        Vector512<float> mv0 = Vector512.Create(mNew0), mv1 = Vector512.Create(mNew1), mv2 = Vector512.Create(mNew2), mv3 = Vector512.Create(mNew3);
        Vector512<float> s0 = default, s1 = default, s2 = default, s3 = default;
        for (int j = 0; j < n; j += 16)
        {
            float* p = row + j;
            var e0 = Exp2((Vector512.Load(p) - mv0) * l2e);
            var e1 = Exp2((Vector512.Load(p + FKB) - mv1) * l2e);
            var e2 = Exp2((Vector512.Load(p + 2 * FKB) - mv2) * l2e);
            var e3 = Exp2((Vector512.Load(p + 3 * FKB) - mv3) * l2e);
            e0.Store(p); e1.Store(p + FKB); e2.Store(p + 2 * FKB); e3.Store(p + 3 * FKB);
            s0 += e0; s1 += e1; s2 += e2; s3 += e3;
        }
        Rescale(ref m[0], mNew0, lRow, s0, accRow, EvPad);
        Rescale(ref m[1], mNew1, lRow + 16, s1, accRow + EvPad, EvPad);
        Rescale(ref m[2], mNew2, lRow + 32, s2, accRow + 2 * EvPad, EvPad);
        Rescale(ref m[3], mNew3, lRow + 48, s3, accRow + 3 * EvPad, EvPad);
    }

    /// <summary>The end of an online-softmax step for one row: m ← mNew, l ← l·e^(m_old−m) + sum (16 lanes), acc ← acc·e^(m_old−m)
    /// (a NaN m makes l and acc NaN). Shared by <see cref="SoftmaxRow"/> and <see cref="SoftmaxRows4"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Rescale(ref float m, float mNew, float* lRow, Vector512<float> sum, float* accRow, int EvPad)
    {
        float mOld = m;
        m = mNew;
        if (mNew == mOld)
        {
            (Vector512.Load(lRow) + sum).Store(lRow);
            return;
        }
        // e^(m_old − m) by the same 2^((x)·log2 e) as the scores (no call into the C runtime's expf per row and block).
        var cv = float.IsNegativeInfinity(mOld) ? Vector512<float>.Zero : Exp2(Vector512.Create((mOld - mNew) * Log2Ef));
        Avx512F.FusedMultiplyAdd(Vector512.Load(lRow), cv, sum).Store(lRow);
        for (int e = 0; e < EvPad; e += 16) (Vector512.Load(accRow + e) * cv).Store(accRow + e);
    }

    /// <summary>Largest lane of <paramref name="v"/> (no NaN lanes: <see cref="SoftmaxRow"/> keeps them out).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float HMax(Vector512<float> v)
    {
        var h = Vector256.Max(v.GetLower(), v.GetUpper());
        var q = Vector128.Max(h.GetLower(), h.GetUpper());
        q = Vector128.Max(q, Vector128.Shuffle(q, Vector128.Create(2, 3, 0, 1)));
        q = Vector128.Max(q, Vector128.Shuffle(q, Vector128.Create(1, 0, 3, 2)));
        return q.ToScalar();
    }

    private const float Log2Ef = 1.44269504f;

    /// <summary>
    /// 2^x for x ≤ 0 (the softmax's (x − max)·log2 e), NaN propagated, exactly 0 below −126 (no denormals): x = n + r with
    /// n = round(x), |r| ≤ 1/2, 2^r by a degree-6 polynomial (near-minimax on [−1/2, 1/2], fitted by iteratively reweighted
    /// least squares: 2.2e-9 relative in exact arithmetic, about 1e-7 evaluated in float32), times 2^n with vscalefps. With the
    /// multiply by log2 e in front, three operations fewer than <see cref="Exp"/> (no two-step ln 2 range reduction).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Exp2(Vector512<float> x)
    {
        var lo = Vector512.Create(-126f);
        var xc = Avx512F.Max(lo, x);   // vmaxps returns its second operand when either is NaN: NaN stays
        var n = Avx512F.RoundScale(xc, 0x08);   // nearest, no exceptions
        var r = xc - n;
        var p = Avx512F.FusedMultiplyAdd(Vector512.Create(1.5357410302385688e-4f), r, Vector512.Create(1.3400306925177574e-3f));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(9.618433192372322e-3f));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(5.550328642129898e-2f));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(0.24022647738456726f));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(0.6931471824645996f));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512<float>.One);
        var y = Avx512F.Scale(p, n);
        return Vector512.ConditionalSelect(Vector512.LessThan(x, lo), Vector512<float>.Zero, y);
    }

    /// <summary>
    /// e^x for x ≤ 0 (the softmax's x − max), NaN propagated, exactly 0 below −87.33 (no denormals). Cephes expf:
    /// x = n·ln2 + r with |r| ≤ ln2/2 (ln2 split in two for an exact n·ln2), e^r by a degree-7 polynomial
    /// (relative error about 1e-7), times 2^n with vscalefps.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Exp(Vector512<float> x)
    {
        var lo = Vector512.Create(-87.33654f);
        var xc = Avx512F.Max(lo, x);   // vmaxps returns its second operand when either is NaN: NaN stays
        var n = Avx512F.RoundScale(xc * Vector512.Create(1.44269504088896341f), 0x08);   // nearest, no exceptions
        var r = Avx512F.FusedMultiplyAdd(n, Vector512.Create(-0.693359375f), xc);
        r = Avx512F.FusedMultiplyAdd(n, Vector512.Create(2.12194440e-4f), r);
        var p = Avx512F.FusedMultiplyAdd(Vector512.Create(1.9875691500E-4f), r, Vector512.Create(1.3981999507E-3f));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(8.3334519073E-3f));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(4.1665795894E-2f));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(1.6666665459E-1f));
        p = Avx512F.FusedMultiplyAdd(p, r, Vector512.Create(5.0000001201E-1f));
        p = Avx512F.FusedMultiplyAdd(p, r * r, r) + Vector512<float>.One;
        var y = Avx512F.Scale(p, n);
        return Vector512.ConditionalSelect(Vector512.LessThan(x, lo), Vector512<float>.Zero, y);
    }

    /// <summary>sc[r·FKB + 0..63] = Σ_e q[r·E + e] · kt[e·FKB + 0..63] for r = 0..3: 16 zmm accumulators. With
    /// <paramref name="rowMax"/> (4 rows × 16 lanes) not null, rowMax[r] ← lane-wise max(scores of row r, rowMax[r]), NaN
    /// scores ignored (vmaxps keeps its second operand).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ScoreTile4x64(float* q, int E, float* kt, float* sc, float* rowMax = null)
    {
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector512<float> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default;
        Vector512<float> c30 = default, c31 = default, c32 = default, c33 = default;
        nint e1 = E, e2 = 2 * (nint)E, e3 = 3 * (nint)E;   // rows 1..3 of q as index registers: few integer uops per step
        float* k = kt;
        for (float* qe = q, qEnd = q + E; qe < qEnd; qe++, k += FKB)
        {
            var k0 = Vector512.Load(k); var k1 = Vector512.Load(k + 16); var k2 = Vector512.Load(k + 32); var k3 = Vector512.Load(k + 48);
            var a = Vector512.Create(qe[0]);
            c00 = Avx512F.FusedMultiplyAdd(a, k0, c00); c01 = Avx512F.FusedMultiplyAdd(a, k1, c01);
            c02 = Avx512F.FusedMultiplyAdd(a, k2, c02); c03 = Avx512F.FusedMultiplyAdd(a, k3, c03);
            a = Vector512.Create(qe[e1]);
            c10 = Avx512F.FusedMultiplyAdd(a, k0, c10); c11 = Avx512F.FusedMultiplyAdd(a, k1, c11);
            c12 = Avx512F.FusedMultiplyAdd(a, k2, c12); c13 = Avx512F.FusedMultiplyAdd(a, k3, c13);
            a = Vector512.Create(qe[e2]);
            c20 = Avx512F.FusedMultiplyAdd(a, k0, c20); c21 = Avx512F.FusedMultiplyAdd(a, k1, c21);
            c22 = Avx512F.FusedMultiplyAdd(a, k2, c22); c23 = Avx512F.FusedMultiplyAdd(a, k3, c23);
            a = Vector512.Create(qe[e3]);
            c30 = Avx512F.FusedMultiplyAdd(a, k0, c30); c31 = Avx512F.FusedMultiplyAdd(a, k1, c31);
            c32 = Avx512F.FusedMultiplyAdd(a, k2, c32); c33 = Avx512F.FusedMultiplyAdd(a, k3, c33);
        }
        c00.Store(sc); c01.Store(sc + 16); c02.Store(sc + 32); c03.Store(sc + 48);
        sc += FKB; c10.Store(sc); c11.Store(sc + 16); c12.Store(sc + 32); c13.Store(sc + 48);
        sc += FKB; c20.Store(sc); c21.Store(sc + 16); c22.Store(sc + 32); c23.Store(sc + 48);
        sc += FKB; c30.Store(sc); c31.Store(sc + 16); c32.Store(sc + 32); c33.Store(sc + 48);
        if (rowMax == null) return;
        Avx512F.Max(c00, Avx512F.Max(c01, Avx512F.Max(c02, Avx512F.Max(c03, Vector512.Load(rowMax))))).Store(rowMax);
        Avx512F.Max(c10, Avx512F.Max(c11, Avx512F.Max(c12, Avx512F.Max(c13, Vector512.Load(rowMax + 16))))).Store(rowMax + 16);
        Avx512F.Max(c20, Avx512F.Max(c21, Avx512F.Max(c22, Avx512F.Max(c23, Vector512.Load(rowMax + 32))))).Store(rowMax + 32);
        Avx512F.Max(c30, Avx512F.Max(c31, Avx512F.Max(c32, Avx512F.Max(c33, Vector512.Load(rowMax + 48))))).Store(rowMax + 48);
    }

}
