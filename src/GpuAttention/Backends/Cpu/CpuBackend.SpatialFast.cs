using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GpuAttention.Backends.Cpu;

/// <summary>
/// grid_sample forward and backward in a channel-last layout with AVX-512 (every mode, padding and align setting).
/// A task owns (image n, a block of channel groups); a group is 16 channels (the last one zero-padded). The group's
/// input planes are transposed into a pixel-major scratch [H·W + 1][16] (the extra pixel is all zero: the target of
/// every out-of-image corner), so a sampling corner is one 64-byte vector load for 16 channels, and grad_input is
/// accumulated the same way in a second scratch that is transposed back into the planes when the group is done.
/// The tile of sampling points is resolved by <see cref="ResolveTile"/> exactly as on the channel-first path.
/// Determinism: every grad_input element is summed over the output points in order, by one task; a point's grad_grid
/// is summed over a group's channels in a fixed tree (<see cref="Sum2"/>), over the groups of a block in order, and
/// over blocks in block order; the blocking is a function of the shape only, not of the number of threads, so results
/// are bit-for-bit the same run to run and for any thread count.
/// Scratch is per thread and kept between calls (allocation free in steady state): 2·(H·W + 1)·64 B plus a tile, at
/// most about 32 MiB a thread (<see cref="FastGridSampleMaxPixels"/>).
/// </summary>
internal sealed unsafe partial class CpuBackend
{
    private const int Lanes = 16;

    /// <summary>grid_sample takes the channel-last AVX-512 path (where the CPU has AVX-512F; tests switch it off for the channel-first path).</summary>
    internal static bool FastGridSample = Avx512F.IsSupported && Vector512.IsHardwareAccelerated;

    /// <summary>Tests set this to send every shape that fits (any channel count, any number of points) down the channel-last path.</summary>
    internal static bool FastGridSampleAlways;

    /// <summary>Largest image (pixels) for the channel-last path: its two scratch planes (2 × 64 B a pixel, per thread) stay bounded; larger images take the channel-first path.</summary>
    internal const long FastGridSampleMaxPixels = 1L << 18;

    /// <summary>
    /// The channel-last path pays a transpose of every input pixel (and, backward, of every grad_input pixel) per
    /// 16-channel group, and then little per sampling point; the channel-first path pays per point and channel. Rough
    /// costs taken on this project's 2-core AVX-512 Xeon (N16 C16 128² → 64², a loaded machine): backward about 8.5 ns
    /// a pixel + 21 ns a point per group against 12 ns a point and channel; forward 3.2 ns a pixel + 10 ns a point
    /// against 3.8 ns a point and channel. So channel-last wins from about P·min(C, 16) ≈ H·W; it is taken from twice
    /// that, and from 8 channels (with fewer, most of the 16 lanes would be padding).
    /// </summary>
    private static bool UseFastGridSample(in GridSampleShape s)
    {
        long hw = (long)s.H * s.W;
        if (!FastGridSample || !Avx512F.IsSupported || s.C < 1 || hw > FastGridSampleMaxPixels) return false;
        return FastGridSampleAlways || (s.C >= 8 && s.OutPoints * Math.Min(s.C, Lanes) >= 2 * hw);
    }

    /// <summary>
    /// What a grid_sample work item reads, on both paths (Grid or Theta null when absent). Channel-last: Groups, Blocks
    /// (of groups per image), GroupsPerBlock; channel-first: Tiles (forward), Blocks (of channels per image), BlockChannels.
    /// </summary>
    private struct GsCtx
    {
        public GridSampleShape S;
        public float* Input, Grid, Theta, Out, GradOut, GradIn, GradGrid;
        public long Tiles;
        public int Groups, Blocks, GroupsPerBlock, BlockChannels;
    }

    [ThreadStatic] private static float[]? t_fastScratch;
    /// <summary>Floats at the start of this thread's scratch known to be zero (the grad_input accumulator is left zeroed after use).</summary>
    [ThreadStatic] private static long t_fastZero;

    /// <summary>
    /// This thread's scratch (pinned, 64-byte aligned): [grad_input accumulator (H·W + 1)·16][input (H·W + 1)·16]
    /// [point tile T·16][resolved tile: 8T ints, 10T floats]. With <paramref name="zeroAccumulator"/> the accumulator
    /// is all zero on return.
    /// </summary>
    private static float* FastScratch(long hw, bool zeroAccumulator)
    {
        long acc = (hw + 1) * Lanes;
        long need = 2 * acc + PointTile * Lanes + 8 * PointTile + 10 * PointTile;
        var arr = t_fastScratch;
        if (arr is null || arr.Length < need + 16)
        {
            t_fastScratch = null;
            arr = t_fastScratch = GC.AllocateArray<float>(checked((int)(need + 16)), pinned: true);
            t_fastZero = arr.Length - 16;
        }
        float* p = (float*)(((nint)Unsafe.AsPointer(ref arr[0]) + 63) & ~(nint)63);
        if (zeroAccumulator && t_fastZero < acc)
        {
            new Span<float>(p, checked((int)acc)).Clear();
            t_fastZero = acc;
        }
        return p;
    }

    private static void GridSampleFast(in GridSampleArgs a)
    {
        var s = a.Shape;
        var ctx = new GsCtx
        {
            S = s, Input = B(a.Input).Pointer, Grid = a.Grid is null ? null : B(a.Grid).Pointer,
            Theta = a.Theta is null ? null : B(a.Theta).Pointer, Out = B(a.Out).Pointer,
            Groups = (s.C + Lanes - 1) / Lanes,
        };
        CpuWorkers.For(checked(s.N * ctx.Groups), &FastForwardItem, &ctx);
    }

    private static void FastForwardItem(void* pctx, int item)
    {
        ref readonly var ctx = ref *(GsCtx*)pctx;
        var s = ctx.S;
        int n = item / ctx.Groups, c0 = item % ctx.Groups * Lanes, cw = Math.Min(Lanes, s.C - c0);
        long HW = (long)s.H * s.W, P = s.OutPoints;
        float* ginH = FastScratch(HW, false), inH = ginH + (HW + 1) * Lanes;
        t_fastZero = Math.Min(t_fastZero, (HW + 1) * Lanes);
        float* tile = inH + (HW + 1) * Lanes;
        int* ints = (int*)(tile + PointTile * Lanes);
        float* flts = (float*)ints + 8 * PointTile;
        ToPixelMajor(ctx.Input + ((long)n * s.C + c0) * HW, HW, cw, inH);
        float* outBase = ctx.Out + ((long)n * s.C + c0) * P;
        bool nearest = s.Mode == GridSampleMode.Nearest;
        for (long p0 = 0; p0 < P; p0 += PointTile)
        {
            int count = (int)Math.Min(PointTile, P - p0);
            ResolveTile(s, ctx.Grid, ctx.Theta, n, p0, count, ints, flts);
            PixelOffsets(ints, count, nearest ? 1 : 4, (int)HW);
            if (nearest)
                for (int i = 0; i < count; i++)
                    Vector512.Store(Vector512.Load(inH + ints[i]), tile + i * Lanes);
            else
                for (int i = 0; i < count; i++)
                {
                    const int T = PointTile;
                    var acc = Vector512.Load(inH + ints[i]) * Vector512.Create(flts[i]);
                    acc = Avx512F.FusedMultiplyAdd(Vector512.Load(inH + ints[T + i]), Vector512.Create(flts[T + i]), acc);
                    acc = Avx512F.FusedMultiplyAdd(Vector512.Load(inH + ints[2 * T + i]), Vector512.Create(flts[2 * T + i]), acc);
                    acc = Avx512F.FusedMultiplyAdd(Vector512.Load(inH + ints[3 * T + i]), Vector512.Create(flts[3 * T + i]), acc);
                    Vector512.Store(acc, tile + i * Lanes);
                }
            FromPointMajor(tile, count, cw, outBase + p0, P);
        }
    }

    /// <summary>
    /// Deterministic backward on the channel-last path. grad_grid goes to <paramref name="gradGrid"/> (or, with several
    /// channel blocks per image, to block partials added in block order).
    /// </summary>
    private static void GridSampleBackwardFast(in GridSampleShape s, in GridSampleBackwardArgs a, float* gradGrid)
    {
        long P = s.OutPoints;
        int groups = (s.C + Lanes - 1) / Lanes;
        int blocks = BackwardChannelBlocks(s.N, groups);
        int perBlock = (groups + blocks - 1) / blocks;
        blocks = (groups + perBlock - 1) / perBlock;
        float* pp = blocks > 1 ? GrowScratch(ref t_gsPartials, blocks * s.N * P * 2) : null;
        var ctx = new GsCtx
        {
            S = s, Input = B(a.Input).Pointer, Grid = a.Grid is null ? null : B(a.Grid).Pointer,
            Theta = a.Theta is null ? null : B(a.Theta).Pointer, GradOut = B(a.GradOut).Pointer,
            GradIn = B(a.GradInput).Pointer, GradGrid = blocks > 1 ? pp : gradGrid,
            Groups = groups, Blocks = blocks, GroupsPerBlock = perBlock,
        };
        CpuWorkers.For(checked(s.N * blocks), &FastBackwardItem, &ctx);
        if (blocks > 1) SumPartialsInOrder(pp, blocks, s.N * P * 2, gradGrid);
    }

    private static void FastBackwardItem(void* pctx, int item)
    {
        ref readonly var ctx = ref *(GsCtx*)pctx;
        var s = ctx.S;
        int n = item / ctx.Blocks, blk = item % ctx.Blocks;
        int g0 = blk * ctx.GroupsPerBlock, g1 = Math.Min(ctx.Groups, g0 + ctx.GroupsPerBlock);
        long HW = (long)s.H * s.W, P = s.OutPoints;
        bool nearest = s.Mode == GridSampleMode.Nearest;
        float* gg = ctx.GradGrid + ((long)blk * s.N + n) * P * 2;
        float* ginH = FastScratch(HW, true), inH = ginH + (HW + 1) * Lanes;
        long accLen = (HW + 1) * Lanes;
        t_fastZero = 0;   // dirty until every group has handed its sums over (an exception leaves it dirty)
        float* tile = inH + (HW + 1) * Lanes;
        int* ints = (int*)(tile + PointTile * Lanes);
        float* flts = (float*)ints + 8 * PointTile;
        for (int grp = g0; grp < g1; grp++)
        {
            int c0 = grp * Lanes, cw = Math.Min(Lanes, s.C - c0);
            long plane0 = ((long)n * s.C + c0) * HW;
            if (!nearest) ToPixelMajor(ctx.Input + plane0, HW, cw, inH);
            float* goBase = ctx.GradOut + ((long)n * s.C + c0) * P;
            bool first = grp == g0, last = grp == g1 - 1;
            for (long p0 = 0; p0 < P; p0 += PointTile)
            {
                int count = (int)Math.Min(PointTile, P - p0);
                ResolveTile(s, ctx.Grid, ctx.Theta, n, p0, count, ints, flts);
                PixelOffsets(ints, count, nearest ? 1 : 4, (int)HW);
                ToPointMajor(goBase + p0, P, count, cw, tile);
                float* ggt = gg + p0 * 2;
                if (nearest)
                {
                    for (int i = 0; i < count; i++)
                    {
                        float* d = ginH + ints[i];
                        Vector512.Store(Vector512.Load(d) + Vector512.Load(tile + i * Lanes), d);
                    }
                    if (first) new Span<float>(ggt, 2 * count).Clear();
                }
                else BackwardTileBilinear(inH, ginH, tile, ints, flts, count, ggt, first, last);
            }
            FromPixelMajorAndZero(ginH, HW, cw, ctx.GradIn + plane0);
        }
        t_fastZero = accLen;
    }

    /// <summary>
    /// One resolved tile of the bilinear backward: grad_input += w_k·g at the four corners (in point order), and
    /// grad_grid += Σ_c g·∂v/∂(ix, iy); on the block's last group the sums are scaled by dix/dx, diy/dy.
    /// </summary>
    private static void BackwardTileBilinear(float* inH, float* ginH, float* go, int* ints, float* f, int count, float* gg, bool first, bool last)
    {
        const int T = PointTile;
        var one = Vector512.Create(1f);
        for (int i = 0; i < count; i++)
        {
            var g = Vector512.Load(go + i * Lanes);
            int o0 = ints[i], o1 = ints[T + i], o2 = ints[2 * T + i], o3 = ints[3 * T + i];
            var v0 = Vector512.Load(inH + o0);
            var v1 = Vector512.Load(inH + o1);
            var v2 = Vector512.Load(inH + o2);
            var v3 = Vector512.Load(inH + o3);
            float* d0 = ginH + o0; Vector512.Store(Avx512F.FusedMultiplyAdd(Vector512.Create(f[i]), g, Vector512.Load(d0)), d0);
            float* d1 = ginH + o1; Vector512.Store(Avx512F.FusedMultiplyAdd(Vector512.Create(f[T + i]), g, Vector512.Load(d1)), d1);
            float* d2 = ginH + o2; Vector512.Store(Avx512F.FusedMultiplyAdd(Vector512.Create(f[2 * T + i]), g, Vector512.Load(d2)), d2);
            float* d3 = ginH + o3; Vector512.Store(Avx512F.FusedMultiplyAdd(Vector512.Create(f[3 * T + i]), g, Vector512.Load(d3)), d3);
            var ax = Vector512.Create(f[4 * T + i]);
            var ay = Vector512.Create(f[5 * T + i]);
            var tx = (v1 - v0) * (one - ay) + (v3 - v2) * ay;
            var ty = (v2 - v0) * (one - ax) + (v3 - v1) * ax;
            var sums = Sum2(tx * g, ty * g);
            float sx = sums.ToScalar(), sy = sums.GetElement(4);
            if (!first) { sx = gg[2 * i] + sx; sy = gg[2 * i + 1] + sy; }
            if (last) { sx *= f[6 * T + i]; sy *= f[7 * T + i]; }
            gg[2 * i] = sx; gg[2 * i + 1] = sy;
        }
    }

    /// <summary>Σ r in lane 0 and Σ q in lane 4 (a fixed tree: 128-bit quarters, then within 128 bits).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Sum2(Vector512<float> r, Vector512<float> q)
    {
        var z = Avx512F.Shuffle4x128(r, q, 0x44) + Avx512F.Shuffle4x128(r, q, 0xEE);   // [r0+r2, r1+r3, q0+q2, q1+q3]
        z += Avx512F.Shuffle4x128(z, z, 0xB1);                                          // quarters 0 and 2: 4 partials each
        var y = Avx512F.Shuffle4x128(z, z, 0x08).GetLower();                            // [r 4 partials | q 4 partials]
        y += Avx.Permute(y, 0x4E);
        return y + Avx.Permute(y, 0xB1);
    }

    /// <summary>
    /// Turns the resolved tile's pixel offsets and in-image masks (corners 0..corners−1) into float offsets into a
    /// pixel-major scratch: in-image corners → pixel·16, out-of-image corners → <paramref name="hw"/>·16 (the zero pixel).
    /// </summary>
    private static void PixelOffsets(int* ints, int count, int corners, int hw)
    {
        const int T = PointTile;
        var dummy = Vector512.Create(hw);
        for (int k = 0; k < corners; k++)
        {
            int* off = ints + k * T, mask = ints + (4 + k) * T;
            for (int i = 0; i < count; i += 16)   // T is a multiple of 16: reading past count stays inside the row
            {
                var m = Vector512.Load(mask + i);
                var o = Vector512.ConditionalSelect(m, Vector512.Load(off + i), dummy);
                Vector512.Store(o << 4, off + i);
            }
        }
    }

    // ---- transposes between channel-first planes and pixel-major [pixel][16] rows ----

    /// <summary>cw planes (stride <paramref name="hw"/>) → pixel-major [hw + 1][16]; lanes ≥ cw and the extra pixel are zero.</summary>
    private static void ToPixelMajor(float* src, long hw, int cw, float* dst)
    {
        long p = 0;
        for (; p + Lanes <= hw; p += Lanes) Transpose16(src + p, hw, cw, dst + p * Lanes, Lanes, Lanes);
        for (; p < hw; p++)
        {
            float* d = dst + p * Lanes;
            for (int c = 0; c < Lanes; c++) d[c] = c < cw ? src[c * hw + p] : 0f;
        }
        Vector512<float>.Zero.Store(dst + hw * Lanes);
    }

    /// <summary>
    /// Pixel-major [hw][16] → the first cw planes (stride <paramref name="hw"/>), and the source [hw + 1][16] is left
    /// zero. Aligned planes are written with non-temporal stores (grad_input is not read again here; the scratch stays in cache).
    /// </summary>
    private static void FromPixelMajorAndZero(float* src, long hw, int cw, float* dst)
    {
        long p = 0;
        bool nt = hw % Lanes == 0 && ((nint)dst & 63) == 0;
        for (; p + Lanes <= hw; p += Lanes)
        {
            Transpose16(src + p * Lanes, Lanes, Lanes, dst + p, hw, cw, nt);
            new Span<float>(src + p * Lanes, Lanes * Lanes).Clear();
        }
        long tail = p;
        for (; p < hw; p++)
            for (int c = 0; c < cw; c++) dst[c * hw + p] = src[p * Lanes + c];
        new Span<float>(src + tail * Lanes, checked((int)((hw + 1 - tail) * Lanes))).Clear();
        if (nt) Sse.StoreFence();
    }

    /// <summary>count points of cw channel rows (stride <paramref name="stride"/>) → point-major [count][16], lanes ≥ cw zero.</summary>
    private static void ToPointMajor(float* src, long stride, int count, int cw, float* dst)
    {
        int i = 0;
        for (; i + Lanes <= count; i += Lanes) Transpose16(src + i, stride, cw, dst + i * Lanes, Lanes, Lanes);
        for (; i < count; i++)
            for (int c = 0; c < Lanes; c++) dst[i * Lanes + c] = c < cw ? src[c * stride + i] : 0f;
    }

    /// <summary>Point-major [count][16] → cw channel rows (stride <paramref name="stride"/>).</summary>
    private static void FromPointMajor(float* src, int count, int cw, float* dst, long stride)
    {
        int i = 0;
        for (; i + Lanes <= count; i += Lanes) Transpose16(src + i * Lanes, Lanes, Lanes, dst + i, stride, cw);
        for (; i < count; i++)
            for (int c = 0; c < cw; c++) dst[c * stride + i] = src[i * Lanes + c];
    }

    /// <summary>
    /// Transposes a 16×16 block: row r of the source (16 floats at src + r·ss; rows ≥ sRows read as zero) becomes
    /// column r of the destination (rows at dst + r·ds; only the first dRows rows are stored).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose16(float* src, long ss, int sRows, float* dst, long ds, int dRows, bool nt = false)
    {
        var z = Vector512<float>.Zero;
        var r0 = Vector512.Load(src);
        var r1 = sRows > 1 ? Vector512.Load(src + ss) : z;
        var r2 = sRows > 2 ? Vector512.Load(src + 2 * ss) : z;
        var r3 = sRows > 3 ? Vector512.Load(src + 3 * ss) : z;
        var r4 = sRows > 4 ? Vector512.Load(src + 4 * ss) : z;
        var r5 = sRows > 5 ? Vector512.Load(src + 5 * ss) : z;
        var r6 = sRows > 6 ? Vector512.Load(src + 6 * ss) : z;
        var r7 = sRows > 7 ? Vector512.Load(src + 7 * ss) : z;
        var r8 = sRows > 8 ? Vector512.Load(src + 8 * ss) : z;
        var r9 = sRows > 9 ? Vector512.Load(src + 9 * ss) : z;
        var r10 = sRows > 10 ? Vector512.Load(src + 10 * ss) : z;
        var r11 = sRows > 11 ? Vector512.Load(src + 11 * ss) : z;
        var r12 = sRows > 12 ? Vector512.Load(src + 12 * ss) : z;
        var r13 = sRows > 13 ? Vector512.Load(src + 13 * ss) : z;
        var r14 = sRows > 14 ? Vector512.Load(src + 14 * ss) : z;
        var r15 = sRows > 15 ? Vector512.Load(src + 15 * ss) : z;
        // 1: interleave row pairs (per 128-bit lane)
        var t0 = Avx512F.UnpackLow(r0, r1); var t1 = Avx512F.UnpackHigh(r0, r1);
        var t2 = Avx512F.UnpackLow(r2, r3); var t3 = Avx512F.UnpackHigh(r2, r3);
        var t4 = Avx512F.UnpackLow(r4, r5); var t5 = Avx512F.UnpackHigh(r4, r5);
        var t6 = Avx512F.UnpackLow(r6, r7); var t7 = Avx512F.UnpackHigh(r6, r7);
        var t8 = Avx512F.UnpackLow(r8, r9); var t9 = Avx512F.UnpackHigh(r8, r9);
        var t10 = Avx512F.UnpackLow(r10, r11); var t11 = Avx512F.UnpackHigh(r10, r11);
        var t12 = Avx512F.UnpackLow(r12, r13); var t13 = Avx512F.UnpackHigh(r12, r13);
        var t14 = Avx512F.UnpackLow(r14, r15); var t15 = Avx512F.UnpackHigh(r14, r15);
        // 2: 4×4 blocks per 128-bit lane: u[4q + m] lane L = column 4L + m of rows 4q..4q+3
        var u0 = UnpackLo64(t0, t2); var u1 = UnpackHi64(t0, t2); var u2 = UnpackLo64(t1, t3); var u3 = UnpackHi64(t1, t3);
        var u4 = UnpackLo64(t4, t6); var u5 = UnpackHi64(t4, t6); var u6 = UnpackLo64(t5, t7); var u7 = UnpackHi64(t5, t7);
        var u8 = UnpackLo64(t8, t10); var u9 = UnpackHi64(t8, t10); var u10 = UnpackLo64(t9, t11); var u11 = UnpackHi64(t9, t11);
        var u12 = UnpackLo64(t12, t14); var u13 = UnpackHi64(t12, t14); var u14 = UnpackLo64(t13, t15); var u15 = UnpackHi64(t13, t15);
        // 3, 4: gather the four 128-bit pieces of each column
        Column4(u0, u4, u8, u12, dst, ds, dRows, 0, nt);
        Column4(u1, u5, u9, u13, dst, ds, dRows, 1, nt);
        Column4(u2, u6, u10, u14, dst, ds, dRows, 2, nt);
        Column4(u3, u7, u11, u15, dst, ds, dRows, 3, nt);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> UnpackLo64(Vector512<float> a, Vector512<float> b) => Avx512F.UnpackLow(a.AsDouble(), b.AsDouble()).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> UnpackHi64(Vector512<float> a, Vector512<float> b) => Avx512F.UnpackHigh(a.AsDouble(), b.AsDouble()).AsSingle();

    /// <summary>Columns m, 4+m, 8+m, 12+m from the 4×4 blocks of rows 0–3, 4–7, 8–11, 12–15.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Column4(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d, float* dst, long ds, int dRows, int m, bool nt)
    {
        var ab02 = Avx512F.Shuffle4x128(a, b, 0x88); var ab13 = Avx512F.Shuffle4x128(a, b, 0xDD);
        var cd02 = Avx512F.Shuffle4x128(c, d, 0x88); var cd13 = Avx512F.Shuffle4x128(c, d, 0xDD);
        if (m < dRows) Store(Avx512F.Shuffle4x128(ab02, cd02, 0x88), dst + m * ds, nt);
        if (4 + m < dRows) Store(Avx512F.Shuffle4x128(ab13, cd13, 0x88), dst + (4 + m) * ds, nt);
        if (8 + m < dRows) Store(Avx512F.Shuffle4x128(ab02, cd02, 0xDD), dst + (8 + m) * ds, nt);
        if (12 + m < dRows) Store(Avx512F.Shuffle4x128(ab13, cd13, 0xDD), dst + (12 + m) * ds, nt);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(Vector512<float> v, float* p, bool nt)
    {
        if (nt) Avx512F.StoreAlignedNonTemporal(p, v);
        else Vector512.Store(v, p);
    }
}
