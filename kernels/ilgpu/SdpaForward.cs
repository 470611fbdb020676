using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;

namespace GpuAttention.Kernels.Ilgpu;

/// <summary>Shared helpers of the SDPA kernels (inlined into each).</summary>
internal static class SdpaMath
{
    public const float Log2E = 1.4426950408889634f;
    public const float Ln2 = 0.6931471805599453f;

    /// <summary>
    /// Index of element (row j, column c) of a 32-row streamed tile with rows of <paramref name="width"/> (a power of two ≥ 32)
    /// floats stored at stride <paramref name="stride"/>: the column is rotated by the row (an XOR-free swizzle). A warp reading
    /// one row per lane (lane j, same c: QKᵀ with a key per lane) hits banks (c + j) mod 32 = 32 distinct banks, and a warp
    /// reading one row across lanes (c = lane + 32u: the P·V / dS·K column updates) hits (lane + 32u + j) mod 32, distinct too.
    /// It replaces the usual +1 padding, which would push the 128- and 256-wide tiles past the 48 KiB budget.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Swz(int j, int c, int width, int stride) => j * stride + ((c + j) & (width - 1));

    /// <summary>Maximum over the warp of each row (XOR butterfly: every lane ends with the result; a fixed order, deterministic).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Row4 WarpMax(Row4 x)
    {
        for (int o = 16; o > 0; o >>= 1)
            x = new Row4(XMath.Max(x.A, Warp.ShuffleXor(x.A, o)), XMath.Max(x.B, Warp.ShuffleXor(x.B, o)),
                XMath.Max(x.C, Warp.ShuffleXor(x.C, o)), XMath.Max(x.D, Warp.ShuffleXor(x.D, o)));
        return x;
    }

    /// <summary>Sum over the warp of each row (XOR butterfly, deterministic).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Row4 WarpSum(Row4 x)
    {
        for (int o = 16; o > 0; o >>= 1)
            x = new Row4(x.A + Warp.ShuffleXor(x.A, o), x.B + Warp.ShuffleXor(x.B, o),
                x.C + Warp.ShuffleXor(x.C, o), x.D + Warp.ShuffleXor(x.D, o));
        return x;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Exp2(float x) => XMath.Exp2(x);

    /// <summary>Stages rows [row0, row0 + 32) of a [rows, n] matrix at <paramref name="src"/> into the swizzled 32-row tile
    /// <paramref name="tile"/> (bucket <paramref name="width"/>, stride <paramref name="stride"/>), multiplied by <paramref name="mul"/>;
    /// zeros past <paramref name="rows"/> and past <paramref name="n"/>. Consecutive threads read consecutive columns (coalesced).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadTile(ArrayView<float> tile, ArrayView<float> src, long rowBase, int row0, int rows, int n,
        int width, int stride, int threads, float mul)
    {
        for (int idx = Group.IdxX; idx < 32 * width; idx += threads)
        {
            int j = idx / width, c = idx & (width - 1);
            int r = row0 + j;
            tile[Swz(j, c, width, stride)] = r < rows && c < n ? src[(rowBase + r) * n + c] * mul : 0f;
        }
    }

    /// <summary>Stages rows [row0, row0 + count) of a [rows, n] matrix into a plain row-major [count, width] tile (read by
    /// broadcast: all lanes of a warp the same address), times <paramref name="mul"/>, zeros outside.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadRows(ArrayView<float> dst, ArrayView<float> src, long rowBase, int row0, int count, int rows, int n,
        int width, int threads, float mul)
    {
        for (int idx = Group.IdxX; idx < count * width; idx += threads)
        {
            int j = idx / width, c = idx & (width - 1);
            int r = row0 + j;
            dst[idx] = r < rows && c < n ? src[(rowBase + r) * n + c] * mul : 0f;
        }
    }
}

/// <summary>
/// Fused SDPA forward (FlashAttention-2, Dao 2023, arXiv:2307.08691, Algorithm 1) for ILGPU. Host code:
/// <c>src/GpuAttention/Backends/Ilgpu/IlgpuSdpa.cs</c>.
/// </summary>
internal static class SdpaForwardKernels
{
    /// <summary>
    /// Forward over a block of 4·W query rows of one (b, h), or (split mode) one split of the keys for the L ≤ 4 rows of one (b, h).
    /// <para>Grid: X = B·Hq · T blocks, T = ceil(L / 4W) row blocks (split mode: T = NumSplits); block = 32·W threads.</para>
    /// <para>Design. The block stages its Q rows once (pre-scaled by scale·log2 e) in shared memory. It then streams the keys in
    /// tiles of 32: the K tile goes into a 32-row shared tile (swizzled, see <see cref="SdpaMath.Swz"/>); warp w owns query
    /// rows 4w..4w+3 and lane j key j of the tile, so each thread computes a 4×1 register micro-tile of scores (per head-dim
    /// step: one conflict-free K load, 4 broadcast Q loads, 4 FMAs). Row maxima go through a 5-step XOR shuffle; the online
    /// softmax keeps m per row (warp-uniform) and a lane-partial l (summed over the warp once at the end). The same shared tile is
    /// then refilled with the V tile (K and V never both resident: this is what lets a 48 KiB block hold 256-wide heads); the
    /// output micro-tile of a thread is 4 rows × Ev/32 columns (lane + 32u), updated with the probabilities broadcast from
    /// their key's lane by shfl (4 per key) and conflict-free V loads. Accumulators are <see cref="Row4"/> scalars (no arrays):
    /// up to 8 × 4 = 32 registers for Ev = 256; columns past the Ev bucket are compiled away.</para>
    /// <para>Each tile loop has 4 barriers (K staged, K consumed, V staged, V consumed). Causal blocks stop at the key tile of
    /// their last row. Rows past L and keys past S take part (zeros) but are never read from the mask nor written.</para>
    /// </summary>
    public static void Forward<TH, TW, TM>(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> mask,
        ArrayView<float> o, ArrayView<float> lse, SdpaParams p)
        where TH : struct, ISdpaHeads where TW : struct, ISdpaWarps where TM : struct, ISdpaMode
    {
        int DE = default(TH).E, DV = default(TH).Ev, MX = default(TH).Max;
        int NW = default(TW).Count, NT = 32 * NW, BM = 4 * NW;
        bool split = default(TM).Split;

        var qs = SharedMemory.Allocate<float>(4 * default(TW).Count * default(TH).E);
        var kv = SharedMemory.Allocate<float>(32 * default(TH).Max);

        int lane = Warp.LaneIdx, warp = Warp.WarpIdx;
        // One flat grid dimension (CUDA's y and z stop at 65535): block = bh · tiles + tile, tiles of one head adjacent (their
        // K/V share L2).
        int tiles = split ? p.NumSplits : (p.L + BM - 1) / BM;
        int bh = Grid.IdxX / tiles;
        int tile = Grid.IdxX - bh * tiles;
        int b = bh / p.Hq, h = bh - b * p.Hq;
        int hk = h / (p.Hq / p.Hkv);
        long kvHead = (long)b * p.Hkv + hk;

        int row0 = split ? 0 : tile * BM;
        int kend = p.S;
        if (p.Causal != 0)
        {
            int last = XMath.Min(p.L, row0 + BM);          // keys ≥ last are hidden from every row of the block
            kend = XMath.Min(kend, last);
        }
        int kbegin = 0;
        if (split)
        {
            kbegin = tile * p.KeysPerSplit;
            kend = XMath.Min(kend, kbegin + p.KeysPerSplit);
        }

        SdpaMath.LoadRows(qs, q, (long)bh * p.L, row0, BM, p.L, p.E, DE, NT, p.ScaleLog2);

        int rq = warp * 4;                                   // this warp's first row in the block
        int i0 = row0 + rq;
        long mrow = (long)b * p.Msb + (long)h * p.Msh;
        var m = Row4.All(float.NegativeInfinity);           // running max (log2 domain), warp-uniform
        var l = Row4.All(0f);                               // lane-partial running sum
        Row4 a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;

        for (int kb = kbegin; kb < kend; kb += 32)
        {
            SdpaMath.LoadTile(kv, k, kvHead * p.S, kb, p.S, p.E, DE, MX, NT, 1f);
            Group.Barrier();

            var s = Row4.All(0f);
            for (int c = 0; c < p.E; c++)
            {
                float kc = kv[SdpaMath.Swz(lane, c, DE, MX)];
                s = new Row4(s.A + qs[rq * DE + c] * kc, s.B + qs[(rq + 1) * DE + c] * kc,
                    s.C + qs[(rq + 2) * DE + c] * kc, s.D + qs[(rq + 3) * DE + c] * kc);
            }
            int j = kb + lane;
            bool keyOk = j < kend;
            s = new Row4(Score(s.A, mask, p, mrow, i0, j, keyOk), Score(s.B, mask, p, mrow, i0 + 1, j, keyOk),
                Score(s.C, mask, p, mrow, i0 + 2, j, keyOk), Score(s.D, mask, p, mrow, i0 + 3, j, keyOk));

            var mt = SdpaMath.WarpMax(s);
            var mn = new Row4(XMath.Max(m.A, mt.A), XMath.Max(m.B, mt.B), XMath.Max(m.C, mt.C), XMath.Max(m.D, mt.D));
            // While every score so far is -inf, subtract 0 instead of -inf so exp2 gives 0, not NaN.
            var mr = new Row4(mn.A == float.NegativeInfinity ? 0f : mn.A, mn.B == float.NegativeInfinity ? 0f : mn.B,
                mn.C == float.NegativeInfinity ? 0f : mn.C, mn.D == float.NegativeInfinity ? 0f : mn.D);
            var alpha = new Row4(SdpaMath.Exp2(m.A - mr.A), SdpaMath.Exp2(m.B - mr.B), SdpaMath.Exp2(m.C - mr.C), SdpaMath.Exp2(m.D - mr.D));
            var pr = new Row4(SdpaMath.Exp2(s.A - mr.A), SdpaMath.Exp2(s.B - mr.B), SdpaMath.Exp2(s.C - mr.C), SdpaMath.Exp2(s.D - mr.D));
            l = l.Mul(alpha);
            l = new Row4(l.A + pr.A, l.B + pr.B, l.C + pr.C, l.D + pr.D);
            m = mn;
            Group.Barrier();                                 // every warp is done with the K tile

            SdpaMath.LoadTile(kv, v, kvHead * p.S, kb, p.S, p.Ev, DV, MX, NT, 1f);
            Group.Barrier();

            a0 = a0.Mul(alpha); a1 = a1.Mul(alpha); a2 = a2.Mul(alpha); a3 = a3.Mul(alpha);
            a4 = a4.Mul(alpha); a5 = a5.Mul(alpha); a6 = a6.Mul(alpha); a7 = a7.Mul(alpha);
            int nk = XMath.Min(32, kend - kb);
            for (int jj = 0; jj < nk; jj++)
            {
                var pj = pr.Broadcast(jj);
                a0 = a0.Fma(pj, kv[SdpaMath.Swz(jj, lane, DV, MX)]);
                if (DV > 32) a1 = a1.Fma(pj, kv[SdpaMath.Swz(jj, lane + 32, DV, MX)]);
                if (DV > 64) { a2 = a2.Fma(pj, kv[SdpaMath.Swz(jj, lane + 64, DV, MX)]); a3 = a3.Fma(pj, kv[SdpaMath.Swz(jj, lane + 96, DV, MX)]); }
                if (DV > 128)
                {
                    a4 = a4.Fma(pj, kv[SdpaMath.Swz(jj, lane + 128, DV, MX)]); a5 = a5.Fma(pj, kv[SdpaMath.Swz(jj, lane + 160, DV, MX)]);
                    a6 = a6.Fma(pj, kv[SdpaMath.Swz(jj, lane + 192, DV, MX)]); a7 = a7.Fma(pj, kv[SdpaMath.Swz(jj, lane + 224, DV, MX)]);
                }
            }
            Group.Barrier();                                 // before the next K tile overwrites V
        }

        l = SdpaMath.WarpSum(l);
        WriteRow(o, lse, p, bh, tile, i0, split, m.A, l.A, a0.A, a1.A, a2.A, a3.A, a4.A, a5.A, a6.A, a7.A, lane, DV);
        WriteRow(o, lse, p, bh, tile, i0 + 1, split, m.B, l.B, a0.B, a1.B, a2.B, a3.B, a4.B, a5.B, a6.B, a7.B, lane, DV);
        WriteRow(o, lse, p, bh, tile, i0 + 2, split, m.C, l.C, a0.C, a1.C, a2.C, a3.C, a4.C, a5.C, a6.C, a7.C, lane, DV);
        WriteRow(o, lse, p, bh, tile, i0 + 3, split, m.D, l.D, a0.D, a1.D, a2.D, a3.D, a4.D, a5.D, a6.D, a7.D, lane, DV);
    }

    /// <summary>Score of (row i, key j) in the log2 domain: the pre-scaled dot plus log2(e)·mask; -inf for keys outside the
    /// block's range (past S, past the split, causal-hidden). Rows past L read no mask.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Score(float dot, ArrayView<float> mask, SdpaParams p, long mrow, int i, int j, bool keyOk)
    {
        if (!keyOk || p.Causal != 0 && j > i) return float.NegativeInfinity;
        float x = dot;
        if (p.HasMask != 0 && i < p.L) x += mask[mrow + i * p.Msl + j * p.Mss] * SdpaMath.Log2E;
        return x;
    }

    /// <summary>Writes one row: out = acc / l and lse = ln 2 · (m + log2 l); l = 0 (fully masked, or S = 0) gives out = 0 and
    /// lse = -inf. Split mode writes the unnormalised partials (acc, m, l) of this split instead.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WriteRow(ArrayView<float> o, ArrayView<float> lse, SdpaParams p, int bh, int tile, int i, bool split,
        float m, float l, float c0, float c1, float c2, float c3, float c4, float c5, float c6, float c7, int lane, int DV)
    {
        if (i >= p.L) return;
        long row = (long)bh * p.L + i;
        float inv = 1f;
        if (split) row = row * p.NumSplits + tile;
        else if (l == 0f) { inv = 0f; c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = 0f; }   // out = 0 exactly (no 0·∞ from a masked v)
        else inv = 1f / l;
        long ob = row * p.Ev;
        Put(o, ob, lane, p.Ev, c0 * inv);
        if (DV > 32) Put(o, ob, lane + 32, p.Ev, c1 * inv);
        if (DV > 64) { Put(o, ob, lane + 64, p.Ev, c2 * inv); Put(o, ob, lane + 96, p.Ev, c3 * inv); }
        if (DV > 128)
        {
            Put(o, ob, lane + 128, p.Ev, c4 * inv); Put(o, ob, lane + 160, p.Ev, c5 * inv);
            Put(o, ob, lane + 192, p.Ev, c6 * inv); Put(o, ob, lane + 224, p.Ev, c7 * inv);
        }
        if (lane == 0)
        {
            if (split) { lse[row * 2] = m; lse[row * 2 + 1] = l; }
            else lse[row] = l == 0f ? float.NegativeInfinity : (m + XMath.Log2(l)) * SdpaMath.Ln2;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put(ArrayView<float> o, long rowBase, int col, int n, float x)
    {
        if (col < n) o[rowBase + col] = x;
    }

    /// <summary>
    /// Split-key decode, second pass: merges the NumSplits partials (m in log2 units, l, unnormalised acc) of each of the B·Hq·L
    /// rows with the online-softmax rescaling, in split order (deterministic). Grid X = rows, block = 32 threads (lanes over the
    /// Ev columns). A row whose total l is 0 (fully masked) gets out = 0 and lse = -inf.
    /// </summary>
    public static void DecodeCombine(ArrayView<float> partAcc, ArrayView<float> partMl, ArrayView<float> o, ArrayView<float> lse,
        int numSplits, int ev)
    {
        long row = Grid.IdxX;
        int lane = Group.IdxX;
        long pb = row * numSplits;
        float mx = float.NegativeInfinity;
        for (int s = 0; s < numSplits; s++) mx = XMath.Max(mx, partMl[(pb + s) * 2]);
        float mr = mx == float.NegativeInfinity ? 0f : mx;
        float l = 0f;
        for (int s = 0; s < numSplits; s++) l += partMl[(pb + s) * 2 + 1] * SdpaMath.Exp2(partMl[(pb + s) * 2] - mr);
        float inv = l == 0f ? 0f : 1f / l;
        for (int c = lane; c < ev; c += 32)
        {
            float acc = 0f;
            for (int s = 0; s < numSplits; s++) acc += partAcc[(pb + s) * ev + c] * SdpaMath.Exp2(partMl[(pb + s) * 2] - mr);
            o[row * ev + c] = l == 0f ? 0f : acc * inv;
        }
        if (lane == 0) lse[row] = l == 0f ? float.NegativeInfinity : (mx + XMath.Log2(l)) * SdpaMath.Ln2;
    }
}
