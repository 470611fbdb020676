// Spatial transformer: affine_grid and grid_sample (forward and backward), PyTorch 1.13 semantics
// (aten/src/ATen/native/GridSampler.h), and the fused transform-and-sample path where the sampling point of
// output pixel p is computed from theta in registers instead of being read from a grid in memory.
//
// Written in the prelude's words only (OpenCL C 1.2 and CUDA via NVRTC).
//
// Layout: input [N,C,H,W], grid [N,Hout,Wout,2] (x, y), theta [N,2,3], out / grad_out [N,C,Hout,Wout].
// P = Hout * Wout output points per image.
//
// mode (0 bilinear, 1 nearest), padding (0 zeros, 1 border, 2 reflection) and align (align_corners 0 / 1) are
// kernel arguments, uniform over a launch: one program serves every configuration (one compile per device).
//
// Compile-time defines:
//   CB       most channels per work-group in the grad_input scatter (its work-group size, LSZ(0) <= CB; default 64)
//   TILE_P   output points staged in local memory per step of the scatter (default 64)
//   RED_WG   work-group size of the affine_grid backward reduction, a power of two (default 64)
//
// Determinism: no atomics anywhere except in grid_sample_backward_input_atomic, the opt-in nondeterministic scatter. grad_input is a scatter; work-item c of a work-group owns channel plane c of one
// image and walks the points of its chunk in order, writing into the chunk's private partial copy of grad_input;
// grid_sample_sum_partials then adds the chunks in chunk order. The chunking is chosen on the host from the shape
// and the device only, so a result is bit-for-bit repeatable on a device.

#ifndef CB
#define CB 64
#endif
#ifndef TILE_P
#define TILE_P 64
#endif
#ifndef RED_WG
#define RED_WG 64
#endif

// affine_grid's base coordinate of index i of n (0 for n == 1).
INLINE float affine_base(int i, int n, int align)
{
    if (n <= 1) return 0.0f;
    return align ? 2.0f * (float)i / (float)(n - 1) - 1.0f : (2.0f * (float)i + 1.0f) / (float)n - 1.0f;
}

// Clamp to [0, size-1]; NaN -> 0; derivative 0 at and beyond the borders (as PyTorch).
INLINE float clip_coord(float x, int size, float* d)
{
    float mx = (float)(size - 1);
    if (!(x > 0.0f)) { *d = 0.0f; return 0.0f; }
    if (x >= mx) { *d = 0.0f; return mx; }
    return x;
}

// PyTorch's reflect_coordinates_set_grad with min = twice_low / 2, span = (twice_high - twice_low) / 2.
INLINE float reflect_coord(float x, float mn, float span, float* d)
{
    if (span <= 0.0f) { *d = 0.0f; return 0.0f; }
    if (!(FABS(x) < POS_INF)) return NAN_F;          // fmod(+-inf) and NaN: NaN, clipped to 0 afterwards
    x -= mn;
    if (x < 0.0f) { *d = -*d; x = -x; }
    float extra = FMOD(x, span);
    float flips = FLOOR(x / span);
    if (flips - 2.0f * FLOOR(flips * 0.5f) == 0.0f) return extra + mn;
    *d = -*d;
    return span - extra + mn;
}

// Normalised coordinate -> pixel coordinate on an axis of `size` pixels (unnormalised, then padded); *d = d(pixel)/d(coordinate).
INLINE float source_index(float coord, int size, int padding, int align, float* d)
{
    *d = align ? (float)(size - 1) * 0.5f : (float)size * 0.5f;
    float x = align ? (coord + 1.0f) * 0.5f * (float)(size - 1) : ((coord + 1.0f) * (float)size - 1.0f) * 0.5f;
    if (padding == 1) {
        x = clip_coord(x, size, d);
    } else if (padding == 2) {
        x = align ? reflect_coord(x, 0.0f, (float)(size - 1), d) : reflect_coord(x, -0.5f, (float)size, d);
        x = clip_coord(x, size, d);
    }
    return x;
}

// floor/round result as an int in [-2, size+1]; NaN -> -2 (outside the image).
INLINE int safe_index(float f, int size)
{
    return f >= -2.0f ? (f <= (float)(size + 1) ? (int)f : size + 1) : -2;
}

// The normalised (x, y) of output point p of image n: from the grid, or from theta (fused path).
INLINE void load_point(GLOBAL const float* grid, GLOBAL const float* theta, int use_theta, int align,
                       int n, int64 p, int64 P, int Hout, int Wout, float* gx, float* gy)
{
    if (use_theta) {
        int oh = (int)(p / Wout), ow = (int)(p - (int64)oh * Wout);
        float bx = affine_base(ow, Wout, align), by = affine_base(oh, Hout, align);
        GLOBAL const float* t = theta + (int64)n * 6;
        *gx = t[0] * bx + t[1] * by + t[2];
        *gy = t[3] * bx + t[4] * by + t[5];
    } else {
        GLOBAL const float* g = grid + ((int64)n * P + p) * 2;
        *gx = g[0];
        *gy = g[1];
    }
}

// Corners of a sampling point: offsets inside the image plane, weights and in-image flags.
// Nearest uses corner 0 with weight 1. Out-of-image corners get offset 0 and flag 0.
INLINE void corners(int mode, float ix, float iy, int H, int W, int* off, float* wt, int* in, float* ax_out, float* ay_out)
{
    if (mode == 1) {
    int xn = safe_index(ROUND(ix), W), yn = safe_index(ROUND(iy), H);
    int inside = xn >= 0 && xn < W && yn >= 0 && yn < H;
    off[0] = inside ? yn * W + xn : 0; in[0] = inside; wt[0] = 1.0f;
    *ax_out = 0.0f; *ay_out = 0.0f;
    for (int k = 1; k < 4; k++) { off[k] = 0; in[k] = 0; wt[k] = 0.0f; }
    return;
    }
    float fx = FLOOR(ix), fy = FLOOR(iy);
    float ax = ix - fx, ay = iy - fy;
    int x0 = safe_index(fx, W), y0 = safe_index(fy, H);
    for (int k = 0; k < 4; k++) {
        int cx = x0 + (k & 1), cy = y0 + (k >> 1);
        int inside = cx >= 0 && cx < W && cy >= 0 && cy < H;
        off[k] = inside ? cy * W + cx : 0;
        in[k] = inside;
        wt[k] = ((k & 1) ? ax : 1.0f - ax) * ((k >> 1) ? ay : 1.0f - ay);
    }
    *ax_out = ax; *ay_out = ay;
}

// Output point p of image n resolved: its corners (as corners gives them), the bilinear fractions and d(pixel)/d(coordinate).
INLINE void resolve_point(GLOBAL const float* grid, GLOBAL const float* theta, int use_theta, int mode, int padding, int align,
                          int n, int64 p, int64 P, int H, int W, int Hout, int Wout,
                          int* off, float* wt, int* in, float* ax, float* ay, float* dx, float* dy)
{
    float gx, gy;
    load_point(grid, theta, use_theta, align, n, p, P, Hout, Wout, &gx, &gy);
    const float ix = source_index(gx, W, padding, align, dx), iy = source_index(gy, H, padding, align, dy);
    corners(mode, ix, iy, H, W, off, wt, in, ax, ay);
}

// ---------------------------------------------------------------- affine_grid

// Global [roundup(H*W, LSZ(0)), N]: one work-item per grid point.
KERNEL affine_grid_forward(GLOBAL const float* RESTRICT theta, GLOBAL float* RESTRICT grid, int H, int W, int align)
{
    const int64 p = (int64)GRP(0) * LSZ(0) + LID(0);
    const int n = GRP(1);
    if (p >= (int64)H * W) return;
    const int h = (int)(p / W), w = (int)(p - (int64)h * W);
    const float x = affine_base(w, W, align), y = affine_base(h, H, align);
    GLOBAL const float* t = theta + (int64)n * 6;
    GLOBAL float* g = grid + ((int64)n * H * W + p) * 2;
    g[0] = t[0] * x + t[1] * y + t[2];
    g[1] = t[3] * x + t[4] * y + t[5];
}

// Global [RED_WG, N], local [RED_WG, 1]: one work-group per image; each work-item sums a strided subset of the
// points in order, then a fixed tree reduction in local memory (deterministic).
KERNEL affine_grid_backward(GLOBAL const float* RESTRICT grad_grid, GLOBAL float* RESTRICT grad_theta, int H, int W, int align)
{
    LOCAL_ARRAY(float, red, 6 * RED_WG);
    const int tid = LID(0);
    const int n = GRP(1);
    const int64 P = (int64)H * W;
    GLOBAL const float* g = grad_grid + (int64)n * P * 2;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f, s4 = 0.0f, s5 = 0.0f;
    for (int64 p = tid; p < P; p += RED_WG) {
        const int h = (int)(p / W), w = (int)(p - (int64)h * W);
        const float x = affine_base(w, W, align), y = affine_base(h, H, align);
        const float g0 = g[2 * p], g1 = g[2 * p + 1];
        s0 += g0 * x; s1 += g0 * y; s2 += g0;
        s3 += g1 * x; s4 += g1 * y; s5 += g1;
    }
    red[tid] = s0; red[RED_WG + tid] = s1; red[2 * RED_WG + tid] = s2;
    red[3 * RED_WG + tid] = s3; red[4 * RED_WG + tid] = s4; red[5 * RED_WG + tid] = s5;
    BARRIER();
    for (int stride = RED_WG / 2; stride > 0; stride /= 2) {
        if (tid < stride)
            for (int j = 0; j < 6; j++) red[j * RED_WG + tid] += red[j * RED_WG + tid + stride];
        BARRIER();
    }
    if (tid < 6) grad_theta[(int64)n * 6 + tid] = red[tid * RED_WG];
}

// ---------------------------------------------------------------- grid_sample

// Global [roundup(P, LSZ(0)), N]: one work-item per output point; the point is resolved once and reused for all
// C channels (C outputs per work-item, coalesced across work-items).
KERNEL grid_sample_forward(GLOBAL const float* RESTRICT input, GLOBAL const float* RESTRICT grid,
                           GLOBAL const float* RESTRICT theta, GLOBAL float* RESTRICT out,
                           int C, int H, int W, int Hout, int Wout, int use_theta, int mode, int padding, int align)
{
    const int64 P = (int64)Hout * Wout;
    const int64 p = (int64)GRP(0) * LSZ(0) + LID(0);
    const int n = GRP(1);
    if (p >= P) return;
    int off[4]; float wt[4]; int in[4]; float ax, ay, dx, dy;
    resolve_point(grid, theta, use_theta, mode, padding, align, n, p, P, H, W, Hout, Wout, off, wt, in, &ax, &ay, &dx, &dy);
    const int64 plane = (int64)H * W;
    GLOBAL const float* src = input + (int64)n * C * plane;
    GLOBAL float* dst = out + (int64)n * C * P + p;
    const int ncorner = mode == 1 ? 1 : 4;
    for (int c = 0; c < C; c++) {
        float acc = 0.0f;
        for (int k = 0; k < ncorner; k++) {
            const float v = in[k] ? src[off[k]] : 0.0f;
            acc += wt[k] * v;          // a non-finite coordinate gives NaN weights, hence NaN (as PyTorch)
        }
        dst[(int64)c * P] = acc;
        src += plane;
    }
}

// grad_grid (or, fused, the grid gradient into scratch): global as the forward. Sums over channels in order.
KERNEL grid_sample_backward_grid(GLOBAL const float* RESTRICT input, GLOBAL const float* RESTRICT grid,
                                 GLOBAL const float* RESTRICT theta, GLOBAL const float* RESTRICT grad_out,
                                 GLOBAL float* RESTRICT grad_grid, int C, int H, int W, int Hout, int Wout, int use_theta, int mode, int padding, int align)
{
    const int64 P = (int64)Hout * Wout;
    const int64 p = (int64)GRP(0) * LSZ(0) + LID(0);
    const int n = GRP(1);
    if (p >= P) return;
    GLOBAL float* gg = grad_grid + ((int64)n * P + p) * 2;
    if (mode == 1) {
        gg[0] = 0.0f;
        gg[1] = 0.0f;
        return;
    }
    int off[4]; float wt[4]; int in[4]; float ax, ay, dx, dy;
    resolve_point(grid, theta, use_theta, mode, padding, align, n, p, P, H, W, Hout, Wout, off, wt, in, &ax, &ay, &dx, &dy);
    const int64 plane = (int64)H * W;
    GLOBAL const float* src = input + (int64)n * C * plane;
    GLOBAL const float* go = grad_out + (int64)n * C * P + p;
    float sx = 0.0f, sy = 0.0f;
    for (int c = 0; c < C; c++) {
        const float g = go[(int64)c * P];
        const float v0 = in[0] ? src[off[0]] : 0.0f, v1 = in[1] ? src[off[1]] : 0.0f;
        const float v2 = in[2] ? src[off[2]] : 0.0f, v3 = in[3] ? src[off[3]] : 0.0f;
        sx += g * ((v1 - v0) * (1.0f - ay) + (v3 - v2) * ay);
        sy += g * ((v2 - v0) * (1.0f - ax) + (v3 - v1) * ax);
        src += plane;
    }
    gg[0] = sx * dx;
    gg[1] = sy * dy;
}

// grad_input scatter into chunk k's partial copy: global [nCb * cb, N, K], local [cb, 1, 1], cb <= CB.
// Work-item c = GRP(0) * cb + LID(0) owns channel plane c of image n. Per step the work-group resolves TILE_P
// points into local memory and stages the matching grad_out tile [cb][TILE_P] with coalesced loads; then each
// work-item scatters its channel's contributions for the tile's points in order.
// dst = partial + k * chunk_stride (chunk_stride = N*C*H*W; 0 when K == 1 and dst is grad_input itself).
KERNEL grid_sample_backward_input(GLOBAL const float* RESTRICT grid, GLOBAL const float* RESTRICT theta,
                                  GLOBAL const float* RESTRICT grad_out, GLOBAL float* RESTRICT dst,
                                  int C, int H, int W, int Hout, int Wout, int use_theta, int mode, int padding, int align,
                                  int64 chunk_points, int64 chunk_stride)
{
    LOCAL_ARRAY(int, s_off, 4 * TILE_P);
    LOCAL_ARRAY(float, s_w, 4 * TILE_P);
    LOCAL_ARRAY(float, s_g, CB * TILE_P);

    const int tid = LID(0);
    const int cbs = LSZ(0);                      // channels of this work-group, <= CB
    const int c0 = GRP(0) * cbs;
    const int c = c0 + tid;
    const int n = GRP(1);
    const int k = GRP(2);
    const int64 P = (int64)Hout * Wout;
    const int64 plane = (int64)H * W;
    const int ncorner = mode == 1 ? 1 : 4;
    const int64 pBegin = (int64)k * chunk_points;
    const int64 pEnd = pBegin + chunk_points < P ? pBegin + chunk_points : P;
    GLOBAL float* gin = dst + (int64)k * chunk_stride + ((int64)n * C + c) * plane;

    for (int64 t0 = pBegin; t0 < pEnd; t0 += TILE_P) {
        const int count = pEnd - t0 < TILE_P ? (int)(pEnd - t0) : TILE_P;
        for (int i = tid; i < TILE_P; i += cbs) {
            int off[4]; float wt[4]; int in[4];
            for (int j = 0; j < 4; j++) { off[j] = 0; wt[j] = 0.0f; in[j] = 0; }
            if (i < count) {
                float ax, ay, dx, dy;
                resolve_point(grid, theta, use_theta, mode, padding, align, n, t0 + i, P, H, W, Hout, Wout, off, wt, in, &ax, &ay, &dx, &dy);
            }
            for (int j = 0; j < ncorner; j++) {
                s_off[j * TILE_P + i] = in[j] ? off[j] : -1;   // -1: corner outside the image, nothing to add
                s_w[j * TILE_P + i] = wt[j];
            }
        }
        for (int idx = tid; idx < cbs * TILE_P; idx += cbs) {
            const int r = idx / TILE_P, q = idx - r * TILE_P;
            s_g[idx] = (c0 + r < C && q < count) ? grad_out[((int64)n * C + c0 + r) * P + t0 + q] : 0.0f;
        }
        BARRIER();
        if (c < C) {
            for (int i = 0; i < count; i++) {
                const float g = s_g[tid * TILE_P + i];
                for (int j = 0; j < ncorner; j++) {
                    const int o = s_off[j * TILE_P + i];
                    if (o >= 0) gin[o] += s_w[j * TILE_P + i] * g;
                }
            }
        }
        BARRIER();
    }
}

// Opt-in atomic grad_input scatter (nondeterministic summation order): global [roundup(P, LSZ(0)), N], one work-item per
// (image n, output point p). The point is resolved once, then for every channel its contributions go straight into
// grad_input (zeroed by the host) with ATOMIC_ADD_F. No partial copies and no second pass; the grid gradient is unaffected.
KERNEL grid_sample_backward_input_atomic(GLOBAL const float* RESTRICT grid, GLOBAL const float* RESTRICT theta,
                                         GLOBAL const float* RESTRICT grad_out, GLOBAL float* grad_input,
                                         int C, int H, int W, int Hout, int Wout, int use_theta, int mode, int padding, int align)
{
    const int64 P = (int64)Hout * Wout;
    const int64 p = (int64)GRP(0) * LSZ(0) + LID(0);
    const int n = GRP(1);
    if (p >= P) return;
    int off[4]; float wt[4]; int in[4]; float ax, ay, dx, dy;
    resolve_point(grid, theta, use_theta, mode, padding, align, n, p, P, H, W, Hout, Wout, off, wt, in, &ax, &ay, &dx, &dy);
    const int ncorner = mode == 1 ? 1 : 4;
    int any = 0;
    for (int j = 0; j < ncorner; j++) any |= in[j];
    if (!any) return;                            // every corner outside the image: nothing to add
    const int64 plane = (int64)H * W;
    GLOBAL float* gin = grad_input + (int64)n * C * plane;
    GLOBAL const float* go = grad_out + (int64)n * C * P + p;
    for (int c = 0; c < C; c++) {
        const float g = go[(int64)c * P];
        for (int j = 0; j < ncorner; j++)
            if (in[j]) ATOMIC_ADD_F(gin + off[j], wt[j] * g);
        gin += plane;
    }
}

// grad_input = sum over the K chunk partials, in chunk order. Global [roundup(len, LSZ(0))].
KERNEL grid_sample_sum_partials(GLOBAL const float* RESTRICT partial, GLOBAL float* RESTRICT grad_input, int K, int64 len)
{
    const int64 i = (int64)GRP(0) * LSZ(0) + LID(0);
    if (i >= len) return;
    float s = partial[i];
    for (int k = 1; k < K; k++) s += partial[(int64)k * len + i];
    grad_input[i] = s;
}
