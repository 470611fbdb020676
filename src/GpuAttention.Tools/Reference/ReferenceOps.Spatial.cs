namespace GpuAttention.Reference;

public static partial class ReferenceOps
{
    // Spatial transformer references, in double, transcribed from PyTorch 1.13's ATen
    // (aten/src/ATen/native/GridSampler.h and GridSampler.cpp, the scalar 2-D kernels), with the NaN behaviour of
    // the CPU kernels (clamping maps NaN to 0; bilinear zeros padding gives NaN for a non-finite coordinate).

    /// <summary>affine_grid's base coordinate of index i of n: align ? 2i/(n−1) − 1 : (2i+1)/n − 1; 0 when n = 1.</summary>
    public static double AffineBase(int i, int n, bool align) =>
        n <= 1 ? 0.0 : align ? 2.0 * i / (n - 1) - 1.0 : (2.0 * i + 1.0) / n - 1.0;

    /// <summary>affine_grid forward: grid [N, H, W, 2] from theta [N, 2, 3].</summary>
    public static double[] AffineGrid(ReadOnlySpan<double> theta, int N, int H, int W, bool align)
    {
        var g = new double[(long)N * H * W * 2];
        for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++)
        for (int w = 0; w < W; w++)
        {
            double x = AffineBase(w, W, align), y = AffineBase(h, H, align);
            long o = (((long)n * H + h) * W + w) * 2;
            for (int i = 0; i < 2; i++)
                g[o + i] = theta[n * 6 + i * 3] * x + theta[n * 6 + i * 3 + 1] * y + theta[n * 6 + i * 3 + 2];
        }
        return g;
    }

    /// <summary>affine_grid backward: grad_theta [N, 2, 3] from grad_grid [N, H, W, 2].</summary>
    public static double[] AffineGridBackward(ReadOnlySpan<double> gradGrid, int N, int H, int W, bool align)
    {
        var t = new double[N * 6];
        for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++)
        for (int w = 0; w < W; w++)
        {
            double x = AffineBase(w, W, align), y = AffineBase(h, H, align);
            long o = (((long)n * H + h) * W + w) * 2;
            for (int i = 0; i < 2; i++)
            {
                t[n * 6 + i * 3] += gradGrid[(int)(o + i)] * x;
                t[n * 6 + i * 3 + 1] += gradGrid[(int)(o + i)] * y;
                t[n * 6 + i * 3 + 2] += gradGrid[(int)(o + i)];
            }
        }
        return t;
    }

    /// <summary>Clamp to [0, size−1]; NaN becomes 0. d = 0 at and beyond the borders (PyTorch: "borders are considered out of bounds").</summary>
    private static double Clip(double x, int size, out double d)
    {
        double max = size - 1;
        if (x <= 0) { d = 0; return 0; }
        if (x >= max) { d = 0; return max; }
        if (double.IsNaN(x)) { d = 0; return 0; }
        d = 1; return x;
    }

    /// <summary>PyTorch's reflect_coordinates(_set_grad): reflect into [twiceLow/2, twiceHigh/2].</summary>
    private static double Reflect(double x, int twiceLow, int twiceHigh, out double d)
    {
        if (twiceLow == twiceHigh) { d = 0; return 0; }
        double min = twiceLow / 2.0, span = (twiceHigh - twiceLow) / 2.0;
        x -= min;
        double sign = 1;
        if (x < 0) { sign = -1; x = -x; }
        double extra = x % span;                       // C fmod: NaN for ±∞ and NaN
        double flips = Math.Floor(x / span);
        if (flips % 2 == 0) { d = sign; return extra + min; }
        d = -sign; return span - extra + min;
    }

    /// <summary>
    /// grid_sampler_compute_source_index(_set_grad): normalised coordinate → pixel coordinate for an axis of
    /// <paramref name="size"/> pixels; <paramref name="d"/> = d(pixel)/d(coordinate).
    /// </summary>
    public static double SourceIndex(double coord, int size, GridSamplePadding padding, bool align, out double d)
    {
        double x;
        if (align) { d = (size - 1) / 2.0; x = (coord + 1) / 2 * (size - 1); }
        else { d = size / 2.0; x = ((coord + 1) * size - 1) / 2; }
        if (padding == GridSamplePadding.Border)
        {
            x = Clip(x, size, out double dc); d *= dc;
        }
        else if (padding == GridSamplePadding.Reflection)
        {
            x = align ? Reflect(x, 0, 2 * (size - 1), out double dr) : Reflect(x, -1, 2 * size - 1, out dr);
            x = Clip(x, size, out double dc);
            d *= dr * dc;
        }
        return x;
    }

    private static bool Inside(double x, double y, int H, int W) => x >= 0 && x <= W - 1 && y >= 0 && y <= H - 1;

    /// <summary>grid_sample forward (4-D): out [N, C, Hout, Wout] from input [N, C, H, W] and grid [N, Hout, Wout, 2].</summary>
    public static double[] GridSample(ReadOnlySpan<double> input, ReadOnlySpan<double> grid, int N, int C, int H, int W, int Hout, int Wout, GridSampleOptions o)
    {
        var outp = new double[(long)N * C * Hout * Wout];
        long P = (long)Hout * Wout;
        for (int n = 0; n < N; n++)
        for (long p = 0; p < P; p++)
        {
            double ix = SourceIndex(grid[(int)((n * P + p) * 2)], W, o.Padding, o.AlignCorners, out _);
            double iy = SourceIndex(grid[(int)((n * P + p) * 2 + 1)], H, o.Padding, o.AlignCorners, out _);
            for (int c = 0; c < C; c++)
            {
                long img = ((long)n * C + c) * H * W;
                double v = 0;
                if (o.Mode == GridSampleMode.Nearest)
                {
                    double xn = Math.Round(ix, MidpointRounding.ToEven), yn = Math.Round(iy, MidpointRounding.ToEven);
                    if (Inside(xn, yn, H, W)) v = input[(int)(img + (long)yn * W + (long)xn)];
                }
                else
                {
                    double x0 = Math.Floor(ix), y0 = Math.Floor(iy);
                    double ax = ix - x0, ay = iy - y0;
                    for (int k = 0; k < 4; k++)
                    {
                        double cx = x0 + (k & 1), cy = y0 + (k >> 1);
                        double wgt = ((k & 1) == 1 ? ax : 1 - ax) * ((k >> 1) == 1 ? ay : 1 - ay);
                        double val = Inside(cx, cy, H, W) ? input[(int)(img + (long)cy * W + (long)cx)] : 0.0;
                        v += wgt * val;   // a non-finite coordinate gives NaN weights, hence NaN (PyTorch CPU)
                    }
                }
                outp[(n * C + c) * P + p] = v;
            }
        }
        return outp;
    }

    /// <summary>grid_sample backward (4-D): grad_input [N, C, H, W] and grad_grid [N, Hout, Wout, 2] (PyTorch's scalar formulas).</summary>
    public static (double[] GradInput, double[] GradGrid) GridSampleBackward(ReadOnlySpan<double> input, ReadOnlySpan<double> grid, ReadOnlySpan<double> gradOut,
        int N, int C, int H, int W, int Hout, int Wout, GridSampleOptions o)
    {
        var gi = new double[(long)N * C * H * W];
        var gg = new double[(long)N * Hout * Wout * 2];
        long P = (long)Hout * Wout;
        for (int n = 0; n < N; n++)
        for (long p = 0; p < P; p++)
        {
            double ix = SourceIndex(grid[(int)((n * P + p) * 2)], W, o.Padding, o.AlignCorners, out double mx);
            double iy = SourceIndex(grid[(int)((n * P + p) * 2 + 1)], H, o.Padding, o.AlignCorners, out double my);
            double gx = 0, gy = 0;
            for (int c = 0; c < C; c++)
            {
                long img = ((long)n * C + c) * H * W;
                double g = gradOut[(int)((n * C + c) * P + p)];
                if (o.Mode == GridSampleMode.Nearest)
                {
                    double xn = Math.Round(ix, MidpointRounding.ToEven), yn = Math.Round(iy, MidpointRounding.ToEven);
                    if (Inside(xn, yn, H, W)) gi[img + (long)yn * W + (long)xn] += g;
                    continue;
                }
                double x0 = Math.Floor(ix), y0 = Math.Floor(iy);
                double ax = ix - x0, ay = iy - y0;
                for (int k = 0; k < 4; k++)
                {
                    double cx = x0 + (k & 1), cy = y0 + (k >> 1);
                    double wxk = (k & 1) == 1 ? ax : 1 - ax, wyk = (k >> 1) == 1 ? ay : 1 - ay;
                    double val = 0;
                    if (Inside(cx, cy, H, W))
                    {
                        long idx = img + (long)cy * W + (long)cx;
                        gi[idx] += wxk * wyk * g;
                        val = input[(int)idx];
                    }
                    // An outside corner reads 0 but still multiplies the other axis' weight, as PyTorch 1.13's (vectorised) CPU
                    // kernel: a non-finite x gives a NaN y-gradient (its weight wx is NaN) and a zero x-gradient, and vice versa.
                    gx += ((k & 1) == 1 ? 1 : -1) * wyk * val * g;
                    gy += ((k >> 1) == 1 ? 1 : -1) * wxk * val * g;
                }
            }
            gg[(n * P + p) * 2] = mx * gx;
            gg[(n * P + p) * 2 + 1] = my * gy;
        }
        return (gi, gg);
    }

    /// <summary>Converts float data to double (for the float32 tensors the ops take).</summary>
    public static double[] ToDouble(ReadOnlySpan<float> a)
    {
        var d = new double[a.Length];
        for (int i = 0; i < a.Length; i++) d[i] = a[i];
        return d;
    }
}
