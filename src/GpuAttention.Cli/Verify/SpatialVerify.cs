using GpuAttention.Reference;

namespace GpuAttention.Cli.Verify;

/// <summary>
/// Verify cases of the spatial transformer ops: affine_grid forward/backward with both align_corners; grid_sample forward/backward in
/// every mode × padding × align_corners with grids reaching outside [−1, 1] (also 1-pixel images and a single output point); the fused
/// spatial transform (affine_grid + grid_sample in one kernel) forward/backward in every combination; GPU-sized problems of each.
/// </summary>
internal static class SpatialVerify
{
    private sealed record Shape(int N, int C, int H, int W, int Hout, int Wout)
    {
        public override string ToString() => $"N{N} C{C} {H}x{W} -> {Hout}x{Wout}";
    }

    private static IEnumerable<GridSampleOptions> AllOptions() =>
        from m in new[] { GridSampleMode.Bilinear, GridSampleMode.Nearest }
        from p in new[] { GridSamplePadding.Zeros, GridSamplePadding.Border, GridSamplePadding.Reflection }
        from a in new[] { false, true }
        select new GridSampleOptions(m, p, a);

    private static readonly (int N, int H, int W)[] Grids = [(3, 5, 7), (2, 1, 1), (2, 1, 4), (1, 33, 65), (32, 127, 129)];   // last: GPU-sized

    private static readonly Shape GridSampleShape = new(2, 3, 7, 9, 5, 11);
    private static readonly Shape[] GridSampleExtra =
    [
        new(3, 1, 1, 1, 4, 3),                                         // 1-pixel image
        new(2, 5, 13, 3, 1, 1),                                        // one output point
        new(1, 64, 5, 6, 3, 7),                                        // 64 channels
    ];
    private static readonly Shape GpuSized = new(16, 16, 128, 128, 64, 64);   // the bench shape of grid_sample
    private static readonly Shape TransformShape = new(2, 3, 9, 8, 5, 7);

    public static IEnumerable<VerifyCase> Cases()
    {
        foreach (var (n, h, w) in Grids)
            foreach (var align in new[] { false, true })
            {
                string shape = $"N{n} {h}x{w}{(align ? " align" : "")}";
                yield return new("affine-grid", shape, (dev, rng) => AffineGrid(dev, rng, n, h, w, align, backward: false));
                yield return new("affine-grid-backward", shape, (dev, rng) => AffineGrid(dev, rng, n, h, w, align, backward: true));
            }
        var sampleCases = AllOptions().Select(o => (GridSampleShape, o))
            .Concat(GridSampleExtra.Select((s, i) => (s, new GridSampleOptions(GridSampleMode.Bilinear, (GridSamplePadding)(i % 3), i == 1))))
            .Concat([(GpuSized, new GridSampleOptions()), 
                // float coordinates of a 128-pixel axis carry ~1e-5 px of rounding, which bilinear turns into ~1e-5 relative error after
                // reflection (9.2e-6 here on the CPU backend): the reflection case runs on 64² so that the bound tests the kernel, not float
                (GpuSized with { H = 64, W = 64 }, new GridSampleOptions(GridSampleMode.Bilinear, GridSamplePadding.Reflection, true)),
                (GpuSized, new GridSampleOptions(GridSampleMode.Nearest, GridSamplePadding.Border))]);
        foreach (var (s, o) in sampleCases)
        {
            yield return new("grid-sample", $"{s} {o}", (dev, rng) => GridSample(dev, rng, s, o, backward: false));
            yield return new("grid-sample-backward", $"{s} {o}", (dev, rng) => GridSample(dev, rng, s, o, backward: true));
        }
        // the opt-in atomic grad_input scatter (kernel backends; the CPU backend runs its deterministic path)
        var atomic = new GridSampleOptions(Backward: GridSampleBackwardMode.Atomic);
        foreach (var (s, o) in AllOptions().Select(o => (GridSampleShape, o with { Backward = GridSampleBackwardMode.Atomic })).Append((GpuSized, atomic)))
            yield return new("grid-sample-backward", $"{s} {o}", (dev, rng) => GridSample(dev, rng, s, o, backward: true));
        yield return new("spatial-transform-backward", $"{TransformShape} {atomic}", (dev, rng) => Transform(dev, rng, TransformShape, atomic, backward: true));
        foreach (var (s, o) in AllOptions().Select(o => (TransformShape, o)).Append((GpuSized, new GridSampleOptions())))
        {
            yield return new("spatial-transform", $"{s} {o}", (dev, rng) => Transform(dev, rng, s, o, backward: false));
            yield return new("spatial-transform-backward", $"{s} {o}", (dev, rng) => Transform(dev, rng, s, o, backward: true));
        }
    }

    /// <summary>How close (in pixels) a sample may come to a multiple of ½ pixel (see <see cref="Benign"/>).</summary>
    private const double Margin = 3e-5;

    /// <summary>
    /// Whether a normalised coordinate keeps its pixel coordinate at least <see cref="Margin"/> away from integers (where bilinear's
    /// gradient jumps, border/reflection clamp and reflect) and half-integers (nearest's ties). A sample closer than float rounding
    /// to such a point may fall on the other side in float than in the double reference: a correct kernel then differs from the reference
    /// by a whole pixel there, which the large cases would otherwise hit by chance.
    /// </summary>
    private static bool Benign(double coord, int size, bool align)
    {
        if (align && size == 1) return true;                           // x = 0 exactly, in float as in double
        double x2 = align ? (coord + 1) * (size - 1) : (coord + 1) * size - 1;   // twice the pixel coordinate
        return Math.Abs(x2 - Math.Round(x2)) / 2 >= Margin;
    }

    /// <summary>A random grid reaching outside [−1, 1] whose every sample is <see cref="Benign"/>.</summary>
    private static float[] RandomGrid(Random rng, Shape s, bool align)
    {
        var g = new float[(long)s.N * s.Hout * s.Wout * 2];
        for (long i = 0; i < g.Length; i++)
        {
            int size = i % 2 == 0 ? s.W : s.H;
            do g[i] = (float)(rng.NextDouble() * 2 - 1) * 1.6f;
            while (!Benign(g[i], size, align));
        }
        return g;
    }

    /// <summary>Random θ [N, 2, 3] (entries in ±1.2) whose affine grid keeps every sample <see cref="Benign"/> (redrawn per image).</summary>
    private static float[] RandomTheta(Random rng, Shape s, bool align)
    {
        var theta = new float[s.N * 6];
        for (int n = 0; n < s.N; n++)
            for (int attempt = 0; ; attempt++)
            {
                for (int j = 0; j < 6; j++) theta[n * 6 + j] = (float)(rng.NextDouble() * 2 - 1) * 1.2f;
                var grid = ReferenceOps.AffineGrid(ReferenceOps.ToDouble(theta.AsSpan(n * 6, 6)), 1, s.Hout, s.Wout, align);
                bool ok = true;
                for (int i = 0; i < grid.Length && ok; i++) ok = Benign(grid[i], i % 2 == 0 ? s.W : s.H, align);
                if (ok || attempt == 10_000) break;
            }
        return theta;
    }

    private static IReadOnlyList<VerifyResult> AffineGrid(Device dev, Random rng, int N, int H, int W, bool align, bool backward)
    {
        if (!backward)
        {
            var theta = VerifyKit.Random(rng, N * 6, 1.5f);
            using var tt = dev.Upload(theta, N, 2, 3);
            using var grid = VerifyKit.Poisoned(dev, N, H, W, 2);
            dev.AffineGrid(tt, grid, align);
            return [VerifyKit.Check(dev, "grid", grid, ReferenceOps.AffineGrid(ReferenceOps.ToDouble(theta), N, H, W, align), VerifyKit.Forward)];
        }
        var gg = VerifyKit.Random(rng, (long)N * H * W * 2);
        using var tgg = dev.Upload(gg, N, H, W, 2);
        using var gt = VerifyKit.Poisoned(dev, N, 2, 3);
        dev.AffineGridBackward(tgg, gt, align);
        return [VerifyKit.Check(dev, "grad_theta", gt, ReferenceOps.AffineGridBackward(ReferenceOps.ToDouble(gg), N, H, W, align), VerifyKit.Backward)];
    }

    private static IReadOnlyList<VerifyResult> GridSample(Device dev, Random rng, Shape s, GridSampleOptions o, bool backward)
    {
        var input = VerifyKit.Random(rng, (long)s.N * s.C * s.H * s.W);
        var grid = RandomGrid(rng, s, o.AlignCorners);                   // reaches outside [−1, 1]
        using var ti = dev.Upload(input, s.N, s.C, s.H, s.W);
        using var tg = dev.Upload(grid, s.N, s.Hout, s.Wout, 2);
        var di = ReferenceOps.ToDouble(input); var dg = ReferenceOps.ToDouble(grid);
        if (!backward)
        {
            using var to = VerifyKit.Poisoned(dev, s.N, s.C, s.Hout, s.Wout);
            dev.GridSample(ti, tg, to, o);
            return [VerifyKit.Check(dev, "out", to, ReferenceOps.GridSample(di, dg, s.N, s.C, s.H, s.W, s.Hout, s.Wout, o), VerifyKit.Forward)];
        }
        var gout = VerifyKit.Random(rng, (long)s.N * s.C * s.Hout * s.Wout);
        using var tgo = dev.Upload(gout, s.N, s.C, s.Hout, s.Wout);
        using var tgi = VerifyKit.Poisoned(dev, s.N, s.C, s.H, s.W);
        using var tgg = VerifyKit.Poisoned(dev, s.N, s.Hout, s.Wout, 2);
        dev.GridSampleBackward(ti, tg, tgo, tgi, tgg, o);
        // nearest: the reference grad_grid is all zeros, so its "relative" error is the absolute norm of the result
        var (rgi, rgg) = ReferenceOps.GridSampleBackward(di, dg, ReferenceOps.ToDouble(gout), s.N, s.C, s.H, s.W, s.Hout, s.Wout, o);
        return
        [
            VerifyKit.Check(dev, "grad_input", tgi, rgi, VerifyKit.Backward),
            VerifyKit.Check(dev, "grad_grid", tgg, rgg, VerifyKit.Backward),
        ];
    }

    private static IReadOnlyList<VerifyResult> Transform(Device dev, Random rng, Shape s, GridSampleOptions o, bool backward)
    {
        var input = VerifyKit.Random(rng, (long)s.N * s.C * s.H * s.W);
        var theta = RandomTheta(rng, s, o.AlignCorners);
        using var ti = dev.Upload(input, s.N, s.C, s.H, s.W);
        using var tt = dev.Upload(theta, s.N, 2, 3);
        var di = ReferenceOps.ToDouble(input);
        var grid = ReferenceOps.AffineGrid(ReferenceOps.ToDouble(theta), s.N, s.Hout, s.Wout, o.AlignCorners);
        if (!backward)
        {
            using var to = VerifyKit.Poisoned(dev, s.N, s.C, s.Hout, s.Wout);
            dev.SpatialTransform(ti, tt, to, o);
            return [VerifyKit.Check(dev, "out", to, ReferenceOps.GridSample(di, grid, s.N, s.C, s.H, s.W, s.Hout, s.Wout, o), VerifyKit.Forward)];
        }
        var gout = VerifyKit.Random(rng, (long)s.N * s.C * s.Hout * s.Wout);
        using var tgo = dev.Upload(gout, s.N, s.C, s.Hout, s.Wout);
        using var tgi = VerifyKit.Poisoned(dev, s.N, s.C, s.H, s.W);
        using var tgt = VerifyKit.Poisoned(dev, s.N, 2, 3);
        dev.SpatialTransformBackward(ti, tt, tgo, tgi, tgt, o);
        var (rgi, rgg) = ReferenceOps.GridSampleBackward(di, grid, ReferenceOps.ToDouble(gout), s.N, s.C, s.H, s.W, s.Hout, s.Wout, o);
        var rgt = ReferenceOps.AffineGridBackward(rgg, s.N, s.Hout, s.Wout, o.AlignCorners);
        return
        [
            VerifyKit.Check(dev, "grad_input", tgi, rgi, VerifyKit.Backward),
            VerifyKit.Check(dev, "grad_theta", tgt, rgt, VerifyKit.Backward),
        ];
    }
}
