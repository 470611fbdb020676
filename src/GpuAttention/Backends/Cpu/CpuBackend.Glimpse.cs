using System.Numerics;
using System.Runtime.CompilerServices;

namespace GpuAttention.Backends.Cpu;

/// <summary>
/// Separable Gaussian glimpse on the CPU. Work items are (image n, chunk of channels) spread over all cores; each builds
/// image n's two filterbanks once into thread-local scratch (O(H·h + W·w) vectorised exps) with the bands of their nonzero
/// weights, and runs both products per channel with register-blocked <see cref="Vector{T}"/> FMAs over those bands only
/// (a Gaussian of σ 1–2 px covers ~30 of 128 pixels: the products skip most multiply-adds), in the order with fewer banded
/// multiply-adds. The backward accumulates dAyᵀ, dAxᵀ per work item and reduces them in a fixed order (deterministic), then
/// goes through the normalisation per image.
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

    /// <summary>
    /// Builds A[c, r] (row-major [size, m]) for one axis: the contract's formula, one row r at a time in
    /// <paramref name="row"/> (size floats) with vectorised exps (<see cref="System.Numerics.Tensors.TensorPrimitives.Exp(ReadOnlySpan{float}, Span{float})"/>).
    /// </summary>
    internal static void Filterbank(float* a, int size, int m, float u, float s, float d, float* row)
    {
        int V = Vector<float>.Count;
        var span = new Span<float>(row, size);
        var iota = Vector<float>.Indices;
        for (int r = 0; r < m; r++)
        {
            float mu = u + r * d;
            var vmu = new Vector<float>(mu);
            var vs = new Vector<float>(s);
            var half = new Vector<float>(-0.5f);
            int c = 0;
            for (; c + V <= size; c += V)
            {
                var t = (iota + new Vector<float>(c) - vmu) / vs;
                (half * t * t).Store(row + c);
            }
            for (; c < size; c++)
            {
                float t = (c - mu) / s;
                row[c] = -0.5f * t * t;
            }
            System.Numerics.Tensors.TensorPrimitives.Exp(span, span);
            float inv = 1f / (System.Numerics.Tensors.TensorPrimitives.Sum<float>(span) + 1e-8f);
            for (c = 0; c < size; c++)
            {
                float v = row[c] * inv;
                a[(long)c * m + r] = v < FilterFlush ? 0f : v;
            }
        }
    }

    /// <summary>
    /// The bands of nonzero weights of A ([size, m]): per glimpse row r, <paramref name="byOut"/>[2r..2r+1] = [lo, hi) over c
    /// holding every nonzero (NaN counts) A[c, r]; per image row c, <paramref name="byIn"/>[2c..2c+1] the same over r; (0, 0)
    /// when there is none. A Gaussian of σ ≲ size/16 is nonzero on a small part of the image (weights below
    /// <see cref="FilterFlush"/> are stored as 0), so the products below skip most of their multiply-adds. Returns false when A
    /// holds a NaN (the products then run dense, so that the NaN reaches what a dense product reaches).
    /// </summary>
    private static bool FilterBands(float* a, int size, int m, int* byOut, int* byIn)
    {
        new Span<int>(byOut, 2 * m).Clear();
        bool noNaN = true;
        for (int c = 0; c < size; c++)
        {
            float* row = a + (long)c * m;
            int lo = 0, hi = 0;
            for (int r = 0; r < m; r++)
            {
                float v = row[r];
                if (v == 0f) continue;       // NaN != 0: inside the band
                noNaN &= !float.IsNaN(v);
                if (hi == 0) lo = r;
                hi = r + 1;
                if (byOut[2 * r + 1] == 0) byOut[2 * r] = c;
                byOut[2 * r + 1] = c + 1;
            }
            byIn[2 * c] = lo; byIn[2 * c + 1] = hi;
        }
        return noNaN;
    }

    /// <summary>Intersects [lo, hi) with the union of the non-empty bands i0 ≤ i &lt; i1 (empty when all are empty).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void BandUnion(int* band, int i0, int i1, ref int lo, ref int hi)
    {
        int l = int.MaxValue, h = 0;
        for (int i = i0; i < i1; i++)
        {
            int a = band[2 * i], b = band[2 * i + 1];
            if (a < b) { l = Math.Min(l, a); h = Math.Max(h, b); }
        }
        if (l >= h) { lo = 0; hi = 0; return; }
        lo = Math.Max(lo, l); hi = Math.Min(hi, h);
    }

    /// <summary>Σ over blocks of <paramref name="blk"/> consecutive bands of (union length × bands in the block): the multiply-adds per
    /// unit of the other dimension of a product banded as <see cref="MatMul"/> blocks it.</summary>
    private static double BlockedSpan(int* band, int n, int blk)
    {
        double t = 0;
        for (int i = 0; i < n; i += blk)
        {
            int e = Math.Min(n, i + blk), lo = 0, hi = int.MaxValue;
            BandUnion(band, i, e, ref lo, ref hi);
            t += (double)(hi - lo) * (e - i);
        }
        return t;
    }

    /// <summary>Image n's two filterbanks and the bands of their nonzero weights (<see cref="FilterBands"/>), in scratch.</summary>
    private struct Filters
    {
        public float* Ay, Ax;                     // [H, h], [W, w]
        public int* AyOut, AyIn, AxOut, AxIn;     // bands by glimpse row (over image rows) and by image row (over glimpse rows)
        public bool NoNaN;

        /// <summary>Floats of scratch <see cref="Build"/> uses.</summary>
        public static long Floats(in GlimpseShape s) => (long)s.H * s.Gh + (long)s.W * s.Gw + Math.Max(s.H, s.W) + 2L * (s.H + s.W + s.Gh + s.Gw);

        public static Filters Build(float* at, in GlimpseShape s, float* p)
        {
            int H = s.H, W = s.W, h = s.Gh, w = s.Gw;
            Filters f;
            f.Ay = at; f.Ax = at + (long)H * h;
            float* row = f.Ax + (long)W * w;
            f.AyOut = (int*)(row + Math.Max(H, W)); f.AyIn = f.AyOut + 2 * h; f.AxOut = f.AyIn + 2 * H; f.AxIn = f.AxOut + 2 * w;
            Filterbank(f.Ay, H, h, p[0], p[1], p[2], row);
            Filterbank(f.Ax, W, w, p[3], p[4], p[5], row);
            f.NoNaN = FilterBands(f.Ay, H, h, f.AyOut, f.AyIn) & FilterBands(f.Ax, W, w, f.AxOut, f.AxIn);
            return f;
        }

        /// <summary>The forward order with the fewer banded multiply-adds (the shape's dense choice when the bands are unusable).</summary>
        public readonly bool ForwardXFirst(in GlimpseShape s)
        {
            if (!NoNaN) return s.XFirst;
            int V = Vector<float>.Count;
            double y = s.W * BlockedSpan(AyOut, s.Gh, 4) + s.Gh * BlockedSpan(AxOut, s.Gw, V);   // U = Ayᵀ·img, U·Ax
            double x = s.H * BlockedSpan(AxOut, s.Gw, V) + s.Gw * BlockedSpan(AyOut, s.Gh, 4);   // T = img·Ax, Ayᵀ·T
            return x < y;
        }

        /// <summary>The backward order with the fewer banded multiply-adds (see <see cref="GlimpseBackwardItem"/>).</summary>
        public readonly bool BackwardXFirst(in GlimpseShape s)
        {
            if (!NoNaN) return s.BackwardXFirst;
            int V = Vector<float>.Count;
            double y = s.Gh * BlockedSpan(AxIn, s.W, V) + s.W * BlockedSpan(AyIn, s.H, 4) + 2.0 * s.W * BlockedSpan(AyOut, s.Gh, 4)
                + s.Gh * BlockedSpan(AxOut, s.Gw, 4);
            double x = s.Gw * BlockedSpan(AyIn, s.H, 4) + s.H * BlockedSpan(AxIn, s.W, V) + s.H * BlockedSpan(AxOut, s.Gw, 4)
                + s.H * BlockedSpan(AxOut, s.Gw, V) + s.Gw * BlockedSpan(AyOut, s.Gh, 4);
            return x < y;
        }
    }

    /// <summary>What a glimpse work item reads (Gamma, GradLogGamma: null when absent).</summary>
    private struct GlimpseCtx
    {
        public GlimpseShape S;
        public float* Image, Params, Gamma, Out, GradOut, GradImage, GradParams, GradLogGamma, Partials;
        public long Part;                 // floats of one backward item's partial (dAyᵀ [h, H], then dAxᵀ [w, W])
        public int Chunks, Per;           // channel chunks per image, channels per chunk
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
            Chunks = chunks, Per = (s.C + chunks - 1) / chunks,
        };
        CpuWorkers.For(WorkItems((long)s.N * chunks, "glimpse work items"), &GlimpseForwardItem, &ctx);
    }

    /// <summary>
    /// Work item (image n, chunk of channels): builds the filterbanks and their bands, then both products per channel, each
    /// over the bands of nonzero weights only. A channel whose image (or first product) holds a non-finite value runs dense,
    /// so that NaN and ∞ spread exactly as through a dense product (0·∞ = NaN); with finite operands the skipped terms are
    /// exact zeros and the result is the dense one.
    /// </summary>
    private static void GlimpseForwardItem(void* pctx, int item)
    {
        ref readonly GlimpseCtx c = ref *(GlimpseCtx*)pctx;
        ref readonly GlimpseShape s = ref c.S;
        int chunks = c.Chunks, per = c.Per;
        int n = item / chunks, c0 = item % chunks * per, c1 = Math.Min(s.C, c0 + per);
        if (c0 >= c1) return;
        int H = s.H, W = s.W, h = s.Gh, w = s.Gw;
        long fl = Filters.Floats(s);
        float* sc = GlimpseScratch(fl + Math.Max((long)h * W, (long)H * w), out var pin);
        var f = Filters.Build(sc, s, c.Params + n * 6);
        float* tmp = sc + fl;
        bool xFirst = f.ForwardXFirst(s);
        float g = c.Gamma == null ? 1f : c.Gamma[n];
        for (int ch = c0; ch < c1; ch++)
        {
            float* im = c.Image + ((long)n * s.C + ch) * H * W;
            float* o = c.Out + ((long)n * s.C + ch) * h * w;
            bool fin = f.NoNaN && AllFinite(im, (long)H * W);
            if (xFirst)
            {
                MatMul(im, W, 1, f.Ax, w, tmp, w, H, w, W, 1f, false, colK: fin ? f.AxOut : null);              // T = img·Ax      [H, w]
                fin = fin && AllFinite(tmp, (long)H * w);
                MatMul(f.Ay, 1, h, tmp, w, o, w, h, w, H, g, false, rowK: fin ? f.AyOut : null);                // out = γ·Ayᵀ·T   [h, w]
            }
            else
            {
                MatMul(f.Ay, 1, h, im, W, tmp, W, h, W, H, 1f, false, rowK: fin ? f.AyOut : null);              // U = Ayᵀ·img     [h, W]
                fin = fin && AllFinite(tmp, (long)h * W);
                MatMul(tmp, W, 1, f.Ax, w, o, w, h, w, W, g, false, colK: fin ? f.AxOut : null);                // out = γ·U·Ax    [h, w]
            }
        }
        GC.KeepAlive(pin);
    }

    public void GlimpseBackward(in GlimpseBackwardArgs a)
    {
        var s = a.Shape;
        int chunks = ChannelChunks(s);
        long part = (long)s.Gh * s.H + (long)s.Gw * s.W;      // dAyᵀ [h, H] then dAxᵀ [w, W] per work item
        int items = WorkItems((long)s.N * chunks, "glimpse work items");
        var ctx = new GlimpseCtx
        {
            S = s, Image = Ptr(a.Image), Params = Ptr(a.Params), Gamma = Ptr(a.Gamma), GradOut = Ptr(a.GradOut),
            GradImage = Ptr(a.GradImage), GradParams = Ptr(a.GradParams), GradLogGamma = Ptr(a.GradLogGamma),
            Partials = GrowScratch(ref t_glimpsePartials, items * part),
            Part = part, Chunks = chunks, Per = (s.C + chunks - 1) / chunks,
        };
        CpuWorkers.For(items, &GlimpseBackwardItem, &ctx);
        CpuWorkers.For(s.N, &GlimpseBackwardParamsItem, &ctx);
    }

    /// <summary>
    /// Work item (image n, chunk of channels): grad_image of its channels, and its partial dAyᵀ, dAxᵀ, every product over the
    /// bands of nonzero weights (dA only where A is nonzero: the rest is never read), dense for a channel with a non-finite
    /// operand (as <see cref="GlimpseForwardItem"/>).
    /// </summary>
    private static void GlimpseBackwardItem(void* pctx, int item)
    {
        ref readonly GlimpseCtx c = ref *(GlimpseCtx*)pctx;
        ref readonly GlimpseShape s = ref c.S;
        int H = s.H, W = s.W, h = s.Gh, w = s.Gw;
        int chunks = c.Chunks, per = c.Per;
        long part = c.Part;
        int n = item / chunks, c0 = item % chunks * per, c1 = Math.Min(s.C, c0 + per);
        float* dayT = c.Partials + item * part, daxT = dayT + (long)h * H;
        new Span<float>(dayT, (int)part).Clear();
        if (c0 >= c1) return;
        long fl = Filters.Floats(s), mx = Math.Max((long)h * W, (long)H * w);
        float* sc = GlimpseScratch(fl + (long)w * W + 2 * mx, out var pin);
        var f = Filters.Build(sc, s, c.Params + n * 6);
        float* axT = sc + fl, v = axT + (long)w * W, u = v + mx;
        for (int x = 0; x < W; x++)
            for (int j = 0; j < w; j++) axT[(long)j * W + x] = f.Ax[(long)x * w + j];
        bool xFirst = f.BackwardXFirst(s);
        float g = c.Gamma == null ? 1f : c.Gamma[n];
        for (int ch = c0; ch < c1; ch++)
        {
            float* im = c.Image + ((long)n * s.C + ch) * H * W;
            float* gOut = c.GradOut + ((long)n * s.C + ch) * h * w;
            float* gIm = c.GradImage + ((long)n * s.C + ch) * H * W;
            bool fin = f.NoNaN && AllFinite(im, (long)H * W) && AllFinite(gOut, (long)h * w);
            if (xFirst)
            {
                float* pm = v, tm = u;
                MatMul(f.Ay, h, 1, gOut, w, pm, w, H, w, h, g, false, rowK: fin ? f.AyIn : null);         // P = γ·Ay·G           [H, w]
                bool pf = fin && AllFinite(pm, (long)H * w);
                MatMul(pm, w, 1, axT, W, gIm, W, H, W, w, 1f, false, colK: pf ? f.AxIn : null);           // grad_img = P·Axᵀ     [H, W]
                MatMul(pm, 1, w, im, W, daxT, W, w, W, H, 1f, true, rowCols: pf ? f.AxOut : null);        // dAxᵀ += Pᵀ·img       [w, W]
                MatMul(im, W, 1, f.Ax, w, tm, w, H, w, W, g, false, colK: fin ? f.AxOut : null);          // T = γ·img·Ax         [H, w]
                bool tf = fin && AllFinite(tm, (long)H * w);
                MatMulABt(gOut, tm, dayT, H, h, H, w, rowCols: tf ? f.AyOut : null);                      // dAyᵀ += G·Tᵀ         [h, H]
            }
            else
            {
                MatMul(gOut, w, 1, axT, W, v, W, h, W, w, g, false, colK: fin ? f.AxIn : null);           // V = γ·G·Axᵀ          [h, W]
                bool vf = fin && AllFinite(v, (long)h * W);
                MatMul(f.Ay, h, 1, v, W, gIm, W, H, W, h, 1f, false, rowK: vf ? f.AyIn : null);           // grad_img = Ay·V      [H, W]
                MatMulABt(v, im, dayT, H, h, H, W, rowCols: vf ? f.AyOut : null);                         // dAyᵀ += V·imgᵀ       [h, H]
                MatMul(f.Ay, 1, h, im, W, u, W, h, W, H, 1f, false, rowK: fin ? f.AyOut : null);          // U = Ayᵀ·img          [h, W]
                bool uf = fin && AllFinite(u, (long)h * W);
                MatMul(gOut, 1, w, u, W, daxT, W, w, W, h, g, true, rowCols: uf ? f.AxOut : null);        // dAxᵀ += γ·Gᵀ·U       [w, W]
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
        float* total = GlimpseScratch(part + Filters.Floats(s), out var pin);
        var tot = new Span<float>(total, (int)part);
        new ReadOnlySpan<float>(c.Partials + (long)n * chunks * part, (int)part).CopyTo(tot);
        for (int k = 1; k < chunks; k++)
            System.Numerics.Tensors.TensorPrimitives.Add(tot, new ReadOnlySpan<float>(c.Partials + ((long)n * chunks + k) * part, (int)part), tot);
        float* p = c.Params + n * 6;
        var f = Filters.Build(total + part, s, p);
        float* dp = c.GradParams + n * 6;
        // dAyᵀ [h, H]: element (c, r) at r·H + c; dAxᵀ [w, W] likewise.
        float sy = FilterbankBackward(f.Ay, total, 1, H, H, h, p[0], p[1], p[2], out dp[0], out dp[1], out dp[2]);
        FilterbankBackward(f.Ax, total + (long)h * H, 1, W, W, w, p[3], p[4], p[5], out dp[3], out dp[4], out dp[5]);
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
    /// Register-blocked: 4 rows × 2 vectors of columns per pass (× 1 vector when banded by column), each B row load shared by
    /// the 4 rows. Bands (pairs [lo, hi), see <see cref="FilterBands"/>; null = dense): <paramref name="rowK"/> per row i holds
    /// every k with A(i, k) ≠ 0; <paramref name="colK"/> per column j every k with B[k, j] ≠ 0 (a block sums over the
    /// union of its rows' and columns' bands, intersected); <paramref name="rowCols"/> per row i the columns of C wanted (only
    /// with <paramref name="accumulate"/>; the others are left as they are).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void MatMul(float* a, long rsA, long csA, float* b, long ldb, float* c, long ldc, int M, int N, int K, float alpha, bool accumulate,
        int* rowK = null, int* colK = null, int* rowCols = null)
    {
        System.Diagnostics.Debug.Assert(rowCols == null || accumulate);
        int V = Vector<float>.Count;
        var al = new Vector<float>(alpha);
        int i = 0;
        for (; i + 4 <= M; i += 4)
        {
            float* a0 = a + i * rsA, a1 = a0 + rsA, a2 = a1 + rsA, a3 = a2 + rsA;
            float* c0 = c + i * ldc, c1 = c0 + ldc, c2 = c1 + ldc, c3 = c2 + ldc;
            int rk0 = 0, rk1 = K, j = 0, jEnd = N;
            if (rowK != null) BandUnion(rowK, i, i + 4, ref rk0, ref rk1);
            if (rowCols != null) BandUnion(rowCols, i, i + 4, ref j, ref jEnd);
            if (colK == null)
                for (; j + 2 * V <= jEnd; j += 2 * V)
                {
                    Vector<float> x0 = default, x1 = default, x2 = default, x3 = default, y0 = default, y1 = default, y2 = default, y3 = default;
                    for (int k = rk0; k < rk1; k++)
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
            for (; j + V <= jEnd; j += V)
            {
                int k0 = rk0, k1 = rk1;
                if (colK != null) BandUnion(colK, j, j + V, ref k0, ref k1);
                Vector<float> x0 = default, x1 = default, x2 = default, x3 = default;
                for (int k = k0; k < k1; k++)
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
            for (; j < jEnd; j++)
            {
                int k0 = rk0, k1 = rk1;
                if (colK != null) BandUnion(colK, j, j + 1, ref k0, ref k1);
                float x0 = 0, x1 = 0, x2 = 0, x3 = 0;
                for (int k = k0; k < k1; k++)
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
            int rk0 = 0, rk1 = K, j = 0, jEnd = N;
            if (rowK != null) BandUnion(rowK, i, i + 1, ref rk0, ref rk1);
            if (rowCols != null) BandUnion(rowCols, i, i + 1, ref j, ref jEnd);
            for (; j + V <= jEnd; j += V)
            {
                int k0 = rk0, k1 = rk1;
                if (colK != null) BandUnion(colK, j, j + V, ref k0, ref k1);
                Vector<float> x0 = default;
                for (int k = k0; k < k1; k++) x0 = Vector.FusedMultiplyAdd(new Vector<float>(ar[k * csA]), Vector.Load(b + k * ldb + j), x0);
                Store(cr + j, x0 * al, accumulate);
            }
            for (; j < jEnd; j++)
            {
                int k0 = rk0, k1 = rk1;
                if (colK != null) BandUnion(colK, j, j + 1, ref k0, ref k1);
                float x0 = 0;
                for (int k = k0; k < k1; k++) x0 += ar[k * csA] * b[k * ldb + j];
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

    /// <summary>
    /// C[i, j] += Σ_k A[i, k]·B[j, k] (rows contiguous, length K), C row-major [M, ldc]; 4 rows of A share each B row load.
    /// <paramref name="rowCols"/> (null = all): per row i the columns [lo, hi) of C wanted; a 4-row block computes their union.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void MatMulABt(float* a, float* b, float* c, long ldc, int M, int N, int K, int* rowCols = null)
    {
        int V = Vector<float>.Count;
        int kv = K - K % V;
        int i = 0;
        for (; i + 4 <= M; i += 4)
        {
            float* a0 = a + (long)i * K, a1 = a0 + K, a2 = a1 + K, a3 = a2 + K;
            int j = 0, jEnd = N;
            if (rowCols != null) BandUnion(rowCols, i, i + 4, ref j, ref jEnd);
            for (; j < jEnd; j++)
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
        {
            int j = 0, jEnd = N;
            if (rowCols != null) BandUnion(rowCols, i, i + 1, ref j, ref jEnd);
            for (; j < jEnd; j++)
                c[i * ldc + j] += System.Numerics.Tensors.TensorPrimitives.Dot(new ReadOnlySpan<float>(a + (long)i * K, K), new ReadOnlySpan<float>(b + (long)j * K, K));
        }
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
