namespace GpuAttention.Diagnostics;

/// <summary>
/// Every public op of <see cref="Device"/> (and <see cref="MultiHeadAttention"/>) on small odd shapes with fixed seeded inputs:
/// each case uploads its inputs, runs the op, downloads every output and disposes every tensor it made. Used by
/// <c>gpuattention soak</c> (all ops in a loop, compared with the first results), by the oclgrind pass of CI (every
/// OpenCL kernel once under the simulator) and by the concurrency tests (parallel callers compared with serial results).
/// The shapes hit the special paths: GQA, masks (broadcast, causal), the L = 1 split-key decode path at two key lengths
/// (scratch reuse and growth), both glimpse multiplication orders, DRAW read, every grid_sample mode and padding.
/// </summary>
internal static class OpWorkload
{
    /// <summary>One case: its name and a function running it on a device, returning every output in a fixed order.</summary>
    public sealed record Case(string Name, Func<Device, float[][]> Run);

    private static float[] R(int seed, long n, float scale = 1f)
    {
        var rng = new Random(seed);
        var a = new float[n];
        for (long i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        return a;
    }

    /// <summary>Runs <paramref name="body"/> with a tracker that disposes every tensor it was given, whatever happens.</summary>
    private static float[][] With(Device d, Func<Func<Tensor, Tensor>, float[][]> body)
    {
        var made = new List<Tensor>();
        try { return body(t => { made.Add(t); return t; }); }
        finally { foreach (var t in made) t.Dispose(); }
    }

    private static Case Sdpa(string name, int B, int Hq, int Hkv, int L, int S, int E, int Ev, bool causal, int[]? mask, int seed) =>
        new(name, d => With(d, T =>
        {
            var q = T(d.Upload(R(seed, (long)B * Hq * L * E), B, Hq, L, E));
            var k = T(d.Upload(R(seed + 1, (long)B * Hkv * S * E), B, Hkv, S, E));
            var v = T(d.Upload(R(seed + 2, (long)B * Hkv * S * Ev), B, Hkv, S, Ev));
            Tensor? m = null;
            if (mask is not null)
            {
                var mb = new bool[Tensor.Product(mask)];
                var rng = new Random(seed + 3);
                for (int i = 0; i < mb.Length; i++) mb[i] = rng.Next(4) != 0;
                m = T(d.UploadMask(mb, mask));
            }
            var opt = new SdpaOptions(causal);
            var (o, lse) = d.Sdpa(q, k, v, m, opt); T(o); T(lse);
            var go = T(d.Upload(R(seed + 4, o.Length), B, Hq, L, Ev));
            var (dq, dk, dv) = d.SdpaBackward(q, k, v, o, lse, go, m, opt); T(dq); T(dk); T(dv);
            return [d.Download(o), d.Download(lse), d.Download(dq), d.Download(dk), d.Download(dv)];
        }));

    /// <summary>Every case, forward and backward.</summary>
    public static IReadOnlyList<Case> Cases { get; } =
    [
        Sdpa("sdpa+bwd gqa mask", 2, 4, 2, 5, 7, 3, 5, false, [2, 1, 5, 7], 10),
        Sdpa("sdpa+bwd causal L>S", 1, 3, 1, 9, 6, 5, 3, true, null, 20),
        Sdpa("sdpa decode S=37", 1, 2, 1, 1, 37, 4, 3, false, [1, 37], 30),
        Sdpa("sdpa decode S=130", 2, 2, 2, 1, 130, 3, 5, false, null, 40),
        new("gemm batched ta tb", d => With(d, T =>
        {
            var a = T(d.Upload(R(50, 3 * 7 * 5), 3, 7, 5));      // aᵀ: [3, K=7, M=5]
            var b = T(d.Upload(R(51, 1 * 9 * 7), 1, 9, 7));      // bᵀ broadcast: [1, N=9, K=7]
            var c = T(d.Upload(R(52, 3 * 5 * 9), 3, 5, 9));
            d.Gemm(a, b, c, transposeA: true, transposeB: true, alpha: 0.5f, beta: 2f);
            var c2 = T(d.Gemm(T(d.Upload(R(53, 11 * 13), 11, 13)), T(d.Upload(R(54, 13 * 3), 13, 3))));
            var c3 = T(d.Allocate(2, 7, 3));                     // c filled on the device, then accumulated into (beta = 1)
            d.Fill(c3, 0.25f);
            d.Gemm(T(d.Upload(R(55, 2 * 7 * 4), 2, 7, 4)), T(d.Upload(R(56, 4 * 3), 4, 3)), c3, beta: 1f);
            return [d.Download(c), d.Download(c2), d.Download(c3)];
        })),
        new("multihead attention", d => With(d, T =>
        {
            using var mha = new MultiHeadAttention(d, 6, 3, bias: true, kdim: 5, vdim: 7, seed: 60);
            var q = T(d.Upload(R(61, 2 * 3 * 6), 2, 3, 6));
            var k = T(d.Upload(R(62, 2 * 4 * 5), 2, 4, 5));
            var v = T(d.Upload(R(63, 2 * 4 * 7), 2, 4, 7));
            using var f = mha.Forward(q, k, v, isCausal: true);
            var go = T(d.Upload(R(64, 2 * 3 * 6), 2, 3, 6));
            using var g = mha.Backward(f, go);
            var outs = new List<float[]> { d.Download(f.Output), d.Download(g.Query), d.Download(g.Key), d.Download(g.Value) };
            foreach (var (_, t) in g.Parameters) outs.Add(d.Download(t));
            return outs.ToArray();
        })),
        Glimpse("glimpse small out", 2, 3, 11, 9, 3, 4, 70),
        Glimpse("glimpse large out", 1, 2, 5, 6, 7, 9, 80),
        new("draw read+bwd", d => With(d, T =>
        {
            var img = T(d.Upload(R(90, 2 * 3 * 7 * 8), 2, 3, 7, 8));
            var draw = T(d.Upload(R(91, 2 * 5, 0.5f), 2, 5));
            var o = T(d.Allocate(2, 3, 3, 5));
            d.DrawRead(img, draw, o);
            var go = T(d.Upload(R(92, o.Length), 2, 3, 3, 5));
            var gi = T(d.Allocate(2, 3, 7, 8)); var gd = T(d.Allocate(2, 5));
            d.DrawReadBackward(img, draw, go, gi, gd);
            return [d.Download(o), d.Download(gi), d.Download(gd)];
        })),
        new("affine_grid+bwd", d => With(d, T =>
        {
            var theta = T(d.Upload(R(100, 3 * 6), 3, 2, 3));
            var g1 = T(d.AffineGrid(theta, 5, 7, alignCorners: false));
            var g2 = T(d.AffineGrid(theta, 1, 3, alignCorners: true));
            var gg = T(d.Upload(R(101, 3 * 5 * 7 * 2), 3, 5, 7, 2));
            var gt = T(d.AffineGridBackward(gg, alignCorners: true));
            return [d.Download(g1), d.Download(g2), d.Download(gt)];
        })),
        GridSample("grid_sample bilinear zeros", GridSampleMode.Bilinear, GridSamplePadding.Zeros, false, 110),
        GridSample("grid_sample bilinear border align", GridSampleMode.Bilinear, GridSamplePadding.Border, true, 120),
        GridSample("grid_sample nearest reflection", GridSampleMode.Nearest, GridSamplePadding.Reflection, false, 130),
        GridSample("grid_sample nearest zeros align", GridSampleMode.Nearest, GridSamplePadding.Zeros, true, 135),
        GridSample("grid_sample bilinear reflection align", GridSampleMode.Bilinear, GridSamplePadding.Reflection, true, 140),
        new("spatial_transform+bwd", d => With(d, T =>
        {
            var opt = new GridSampleOptions(GridSampleMode.Bilinear, GridSamplePadding.Border, false);
            var x = T(d.Upload(R(150, 2 * 3 * 6 * 5), 2, 3, 6, 5));
            var theta = T(d.Upload(R(151, 2 * 6), 2, 2, 3));
            var o = T(d.SpatialTransform(x, theta, 4, 7, opt));
            var go = T(d.Upload(R(152, o.Length), 2, 3, 4, 7));
            var (gi, gt) = d.SpatialTransformBackward(x, theta, go, opt); T(gi); T(gt);
            return [d.Download(o), d.Download(gi), d.Download(gt)];
        })),
    ];

    private static Case Glimpse(string name, int N, int C, int H, int W, int h, int w, int seed) =>
        new(name, d => With(d, T =>
        {
            var img = T(d.Upload(R(seed, (long)N * C * H * W), N, C, H, W));
            var p = new float[N * 6];
            var rng = new Random(seed + 1);
            for (int n = 0; n < N; n++)
            {
                p[n * 6 + 0] = (float)(rng.NextDouble() * H * 0.5); p[n * 6 + 1] = 0.7f + (float)rng.NextDouble(); p[n * 6 + 2] = 0.5f + (float)rng.NextDouble();
                p[n * 6 + 3] = (float)(rng.NextDouble() * W * 0.5); p[n * 6 + 4] = 0.7f + (float)rng.NextDouble(); p[n * 6 + 5] = 0.5f + (float)rng.NextDouble();
            }
            var prm = T(d.Upload(p, N, 6));
            var o = T(d.Glimpse(img, prm, h, w));
            var go = T(d.Upload(R(seed + 2, o.Length), N, C, h, w));
            var (gi, gp) = d.GlimpseBackward(img, prm, go); T(gi); T(gp);
            return [d.Download(o), d.Download(gi), d.Download(gp)];
        }));

    private static Case GridSample(string name, GridSampleMode mode, GridSamplePadding padding, bool align, int seed) =>
        new(name, d => With(d, T =>
        {
            var opt = new GridSampleOptions(mode, padding, align);
            var x = T(d.Upload(R(seed, 2 * 3 * 5 * 7), 2, 3, 5, 7));
            var grid = T(d.Upload(R(seed + 1, 2 * 4 * 6 * 2, 1.3f), 2, 4, 6, 2));
            var o = T(d.GridSample(x, grid, opt));
            var go = T(d.Upload(R(seed + 2, o.Length), 2, 3, 4, 6));
            var (gi, gg) = d.GridSampleBackward(x, grid, go, opt); T(gi); T(gg);
            return [d.Download(o), d.Download(gi), d.Download(gg)];
        }));

    /// <summary>
    /// Relative error ‖a − b‖₂ / max(‖b‖₂, 10⁻³·√n): relative for outputs of ordinary size, absolute (per element, RMS) for
    /// outputs that are zero up to rounding (e.g. the key-bias gradient of attention, which softmax makes exactly zero in exact
    /// arithmetic). NaNs must match in position, infinities exactly.
    /// </summary>
    public static double RelativeError(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        if (a.Length != b.Length) return double.PositiveInfinity;
        double num = 0, den = 0;
        for (int i = 0; i < a.Length; i++)
        {
            if (float.IsNaN(b[i]) || float.IsInfinity(b[i])) { if (!a[i].Equals(b[i])) return double.PositiveInfinity; continue; }
            if (!float.IsFinite(a[i])) return double.PositiveInfinity;
            double e = (double)a[i] - b[i];
            num += e * e; den += (double)b[i] * b[i];
        }
        return num == 0 ? 0 : Math.Sqrt(num / Math.Max(den, 1e-6 * a.Length));
    }

    /// <summary>The worst <see cref="RelativeError"/> over every output of one case.</summary>
    public static double WorstError(float[][] actual, float[][] expected)
    {
        if (actual.Length != expected.Length) return double.PositiveInfinity;
        double worst = 0;
        for (int i = 0; i < actual.Length; i++) worst = Math.Max(worst, RelativeError(actual[i], expected[i]));
        return worst;
    }
}
