using GpuAttention.Reference;

namespace GpuAttention.Backends.Kernels.Tuning;

/// <summary>A prepared timing run: its inputs live on the device; <see cref="Launch"/> enqueues the op once (does not wait).</summary>
internal sealed class TuningRun(Action launch, IEnumerable<Tensor> owned) : IDisposable
{
    private readonly List<Tensor> _owned = owned.ToList();
    public Action Launch { get; } = launch;
    public void Dispose() { foreach (var t in _owned) t.Dispose(); }
}

/// <summary>One correctness check of a candidate: the worst relative error ‖out − ref‖/‖ref‖ of an output and its bound.</summary>
internal readonly record struct TuningCheck(string Name, double Error, double Bound)
{
    public bool Passed => Error <= Bound;
}

/// <summary>
/// How the tuner exercises one <see cref="TuningSpace"/> for one key: the representative shape it times
/// (<see cref="Prepare"/>, the same inputs for every candidate), the work per run (FLOPs or bytes) for the rate column, and
/// the correctness check every candidate must pass before it is timed (<see cref="Check"/>: small odd shapes, tails that are
/// no multiple of any tile, against the double-precision reference at the suite's bounds: 1e-5 forward, 1e-4 backward).
/// Both run through the public <see cref="Device"/> ops, so they launch exactly what the host code launches with the
/// candidate's knobs.
/// </summary>
internal sealed record TuningWorkload(TuningSpace Space, string Key, string Shape, double WorkPerRun, string Unit,
    Func<Device, TuningRun> Prepare, Func<Device, IReadOnlyList<TuningCheck>> Check)
{
    /// <summary>Rate in <see cref="Unit"/> (GFLOP/s or GB/s) of one run taking <paramref name="ms"/>.</summary>
    public double Rate(double ms) => WorkPerRun / (ms * 1e-3) / 1e9;
}

/// <summary>The workloads of the registered families (a family keyed by shape class adds one per key).</summary>
internal static class TuningWorkloads
{
    public static IReadOnlyList<TuningWorkload> All { get; } = [Gemm(), GridSample(), Glimpse()];

    private static float[] R(int seed, long n, float scale = 1f)
    {
        var rng = new Random(seed);
        var a = new float[n];
        for (long i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        return a;
    }

    /// <summary>Grid points in [-1.1, 1.1] (some outside the image, so the padding paths run).</summary>
    private static float[] Grid(int seed, long n) => R(seed, n, 1.1f);

    // ---------------- GEMM: 512 × 512 × 512 (NN); checked for every transpose pair at 2 × 77 × 93 × 61 ----------------

    private static TuningWorkload Gemm()
    {
        const int M = 512, N = 512, K = 512;
        return new(KernelBackend.GemmTuning, TuningSpace.AnyKey, $"C[{M},{N}] = A[{M},{K}]·B[{K},{N}]", 2.0 * M * N * K, "GFLOP/s",
            d =>
            {
                var a = d.Upload(R(1, (long)M * K), M, K);
                var b = d.Upload(R(2, (long)K * N), K, N);
                var c = d.Allocate(M, N);
                return new TuningRun(() => d.Gemm(a, b, c), [a, b, c]);
            },
            d =>
            {
                const int B = 2, m = 77, n = 93, k = 61;
                var checks = new List<TuningCheck>();
                foreach (var (ta, tb) in new[] { (false, false), (true, false), (false, true), (true, true) })
                {
                    float[] ah = R(3, (long)B * m * k), bh = R(4, (long)B * k * n), ch = R(5, (long)B * m * n);
                    using var a = ta ? d.Upload(ah, B, k, m) : d.Upload(ah, B, m, k);
                    using var b = tb ? d.Upload(bh, B, n, k) : d.Upload(bh, B, k, n);
                    using var c = d.Upload(ch, B, m, n);
                    d.Gemm(a, b, c, ta, tb, alpha: 0.75f, beta: 0.5f);
                    var r = ReferenceOps.Gemm(ah, bh, ch, B, m, n, k, ta, tb, 0.75, 0.5);
                    checks.Add(new($"gemm {(ta ? "T" : "N")}{(tb ? "T" : "N")}", ReferenceOps.RelativeError(d.Download(c), r), 1e-5));
                }
                return checks;
            });
    }

    // ---------------- grid_sample: N16 C16 128² → 64² bilinear, forward + backward ----------------

    private static TuningWorkload GridSample()
    {
        const int N = 16, C = 16, H = 128, W = 128, Ho = 64, Wo = 64;
        // Compulsory traffic: forward reads input and grid, writes out; backward reads input, grid and grad_out, writes grad_input and grad_grid.
        double bytes = 4.0 * ((2.0 * N * C * H * W + 2.0 * N * Ho * Wo * 2 + N * C * Ho * Wo) + (N * C * H * W + N * Ho * Wo * 2 + N * C * Ho * Wo));
        return new(KernelBackend.SpatialTuning, TuningSpace.AnyKey, $"grid_sample fwd+bwd [{N},{C},{H},{W}] → {Ho}×{Wo} bilinear", bytes, "GB/s",
            d =>
            {
                var input = d.Upload(R(10, (long)N * C * H * W), N, C, H, W);
                var grid = d.Upload(Grid(11, (long)N * Ho * Wo * 2), N, Ho, Wo, 2);
                var outp = d.Allocate(N, C, Ho, Wo);
                var go = d.Upload(R(12, (long)N * C * Ho * Wo), N, C, Ho, Wo);
                var gi = d.Allocate(N, C, H, W);
                var gg = d.Allocate(N, Ho, Wo, 2);
                return new TuningRun(() => { d.GridSample(input, grid, outp); d.GridSampleBackward(input, grid, go, gi, gg); }, [input, grid, outp, go, gi, gg]);
            },
            d =>
            {
                // 19 channels: several channel blocks with a tail for every CB; 17×19 points: two scatter chunks, tails for every TILE_P and WG_P.
                const int n = 2, c = 19, h = 13, w = 11, ho = 17, wo = 19;
                float[] ih = R(20, (long)n * c * h * w), gh = Grid(21, (long)n * ho * wo * 2), goh = R(22, (long)n * c * ho * wo), th = R(23, n * 6, 0.9f);
                var checks = new List<TuningCheck>();
                foreach (var o in new[] { new GridSampleOptions(), new GridSampleOptions(GridSampleMode.Nearest, GridSamplePadding.Border, true) })
                {
                    using var input = d.Upload(ih, n, c, h, w);
                    using var grid = d.Upload(gh, n, ho, wo, 2);
                    using var go = d.Upload(goh, n, c, ho, wo);
                    using var outp = d.GridSample(input, grid, o);
                    var (gi, gg) = d.GridSampleBackward(input, grid, go, o);
                    using (gi) using (gg)
                    {
                        var id = ReferenceOps.ToDouble(ih); var gd = ReferenceOps.ToDouble(gh);
                        string tag = $"{o.Mode} {o.Padding}".ToLowerInvariant();
                        checks.Add(new($"grid_sample {tag}", ReferenceOps.RelativeError(d.Download(outp), ReferenceOps.GridSample(id, gd, n, c, h, w, ho, wo, o)), 1e-5));
                        var (rgi, rgg) = ReferenceOps.GridSampleBackward(id, gd, ReferenceOps.ToDouble(goh), n, c, h, w, ho, wo, o);
                        checks.Add(new($"grad_input {tag}", ReferenceOps.RelativeError(d.Download(gi), rgi), 1e-4));
                        if (o.Mode == GridSampleMode.Bilinear)
                            checks.Add(new($"grad_grid {tag}", ReferenceOps.RelativeError(d.Download(gg), rgg), 1e-4));
                    }
                }
                using var theta = d.Upload(th, n, 2, 3);
                using var ag = d.AffineGrid(theta, ho, wo);
                checks.Add(new("affine_grid", ReferenceOps.RelativeError(d.Download(ag), ReferenceOps.AffineGrid(ReferenceOps.ToDouble(th), n, ho, wo, false)), 1e-5));
                using var ggr = d.Upload(gh, n, ho, wo, 2);
                using var gt = d.AffineGridBackward(ggr);
                checks.Add(new("affine_grid backward", ReferenceOps.RelativeError(d.Download(gt), ReferenceOps.AffineGridBackward(ReferenceOps.ToDouble(gh), n, ho, wo, false)), 1e-4));
                return checks;
            });
    }

    // ---------------- glimpse: N16 C16 128² → 32², forward ----------------

    private static TuningWorkload Glimpse()
    {
        const int N = 16, C = 16, H = 128, W = 128, h = 32, w = 32;
        // The forward's two products in the cheaper order (as the host code chooses).
        double flops = 2.0 * N * C * Math.Min((double)H * W * w + (double)H * w * h, (double)h * H * W + (double)h * W * w);
        return new(KernelBackend.GlimpseTuning, TuningSpace.AnyKey, $"glimpse fwd [{N},{C},{H},{W}] → {h}×{w}", flops, "GFLOP/s",
            d =>
            {
                var image = d.Upload(R(30, (long)N * C * H * W), N, C, H, W);
                var p = d.Upload(ReferenceInputs.GlimpseParams(new Random(31), N, H, W, h, w), N, 6);
                var outp = d.Allocate(N, C, h, w);
                return new TuningRun(() => d.Glimpse(image, p, outp), [image, p, outp]);
            },
            d =>
            {
                var checks = new List<TuningCheck>();
                // Both multiplication orders of the forward and of the backward (tall and wide glimpses), tails for every tile.
                foreach (var (n, c, hh, ww, gh, gw) in new[] { (2, 3, 29, 23, 7, 9), (2, 3, 9, 37, 13, 5) })
                {
                    float[] img = R(40 + hh, (long)n * c * hh * ww), ph = ReferenceInputs.GlimpseParams(new Random(41 + hh), n, hh, ww, gh, gw), goh = R(42 + hh, (long)n * c * gh * gw);
                    using var image = d.Upload(img, n, c, hh, ww);
                    using var p = d.Upload(ph, n, 6);
                    using var go = d.Upload(goh, n, c, gh, gw);
                    using var outp = d.Glimpse(image, p, gh, gw);
                    checks.Add(new($"glimpse {hh}x{ww}→{gh}x{gw}", ReferenceOps.RelativeError(d.Download(outp), ReferenceOps.GlimpseForward(img, ph, n, c, hh, ww, gh, gw)), 1e-5));
                    var (gi, gp) = d.GlimpseBackward(image, p, go);
                    using (gi) using (gp)
                    {
                        var (rgi, rgp, _) = ReferenceOps.GlimpseBackward(img, ph, goh, n, c, hh, ww, gh, gw);
                        checks.Add(new($"grad_image {hh}x{ww}", ReferenceOps.RelativeError(d.Download(gi), rgi), 1e-4));
                        checks.Add(new($"grad_params {hh}x{ww}", ReferenceOps.RelativeError(d.Download(gp), rgp), 1e-4));
                    }
                }
                return checks;
            });
    }
}
