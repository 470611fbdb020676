using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;

namespace GpuAttention.Kernels.Ilgpu;

/// <summary>
/// Fused SDPA backward (FlashAttention-2, Dao 2023, arXiv:2307.08691, Algorithm 2) for ILGPU, as three kernels without
/// floating-point atomics (deterministic): <see cref="Preprocess"/> D = rowsum(dO∘O); <see cref="DkDv"/> parallel over key
/// blocks (accumulates over every query row of every query head of the GQA group); <see cref="Dq"/> parallel over query
/// blocks. Both recompute P = exp2(log2e·(ln2·x − lse)), x = log2e·(scale·q·kᵀ + mask) as the forward computed it, tile by tile. A row with lse = -inf (fully masked)
/// contributes nothing; a key whose P is exactly 0 receives nothing from that row (weights of 0 are skipped, so a NaN/∞ in
/// the row's q or dO never reaches it through 0·∞). Host code: <c>src/GpuAttention/Backends/Ilgpu/IlgpuSdpa.cs</c>.
/// </summary>
internal static class SdpaBackwardKernels
{
    /// <summary>D[row] = Σ_c dO[row, c]·O[row, c]: one warp per row (lanes over columns, coalesced; XOR-shuffle sum in a fixed
    /// order). Grid X = ceil(rows / 4), block = 128 threads.</summary>
    public static void Preprocess(ArrayView<float> o, ArrayView<float> dO, ArrayView<float> dsum, long rows, int ev)
    {
        long row = (long)Grid.IdxX * 4 + Warp.WarpIdx;
        int lane = Warp.LaneIdx;
        if (row >= rows) return;                             // uniform per warp
        float acc = 0f;
        for (int c = lane; c < ev; c += 32) acc += dO[row * ev + c] * o[row * ev + c];
        for (int s = 16; s > 0; s >>= 1) acc += Warp.ShuffleXor(acc, s);
        if (lane == 0) dsum[row] = acc;
    }

    /// <summary>P of (row i, key j) from its log2-domain score (computed exactly as the forward did) and the row's natural
    /// lse; exactly 0 when hidden (past L or S, causal) or when the row is fully masked (lse = -inf).</summary>
    /// <remarks>The difference is taken in the natural domain, ln2·x − lse, not as x − log2e·lse: the forward wrote
    /// lse = ln2·(m + log2 l), so for the row's largest score (x = m) with huge scores (|m| ≫ 2²⁴·log2 l) both terms round
    /// to the same float and P = 1 exactly, where log2e·lse could miss m by an ulp of m (about 10⁸ at 10¹⁵) and make P
    /// overflow. An argument above 0 is only rounding (P ≤ 1), so it is clamped; NaN passes through.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Prob(float dot, float lse, ArrayView<float> mask, SdpaParams p, long mrow, int i, int j, int jend)
    {
        if (i >= p.L || j >= jend || p.Causal != 0 && j > i || lse == float.NegativeInfinity) return 0f;
        float x = dot;
        if (p.HasMask != 0) x += mask[mrow + i * p.Msl + j * p.Mss] * SdpaMath.Log2E;
        float t = (x * SdpaMath.Ln2 - lse) * SdpaMath.Log2E;
        return SdpaMath.Exp2(t > 0f ? 0f : t);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Ds(float pr, float dp, float d) => pr == 0f ? 0f : pr * (dp - d);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Ld(ArrayView<float> a, long rowBase, int col, int n) => col < n ? a[rowBase + col] : 0f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void St(ArrayView<float> a, long rowBase, int col, int n, float x)
    {
        if (col < n) a[rowBase + col] = x;
    }

    /// <summary>
    /// dQ for a block of 4·W query rows of one (b, h). Grid X = B·Hq · ceil(L / 4W) (flat); block = 32·W threads.
    /// <para>The block's Q rows (pre-scaled by scale·log2e) and dO rows stay in shared memory; keys stream in 32-row tiles
    /// through one swizzled shared tile: first V (dP = dO·vᵀ, a 4×1 register micro-tile per thread: warp = 4 query rows,
    /// lane = key), then K (S = q·kᵀ, P, dS = P∘(dP − D)), then dQ += dS·K reading the K tile by columns (lane + 32u) with the
    /// dS of each key broadcast by shfl from its lane. dQ accumulators: 4 rows × E/32 columns as <see cref="Row4"/> scalars.
    /// 4 barriers per key tile; causal blocks stop at the tile of their last row.</para>
    /// </summary>
    public static void Dq<TH, TW>(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> mask,
        ArrayView<float> lse, ArrayView<float> dsum, ArrayView<float> dO, ArrayView<float> dq, SdpaParams p)
        where TH : struct, ISdpaHeads where TW : struct, ISdpaWarps
    {
        int DE = default(TH).E, DV = default(TH).Ev, MX = default(TH).Max;
        int NW = default(TW).Count, NT = 32 * NW, BM = 4 * NW;
        var qs = SharedMemory.Allocate<float>(4 * default(TW).Count * default(TH).E);
        var dos = SharedMemory.Allocate<float>(4 * default(TW).Count * default(TH).Ev);
        var kv = SharedMemory.Allocate<float>(32 * default(TH).Max);

        int lane = Warp.LaneIdx, warp = Warp.WarpIdx;
        int tiles = (p.L + BM - 1) / BM;                     // flat grid: block = bh · tiles + tile
        int bh = Grid.IdxX / tiles;
        int b = bh / p.Hq, h = bh - b * p.Hq;
        long kvHead = (long)b * p.Hkv + h / (p.Hq / p.Hkv);
        int row0 = (Grid.IdxX - bh * tiles) * BM;
        int kend = p.S;
        if (p.Causal != 0) kend = XMath.Min(kend, XMath.Min(p.L, row0 + BM));

        SdpaMath.LoadRows(qs, q, (long)bh * p.L, row0, BM, p.L, p.E, DE, NT, p.ScaleLog2);
        SdpaMath.LoadRows(dos, dO, (long)bh * p.L, row0, BM, p.L, p.Ev, DV, NT, 1f);

        int rq = warp * 4, i0 = row0 + rq;
        long rb = (long)bh * p.L + i0;
        var lseRow = new Row4(RowLse(lse, rb, i0, p.L), RowLse(lse, rb + 1, i0 + 1, p.L), RowLse(lse, rb + 2, i0 + 2, p.L), RowLse(lse, rb + 3, i0 + 3, p.L));
        var dd = new Row4(RowD(dsum, rb, i0, p.L), RowD(dsum, rb + 1, i0 + 1, p.L), RowD(dsum, rb + 2, i0 + 2, p.L), RowD(dsum, rb + 3, i0 + 3, p.L));
        long mrow = (long)b * p.Msb + (long)h * p.Msh;
        Row4 g0 = default, g1 = default, g2 = default, g3 = default, g4 = default, g5 = default, g6 = default, g7 = default;

        for (int kb = 0; kb < kend; kb += 32)
        {
            SdpaMath.LoadTile(kv, v, kvHead * p.S, kb, p.S, p.Ev, DV, MX, NT, 1f);
            Group.Barrier();
            var dp = Row4.All(0f);
            for (int c = 0; c < p.Ev; c++)
            {
                float vc = kv[SdpaMath.Swz(lane, c, DV, MX)];
                dp = new Row4(dp.A + dos[rq * DV + c] * vc, dp.B + dos[(rq + 1) * DV + c] * vc,
                    dp.C + dos[(rq + 2) * DV + c] * vc, dp.D + dos[(rq + 3) * DV + c] * vc);
            }
            Group.Barrier();

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
            var pr = new Row4(Prob(s.A, lseRow.A, mask, p, mrow, i0, j, kend), Prob(s.B, lseRow.B, mask, p, mrow, i0 + 1, j, kend),
                Prob(s.C, lseRow.C, mask, p, mrow, i0 + 2, j, kend), Prob(s.D, lseRow.D, mask, p, mrow, i0 + 3, j, kend));
            var ds = new Row4(Ds(pr.A, dp.A, dd.A), Ds(pr.B, dp.B, dd.B), Ds(pr.C, dp.C, dd.C), Ds(pr.D, dp.D, dd.D));

            int nk = XMath.Min(32, kend - kb);
            for (int jj = 0; jj < nk; jj++)
            {
                var pj = pr.Broadcast(jj);
                var dj = ds.Broadcast(jj);
                g0 = g0.FmaNz(dj, pj, kv[SdpaMath.Swz(jj, lane, DE, MX)]);
                if (DE > 64) { g2 = g2.FmaNz(dj, pj, kv[SdpaMath.Swz(jj, lane + 64, DE, MX)]); g3 = g3.FmaNz(dj, pj, kv[SdpaMath.Swz(jj, lane + 96, DE, MX)]); }
                g1 = g1.FmaNz(dj, pj, kv[SdpaMath.Swz(jj, lane + 32, DE, MX)]);
                if (DE > 128)
                {
                    g4 = g4.FmaNz(dj, pj, kv[SdpaMath.Swz(jj, lane + 128, DE, MX)]); g5 = g5.FmaNz(dj, pj, kv[SdpaMath.Swz(jj, lane + 160, DE, MX)]);
                    g6 = g6.FmaNz(dj, pj, kv[SdpaMath.Swz(jj, lane + 192, DE, MX)]); g7 = g7.FmaNz(dj, pj, kv[SdpaMath.Swz(jj, lane + 224, DE, MX)]);
                }
            }
            Group.Barrier();                                 // before the next V tile overwrites K
        }

        WriteDq(dq, p, rb, i0, lane, DE, g0.A, g1.A, g2.A, g3.A, g4.A, g5.A, g6.A, g7.A);
        WriteDq(dq, p, rb + 1, i0 + 1, lane, DE, g0.B, g1.B, g2.B, g3.B, g4.B, g5.B, g6.B, g7.B);
        WriteDq(dq, p, rb + 2, i0 + 2, lane, DE, g0.C, g1.C, g2.C, g3.C, g4.C, g5.C, g6.C, g7.C);
        WriteDq(dq, p, rb + 3, i0 + 3, lane, DE, g0.D, g1.D, g2.D, g3.D, g4.D, g5.D, g6.D, g7.D);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float RowLse(ArrayView<float> lse, long row, int i, int L) => i < L ? lse[row] : float.NegativeInfinity;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float RowD(ArrayView<float> dsum, long row, int i, int L) => i < L ? dsum[row] : 0f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WriteDq(ArrayView<float> dq, SdpaParams p, long row, int i, int lane, int DE,
        float c0, float c1, float c2, float c3, float c4, float c5, float c6, float c7)
    {
        if (i >= p.L) return;
        long b = row * p.E;
        float sc = p.Scale;
        St(dq, b, lane, p.E, c0 * sc);
        St(dq, b, lane + 32, p.E, c1 * sc);
        if (DE > 64) { St(dq, b, lane + 64, p.E, c2 * sc); St(dq, b, lane + 96, p.E, c3 * sc); }
        if (DE > 128)
        {
            St(dq, b, lane + 128, p.E, c4 * sc); St(dq, b, lane + 160, p.E, c5 * sc);
            St(dq, b, lane + 192, p.E, c6 * sc); St(dq, b, lane + 224, p.E, c7 * sc);
        }
    }

    /// <summary>
    /// dK, dV for a block of 4·W key rows of one (b, kv head). Grid X = B·Hkv · ceil(S / 4W) (flat); block = 32·W threads.
    /// <para>The mirror of <see cref="Dq"/>: the block's K and V rows stay in shared memory (broadcast reads), warp w owns keys
    /// 4w..4w+3 and, for every query head of the GQA group, query rows stream in 32-row tiles with lane = query row: the Q tile
    /// (pre-scaled) gives S and P (4×1 micro-tile), then the dO tile in the same swizzled shared tile gives dP, dS and
    /// dV += P·dO (dO tile read by columns, P broadcast by shfl); dK += dS·Q reads the raw q rows from global memory by columns
    /// (coalesced, and L1/L2-resident: the same rows were just staged), since the shared tile now holds dO. Accumulators: 4 keys ×
    /// (E/32 + Ev/32) columns, at most 64 registers for 256/256. Causal blocks start at query row j0 (earlier rows see none of
    /// their keys). 4 barriers per query tile.</para>
    /// </summary>
    public static void DkDv<TH, TW>(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> mask,
        ArrayView<float> lse, ArrayView<float> dsum, ArrayView<float> dO, ArrayView<float> dk, ArrayView<float> dv, SdpaParams p)
        where TH : struct, ISdpaHeads where TW : struct, ISdpaWarps
    {
        int DE = default(TH).E, DV = default(TH).Ev, MX = default(TH).Max;
        int NW = default(TW).Count, NT = 32 * NW, BN = 4 * NW;
        var ks = SharedMemory.Allocate<float>(4 * default(TW).Count * default(TH).E);
        var vs = SharedMemory.Allocate<float>(4 * default(TW).Count * default(TH).Ev);
        var tile = SharedMemory.Allocate<float>(32 * default(TH).Max);

        int lane = Warp.LaneIdx, warp = Warp.WarpIdx;
        int tiles = (p.S + BN - 1) / BN;                     // flat grid: block = bhk · tiles + tile
        int bhk = Grid.IdxX / tiles;
        int b = bhk / p.Hkv, hk = bhk - b * p.Hkv;
        int group = p.Hq / p.Hkv;
        int j0 = (Grid.IdxX - bhk * tiles) * BN;
        SdpaMath.LoadRows(ks, k, (long)bhk * p.S, j0, BN, p.S, p.E, DE, NT, 1f);
        SdpaMath.LoadRows(vs, v, (long)bhk * p.S, j0, BN, p.S, p.Ev, DV, NT, 1f);

        int rk = warp * 4, jr = j0 + rk;
        int istart = p.Causal != 0 ? j0 : 0;
        Row4 e0 = default, e1 = default, e2 = default, e3 = default, e4 = default, e5 = default, e6 = default, e7 = default;
        Row4 f0 = default, f1 = default, f2 = default, f3 = default, f4 = default, f5 = default, f6 = default, f7 = default;

        for (int g = 0; g < group; g++)
        {
            int h = hk * group + g;
            long qb = ((long)b * p.Hq + h) * p.L;             // row (b, h, 0) of [B, Hq, L]
            long mrow = (long)b * p.Msb + (long)h * p.Msh;
            for (int i0 = istart; i0 < p.L; i0 += 32)
            {
                int i = i0 + lane;
                float lseRow = i < p.L ? lse[qb + i] : float.NegativeInfinity;
                float d = i < p.L ? dsum[qb + i] : 0f;

                SdpaMath.LoadTile(tile, q, qb, i0, p.L, p.E, DE, MX, NT, p.ScaleLog2);
                Group.Barrier();
                var s = Row4.All(0f);
                for (int c = 0; c < p.E; c++)
                {
                    float qc = tile[SdpaMath.Swz(lane, c, DE, MX)];
                    s = new Row4(s.A + ks[rk * DE + c] * qc, s.B + ks[(rk + 1) * DE + c] * qc,
                        s.C + ks[(rk + 2) * DE + c] * qc, s.D + ks[(rk + 3) * DE + c] * qc);
                }
                var pr = new Row4(Prob(s.A, lseRow, mask, p, mrow, i, jr, p.S), Prob(s.B, lseRow, mask, p, mrow, i, jr + 1, p.S),
                    Prob(s.C, lseRow, mask, p, mrow, i, jr + 2, p.S), Prob(s.D, lseRow, mask, p, mrow, i, jr + 3, p.S));
                Group.Barrier();

                SdpaMath.LoadTile(tile, dO, qb, i0, p.L, p.Ev, DV, MX, NT, 1f);
                Group.Barrier();
                var dp = Row4.All(0f);
                for (int c = 0; c < p.Ev; c++)
                {
                    float oc = tile[SdpaMath.Swz(lane, c, DV, MX)];
                    dp = new Row4(dp.A + vs[rk * DV + c] * oc, dp.B + vs[(rk + 1) * DV + c] * oc,
                        dp.C + vs[(rk + 2) * DV + c] * oc, dp.D + vs[(rk + 3) * DV + c] * oc);
                }
                var ds = new Row4(Ds(pr.A, dp.A, d), Ds(pr.B, dp.B, d), Ds(pr.C, dp.C, d), Ds(pr.D, dp.D, d));

                int nq = XMath.Min(32, p.L - i0);
                for (int jj = 0; jj < nq; jj++)
                {
                    var pj = pr.Broadcast(jj);
                    var dj = ds.Broadcast(jj);
                    f0 = f0.FmaNz(pj, pj, tile[SdpaMath.Swz(jj, lane, DV, MX)]);
                    f1 = f1.FmaNz(pj, pj, tile[SdpaMath.Swz(jj, lane + 32, DV, MX)]);
                    if (DV > 64) { f2 = f2.FmaNz(pj, pj, tile[SdpaMath.Swz(jj, lane + 64, DV, MX)]); f3 = f3.FmaNz(pj, pj, tile[SdpaMath.Swz(jj, lane + 96, DV, MX)]); }
                    if (DV > 128)
                    {
                        f4 = f4.FmaNz(pj, pj, tile[SdpaMath.Swz(jj, lane + 128, DV, MX)]); f5 = f5.FmaNz(pj, pj, tile[SdpaMath.Swz(jj, lane + 160, DV, MX)]);
                        f6 = f6.FmaNz(pj, pj, tile[SdpaMath.Swz(jj, lane + 192, DV, MX)]); f7 = f7.FmaNz(pj, pj, tile[SdpaMath.Swz(jj, lane + 224, DV, MX)]);
                    }
                    long qr = (qb + i0 + jj) * p.E;
                    e0 = e0.FmaNz(dj, pj, Ld(q, qr, lane, p.E));
                    e1 = e1.FmaNz(dj, pj, Ld(q, qr, lane + 32, p.E));
                    if (DE > 64) { e2 = e2.FmaNz(dj, pj, Ld(q, qr, lane + 64, p.E)); e3 = e3.FmaNz(dj, pj, Ld(q, qr, lane + 96, p.E)); }
                    if (DE > 128)
                    {
                        e4 = e4.FmaNz(dj, pj, Ld(q, qr, lane + 128, p.E)); e5 = e5.FmaNz(dj, pj, Ld(q, qr, lane + 160, p.E));
                        e6 = e6.FmaNz(dj, pj, Ld(q, qr, lane + 192, p.E)); e7 = e7.FmaNz(dj, pj, Ld(q, qr, lane + 224, p.E));
                    }
                }
                Group.Barrier();                             // before the next Q tile overwrites dO
            }
        }

        WriteKv(dk, dv, p, jr, bhk, lane, DE, DV, e0.A, e1.A, e2.A, e3.A, e4.A, e5.A, e6.A, e7.A, f0.A, f1.A, f2.A, f3.A, f4.A, f5.A, f6.A, f7.A);
        WriteKv(dk, dv, p, jr + 1, bhk, lane, DE, DV, e0.B, e1.B, e2.B, e3.B, e4.B, e5.B, e6.B, e7.B, f0.B, f1.B, f2.B, f3.B, f4.B, f5.B, f6.B, f7.B);
        WriteKv(dk, dv, p, jr + 2, bhk, lane, DE, DV, e0.C, e1.C, e2.C, e3.C, e4.C, e5.C, e6.C, e7.C, f0.C, f1.C, f2.C, f3.C, f4.C, f5.C, f6.C, f7.C);
        WriteKv(dk, dv, p, jr + 3, bhk, lane, DE, DV, e0.D, e1.D, e2.D, e3.D, e4.D, e5.D, e6.D, e7.D, f0.D, f1.D, f2.D, f3.D, f4.D, f5.D, f6.D, f7.D);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WriteKv(ArrayView<float> dk, ArrayView<float> dv, SdpaParams p, int j, int bhk, int lane, int DE, int DV,
        float k0, float k1, float k2, float k3, float k4, float k5, float k6, float k7,
        float v0, float v1, float v2, float v3, float v4, float v5, float v6, float v7)
    {
        if (j >= p.S) return;
        long row = (long)bhk * p.S + j;
        long kb = row * p.E, vb = row * p.Ev;
        float sc = p.Scale;
        St(dk, kb, lane, p.E, k0 * sc); St(dk, kb, lane + 32, p.E, k1 * sc);
        if (DE > 64) { St(dk, kb, lane + 64, p.E, k2 * sc); St(dk, kb, lane + 96, p.E, k3 * sc); }
        if (DE > 128)
        {
            St(dk, kb, lane + 128, p.E, k4 * sc); St(dk, kb, lane + 160, p.E, k5 * sc);
            St(dk, kb, lane + 192, p.E, k6 * sc); St(dk, kb, lane + 224, p.E, k7 * sc);
        }
        St(dv, vb, lane, p.Ev, v0); St(dv, vb, lane + 32, p.Ev, v1);
        if (DV > 64) { St(dv, vb, lane + 64, p.Ev, v2); St(dv, vb, lane + 96, p.Ev, v3); }
        if (DV > 128)
        {
            St(dv, vb, lane + 128, p.Ev, v4); St(dv, vb, lane + 160, p.Ev, v5);
            St(dv, vb, lane + 192, p.Ev, v6); St(dv, vb, lane + 224, p.Ev, v7);
        }
    }
}
