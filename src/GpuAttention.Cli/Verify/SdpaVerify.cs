using GpuAttention.Reference;

namespace GpuAttention.Cli.Verify;

/// <summary>Verify cases of the SDPA family: odd shapes off the tiles, GQA, causal with L ≠ S, every mask broadcast shape, a custom scale.</summary>
internal static class SdpaVerify
{
    private const double Bound = 1e-5;

    internal sealed record Shape(int B, int Hq, int Hkv, int L, int S, int E, int Ev, bool Causal = false, int[]? Mask = null, bool BoolMask = false, float? Scale = null)
    {
        public override string ToString() =>
            $"B{B} Hq{Hq} Hkv{Hkv} L{L} S{S} E{E} Ev{Ev}{(Causal ? " causal" : "")}"
            + (Mask is null ? "" : $" {(BoolMask ? "bool" : "float")}mask[{string.Join(",", Mask)}]")
            + (Scale is null ? "" : $" scale={Scale.Value.ToString(System.Globalization.CultureInfo.InvariantCulture)}");
    }

    private static readonly Shape[] Forward =
    [
        new(1, 1, 1, 1, 1, 1, 1),
        new(2, 4, 2, 37, 53, 17, 23),                                  // GQA, odd dims
        new(1, 3, 1, 65, 129, 64, 64),                                 // one past the tiles
        new(1, 2, 2, 100, 7, 128, 96),
        new(1, 1, 1, 33, 70, 200, 256),                                // large head dims
        new(1, 2, 1, 1, 300, 64, 64),                                  // decoding, L = 1
        new(2, 2, 2, 19, 41, 8, 5, Causal: true),                      // causal, L < S
        new(1, 4, 2, 45, 21, 16, 16, Causal: true),                    // causal, L > S
        new(2, 2, 1, 13, 29, 9, 11, Mask: [13, 29]),                   // [L, S]
        new(2, 2, 1, 13, 29, 9, 11, Mask: [2, 1, 13, 29], BoolMask: true), // [B, 1, L, S]
        new(2, 3, 3, 13, 29, 9, 11, Mask: [1, 3, 13, 29]),             // [1, Hq, L, S]
        new(2, 2, 2, 13, 29, 9, 11, Causal: true, Mask: [2, 2, 13, 29], BoolMask: true), // [B, Hq, L, S] + causal
        new(1, 1, 1, 17, 19, 33, 3, Mask: [1, 19]),                    // broadcast over rows
        new(1, 2, 1, 21, 130, 31, 7, Scale: 0.37f),                    // custom scale
        new(2, 8, 2, 509, 515, 64, 64, Causal: true),                  // GPU-sized: many tiles, GQA, causal
        new(1, 4, 4, 257, 383, 128, 128),                              // GPU-sized: E = 128
    ];

    public static IEnumerable<VerifyCase> Cases() =>
        Forward.Select(s => new VerifyCase("sdpa", s.ToString(), (dev, rng) => RunForward(dev, rng, s)));

    /// <summary>A random additive mask of the case's mask shape (−∞ entries, one fully masked query row), or null.</summary>
    internal static float[]? Mask(Random rng, Shape c)
    {
        if (c.Mask is null) return null;
        long n = c.Mask.Aggregate(1L, (a, d) => a * d);
        var mask = new float[n];
        for (long i = 0; i < n; i++)
            mask[i] = c.BoolMask ? (rng.NextDouble() < 0.3 ? float.NegativeInfinity : 0f)
                : rng.NextDouble() < 0.1 ? float.NegativeInfinity : (float)(rng.NextDouble() * 2 - 1);
        if (c.Mask[^2] > 2)                                            // one fully masked query row
            for (int j = 0; j < c.Mask[^1]; j++) mask[2 * c.Mask[^1] + j] = float.NegativeInfinity;
        return mask;
    }

    /// <summary>The mask as the device takes it (bool masks through <see cref="Device.UploadMask"/>), or null.</summary>
    internal static Tensor? UploadMask(Device dev, Shape c, float[]? mask) =>
        mask is null ? null : c.BoolMask ? dev.UploadMask(mask.Select(x => x == 0f).ToArray(), c.Mask!) : dev.Upload(mask, c.Mask!);

    private static IReadOnlyList<VerifyResult> RunForward(Device dev, Random rng, Shape c)
    {
        var q = VerifyKit.Random(rng, (long)c.B * c.Hq * c.L * c.E);
        var k = VerifyKit.Random(rng, (long)c.B * c.Hkv * c.S * c.E);
        var v = VerifyKit.Random(rng, (long)c.B * c.Hkv * c.S * c.Ev);
        var mask = Mask(rng, c);
        float scale = c.Scale ?? 1f / MathF.Sqrt(c.E);
        var (refOut, refLse) = ReferenceOps.SdpaForward(q, k, v, c.B, c.Hq, c.Hkv, c.L, c.S, c.E, c.Ev, scale, c.Causal, mask, c.Mask);

        using var tq = dev.Upload(q, c.B, c.Hq, c.L, c.E);
        using var tk = dev.Upload(k, c.B, c.Hkv, c.S, c.E);
        using var tv = dev.Upload(v, c.B, c.Hkv, c.S, c.Ev);
        using var tm = UploadMask(dev, c, mask);
        using var to = VerifyKit.Poisoned(dev, c.B, c.Hq, c.L, c.Ev);  // poison: unwritten elements fail
        using var tl = VerifyKit.Poisoned(dev, c.B, c.Hq, c.L);
        dev.Sdpa(tq, tk, tv, to, tl, tm, new SdpaOptions(c.Causal, c.Scale));
        return
        [
            VerifyKit.Check(dev, "out", to, refOut, Bound),
            VerifyKit.Check(dev, "lse", tl, refLse, Bound),
        ];
    }
}
