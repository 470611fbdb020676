using GpuAttention.Reference;
using Kind = GpuAttention.Reference.GlimpseParamKind;

namespace GpuAttention.Cli.Verify;

/// <summary>
/// Verify cases of the separable Gaussian glimpse and DRAW read, forward and backward: both multiplication orders (h or w small),
/// glimpse as large as the image, 1-pixel axes, tiny σ (filters narrower than a pixel), huge σ (flat filters), centres outside the
/// image (all-zero filter columns guarded by the 1e-8), negative strides, many channels, and GPU-sized batches.
/// </summary>
internal static class GlimpseVerify
{
    private sealed record Shape(int N, int C, int H, int W, int Gh, int Gw, Kind Kind = Kind.Typical)
    {
        public override string ToString() => $"N{N} C{C} {H}x{W} -> {Gh}x{Gw}{(Kind == Kind.Typical ? "" : " " + Kind.ToString().ToLowerInvariant())}";
    }

    private static readonly Shape[] Glimpses =
    [
        new(1, 1, 2, 1, 1, 1),                                         // a 1-pixel axis
        new(2, 3, 37, 29, 5, 11),                                      // y first (h small)
        new(2, 2, 19, 45, 13, 3),                                      // x first (w small)
        new(1, 4, 33, 35, 33, 35),                                     // glimpse as large as the image
        new(3, 1, 21, 17, 7, 9, Kind.TinySigma),
        new(2, 2, 23, 31, 6, 5, Kind.HugeSigma),
        new(4, 3, 25, 27, 8, 7, Kind.Outside),                         // centres outside the image, both sides
        new(1, 2, 30, 26, 9, 10, Kind.NegativeStride),
        new(1, 70, 12, 13, 3, 4),                                      // many channels
        new(64, 3, 127, 129, 25, 23),                                  // GPU-sized: a batch of RGB images
    ];

    private sealed record DrawShape(int N, int C, int H, int W, int Gh, int Gw)
    {
        public override string ToString() => $"N{N} C{C} {H}x{W} -> {Gh}x{Gw}";
    }

    private static readonly DrawShape[] Draws =
    [
        new(3, 2, 27, 23, 6, 9),
        new(2, 1, 28, 28, 1, 5),                                       // a 1-wide glimpse axis
        new(32, 3, 97, 101, 12, 12),                                   // GPU-sized
    ];

    public static IEnumerable<VerifyCase> Cases() =>
        Glimpses.SelectMany(s => new[]
        {
            new VerifyCase("glimpse", s.ToString(), (dev, rng) => Forward(dev, rng, s)),
            new VerifyCase("glimpse-backward", s.ToString(), (dev, rng) => Backward(dev, rng, s)),
        }).Concat(Draws.SelectMany(s => new[]
        {
            new VerifyCase("draw-read", s.ToString(), (dev, rng) => Draw(dev, rng, s, backward: false)),
            new VerifyCase("draw-read-backward", s.ToString(), (dev, rng) => Draw(dev, rng, s, backward: true)),
        }));

    private static float[] Params(Random rng, Shape c) => ReferenceInputs.GlimpseParams(rng, c.N, c.H, c.W, c.Gh, c.Gw, c.Kind);

    private static IReadOnlyList<VerifyResult> Forward(Device dev, Random rng, Shape c)
    {
        var img = VerifyKit.Random(rng, (long)c.N * c.C * c.H * c.W);
        var p = Params(rng, c);
        using var ti = dev.Upload(img, c.N, c.C, c.H, c.W);
        using var tp = dev.Upload(p, c.N, 6);
        using var to = VerifyKit.Poisoned(dev, c.N, c.C, c.Gh, c.Gw);
        dev.Glimpse(ti, tp, to);
        return [VerifyKit.Check(dev, "out", to, ReferenceOps.GlimpseForward(img, p, c.N, c.C, c.H, c.W, c.Gh, c.Gw), VerifyKit.Forward)];
    }

    private static IReadOnlyList<VerifyResult> Backward(Device dev, Random rng, Shape c)
    {
        var img = VerifyKit.Random(rng, (long)c.N * c.C * c.H * c.W);
        var p = Params(rng, c);
        var g = VerifyKit.Random(rng, (long)c.N * c.C * c.Gh * c.Gw);
        var (ri, rp, _) = ReferenceOps.GlimpseBackward(img, p, g, c.N, c.C, c.H, c.W, c.Gh, c.Gw);
        using var ti = dev.Upload(img, c.N, c.C, c.H, c.W);
        using var tp = dev.Upload(p, c.N, 6);
        using var tg = dev.Upload(g, c.N, c.C, c.Gh, c.Gw);
        using var gi = VerifyKit.Poisoned(dev, c.N, c.C, c.H, c.W);
        using var gp = VerifyKit.Poisoned(dev, c.N, 6);
        dev.GlimpseBackward(ti, tp, tg, gi, gp);
        return
        [
            VerifyKit.Check(dev, "grad_image", gi, ri, VerifyKit.Backward),
            VerifyKit.Check(dev, "grad_params", gp, rp, VerifyKit.Backward),
        ];
    }

    private static IReadOnlyList<VerifyResult> Draw(Device dev, Random rng, DrawShape c, bool backward)
    {
        var img = VerifyKit.Random(rng, (long)c.N * c.C * c.H * c.W);
        var draw = ReferenceInputs.DrawInputs(rng, c.N);
        using var ti = dev.Upload(img, c.N, c.C, c.H, c.W);
        using var td = dev.Upload(draw, c.N, 5);
        if (!backward)
        {
            using var to = VerifyKit.Poisoned(dev, c.N, c.C, c.Gh, c.Gw);
            dev.DrawRead(ti, td, to);
            return [VerifyKit.Check(dev, "out", to, ReferenceOps.DrawRead(img, draw, c.N, c.C, c.H, c.W, c.Gh, c.Gw), VerifyKit.Forward)];
        }
        var g = VerifyKit.Random(rng, (long)c.N * c.C * c.Gh * c.Gw);
        var (ri, rd) = ReferenceOps.DrawReadBackward(img, draw, g, c.N, c.C, c.H, c.W, c.Gh, c.Gw);
        using var tg = dev.Upload(g, c.N, c.C, c.Gh, c.Gw);
        using var gi = VerifyKit.Poisoned(dev, c.N, c.C, c.H, c.W);
        using var gd = VerifyKit.Poisoned(dev, c.N, 5);
        dev.DrawReadBackward(ti, td, tg, gi, gd);
        return
        [
            VerifyKit.Check(dev, "grad_image", gi, ri, VerifyKit.Backward),
            VerifyKit.Check(dev, "grad_draw", gd, rd, VerifyKit.Backward),
        ];
    }
}
