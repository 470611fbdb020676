using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GpuAttention.Backends.Cpu;

/// <summary>
/// affine_grid and grid_sample on the CPU. The sampling points of a tile of <see cref="PointTile"/> output points are
/// resolved once (corner offsets, weights, in-image masks, gradient factors) and then reused for every channel, so
/// the per-channel inner loops are four loads and four FMAs per point. Out-of-image corners read +0 through a bit
/// mask (exactly PyTorch's zero padding, also for non-finite pixels elsewhere).
/// Backward is deterministic: a task owns grad_input[n, channel block] and walks the points in order; grad_grid
/// partial sums of the channel blocks are added in block order; the blocking depends only on the shape.
/// This is the channel-first path; with AVX-512, at least 8 channels and enough sampling points per pixel
/// (<see cref="UseFastGridSample"/>), grid_sample takes the channel-last path of CpuBackend.SpatialFast.cs instead
/// (same resolved tiles).
/// </summary>
internal sealed unsafe partial class CpuBackend : ISpatialBackend
{
    internal const int PointTile = 256;

    [ThreadStatic] private static int[]? t_spatialInts;
    [ThreadStatic] private static float[]? t_spatialFloats;

    /// <summary>affine_grid's base coordinate in float, as the kernels compute it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float AffineBase(int i, int n, bool align) =>
        n <= 1 ? 0f : align ? 2f * i / (n - 1) - 1f : (2f * i + 1f) / n - 1f;

    /// <summary>What an affine_grid work item reads.</summary>
    private struct AffineCtx
    {
        public float* Theta, Grid;   // forward: theta in, grid out; backward: grad_theta out, grad_grid in
        public int H, W;
        public bool Align;
    }

    public void AffineGrid(in AffineGridArgs a)
    {
        int N = a.N, H = a.H, W = a.W;
        if ((long)N * H * W == 0) return;
        var ctx = new AffineCtx { Theta = B(a.Theta).Pointer, Grid = B(a.Grid).Pointer, H = H, W = W, Align = a.AlignCorners };
        CpuWorkers.For(WorkItems((long)N * H, "affine_grid rows"), &AffineGridRowItem, &ctx);
    }

    /// <summary>Work item: grid row (n, h).</summary>
    private static void AffineGridRowItem(void* pctx, int row)
    {
        ref readonly AffineCtx c = ref *(AffineCtx*)pctx;
        int H = c.H, W = c.W;
        bool align = c.Align;
        int n = row / H, h = row % H;
        float* t = c.Theta + n * 6L;
        float* g = c.Grid + (long)row * W * 2;
        float y = AffineBase(h, H, align);
        float cx = t[1] * y + t[2], cy = t[4] * y + t[5];
        for (int w = 0; w < W; w++)
        {
            float x = AffineBase(w, W, align);
            g[2 * w] = t[0] * x + cx;
            g[2 * w + 1] = t[3] * x + cy;
        }
    }

    public void AffineGridBackward(in AffineGridBackwardArgs a)
    {
        var ctx = new AffineCtx { Theta = B(a.GradTheta).Pointer, Grid = B(a.GradGrid).Pointer, H = a.H, W = a.W, Align = a.AlignCorners };
        CpuWorkers.For(a.N, &AffineGridBackwardItem, &ctx);
    }

    /// <summary>Work item: grad_theta of image n.</summary>
    private static void AffineGridBackwardItem(void* pctx, int n)
    {
        ref readonly AffineCtx c = ref *(AffineCtx*)pctx;
        AffineGridBackwardOne(c.Grid + (long)n * c.H * c.W * 2, c.Theta + n * 6L, c.H, c.W, c.Align);
    }

    /// <summary>grad_theta of one image: fixed-order sums in double (rows, then the row's points).</summary>
    private static void AffineGridBackwardOne(float* gg, float* gt, int H, int W, bool align)
    {
        double s00 = 0, s01 = 0, s02 = 0, s10 = 0, s11 = 0, s12 = 0;
        for (int h = 0; h < H; h++)
        {
            double rx0 = 0, rx1 = 0, r0 = 0, r1 = 0;
            float* g = gg + (long)h * W * 2;
            for (int w = 0; w < W; w++)
            {
                double x = AffineBase(w, W, align);
                double g0 = g[2 * w], g1 = g[2 * w + 1];
                rx0 += g0 * x; rx1 += g1 * x; r0 += g0; r1 += g1;
            }
            double y = AffineBase(h, H, align);
            s00 += rx0; s01 += r0 * y; s02 += r0;
            s10 += rx1; s11 += r1 * y; s12 += r1;
        }
        gt[0] = (float)s00; gt[1] = (float)s01; gt[2] = (float)s02;
        gt[3] = (float)s10; gt[4] = (float)s11; gt[5] = (float)s12;
    }

    // ---- source coordinates (float mirror of ReferenceOps.SourceIndex) ----

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Clip(float x, int size, ref float d)
    {
        float max = size - 1;
        if (!(x > 0)) { d = 0; return 0; }           // also NaN → 0
        if (x >= max) { d = 0; return max; }
        return x;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Reflect(float x, float min, float span, ref float d)
    {
        if (span <= 0) { d = 0; return 0; }
        if (!float.IsFinite(x)) return float.NaN;   // PyTorch: fmod(±∞) = NaN; clipped to 0 afterwards
        x -= min;
        if (x < 0) { d = -d; x = -x; }
        float extra = x % span;
        float flips = MathF.Floor(x / span);
        if (flips - 2f * MathF.Floor(flips * 0.5f) == 0f) return extra + min;
        d = -d; return span - extra + min;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float SourceIndex(float coord, int size, GridSamplePadding padding, bool align, out float d)
    {
        float x;
        if (align) { d = (size - 1) * 0.5f; x = (coord + 1f) * 0.5f * (size - 1); }
        else { d = size * 0.5f; x = ((coord + 1f) * size - 1f) * 0.5f; }
        if (padding == GridSamplePadding.Border) x = Clip(x, size, ref d);
        else if (padding == GridSamplePadding.Reflection)
        {
            x = align ? Reflect(x, 0f, size - 1, ref d) : Reflect(x, -0.5f, size, ref d);
            x = Clip(x, size, ref d);
        }
        return x;
    }

    /// <summary>floor/round result as an int in [-2, size+1]; NaN → -2 (outside).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int SafeIndex(float f, int size) => f >= -2f ? (f <= size + 1 ? (int)f : size + 1) : -2;

    /// <summary>
    /// Resolves the sampling points p0 … p0+count−1 of image n. Layout of the int scratch: off[4][T], mask[4][T];
    /// float scratch: w[4][T], ax[T], ay[T], dx[T], dy[T]. Nearest uses corner 0 only with weight 1.
    /// </summary>
    private static void ResolveTile(in GridSampleShape s, float* grid, float* theta, int n, long p0, int count, int* ints, float* flts)
    {
        const int T = PointTile;
        int H = s.H, W = s.W;
        bool align = s.AlignCorners, nearest = s.Mode == GridSampleMode.Nearest;
        if (Vector256.IsHardwareAccelerated && !nearest && s.Padding != GridSamplePadding.Reflection)
        {
            ResolveTileBilinear256(s, grid, theta, n, p0, count, ints, flts);
            return;
        }
        for (int i = 0; i < count; i++)
        {
            long p = p0 + i;
            float gx, gy;
            if (theta != null)
            {
                int oh = (int)(p / s.Wout), ow = (int)(p % s.Wout);
                float bx = AffineBase(ow, s.Wout, align), by = AffineBase(oh, s.Hout, align);
                float* t = theta + n * 6L;
                gx = t[0] * bx + t[1] * by + t[2];
                gy = t[3] * bx + t[4] * by + t[5];
            }
            else
            {
                float* g = grid + ((long)n * s.OutPoints + p) * 2;
                gx = g[0]; gy = g[1];
            }
            float ix = SourceIndex(gx, W, s.Padding, align, out float dx);
            float iy = SourceIndex(gy, H, s.Padding, align, out float dy);
            flts[6 * T + i] = dx; flts[7 * T + i] = dy;
            if (nearest)
            {
                int xn = SafeIndex(MathF.Round(ix), W), yn = SafeIndex(MathF.Round(iy), H);
                bool inside = (uint)xn < (uint)W && (uint)yn < (uint)H;
                ints[i] = inside ? yn * W + xn : 0;
                ints[4 * T + i] = inside ? -1 : 0;
                flts[i] = 1f;
                continue;
            }
            float fx = MathF.Floor(ix), fy = MathF.Floor(iy);
            float ax = ix - fx, ay = iy - fy;
            int x0 = SafeIndex(fx, W), y0 = SafeIndex(fy, H);
            flts[4 * T + i] = ax; flts[5 * T + i] = ay;
            for (int k = 0; k < 4; k++)
            {
                int cx = x0 + (k & 1), cy = y0 + (k >> 1);
                bool inside = (uint)cx < (uint)W && (uint)cy < (uint)H;
                ints[k * T + i] = inside ? cy * W + cx : 0;
                ints[(4 + k) * T + i] = inside ? -1 : 0;
                flts[k * T + i] = ((k & 1) == 1 ? ax : 1f - ax) * ((k >> 1) == 1 ? ay : 1f - ay);
            }
        }
    }

    /// <summary>
    /// <see cref="ResolveTile"/> for bilinear with zeros or border padding, 8 points per step (same float arithmetic
    /// as the scalar path: unnormalise, clamp with NaN → 0, floor, weights; indices clamped before conversion).
    /// </summary>
    private static void ResolveTileBilinear256(in GridSampleShape s, float* grid, float* theta, int n, long p0, int count, int* ints, float* flts)
    {
        const int T = PointTile;
        int H = s.H, W = s.W;
        bool align = s.AlignCorners;
        float* cx = flts + 8 * T, cy = flts + 9 * T;          // coordinates (these rows are reused later as grad accumulators)
        for (int i = 0; i < count; i++)
        {
            long p = p0 + i;
            if (theta != null)
            {
                int oh = (int)(p / s.Wout), ow = (int)(p % s.Wout);
                float bx = AffineBase(ow, s.Wout, align), by = AffineBase(oh, s.Hout, align);
                float* t = theta + n * 6L;
                cx[i] = t[0] * bx + t[1] * by + t[2];
                cy[i] = t[3] * bx + t[4] * by + t[5];
            }
            else
            {
                float* g = grid + ((long)n * s.OutPoints + p) * 2;
                cx[i] = g[0]; cy[i] = g[1];
            }
        }
        int padded = (count + 7) & ~7;
        for (int i = count; i < padded; i++) { cx[i] = 0; cy[i] = 0; }
        bool border = s.Padding == GridSamplePadding.Border;
        var one = Vector256.Create(1f);
        var zero = Vector256<float>.Zero;
        for (int i = 0; i < padded; i += 8)
        {
            var ix = Unnormalize256(Vector256.Load(cx + i), W, align, border, out var dx);
            var iy = Unnormalize256(Vector256.Load(cy + i), H, align, border, out var dy);
            dx.Store(flts + 6 * T + i); dy.Store(flts + 7 * T + i);
            var fx = Vector256.Floor(ix); var fy = Vector256.Floor(iy);
            var ax = ix - fx; var ay = iy - fy;
            ax.Store(flts + 4 * T + i); ay.Store(flts + 5 * T + i);
            var x0 = SafeIndex256(fx, W); var y0 = SafeIndex256(fy, H);
            var wv = Vector256.Create(W); var hv = Vector256.Create(H);
            for (int k = 0; k < 4; k++)
            {
                var xk = (k & 1) == 1 ? x0 + Vector256<int>.One : x0;
                var yk = (k >> 1) == 1 ? y0 + Vector256<int>.One : y0;
                var inside = Vector256.GreaterThanOrEqual(xk, Vector256<int>.Zero) & Vector256.LessThan(xk, wv)
                           & Vector256.GreaterThanOrEqual(yk, Vector256<int>.Zero) & Vector256.LessThan(yk, hv);
                (inside & (yk * wv + xk)).Store(ints + k * T + i);
                inside.Store(ints + (4 + k) * T + i);
                (((k & 1) == 1 ? ax : one - ax) * ((k >> 1) == 1 ? ay : one - ay)).Store(flts + k * T + i);
            }
        }
        _ = zero;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Unnormalize256(Vector256<float> c, int size, bool align, bool border, out Vector256<float> d)
    {
        Vector256<float> x;
        if (align) { d = Vector256.Create((size - 1) * 0.5f); x = (c + Vector256.Create(1f)) * Vector256.Create(0.5f) * Vector256.Create((float)(size - 1)); }
        else { d = Vector256.Create(size * 0.5f); x = ((c + Vector256.Create(1f)) * Vector256.Create((float)size) - Vector256.Create(1f)) * Vector256.Create(0.5f); }
        if (border)
        {
            var max = Vector256.Create((float)(size - 1));
            var gt0 = Vector256.GreaterThan(x, Vector256<float>.Zero);      // false for NaN
            var geMax = Vector256.GreaterThanOrEqual(x, max);
            d = Vector256.ConditionalSelect(gt0 & ~geMax, d, Vector256<float>.Zero);
            x = Vector256.ConditionalSelect(gt0, Vector256.ConditionalSelect(geMax, max, x), Vector256<float>.Zero);
        }
        return x;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> SafeIndex256(Vector256<float> f, int size)
    {
        var lo = Vector256.Create(-2f); var hi = Vector256.Create((float)(size + 1));
        f = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(f, lo), f, lo);   // NaN → -2
        f = Vector256.ConditionalSelect(Vector256.LessThanOrEqual(f, hi), f, hi);
        return Vector256.ConvertToInt32(f);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Masked(float v, int mask) => BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(v) & mask);

    private const int BackwardChunkTiles = 64;
    [ThreadStatic] private static int[]? t_backwardInts;
    [ThreadStatic] private static float[]? t_backwardFloats;

    /// <summary>Per-thread scratch for <paramref name="tiles"/> resolved tiles (the tile layout of <see cref="ResolveTile"/>, back to back).</summary>
    private static (int[] Ints, float[] Floats) BackwardScratch(int tiles)
    {
        long ni = (long)tiles * 8 * PointTile, nf = (long)tiles * 10 * PointTile;
        if (t_backwardInts is null || t_backwardInts.Length < ni) t_backwardInts = new int[checked((int)ni)];
        if (t_backwardFloats is null || t_backwardFloats.Length < nf) t_backwardFloats = new float[checked((int)nf)];
        return (t_backwardInts, t_backwardFloats);
    }

    private static (int[] Ints, float[] Floats) SpatialScratch()
    {
        var ints = t_spatialInts ??= new int[8 * PointTile];
        var flts = t_spatialFloats ??= new float[10 * PointTile];
        return (ints, flts);
    }

    public void GridSample(in GridSampleArgs a)
    {
        var s = a.Shape;
        long P = s.OutPoints;
        if (s.N == 0 || s.C == 0 || P == 0) return;
        if (UseFastGridSample(s)) { GridSampleFast(a); return; }
        long tiles = (P + PointTile - 1) / PointTile;
        var ctx = new GsCtx
        {
            S = s, Input = B(a.Input).Pointer, Out = B(a.Out).Pointer, Grid = a.Grid is null ? null : B(a.Grid).Pointer,
            Theta = a.Theta is null ? null : B(a.Theta).Pointer, Tiles = tiles,
        };
        CpuWorkers.For(WorkItems(s.N * tiles, "grid_sample point tiles"), &GridSampleTileItem, &ctx);
    }

    /// <summary>Work item (image n, tile of PointTile output points): resolves the tile, then samples every channel.</summary>
    private static void GridSampleTileItem(void* pctx, int item)
    {
        ref readonly GsCtx c = ref *(GsCtx*)pctx;
        ref readonly GridSampleShape shape = ref c.S;
        long P = shape.OutPoints;
        int n = (int)(item / c.Tiles);
        long p0 = item % c.Tiles * PointTile;
        int count = (int)Math.Min(PointTile, P - p0);
        var (ints, flts) = SpatialScratch();
        fixed (int* ii = ints) fixed (float* ff = flts)
        {
            ResolveTile(shape, c.Grid, c.Theta, n, p0, count, ii, ff);
            long plane = (long)shape.H * shape.W;
            for (int ch = 0; ch < shape.C; ch++)
            {
                float* src = c.Input + ((long)n * shape.C + ch) * plane;
                float* dst = c.Out + ((long)n * shape.C + ch) * P + p0;
                if (shape.Mode == GridSampleMode.Nearest) SampleNearest(src, dst, count, ii);
                else SampleBilinear(src, dst, count, ii, ff);
            }
        }
    }

    private static void SampleNearest(float* src, float* dst, int count, int* ints)
    {
        const int T = PointTile;
        for (int i = 0; i < count; i++) dst[i] = Masked(src[ints[i]], ints[4 * T + i]);
    }

    private static void SampleBilinear(float* src, float* dst, int count, int* ints, float* w)
    {
        const int T = PointTile;
        int i = 0;
        if (Avx2.IsSupported && Fma.IsSupported)
        {
            // 8 points at a time: masked gathers (out-of-image lanes are not read and give +0), 4 FMAs
            for (; i + 8 <= count; i += 8)
            {
                var acc = Vector256<float>.Zero;
                for (int k = 0; k < 4; k++)
                {
                    var idx = Avx.LoadVector256(ints + k * T + i);
                    var m = Avx.LoadVector256(ints + (4 + k) * T + i).AsSingle();
                    var v = Avx2.GatherMaskVector256(Vector256<float>.Zero, src, idx, m, 4);
                    acc = Fma.MultiplyAdd(Avx.LoadVector256(w + k * T + i), v, acc);
                }
                Avx.Store(dst + i, acc);
            }
        }
        for (; i < count; i++)
        {
            float v0 = Masked(src[ints[i]], ints[4 * T + i]);
            float v1 = Masked(src[ints[T + i]], ints[5 * T + i]);
            float v2 = Masked(src[ints[2 * T + i]], ints[6 * T + i]);
            float v3 = Masked(src[ints[3 * T + i]], ints[7 * T + i]);
            dst[i] = w[i] * v0 + w[T + i] * v1 + w[2 * T + i] * v2 + w[3 * T + i] * v3;
        }
    }

    /// <summary>Channel blocks per image in the backward pass: enough tasks for the cores, a function of the shape only.</summary>
    internal static int BackwardChannelBlocks(int N, int C) => Math.Max(1, Math.Min(C, (16 + N - 1) / Math.Max(1, N)));

    public void GridSampleBackward(in GridSampleBackwardArgs a)
    {
        var s = a.Shape;
        long P = s.OutPoints;
        long plane = (long)s.H * s.W;
        var gradInput = B(a.GradInput);
        if (s.N == 0 || P == 0) Fill(gradInput, 0f);   // otherwise each backward task zeroes its own planes, just before use
        // With theta (fused affine_grid) the grid gradient goes to per-thread scratch and on to grad_theta.
        float* gg = a.Theta is null ? (a.GradGrid is null ? null : B(a.GradGrid).Pointer) : GrowScratch(ref t_gsFusedGrid, s.N * P * 2);
        if (s.N > 0 && P > 0) GridSampleBackwardCore(s, a, gg);
        if (a.Theta is not null)
        {
            float* gt = B(a.GradTheta!).Pointer;
            for (int n = 0; n < s.N; n++)
                AffineGridBackwardOne(gg + n * P * 2, gt + n * 6L, s.Hout, s.Wout, s.AlignCorners);
        }
    }

    // grad_grid of a fused (theta) backward call, and the channel blocks' grad_grid partials (grow-only, per calling thread).
    [ThreadStatic] private static float[]? t_gsFusedGrid;
    [ThreadStatic] private static float[]? t_gsPartials;

    /// <summary>dst[i] = Σ_k parts[k·len + i] for k = 0..count−1, in that order (the deterministic grad_grid reduction of both paths).</summary>
    private static void SumPartialsInOrder(float* parts, int count, long len, float* dst)
    {
        for (long i = 0; i < len; i++)
        {
            float sum = parts[i];
            for (int k = 1; k < count; k++) sum += parts[k * len + i];
            dst[i] = sum;
        }
    }

    private static void GridSampleBackwardCore(in GridSampleShape s, in GridSampleBackwardArgs a, float* gradGrid)
    {
        if (UseFastGridSample(s)) { GridSampleBackwardFast(s, a, gradGrid); return; }
        long P = s.OutPoints;
        int nCb = s.C == 0 ? 1 : BackwardChannelBlocks(s.N, s.C);
        int cbSize = s.C == 0 ? 0 : (s.C + nCb - 1) / nCb;
        nCb = s.C == 0 ? 1 : (s.C + cbSize - 1) / cbSize;
        float* pp = nCb > 1 ? GrowScratch(ref t_gsPartials, nCb * s.N * P * 2) : null;
        var ctx = new GsCtx
        {
            S = s, Input = B(a.Input).Pointer, GradOut = B(a.GradOut).Pointer, GradIn = B(a.GradInput).Pointer,
            Grid = a.Grid is null ? null : B(a.Grid).Pointer, Theta = a.Theta is null ? null : B(a.Theta).Pointer,
            GradGrid = nCb > 1 ? pp : gradGrid, Blocks = nCb, BlockChannels = cbSize,
        };
        CpuWorkers.For(checked(s.N * nCb), &GridSampleBackwardItem, &ctx);
        if (nCb > 1) SumPartialsInOrder(pp, nCb, s.N * P * 2, gradGrid);
    }

    /// <summary>
    /// Work item (image n, channel block cb): grad_input of the block's planes, and the block's grad_grid of image n
    /// (to GradGrid, or to block cb's partial when there are several blocks).
    /// </summary>
    private static void GridSampleBackwardItem(void* pctx, int item)
    {
        ref readonly GsCtx ctx = ref *(GsCtx*)pctx;
        ref readonly GridSampleShape shape = ref ctx.S;
        long P = shape.OutPoints;
        long plane = (long)shape.H * shape.W;
        int nCb = ctx.Blocks, cbSize = ctx.BlockChannels;
        int n = item / nCb, cb = item % nCb;
        int c0 = cb * cbSize, c1 = Math.Min(shape.C, c0 + cbSize);
        float* ggOut = ctx.GradGrid + ((long)cb * shape.N + n) * P * 2;
        // All tiles of image n are resolved once; then channel by channel (so only one input plane and
        // one grad_input plane are hot at a time), tile by tile. Per-plane and per-point summation order
        // is the same as a tile-outer walk: points in order within a plane, channels in order per point.
        // Large outputs go in chunks of BackwardChunkTiles tiles (bounded scratch; same orders).
        long allTiles = (P + PointTile - 1) / PointTile;
        var (ints, flts) = BackwardScratch((int)Math.Min(allTiles, BackwardChunkTiles));
        fixed (int* ii = ints) fixed (float* ff = flts)
        for (long chunk0 = 0; chunk0 < allTiles; chunk0 += BackwardChunkTiles)
        {
            int tiles = (int)Math.Min(BackwardChunkTiles, allTiles - chunk0);
            for (int t = 0; t < tiles; t++)
            {
                long p0 = (chunk0 + t) * PointTile;
                int count = (int)Math.Min(PointTile, P - p0);
                int* it = ii + (long)t * 8 * PointTile;
                float* ft = ff + (long)t * 10 * PointTile;
                ResolveTile(shape, ctx.Grid, ctx.Theta, n, p0, count, it, ft);
                new Span<float>(ft + 8 * PointTile, 2 * PointTile).Clear();
            }
            for (int c = c0; c < c1; c++)
            {
                long img = ((long)n * shape.C + c) * plane;
                float* gin = ctx.GradIn + img;
                if (chunk0 == 0)
                    for (long z = 0; z < plane; z += int.MaxValue)
                        new Span<float>(gin + z, (int)Math.Min(int.MaxValue, plane - z)).Clear();
                for (int t = 0; t < tiles; t++)
                {
                    long p0 = (chunk0 + t) * PointTile;
                    int count = (int)Math.Min(PointTile, P - p0);
                    int* it = ii + (long)t * 8 * PointTile;
                    float* ft = ff + (long)t * 10 * PointTile;
                    float* gout = ctx.GradOut + ((long)n * shape.C + c) * P + p0;
                    if (shape.Mode == GridSampleMode.Nearest) ScatterNearest(gin, gout, count, it);
                    else ScatterBilinear(ctx.Input + img, gin, gout, count, it, ft);
                }
            }
            for (int t = 0; t < tiles; t++)
            {
                long p0 = (chunk0 + t) * PointTile;
                int count = (int)Math.Min(PointTile, P - p0);
                float* ft = ff + (long)t * 10 * PointTile;
                float* gx = ft + 8 * PointTile, gy = ft + 9 * PointTile;
                float* dst = ggOut + p0 * 2;
                for (int i = 0; i < count; i++)
                {
                    dst[2 * i] = shape.Mode == GridSampleMode.Nearest ? 0f : gx[i] * ft[6 * PointTile + i];
                    dst[2 * i + 1] = shape.Mode == GridSampleMode.Nearest ? 0f : gy[i] * ft[7 * PointTile + i];
                }
            }
        }
    }

    private static void ScatterNearest(float* gin, float* gout, int count, int* ints)
    {
        const int T = PointTile;
        for (int i = 0; i < count; i++) gin[ints[i]] += Masked(gout[i], ints[4 * T + i]);
    }

    private static void ScatterBilinear(float* src, float* gin, float* gout, int count, int* ints, float* f)
    {
        const int T = PointTile;
        float* gx = f + 8 * T, gy = f + 9 * T;
        int i = 0;
        if (Avx2.IsSupported && Fma.IsSupported)
        {
            var one = Vector256.Create(1f);
            float* prod = stackalloc float[32];
            for (; i + 8 <= count; i += 8)
            {
                // grid gradient for 8 points with masked gathers ...
                var g = Avx.LoadVector256(gout + i);
                var v0 = Avx2.GatherMaskVector256(Vector256<float>.Zero, src, Avx.LoadVector256(ints + i), Avx.LoadVector256(ints + 4 * T + i).AsSingle(), 4);
                var v1 = Avx2.GatherMaskVector256(Vector256<float>.Zero, src, Avx.LoadVector256(ints + T + i), Avx.LoadVector256(ints + 5 * T + i).AsSingle(), 4);
                var v2 = Avx2.GatherMaskVector256(Vector256<float>.Zero, src, Avx.LoadVector256(ints + 2 * T + i), Avx.LoadVector256(ints + 6 * T + i).AsSingle(), 4);
                var v3 = Avx2.GatherMaskVector256(Vector256<float>.Zero, src, Avx.LoadVector256(ints + 3 * T + i), Avx.LoadVector256(ints + 7 * T + i).AsSingle(), 4);
                var ax = Avx.LoadVector256(f + 4 * T + i);
                var ay = Avx.LoadVector256(f + 5 * T + i);
                var tx = (v1 - v0) * (one - ay) + (v3 - v2) * ay;
                var ty = (v2 - v0) * (one - ax) + (v3 - v1) * ax;
                Avx.Store(gx + i, Fma.MultiplyAdd(g, tx, Avx.LoadVector256(gx + i)));
                Avx.Store(gy + i, Fma.MultiplyAdd(g, ty, Avx.LoadVector256(gy + i)));
                // ... then the scatter, in point order (scalar: two points may share a pixel); the masked
                // products weight·grad are formed 8 at a time first (same values as the scalar Masked(w·g, m))
                Avx.Store(prod, Avx.And(Avx.Multiply(Avx.LoadVector256(f + i), g), Avx.LoadVector256(ints + 4 * T + i).AsSingle()));
                Avx.Store(prod + 8, Avx.And(Avx.Multiply(Avx.LoadVector256(f + T + i), g), Avx.LoadVector256(ints + 5 * T + i).AsSingle()));
                Avx.Store(prod + 16, Avx.And(Avx.Multiply(Avx.LoadVector256(f + 2 * T + i), g), Avx.LoadVector256(ints + 6 * T + i).AsSingle()));
                Avx.Store(prod + 24, Avx.And(Avx.Multiply(Avx.LoadVector256(f + 3 * T + i), g), Avx.LoadVector256(ints + 7 * T + i).AsSingle()));
                int* o = ints + i;
                for (int j = 0; j < 8; j++)
                {
                    gin[o[j]] += prod[j];
                    gin[o[T + j]] += prod[8 + j];
                    gin[o[2 * T + j]] += prod[16 + j];
                    gin[o[3 * T + j]] += prod[24 + j];
                }
            }
        }
        for (; i < count; i++)
        {
            float g = gout[i];
            int o0 = ints[i], o1 = ints[T + i], o2 = ints[2 * T + i], o3 = ints[3 * T + i];
            int m0 = ints[4 * T + i], m1 = ints[5 * T + i], m2 = ints[6 * T + i], m3 = ints[7 * T + i];
            gin[o0] += Masked(f[i] * g, m0);
            gin[o1] += Masked(f[T + i] * g, m1);
            gin[o2] += Masked(f[2 * T + i] * g, m2);
            gin[o3] += Masked(f[3 * T + i] * g, m3);
            float v0 = Masked(src[o0], m0), v1 = Masked(src[o1], m1), v2 = Masked(src[o2], m2), v3 = Masked(src[o3], m3);
            float ax = f[4 * T + i], ay = f[5 * T + i];
            gx[i] += g * ((v1 - v0) * (1f - ay) + (v3 - v2) * ay);
            gy[i] += g * ((v2 - v0) * (1f - ax) + (v3 - v1) * ax);
        }
    }
}
