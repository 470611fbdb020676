using System.Numerics;
using System.Runtime.CompilerServices;

namespace GpuAttention.Backends.Cpu;

/// <summary>
/// Separable Gaussian glimpse on the CPU. Work items are (image n, chunk of channels) spread over all cores; each builds
/// image n's two filterbanks once into thread-local scratch (O(H·h + W·w) exps) and runs both products per channel with
/// register-blocked <see cref="Vector{T}"/> FMAs, in the cheaper order for the shape. The backward accumulates dAy, dAx
/// per work item and reduces them in a fixed order (deterministic), then goes through the normalisation per image.
/// </summary>
internal sealed unsafe partial class CpuBackend : IGlimpseBackend
{
    [ThreadStatic] private static float[]? t_glimpseScratch;

    private static float* GlimpseScratch(long need, out float[] pin)
    {
        var s = t_glimpseScratch;
        if (s is null || s.Length < need) t_glimpseScratch = s = GC.AllocateUninitializedArray<float>((int)Math.Max(need, 4096), pinned: true);
        pin = s;
        return (float*)Unsafe.AsPointer(ref s[0]);
    }

    /// <summary>Channels per work item so that there are about 4 items per core (filterbanks are rebuilt per item).</summary>
    private static int ChannelChunks(in GlimpseShape s)
    {
        int want = 4 * Environment.ProcessorCount;
        int chunks = (int)Math.Min(s.C, Math.Max(1, (want + s.N - 1) / s.N));
        return Math.Max(1, chunks);
    }

    /// <summary>
    /// Normalised filter weights below this are stored as 0 (as kernels/glimpse.cl does): products of two such weights would
    /// be denormal floats, which cost ~100 cycles each on x86 (a 9× slowdown measured at σ = 2). A column sums to 1 unless the
    /// whole Gaussian lies ~10σ outside the image, so the outputs change by at most ~size·1e-15 relative.
    /// </summary>
    internal const float FilterFlush = 1e-15f;

    /// <summary>Builds A[c, r] (row-major [size, m]) for one axis; the same float formula as the kernels.</summary>
    internal static void Filterbank(float* a, int size, int m, float u, float s, float d)
    {
        for (int r = 0; r < m; r++)
        {
            float mu = u + r * d, z = 0;
            for (int c = 0; c < size; c++)
            {
                float t = (c - mu) / s;
                float e = MathF.Exp(-0.5f * t * t);
                a[(long)c * m + r] = e;
                z += e;
            }
            float inv = 1f / (z + 1e-8f);
            for (int c = 0; c < size; c++)
            {
                float v = a[(long)c * m + r] * inv;
                a[(long)c * m + r] = v < FilterFlush ? 0f : v;
            }
        }
    }

    /// <summary>What a glimpse work item reads (Gamma, GradLogGamma: null when absent).</summary>
    private struct GlimpseCtx
    {
        public GlimpseShape S;
        public float* Image, Params, Gamma, Out, GradOut, GradImage, GradParams, GradLogGamma, Partials;
        public long Part;                 // floats of one backward item's partial (dAy, then dAx)
        public int Chunks, Per;           // channel chunks per image, channels per chunk
        public bool XFirst;
    }

    // Backward partials of every work item (grow-only, per calling thread).
    [ThreadStatic] private static float[]? t_glimpsePartials;

    public void GlimpseForward(in GlimpseForwardArgs a)
    {
        var s = a.Shape;
        int chunks = ChannelChunks(s);
        var ctx = new GlimpseCtx
        {
            S = s, Image = Ptr(a.Image), Params = Ptr(a.Params), Gamma = Ptr(a.Gamma), Out = Ptr(a.Out),
            Chunks = chunks, Per = (s.C + chunks - 1) / chunks, XFirst = s.XFirst,
        };
        CpuWorkers.For(WorkItems((long)s.N * chunks, "glimpse work items"), &GlimpseForwardItem, &ctx);
    }

    /// <summary>Work item (image n, chunk of channels): builds the filterbanks, then both products per channel.</summary>
    private static void GlimpseForwardItem(void* pctx, int item)
    {
        ref readonly GlimpseCtx c = ref *(GlimpseCtx*)pctx;
        ref readonly GlimpseShape s = ref c.S;
        int chunks = c.Chunks, per = c.Per;
        int n = item / chunks, c0 = item % chunks * per, c1 = Math.Min(s.C, c0 + per);
        if (c0 >= c1) return;
        int H = s.H, W = s.W, h = s.Gh, w = s.Gw;
        float* ay = GlimpseScratch((long)H * h + (long)W * w + Math.Max((long)h * W, (long)H * w), out var pin);
        float* ax = ay + (long)H * h, tmp = ax + (long)W * w;
        float* p = c.Params + n * 6;
        Filterbank(ay, H, h, p[0], p[1], p[2]);
        Filterbank(ax, W, w, p[3], p[4], p[5]);
        float g = c.Gamma == null ? 1f : c.Gamma[n];
        for (int ch = c0; ch < c1; ch++)
        {
            float* im = c.Image + ((long)n * s.C + ch) * H * W;
            float* o = c.Out + ((long)n * s.C + ch) * h * w;
            if (c.XFirst)
            {
                MatMul(im, W, 1, ax, w, tmp, w, H, w, W, 1f, false);      // T = img·Ax        [H, w]
                MatMul(ay, 1, h, tmp, w, o, w, h, w, H, g, false);        // out = γ·Ayᵀ·T     [h, w]
            }
            else
            {
                MatMul(ay, 1, h, im, W, tmp, W, h, W, H, 1f, false);      // U = Ayᵀ·img       [h, W]
                MatMul(tmp, W, 1, ax, w, o, w, h, w, W, g, false);        // out = γ·U·Ax      [h, w]
            }
        }
        GC.KeepAlive(pin);
    }

    public void GlimpseBackward(in GlimpseBackwardArgs a)
    {
        var s = a.Shape;
        int chunks = ChannelChunks(s);
        long part = (long)s.Gh * s.H + (long)s.W * s.Gw;      // dAy (y-first: transposed [h, H]; x-first: [H, h]) then dAx [W, w] per work item
        int items = WorkItems((long)s.N * chunks, "glimpse work items");
        var ctx = new GlimpseCtx
        {
            S = s, Image = Ptr(a.Image), Params = Ptr(a.Params), Gamma = Ptr(a.Gamma), GradOut = Ptr(a.GradOut),
            GradImage = Ptr(a.GradImage), GradParams = Ptr(a.GradParams), GradLogGamma = Ptr(a.GradLogGamma),
            Partials = GrowScratch(ref t_glimpsePartials, items * part),
            Part = part, Chunks = chunks, Per = (s.C + chunks - 1) / chunks, XFirst = s.BackwardXFirst,
        };
        CpuWorkers.For(items, &GlimpseBackwardItem, &ctx);
        CpuWorkers.For(s.N, &GlimpseBackwardParamsItem, &ctx);
    }

    /// <summary>Work item (image n, chunk of channels): grad_image of its channels, and its partial dAy, dAx.</summary>
    private static void GlimpseBackwardItem(void* pctx, int item)
    {
        ref readonly GlimpseCtx c = ref *(GlimpseCtx*)pctx;
        ref readonly GlimpseShape s = ref c.S;
        int H = s.H, W = s.W, h = s.Gh, w = s.Gw;
        int chunks = c.Chunks, per = c.Per;
        long part = c.Part;
        int n = item / chunks, c0 = item % chunks * per, c1 = Math.Min(s.C, c0 + per);
        float* dayT = c.Partials + item * part, dax = dayT + (long)h * H;
        new Span<float>(dayT, (int)part).Clear();
        if (c0 >= c1) return;
        long fb = (long)H * h + (long)W * w;
        float* ay = GlimpseScratch(fb + (long)w * W + 2 * Math.Max((long)h * W, (long)H * w), out var pin);
        float* ax = ay + (long)H * h, axT = ax + (long)W * w, v = axT + (long)w * W, u = v + Math.Max((long)h * W, (long)H * w);
        float* p = c.Params + n * 6;
        Filterbank(ay, H, h, p[0], p[1], p[2]);
        Filterbank(ax, W, w, p[3], p[4], p[5]);
        for (int x = 0; x < W; x++)
            for (int j = 0; j < w; j++) axT[(long)j * W + x] = ax[(long)x * w + j];
        float g = c.Gamma == null ? 1f : c.Gamma[n];
        for (int ch = c0; ch < c1; ch++)
        {
            float* im = c.Image + ((long)n * s.C + ch) * H * W;
            float* gOut = c.GradOut + ((long)n * s.C + ch) * h * w;
            float* gIm = c.GradImage + ((long)n * s.C + ch) * H * W;
            if (c.XFirst)
            {
                float* pm = v, tm = v + (long)H * w;
                MatMul(ay, h, 1, gOut, w, pm, w, H, w, h, g, false);   // P = γ·Ay·G           [H, w]
                MatMul(pm, w, 1, axT, W, gIm, W, H, W, w, 1f, false);  // grad_img = P·Axᵀ     [H, W]
                MatMul(im, 1, W, pm, w, dax, w, W, w, H, 1f, true);    // dAx += imgᵀ·P        [W, w]
                MatMul(im, W, 1, ax, w, tm, w, H, w, W, g, false);     // T = γ·img·Ax         [H, w]
                MatMulABt(tm, gOut, dayT, h, H, h, w);                 // dAy += T·Gᵀ          [H, h]
            }
            else
            {
                MatMul(gOut, w, 1, axT, W, v, W, h, W, w, g, false);   // V = γ·G·Axᵀ          [h, W]
                MatMul(ay, h, 1, v, W, gIm, W, H, W, h, 1f, false);    // grad_img = Ay·V      [H, W]
                MatMulABt(v, im, dayT, H, h, H, W);                    // dAyᵀ += V·imgᵀ       [h, H]
                MatMul(ay, 1, h, im, W, u, W, h, W, H, 1f, false);     // U = Ayᵀ·img          [h, W]
                MatMul(u, 1, W, gOut, w, dax, w, W, w, h, g, true);    // dAx += γ·Uᵀ·G        [W, w]
            }
        }
        GC.KeepAlive(pin);
    }

    /// <summary>Work item n: sums image n's partials in chunk order (deterministic), then grad_params and ∂L/∂log γ of image n.</summary>
    private static void GlimpseBackwardParamsItem(void* pctx, int n)
    {
        ref readonly GlimpseCtx c = ref *(GlimpseCtx*)pctx;
        ref readonly GlimpseShape s = ref c.S;
        int H = s.H, W = s.W, h = s.Gh, w = s.Gw;
        int chunks = c.Chunks;
        long part = c.Part;
        float* total = GlimpseScratch(part + (long)H * h + (long)W * w, out var pin);
        float* ay = total + part, ax = ay + (long)H * h;
        var tot = new Span<float>(total, (int)part);
        new ReadOnlySpan<float>(c.Partials + (long)n * chunks * part, (int)part).CopyTo(tot);
        for (int k = 1; k < chunks; k++)
            System.Numerics.Tensors.TensorPrimitives.Add(tot, new ReadOnlySpan<float>(c.Partials + ((long)n * chunks + k) * part, (int)part), tot);
        float* p = c.Params + n * 6;
        Filterbank(ay, H, h, p[0], p[1], p[2]);
        Filterbank(ax, W, w, p[3], p[4], p[5]);
        float* dp = c.GradParams + n * 6;
        // y-first holds dAy transposed ([h, H]: element (c, r) at r*H + c); x-first as [H, h].
        float sy = c.XFirst
            ? FilterbankBackward(ay, total, h, 1, H, h, p[0], p[1], p[2], out dp[0], out dp[1], out dp[2])
            : FilterbankBackward(ay, total, 1, H, H, h, p[0], p[1], p[2], out dp[0], out dp[1], out dp[2]);
        FilterbankBackward(ax, total + (long)h * H, w, 1, W, w, p[3], p[4], p[5], out dp[3], out dp[4], out dp[5]);
        if (c.GradLogGamma != null) c.GradLogGamma[n] = sy;
        GC.KeepAlive(pin);
    }

    /// <summary>
    /// Gradients of one axis's (u, s, d) from dA (element (c, r) at c·dcs + r·drs) and A ([size, m]); returns Σ_r Σ_c dA∘A
    /// (= ∂L/∂log γ when the forward was scaled by γ).
    /// </summary>
    private static float FilterbankBackward(float* A, float* dA, long dcs, long drs, int size, int m, float u, float s, float d,
        out float du, out float ds, out float dd)
    {
        double gu = 0, gs = 0, gd = 0, total = 0;
        for (int r = 0; r < m; r++)
        {
            float s1 = 0;
            for (int c = 0; c < size; c++) s1 += dA[c * dcs + r * drs] * A[(long)c * m + r];
            total += s1;
            float mu = u + r * d, dmu = 0, dsr = 0;
            for (int c = 0; c < size; c++)
            {
                float av = A[(long)c * m + r];
                if (av == 0f) continue;   // e underflowed: e·t → 0, while t itself may overflow (tiny s, huge d): no 0·∞
                float t = (c - mu) / s;
                float ge = av * (dA[c * dcs + r * drs] - s1) * t;
                dmu += ge;
                dsr += ge * t;
            }
            gu += dmu; gd += (double)r * dmu; gs += dsr;
        }
        du = (float)(gu / s); ds = (float)(gs / s); dd = (float)(gd / s);
        return (float)total;
    }

    /// <summary>
    /// C[i, :] = alpha·Σ_k A(i, k)·B[k, :] (+ C when <paramref name="accumulate"/>), i &lt; M, columns &lt; N, k &lt; K, with A(i, k) at
    /// a[i·rsA + k·csA] (any strides: A is read one scalar at a time) and B, C row-major with leading dims ldb, ldc.
    /// Register-blocked: 4 rows × 2 vectors of columns per pass, each B row load shared by the 4 rows.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void MatMul(float* a, long rsA, long csA, float* b, long ldb, float* c, long ldc, int M, int N, int K, float alpha, bool accumulate)
    {
        int V = Vector<float>.Count;
        int nv2 = N - N % (2 * V), nv = N - N % V;
        var al = new Vector<float>(alpha);
        int i = 0;
        for (; i + 4 <= M; i += 4)
        {
            float* a0 = a + i * rsA, a1 = a0 + rsA, a2 = a1 + rsA, a3 = a2 + rsA;
            float* c0 = c + i * ldc, c1 = c0 + ldc, c2 = c1 + ldc, c3 = c2 + ldc;
            int j = 0;
            for (; j < nv2; j += 2 * V)
            {
                Vector<float> x0 = default, x1 = default, x2 = default, x3 = default, y0 = default, y1 = default, y2 = default, y3 = default;
                for (int k = 0; k < K; k++)
                {
                    float* br = b + k * ldb + j;
                    var b0 = Vector.Load(br); var b1 = Vector.Load(br + V);
                    long ko = k * csA;
                    var s0 = new Vector<float>(a0[ko]); var s1 = new Vector<float>(a1[ko]);
                    var s2 = new Vector<float>(a2[ko]); var s3 = new Vector<float>(a3[ko]);
                    x0 = Vector.FusedMultiplyAdd(s0, b0, x0); y0 = Vector.FusedMultiplyAdd(s0, b1, y0);
                    x1 = Vector.FusedMultiplyAdd(s1, b0, x1); y1 = Vector.FusedMultiplyAdd(s1, b1, y1);
                    x2 = Vector.FusedMultiplyAdd(s2, b0, x2); y2 = Vector.FusedMultiplyAdd(s2, b1, y2);
                    x3 = Vector.FusedMultiplyAdd(s3, b0, x3); y3 = Vector.FusedMultiplyAdd(s3, b1, y3);
                }
                Store(c0 + j, x0 * al, accumulate); Store(c0 + j + V, y0 * al, accumulate);
                Store(c1 + j, x1 * al, accumulate); Store(c1 + j + V, y1 * al, accumulate);
                Store(c2 + j, x2 * al, accumulate); Store(c2 + j + V, y2 * al, accumulate);
                Store(c3 + j, x3 * al, accumulate); Store(c3 + j + V, y3 * al, accumulate);
            }
            for (; j < nv; j += V)
            {
                Vector<float> x0 = default, x1 = default, x2 = default, x3 = default;
                for (int k = 0; k < K; k++)
                {
                    var b0 = Vector.Load(b + k * ldb + j);
                    long ko = k * csA;
                    x0 = Vector.FusedMultiplyAdd(new Vector<float>(a0[ko]), b0, x0);
                    x1 = Vector.FusedMultiplyAdd(new Vector<float>(a1[ko]), b0, x1);
                    x2 = Vector.FusedMultiplyAdd(new Vector<float>(a2[ko]), b0, x2);
                    x3 = Vector.FusedMultiplyAdd(new Vector<float>(a3[ko]), b0, x3);
                }
                Store(c0 + j, x0 * al, accumulate); Store(c1 + j, x1 * al, accumulate);
                Store(c2 + j, x2 * al, accumulate); Store(c3 + j, x3 * al, accumulate);
            }
            for (; j < N; j++)
            {
                float x0 = 0, x1 = 0, x2 = 0, x3 = 0;
                for (int k = 0; k < K; k++)
                {
                    float bv = b[k * ldb + j];
                    long ko = k * csA;
                    x0 += a0[ko] * bv; x1 += a1[ko] * bv; x2 += a2[ko] * bv; x3 += a3[ko] * bv;
                }
                c0[j] = alpha * x0 + (accumulate ? c0[j] : 0); c1[j] = alpha * x1 + (accumulate ? c1[j] : 0);
                c2[j] = alpha * x2 + (accumulate ? c2[j] : 0); c3[j] = alpha * x3 + (accumulate ? c3[j] : 0);
            }
        }
        for (; i < M; i++)
        {
            float* ar = a + i * rsA;
            float* cr = c + i * ldc;
            int j = 0;
            for (; j < nv; j += V)
            {
                Vector<float> x0 = default;
                for (int k = 0; k < K; k++) x0 = Vector.FusedMultiplyAdd(new Vector<float>(ar[k * csA]), Vector.Load(b + k * ldb + j), x0);
                Store(cr + j, x0 * al, accumulate);
            }
            for (; j < N; j++)
            {
                float x0 = 0;
                for (int k = 0; k < K; k++) x0 += ar[k * csA] * b[k * ldb + j];
                cr[j] = alpha * x0 + (accumulate ? cr[j] : 0);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(float* p, Vector<float> x, bool accumulate)
    {
        if (accumulate) x += Vector.Load(p);
        x.Store(p);
    }

    /// <summary>C[i, j] += Σ_k A[i, k]·B[j, k] (rows contiguous, length K), C row-major [M, ldc]; 4 rows of A share each B row load.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void MatMulABt(float* a, float* b, float* c, long ldc, int M, int N, int K)
    {
        int V = Vector<float>.Count;
        int kv = K - K % V;
        int i = 0;
        for (; i + 4 <= M; i += 4)
        {
            float* a0 = a + (long)i * K, a1 = a0 + K, a2 = a1 + K, a3 = a2 + K;
            for (int j = 0; j < N; j++)
            {
                float* br = b + (long)j * K;
                Vector<float> x0 = default, x1 = default, x2 = default, x3 = default;
                for (int k = 0; k < kv; k += V)
                {
                    var bv = Vector.Load(br + k);
                    x0 = Vector.FusedMultiplyAdd(Vector.Load(a0 + k), bv, x0);
                    x1 = Vector.FusedMultiplyAdd(Vector.Load(a1 + k), bv, x1);
                    x2 = Vector.FusedMultiplyAdd(Vector.Load(a2 + k), bv, x2);
                    x3 = Vector.FusedMultiplyAdd(Vector.Load(a3 + k), bv, x3);
                }
                float s0 = Vector.Sum(x0), s1 = Vector.Sum(x1), s2 = Vector.Sum(x2), s3 = Vector.Sum(x3);
                for (int k = kv; k < K; k++)
                {
                    float bv = br[k];
                    s0 += a0[k] * bv; s1 += a1[k] * bv; s2 += a2[k] * bv; s3 += a3[k] * bv;
                }
                c[i * ldc + j] += s0; c[(i + 1) * ldc + j] += s1; c[(i + 2) * ldc + j] += s2; c[(i + 3) * ldc + j] += s3;
            }
        }
        for (; i < M; i++)
            for (int j = 0; j < N; j++)
                c[i * ldc + j] += System.Numerics.Tensors.TensorPrimitives.Dot(new ReadOnlySpan<float>(a + (long)i * K, K), new ReadOnlySpan<float>(b + (long)j * K, K));
    }

    public void DrawParams(in DrawParamsArgs a)
    {
        var s = a.Shape;
        float* d = Ptr(a.Draw), p = Ptr(a.Params), g = Ptr(a.Gamma);
        for (int n = 0; n < s.N; n++)
        {
            float* dn = d + n * 5, pn = p + n * 6;
            float gx = (s.W + 1) * 0.5f * (dn[0] + 1), gy = (s.H + 1) * 0.5f * (dn[1] + 1);
            float sigma = MathF.Exp(0.5f * dn[2]), delta = MathF.Exp(dn[3]);
            float span = Math.Max(s.H, s.W) - 1f;
            float dx = span / Math.Max(s.Gw - 1, 1) * delta, dy = span / Math.Max(s.Gh - 1, 1) * delta;
            pn[0] = gy - 1 - (s.Gh - 1) * 0.5f * dy; pn[1] = sigma; pn[2] = dy;
            pn[3] = gx - 1 - (s.Gw - 1) * 0.5f * dx; pn[4] = sigma; pn[5] = dx;
            g[n] = MathF.Exp(dn[4]);
        }
    }

    public void DrawParamsBackward(in DrawParamsBackwardArgs a)
    {
        var s = a.Shape;
        float* d = Ptr(a.Draw), gp = Ptr(a.GradParams), glg = Ptr(a.GradLogGamma), gd = Ptr(a.GradDraw);
        for (int n = 0; n < s.N; n++)
        {
            float* dn = d + n * 5, g = gp + n * 6, o = gd + n * 5;
            float sigma = MathF.Exp(0.5f * dn[2]), delta = MathF.Exp(dn[3]);
            float span = Math.Max(s.H, s.W) - 1f;
            float dx = span / Math.Max(s.Gw - 1, 1) * delta, dy = span / Math.Max(s.Gh - 1, 1) * delta;
            o[0] = g[3] * (s.W + 1) * 0.5f;
            o[1] = g[0] * (s.H + 1) * 0.5f;
            o[2] = (g[1] + g[4]) * sigma * 0.5f;
            o[3] = (g[5] - (s.Gw - 1) * 0.5f * g[3]) * dx + (g[2] - (s.Gh - 1) * 0.5f * g[0]) * dy;
            o[4] = glg[n];
        }
    }
}
