// Spatial transformer for ILGPU: affine_grid and grid_sample (forward and backward) with PyTorch 1.13 semantics
// (aten/src/ATen/native/GridSampler.h), and the fused transform-and-sample path where the sampling point of output pixel p
// is computed from theta in registers instead of being read from a grid in memory. The ILGPU port of kernels/spatial.cl's
// GPU-style kernels (same operations in the same order); host side: src/GpuAttention/Backends/Ilgpu/IlgpuSpatial.cs.
//
// Layout: input [N,C,H,W], grid [N,Hout,Wout,2] (x, y), theta [N,2,3], out / grad_out [N,C,Hout,Wout]; P = Hout·Wout.
// Mode (0 bilinear, 1 nearest), padding (0 zeros, 1 border, 2 reflection) and align_corners are fields of SpatialParams,
// uniform over a launch: one compiled kernel serves every configuration (the branches are warp-uniform).
//
// GPU design:
// - one thread per output point for the forward, grad_grid and the atomic scatter: consecutive threads read consecutive
//   (x, y) pairs of the grid (coalesced 8-byte pairs) and write consecutive outputs of every channel plane; the point's
//   corners and weights are resolved once and reused for all C channels;
// - the deterministic grad_input scatter gives each thread of a group one channel plane (ownership: no two threads ever
//   add into the same element), the group resolves TileP points into shared memory cooperatively (coalesced grid reads)
//   and stages the matching grad_out tile with coalesced loads; every thread then walks the tile's points in order. Point
//   chunks (grid dimension Z) write private partial copies that SumPartials adds in chunk order: bit-for-bit repeatable.
//   Shared memory: 4·TileP ints + 4·TileP floats + ChannelBlock·TileP floats = 18 KiB per group at 64 × 64, so up to
//   twelve groups fit on an SM of sm_80/sm_90 (228 KiB). ptxas (CUDA 11.8, -v): 32 (sm_80) / 40 (sm_90) registers, no
//   spills; the per-point kernels use 18-40 registers, none spills.
// - no float atomics except in BackwardInputAtomic, the opt-in nondeterministic scatter.

using ILGPU;
using ILGPU.Algorithms;

namespace GpuAttention.Kernels.Ilgpu;

/// <summary>An atomic float add as a compile-time choice of the kernel (a type parameter: no runtime branch).</summary>
internal interface IFloatAtomicAdd
{
    /// <summary>view[index] += value, atomically.</summary>
    void Add(ArrayView<float> view, long index, float value);
}

/// <summary>ILGPU's <c>Atomic.Add</c>: the native float atomic on CUDA (red.global.add.f32) and OpenCL.</summary>
internal struct NativeFloatAdd : IFloatAtomicAdd
{
    public readonly void Add(ArrayView<float> view, long index, float value) => Atomic.Add(ref view[index], value);
}

/// <summary>
/// A compare-and-swap loop on the float's bits. ILGPU 1.5.3's CPU simulator implements <c>Atomic.Add(ref float, float)</c> as
/// a compare-exchange loop whose exit test compares floats, so once the target holds NaN (NaN ≠ NaN) the loop never ends:
/// a NaN grad_out would hang the simulator. Comparing the bits ends it after one successful exchange, whatever the value.
/// </summary>
internal struct BitwiseCasFloatAdd : IFloatAtomicAdd
{
    public readonly void Add(ArrayView<float> view, long index, float value)
    {
        ref uint bits = ref view.Cast<uint>()[index];
        uint seen = bits;
        while (true)
        {
            uint assumed = seen;
            seen = Atomic.CompareExchange(ref bits, assumed, Interop.FloatAsInt(Interop.IntAsFloat(assumed) + value));
            if (seen == assumed) return;
        }
    }
}

/// <summary>Uniform parameters of one spatial-transformer launch (passed by value to the kernels).</summary>
internal struct SpatialParams
{
    /// <summary>Channels, input height and width, output height and width.</summary>
    public int C, H, W, Hout, Wout;
    /// <summary>1: points from theta (fused spatial transformer); 0: from the grid.</summary>
    public int UseTheta;
    /// <summary>0 bilinear, 1 nearest.</summary>
    public int Mode;
    /// <summary>0 zeros, 1 border, 2 reflection.</summary>
    public int Padding;
    /// <summary>align_corners as 0 / 1.</summary>
    public int Align;
    /// <summary>Deterministic scatter: output points per chunk (grid dimension Z).</summary>
    public int ChunkPoints;
    /// <summary>Deterministic scatter: elements between the chunks' partial copies (0: one chunk writing grad_input itself).</summary>
    public long ChunkStride;
}

/// <summary>A resolved sampling point: corner offsets in the image plane (−1 outside), weights, bilinear fractions and
/// d(pixel)/d(normalised coordinate) per axis. Nearest uses corner 0 with weight 1.</summary>
internal struct SamplePoint
{
    public int O0, O1, O2, O3;
    public float W0, W1, W2, W3;
    public float Ax, Ay, Dx, Dy;
}

/// <summary>A pixel coordinate and its derivative with respect to the normalised coordinate.</summary>
internal struct AxisCoord
{
    public float X, D;
}

/// <summary>ILGPU kernels of the spatial transformer (see the file header for the design).</summary>
internal static class SpatialKernels
{
    /// <summary>Threads per group of the explicitly grouped reductions (affine_grid backward).</summary>
    public const int RedGroup = 64;
    /// <summary>Most channels (threads) per group of the deterministic scatter.</summary>
    public const int ChannelBlock = 64;
    /// <summary>Output points staged in shared memory per step of the deterministic scatter.</summary>
    public const int TileP = 64;

    /// <summary>affine_grid's base coordinate of index i of n (0 for n = 1).</summary>
    public static float AffineBase(int i, int n, int align)
    {
        if (n <= 1) return 0.0f;
        return align != 0 ? 2.0f * i / (n - 1) - 1.0f : (2.0f * i + 1.0f) / n - 1.0f;
    }

    /// <summary>Clamp to [0, size−1]; NaN → 0; derivative 0 at and beyond the borders (as PyTorch).</summary>
    private static AxisCoord Clip(AxisCoord c, int size)
    {
        float mx = size - 1;
        if (!(c.X > 0.0f)) { c.X = 0.0f; c.D = 0.0f; return c; }
        if (c.X >= mx) { c.X = mx; c.D = 0.0f; }
        return c;
    }

    /// <summary>
    /// PyTorch's reflect_coordinates_set_grad with min = twice_low / 2, span = (twice_high − twice_low) / 2, in float as PyTorch's
    /// float kernel: extra = fmod(x, span) (exact) and flips = ⌊x/span⌋ evaluated in float (for quotients of 2²⁴ and more
    /// always even, as there), without a software fmod: below 2²³ (every coordinate that lands near the image) extra is
    /// x − flips·span, plus span when x/span rounded up to the next integer (span is an integer, so the product is exact and
    /// the subtraction exact by Sterbenz); beyond, by binary long division: subtract the largest span·2ᵏ ≤ r (exact,
    /// Sterbenz) until r &lt; span.
    /// </summary>
    private static AxisCoord Reflect(AxisCoord c, float mn, float span)
    {
        if (span <= 0.0f) { c.X = 0.0f; c.D = 0.0f; return c; }
        if (!(XMath.Abs(c.X) < float.PositiveInfinity)) { c.X = float.NaN; return c; }   // clipped to 0 afterwards
        float x = c.X - mn;
        if (x < 0.0f) { c.D = -c.D; x = -x; }
        float flips = XMath.Floor(x / span);
        float extra;
        if (x < 8388608.0f)
        {
            extra = x - flips * span;
            if (extra < 0.0f) extra += span;
        }
        else
        {
            extra = x;
            while (extra >= span)
            {
                float t = span;
                while (t * 2.0f <= extra) t *= 2.0f;
                extra -= t;
            }
        }
        if (flips - 2.0f * XMath.Floor(flips * 0.5f) == 0.0f) { c.X = extra + mn; return c; }
        c.D = -c.D;
        c.X = span - extra + mn;
        return c;
    }

    /// <summary>Normalised coordinate → pixel coordinate on an axis of <paramref name="size"/> pixels, with the padding applied.</summary>
    public static AxisCoord SourceIndex(float coord, int size, int padding, int align)
    {
        AxisCoord c;
        if (align != 0)
        {
            c.D = (size - 1) * 0.5f;
            c.X = (coord + 1.0f) * 0.5f * (size - 1);
        }
        else
        {
            c.D = size * 0.5f;
            c.X = ((coord + 1.0f) * size - 1.0f) * 0.5f;
        }
        if (padding == 1) c = Clip(c, size);
        else if (padding == 2)
        {
            c = align != 0 ? Reflect(c, 0.0f, size - 1) : Reflect(c, -0.5f, size);
            c = Clip(c, size);
        }
        return c;
    }

    /// <summary>floor/round result as an int in [−2, size+1]; NaN → −2 (outside the image).</summary>
    private static int SafeIndex(float f, int size) => f >= -2.0f ? (f <= size + 1 ? (int)f : size + 1) : -2;

    /// <summary>Reads (or, fused, computes from theta) the normalised point p of image n and resolves its corners.</summary>
    public static SamplePoint Resolve(ArrayView<float> grid, ArrayView<float> theta, SpatialParams sp, int n, int p)
    {
        float gx, gy;
        if (sp.UseTheta != 0)
        {
            int oh = p / sp.Wout, ow = p - oh * sp.Wout;
            float bx = AffineBase(ow, sp.Wout, sp.Align), by = AffineBase(oh, sp.Hout, sp.Align);
            long t = (long)n * 6;
            gx = theta[t] * bx + theta[t + 1] * by + theta[t + 2];
            gy = theta[t + 3] * bx + theta[t + 4] * by + theta[t + 5];
        }
        else
        {
            long g = ((long)n * sp.Hout * sp.Wout + p) * 2;
            gx = grid[g];
            gy = grid[g + 1];
        }
        var cx = SourceIndex(gx, sp.W, sp.Padding, sp.Align);
        var cy = SourceIndex(gy, sp.H, sp.Padding, sp.Align);
        SamplePoint s;
        s.Dx = cx.D; s.Dy = cy.D;
        int W = sp.W, H = sp.H;
        if (sp.Mode == 1)
        {
            int xn = SafeIndex(XMath.RoundToEven(cx.X), W), yn = SafeIndex(XMath.RoundToEven(cy.X), H);
            s.O0 = xn >= 0 && xn < W && yn >= 0 && yn < H ? yn * W + xn : -1;
            s.O1 = -1; s.O2 = -1; s.O3 = -1;
            s.W0 = 1.0f; s.W1 = 0.0f; s.W2 = 0.0f; s.W3 = 0.0f;
            s.Ax = 0.0f; s.Ay = 0.0f;
            return s;
        }
        float fx = XMath.Floor(cx.X), fy = XMath.Floor(cy.X);
        float ax = cx.X - fx, ay = cy.X - fy;
        int x0 = SafeIndex(fx, W), y0 = SafeIndex(fy, H);
        int x1 = x0 + 1, y1 = y0 + 1;
        bool inX0 = x0 >= 0 && x0 < W, inX1 = x1 >= 0 && x1 < W, inY0 = y0 >= 0 && y0 < H, inY1 = y1 >= 0 && y1 < H;
        s.O0 = inX0 && inY0 ? y0 * W + x0 : -1;
        s.O1 = inX1 && inY0 ? y0 * W + x1 : -1;
        s.O2 = inX0 && inY1 ? y1 * W + x0 : -1;
        s.O3 = inX1 && inY1 ? y1 * W + x1 : -1;
        s.W0 = (1.0f - ax) * (1.0f - ay); s.W1 = ax * (1.0f - ay);
        s.W2 = (1.0f - ax) * ay; s.W3 = ax * ay;
        s.Ax = ax; s.Ay = ay;
        return s;
    }

    private static float Read(ArrayView<float> v, long plane, int o) => o >= 0 ? v[plane + o] : 0.0f;

    // ---------------------------------------------------------------- affine_grid

    /// <summary>affine_grid forward, one thread per grid point: index (p, n) over (H·W, N).</summary>
    public static void AffineGridForward(Index2D index, ArrayView<float> theta, ArrayView<float> grid, int H, int W, int align)
    {
        int p = index.X, n = index.Y;
        int h = p / W, w = p - h * W;
        float x = AffineBase(w, W, align), y = AffineBase(h, H, align);
        long t = (long)n * 6, g = ((long)n * H * W + p) * 2;
        grid[g] = theta[t] * x + theta[t + 1] * y + theta[t + 2];
        grid[g + 1] = theta[t + 3] * x + theta[t + 4] * y + theta[t + 5];
    }

    /// <summary>
    /// affine_grid backward: one group of <see cref="RedGroup"/> threads per image (grid N); each thread sums a strided subset
    /// of the points in order, then a fixed tree in shared memory (deterministic).
    /// </summary>
    public static void AffineGridBackward(ArrayView<float> gradGrid, ArrayView<float> gradTheta, int H, int W, int align)
    {
        var red = SharedMemory.Allocate<float>(6 * RedGroup);
        int tid = Group.IdxX, n = Grid.IdxX;
        int P = H * W;
        long g = (long)n * P * 2;
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f, s4 = 0.0f, s5 = 0.0f;
        for (int p = tid; p < P; p += RedGroup)
        {
            int h = p / W, w = p - h * W;
            float x = AffineBase(w, W, align), y = AffineBase(h, H, align);
            float g0 = gradGrid[g + 2L * p], g1 = gradGrid[g + 2L * p + 1];
            s0 += g0 * x; s1 += g0 * y; s2 += g0;
            s3 += g1 * x; s4 += g1 * y; s5 += g1;
        }
        red[tid] = s0; red[RedGroup + tid] = s1; red[2 * RedGroup + tid] = s2;
        red[3 * RedGroup + tid] = s3; red[4 * RedGroup + tid] = s4; red[5 * RedGroup + tid] = s5;
        Group.Barrier();
        for (int stride = RedGroup / 2; stride > 0; stride /= 2)
        {
            if (tid < stride)
                for (int j = 0; j < 6; j++) red[j * RedGroup + tid] += red[j * RedGroup + tid + stride];
            Group.Barrier();
        }
        if (tid < 6) gradTheta[(long)n * 6 + tid] = red[tid * RedGroup];
    }

    // ---------------------------------------------------------------- grid_sample

    /// <summary>grid_sample forward, one thread per output point: index (p, n) over (P, N); the corners are resolved once and
    /// reused for every channel (a non-finite coordinate gives NaN weights, hence NaN, as PyTorch).</summary>
    public static void Forward(Index2D index, ArrayView<float> input, ArrayView<float> grid, ArrayView<float> theta, ArrayView<float> output, SpatialParams sp)
    {
        int p = index.X, n = index.Y;
        var s = Resolve(grid, theta, sp, n, p);
        long plane = (long)sp.H * sp.W, P = (long)sp.Hout * sp.Wout;
        long src = (long)n * sp.C * plane, dst = (long)n * sp.C * P + p;
        for (int c = 0; c < sp.C; c++)
        {
            float acc = 0.0f;
            acc += s.W0 * Read(input, src, s.O0);
            if (sp.Mode == 0)
            {
                acc += s.W1 * Read(input, src, s.O1);
                acc += s.W2 * Read(input, src, s.O2);
                acc += s.W3 * Read(input, src, s.O3);
            }
            output[dst] = acc;
            src += plane;
            dst += P;
        }
    }

    /// <summary>grad_grid (fused: the grid gradient into scratch), one thread per output point: index (p, n); the channel sum
    /// runs in order. Nearest: zeros.</summary>
    public static void BackwardGrid(Index2D index, ArrayView<float> input, ArrayView<float> grid, ArrayView<float> theta, ArrayView<float> gradOut,
        ArrayView<float> gradGrid, SpatialParams sp)
    {
        int p = index.X, n = index.Y;
        long P = (long)sp.Hout * sp.Wout;
        long gg = ((long)n * P + p) * 2;
        if (sp.Mode == 1)
        {
            gradGrid[gg] = 0.0f;
            gradGrid[gg + 1] = 0.0f;
            return;
        }
        var s = Resolve(grid, theta, sp, n, p);
        long plane = (long)sp.H * sp.W;
        long src = (long)n * sp.C * plane, go = (long)n * sp.C * P + p;
        float sx = 0.0f, sy = 0.0f;
        for (int c = 0; c < sp.C; c++)
        {
            float g = gradOut[go];
            float v0 = Read(input, src, s.O0), v1 = Read(input, src, s.O1), v2 = Read(input, src, s.O2), v3 = Read(input, src, s.O3);
            sx += g * ((v1 - v0) * (1.0f - s.Ay) + (v3 - v2) * s.Ay);
            sy += g * ((v2 - v0) * (1.0f - s.Ax) + (v3 - v1) * s.Ax);
            src += plane;
            go += P;
        }
        gradGrid[gg] = sx * s.Dx;
        gradGrid[gg + 1] = sy * s.Dy;
    }

    /// <summary>
    /// Deterministic grad_input scatter into chunk k's partial copy. Grid (N·⌈C/cb⌉, chunks), group cb ≤ <see cref="ChannelBlock"/>
    /// threads: thread c owns channel plane c of image n (N in grid dimension X, which has no 65535 limit on CUDA). Per step the group resolves <see cref="TileP"/> points into shared
    /// memory and stages grad_out [cb][TileP] with coalesced loads; then each thread adds its channel's contributions for the
    /// tile's points in order into dst + k·ChunkStride (zeroed by the host).
    /// </summary>
    public static void BackwardInput(ArrayView<float> grid, ArrayView<float> theta, ArrayView<float> gradOut, ArrayView<float> dst, SpatialParams sp)
    {
        var sOff = SharedMemory.Allocate<int>(4 * TileP);
        var sW = SharedMemory.Allocate<float>(4 * TileP);
        var sG = SharedMemory.Allocate<float>(ChannelBlock * TileP);
        int tid = Group.IdxX, cbs = Group.DimX;
        int C = sp.C;
        int nCb = (C + cbs - 1) / cbs;
        int n = Grid.IdxX / nCb, k = Grid.IdxY;
        int c0 = (Grid.IdxX - n * nCb) * cbs, c = c0 + tid;
        int P = sp.Hout * sp.Wout;
        long plane = (long)sp.H * sp.W;
        int nCorner = sp.Mode == 1 ? 1 : 4;
        int pBegin = k * sp.ChunkPoints;
        int pEnd = P - pBegin < sp.ChunkPoints ? P : pBegin + sp.ChunkPoints;
        long gin = k * sp.ChunkStride + ((long)n * C + c) * plane;
        for (int t0 = pBegin; t0 < pEnd; t0 += TileP)
        {
            int count = pEnd - t0 < TileP ? pEnd - t0 : TileP;
            for (int i = tid; i < TileP; i += cbs)
            {
                SamplePoint s = default;
                s.O0 = -1; s.O1 = -1; s.O2 = -1; s.O3 = -1;
                if (i < count) s = Resolve(grid, theta, sp, n, t0 + i);
                sOff[i] = s.O0; sOff[TileP + i] = s.O1; sOff[2 * TileP + i] = s.O2; sOff[3 * TileP + i] = s.O3;
                sW[i] = s.W0; sW[TileP + i] = s.W1; sW[2 * TileP + i] = s.W2; sW[3 * TileP + i] = s.W3;
            }
            for (int idx = tid; idx < cbs * TileP; idx += cbs)
            {
                int r = idx / TileP, q = idx - r * TileP;
                sG[idx] = c0 + r < C && q < count ? gradOut[((long)n * C + c0 + r) * P + t0 + q] : 0.0f;
            }
            Group.Barrier();
            if (c < C)
            {
                for (int i = 0; i < count; i++)
                {
                    float g = sG[tid * TileP + i];
                    for (int j = 0; j < nCorner; j++)
                    {
                        int o = sOff[j * TileP + i];
                        if (o >= 0) dst[gin + o] += sW[j * TileP + i] * g;
                    }
                }
            }
            Group.Barrier();
        }
    }

    /// <summary>Opt-in atomic grad_input scatter (nondeterministic summation order): one thread per (point p, image n), float
    /// atomic adds into grad_input (zeroed by the host); the point is resolved once for all channels. <typeparamref name="TAdd"/>
    /// is <see cref="NativeFloatAdd"/> on GPUs (one red.global.add.f32) and <see cref="BitwiseCasFloatAdd"/> on ILGPU's CPU
    /// simulator.</summary>
    public static void BackwardInputAtomic<TAdd>(Index2D index, ArrayView<float> grid, ArrayView<float> theta, ArrayView<float> gradOut, ArrayView<float> gradInput, SpatialParams sp)
        where TAdd : struct, IFloatAtomicAdd
    {
        TAdd add = default;
        int p = index.X, n = index.Y;
        var s = Resolve(grid, theta, sp, n, p);
        if (s.O0 < 0 && s.O1 < 0 && s.O2 < 0 && s.O3 < 0) return;     // every corner outside the image: nothing to add
        long plane = (long)sp.H * sp.W, P = (long)sp.Hout * sp.Wout;
        long gin = (long)n * sp.C * plane, go = (long)n * sp.C * P + p;
        for (int c = 0; c < sp.C; c++)
        {
            float g = gradOut[go];
            if (s.O0 >= 0) add.Add(gradInput, gin + s.O0, s.W0 * g);
            if (sp.Mode == 0)
            {
                if (s.O1 >= 0) add.Add(gradInput, gin + s.O1, s.W1 * g);
                if (s.O2 >= 0) add.Add(gradInput, gin + s.O2, s.W2 * g);
                if (s.O3 >= 0) add.Add(gradInput, gin + s.O3, s.W3 * g);
            }
            gin += plane;
            go += P;
        }
    }

    /// <summary>grad_input[i] = Σ_k partial[k·len + i] in chunk order (deterministic), one thread per element.</summary>
    public static void SumPartials(Index1D i, ArrayView<float> partial, ArrayView<float> gradInput, int chunks, int len)
    {
        float s = partial[i];
        for (int k = 1; k < chunks; k++) s += partial[(long)k * len + i];
        gradInput[i] = s;
    }
}
