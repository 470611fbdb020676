namespace GpuAttention.Reference;

/// <summary>The regime of glimpse parameters <see cref="ReferenceInputs.GlimpseParams"/> draws.</summary>
public enum GlimpseParamKind
{
    /// <summary>Centres over the image, σ of about a pixel, strides spreading the glimpse over most of the image.</summary>
    Typical,
    /// <summary>σ of 0.2–0.35 pixel: filters narrower than a pixel.</summary>
    TinySigma,
    /// <summary>σ of 300–800 pixels: flat filters.</summary>
    HugeSigma,
    /// <summary>First centre 6–10 pixels before (even images) or 2–5 past (odd images) the image: filter columns vanish to the 1e-8 guard.</summary>
    Outside,
    /// <summary>The glimpse runs backwards from the last pixel (negative stride).</summary>
    NegativeStride,
}

/// <summary>Random inputs of the regimes the kernels are verified on, shared by the test suite and <c>gpuattention verify</c>.</summary>
public static class ReferenceInputs
{
    /// <summary>Random glimpse parameters [N, 6] = (uy, sy, dy, ux, sx, dx) for images H×W and glimpses h×w in the given regime.</summary>
    public static float[] GlimpseParams(Random rng, int N, int H, int W, int h, int w, GlimpseParamKind kind = GlimpseParamKind.Typical)
    {
        ArgumentNullException.ThrowIfNull(rng);
        var p = new float[N * 6];
        for (int n = 0; n < N; n++)
            for (int axis = 0; axis < 2; axis++)
            {
                int size = axis == 0 ? H : W, m = axis == 0 ? h : w;
                double u = rng.NextDouble() * 0.6 * size - 0.1 * size, s = 0.6 + 2.5 * rng.NextDouble(), d = (0.4 + rng.NextDouble()) * size / Math.Max(m, 2) * 0.8;
                switch (kind)
                {
                    case GlimpseParamKind.TinySigma: s = 0.2 + 0.15 * rng.NextDouble(); break;
                    case GlimpseParamKind.HugeSigma: s = 300 + 500 * rng.NextDouble(); break;
                    case GlimpseParamKind.Outside: u = n % 2 == 0 ? -6 - 4 * rng.NextDouble() : size + 2 + 3 * rng.NextDouble(); s = 2 + 2 * rng.NextDouble(); d = n % 2 == 0 ? 1.2 : 0.3; break;
                    case GlimpseParamKind.NegativeStride: u = size - 1 - 2 * rng.NextDouble(); d = -d; break;
                }
                p[n * 6 + axis * 3] = (float)u; p[n * 6 + axis * 3 + 1] = (float)s; p[n * 6 + axis * 3 + 2] = (float)d;
            }
        return p;
    }

    /// <summary>Random DRAW read inputs [N, 5] = (g̃X, g̃Y, log σ², log δ̃, log γ): centres near the middle, σ² of 1–4.5, δ̃ of 0.37–0.82, γ of 0.6–1.6.</summary>
    public static float[] DrawInputs(Random rng, int N)
    {
        ArgumentNullException.ThrowIfNull(rng);
        var d = new float[N * 5];
        for (int n = 0; n < N; n++)
        {
            d[n * 5] = (float)(rng.NextDouble() - 0.5); d[n * 5 + 1] = (float)(rng.NextDouble() - 0.5);
            d[n * 5 + 2] = (float)(rng.NextDouble() * 1.5); d[n * 5 + 3] = (float)(-1 + rng.NextDouble() * 0.8); d[n * 5 + 4] = (float)(rng.NextDouble() - 0.5);
        }
        return d;
    }
}
