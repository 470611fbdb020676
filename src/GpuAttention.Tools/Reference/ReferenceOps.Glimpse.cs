namespace GpuAttention.Reference;

public static partial class ReferenceOps
{
    /// <summary>Normalising constant added to each filterbank column sum (Kosiorek's <c>gaussian_mask</c>, CONTRACT.md).</summary>
    public const double GlimpseEpsilon = 1e-8;

    /// <summary>
    /// One axis's filterbank in double: A[c, r] = exp(−½((c − (u + r·d))/s)²) / (Σ_c exp(…) + 1e-8), c &lt; <paramref name="size"/>
    /// (image axis), r &lt; <paramref name="glimpse"/>. Returned row-major [size, glimpse].
    /// </summary>
    public static double[] GlimpseFilterbank(int size, int glimpse, double u, double s, double d)
    {
        var a = new double[(long)size * glimpse];
        for (int r = 0; r < glimpse; r++)
        {
            double mu = u + r * d, z = 0;
            for (int c = 0; c < size; c++)
            {
                double t = (c - mu) / s;
                double e = Math.Exp(-0.5 * t * t);
                a[(long)c * glimpse + r] = e;
                z += e;
            }
            z += GlimpseEpsilon;
            for (int c = 0; c < size; c++) a[(long)c * glimpse + r] /= z;
        }
        return a;
    }

    /// <summary>
    /// Separable Gaussian glimpse forward in double: out[n, ch] = γ[n]·Ayᵀ·image[n, ch]·Ax, image [N, C, H, W],
    /// params [N, 6] = (uy, sy, dy, ux, sx, dx), out [N, C, h, w]; <paramref name="gamma"/> [N] is optional (1 when null).
    /// </summary>
    public static double[] GlimpseForward(float[] image, float[] param, int N, int C, int H, int W, int h, int w, float[]? gamma = null) =>
        GlimpseForward(image, ToDouble(param), N, C, H, W, h, w, gamma is null ? null : ToDouble(gamma));

    /// <inheritdoc cref="GlimpseForward(float[], float[], int, int, int, int, int, int, float[])"/>
    public static double[] GlimpseForward(float[] image, double[] param, int N, int C, int H, int W, int h, int w, double[]? gamma = null)
    {
        var o = new double[(long)N * C * h * w];
        var u = new double[(long)h * W];
        for (int n = 0; n < N; n++)
        {
            var (ay, ax) = Filterbanks(param, n, H, W, h, w);
            double g = gamma is null ? 1 : gamma[n];
            for (int ch = 0; ch < C; ch++)
            {
                long io = ((long)n * C + ch) * H * W;
                Array.Clear(u);
                for (int i = 0; i < h; i++)
                    for (int y = 0; y < H; y++)
                        for (int x = 0; x < W; x++)
                            u[(long)i * W + x] += ay[(long)y * h + i] * image[io + (long)y * W + x];
                long oo = ((long)n * C + ch) * h * w;
                for (int i = 0; i < h; i++)
                    for (int j = 0; j < w; j++)
                    {
                        double acc = 0;
                        for (int x = 0; x < W; x++) acc += u[(long)i * W + x] * ax[(long)x * w + j];
                        o[oo + (long)i * w + j] = g * acc;
                    }
            }
        }
        return o;
    }

    /// <summary>
    /// Glimpse backward in double, derived by hand (see docs on <c>Device.GlimpseBackward</c>):
    /// grad_image = γ·Ay·G·Axᵀ; dAy = γ Σ_ch img·Ax·Gᵀ, dAx = γ Σ_ch imgᵀ·Ay·G; then through the normalisation,
    /// g·e = A ∘ (dA − Σ_c dA∘A) per column, dμ_r = Σ_c g·e·t / s, ds = Σ_r Σ_c g·e·t² / s with t = (c − μ_r)/s,
    /// du = Σ_r dμ_r, dd = Σ_r r·dμ_r. Also returns dL/d(log γ) = Σ grad_out ∘ out per image.
    /// </summary>
    public static (double[] GradImage, double[] GradParams, double[] GradLogGamma) GlimpseBackward(float[] image, float[] param, float[] gradOut,
        int N, int C, int H, int W, int h, int w, float[]? gamma = null) =>
        GlimpseBackward(image, ToDouble(param), gradOut, N, C, H, W, h, w, gamma is null ? null : ToDouble(gamma));

    /// <inheritdoc cref="GlimpseBackward(float[], float[], float[], int, int, int, int, int, int, float[])"/>
    public static (double[] GradImage, double[] GradParams, double[] GradLogGamma) GlimpseBackward(float[] image, double[] param, float[] gradOut,
        int N, int C, int H, int W, int h, int w, double[]? gamma = null)
    {
        var gi = new double[(long)N * C * H * W];
        var gp = new double[(long)N * 6];
        var glg = new double[N];
        var fwd = GlimpseForward(image, param, N, C, H, W, h, w, gamma);
        for (long i = 0; i < fwd.Length; i++) glg[i / ((long)C * h * w)] += gradOut[i] * fwd[i];
        var v = new double[(long)h * W];   // G·Axᵀ
        var p = new double[(long)H * w];   // Ay·G
        for (int n = 0; n < N; n++)
        {
            var (ay, ax) = Filterbanks(param, n, H, W, h, w);
            double g = gamma is null ? 1 : gamma[n];
            var day = new double[(long)H * h];
            var dax = new double[(long)W * w];
            for (int ch = 0; ch < C; ch++)
            {
                long io = ((long)n * C + ch) * H * W, go = ((long)n * C + ch) * h * w;
                Array.Clear(v); Array.Clear(p);
                for (int i = 0; i < h; i++)
                    for (int x = 0; x < W; x++)
                        for (int j = 0; j < w; j++)
                            v[(long)i * W + x] += g * gradOut[go + (long)i * w + j] * ax[(long)x * w + j];
                for (int y = 0; y < H; y++)
                    for (int j = 0; j < w; j++)
                        for (int i = 0; i < h; i++)
                            p[(long)y * w + j] += g * ay[(long)y * h + i] * gradOut[go + (long)i * w + j];
                for (int y = 0; y < H; y++)
                    for (int x = 0; x < W; x++)
                    {
                        double acc = 0;
                        for (int i = 0; i < h; i++) acc += ay[(long)y * h + i] * v[(long)i * W + x];
                        gi[io + (long)y * W + x] = acc;
                    }
                // dAy[y, i] = Σ_x img[y, x]·V[i, x];  dAx[x, j] = Σ_y img[y, x]·P[y, j]
                for (int y = 0; y < H; y++)
                    for (int x = 0; x < W; x++)
                    {
                        double im = image[io + (long)y * W + x];
                        for (int i = 0; i < h; i++) day[(long)y * h + i] += im * v[(long)i * W + x];
                        for (int j = 0; j < w; j++) dax[(long)x * w + j] += im * p[(long)y * w + j];
                    }
            }
            var (duy, dsy, ddy) = FilterbankBackward(ay, day, H, h, param[n * 6], param[n * 6 + 1], param[n * 6 + 2]);
            var (dux, dsx, ddx) = FilterbankBackward(ax, dax, W, w, param[n * 6 + 3], param[n * 6 + 4], param[n * 6 + 5]);
            gp[n * 6] = duy; gp[n * 6 + 1] = dsy; gp[n * 6 + 2] = ddy;
            gp[n * 6 + 3] = dux; gp[n * 6 + 4] = dsx; gp[n * 6 + 5] = ddx;
        }
        return (gi, gp, glg);
    }

    private static (double Du, double Ds, double Dd) FilterbankBackward(double[] a, double[] da, int size, int glimpse, double u, double s, double d)
    {
        double du = 0, ds = 0, dd = 0;
        for (int r = 0; r < glimpse; r++)
        {
            double s1 = 0;
            for (int c = 0; c < size; c++) s1 += da[(long)c * glimpse + r] * a[(long)c * glimpse + r];
            double mu = u + r * d, dmu = 0;
            for (int c = 0; c < size; c++)
            {
                double t = (c - mu) / s;
                double ge = a[(long)c * glimpse + r] * (da[(long)c * glimpse + r] - s1);   // dL/de · e
                dmu += ge * t / s;     // de/dμ = e·t/s
                ds += ge * t * t / s;  // de/ds = e·t²/s
            }
            du += dmu;
            dd += r * dmu;
        }
        return (du, ds, dd);
    }

    private static (double[] Ay, double[] Ax) Filterbanks(double[] p, int n, int H, int W, int h, int w) =>
        (GlimpseFilterbank(H, h, p[n * 6], p[n * 6 + 1], p[n * 6 + 2]), GlimpseFilterbank(W, w, p[n * 6 + 3], p[n * 6 + 4], p[n * 6 + 5]));

    /// <summary>
    /// DRAW's read parametrisation (Gregor et al. 2015, arXiv:1502.04623, §3.2) in double: draw [N, 5] =
    /// (g̃X, g̃Y, log σ², log δ̃, log γ) → glimpse params [N, 6] and γ [N]. Paper coordinates are 1-based
    /// (pixel a = 1..A, filter i = 1..N): gX = (W+1)/2·(g̃X+1), μX_i = gX + (i − w/2 − 0.5)·δX, so in the
    /// 0-based pixels of the glimpse uX = gX − 1 − (w−1)/2·δX, dX = δX = (max(H,W) − 1)/max(w − 1, 1)·exp(log δ̃)
    /// (the paper's square N generalised per axis), sX = sY = exp(log σ² / 2), γ = exp(log γ); y likewise with H, h.
    /// </summary>
    public static (double[] Params, double[] Gamma) DrawParams(float[] draw, int N, int H, int W, int h, int w)
    {
        var p = new double[N * 6];
        var g = new double[N];
        for (int n = 0; n < N; n++)
        {
            double gx = (W + 1) / 2.0 * (draw[n * 5] + 1), gy = (H + 1) / 2.0 * (draw[n * 5 + 1] + 1);
            double sigma = Math.Exp(draw[n * 5 + 2] / 2.0), delta = Math.Exp(draw[n * 5 + 3]);
            double dx = (Math.Max(H, W) - 1.0) / Math.Max(w - 1, 1) * delta, dy = (Math.Max(H, W) - 1.0) / Math.Max(h - 1, 1) * delta;
            p[n * 6] = gy - 1 - (h - 1) / 2.0 * dy; p[n * 6 + 1] = sigma; p[n * 6 + 2] = dy;
            p[n * 6 + 3] = gx - 1 - (w - 1) / 2.0 * dx; p[n * 6 + 4] = sigma; p[n * 6 + 5] = dx;
            g[n] = Math.Exp(draw[n * 5 + 4]);
        }
        return (p, g);
    }

    /// <summary>DRAW read in double: out = γ·glimpse(image, DrawParams(draw)), [N, C, h, w].</summary>
    public static double[] DrawRead(float[] image, float[] draw, int N, int C, int H, int W, int h, int w)
    {
        var (p, g) = DrawParams(draw, N, H, W, h, w);
        return GlimpseForward(image, p, N, C, H, W, h, w, g);
    }

    /// <summary>DRAW read backward in double: grad_image and grad_draw [N, 5] through the glimpse and the mapping.</summary>
    public static (double[] GradImage, double[] GradDraw) DrawReadBackward(float[] image, float[] draw, float[] gradOut, int N, int C, int H, int W, int h, int w)
    {
        var (p, g) = DrawParams(draw, N, H, W, h, w);
        var (gi, gp, glg) = GlimpseBackward(image, p, gradOut, N, C, H, W, h, w, g);
        var gd = new double[N * 5];
        for (int n = 0; n < N; n++)
        {
            double sigma = p[n * 6 + 1], dy = p[n * 6 + 2], dx = p[n * 6 + 5];
            double duy = gp[n * 6], dsy = gp[n * 6 + 1], ddy = gp[n * 6 + 2], dux = gp[n * 6 + 3], dsx = gp[n * 6 + 4], ddx = gp[n * 6 + 5];
            gd[n * 5] = dux * (W + 1) / 2.0;
            gd[n * 5 + 1] = duy * (H + 1) / 2.0;
            gd[n * 5 + 2] = (dsy + dsx) * sigma / 2;
            gd[n * 5 + 3] = (ddx - (w - 1) / 2.0 * dux) * dx + (ddy - (h - 1) / 2.0 * duy) * dy;
            gd[n * 5 + 4] = glg[n];
        }
        return (gi, gd);
    }

}
