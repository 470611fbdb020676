using GpuAttention.Reference;
using Shape = GpuAttention.Cli.Verify.SdpaVerify.Shape;

namespace GpuAttention.Cli.Verify;

/// <summary>
/// Verify cases of the SDPA backward: odd shapes off the tiles, GQA (grad_k/grad_v summed over a group), causal with L ≠ S, every mask
/// broadcast shape (bool and float, with a fully masked row), a custom scale, L = 1, and GPU-sized problems. The forward that feeds
/// out and lse runs on the device; grad_q, grad_k, grad_v are compared with <see cref="ReferenceOps.SdpaBackward(float[], float[], float[], float[], int, int, int, int, int, int, int, float, bool, float[], int[])"/>.
/// </summary>
internal static class SdpaBackwardVerify
{
    private static readonly Shape[] Backward =
    [
        new(1, 1, 1, 1, 1, 9, 11),
        new(2, 4, 2, 37, 53, 17, 23),                                  // GQA, odd dims
        new(1, 3, 1, 70, 133, 64, 64),                                 // GQA group of 3, several blocks
        new(1, 2, 2, 100, 7, 17, 23),                                  // S smaller than a tile
        new(1, 1, 1, 9, 20, 130, 150),                                 // wide heads
        new(1, 2, 1, 1, 90, 16, 16),                                   // L = 1
        new(2, 2, 2, 19, 41, 9, 11, Causal: true),                     // causal, L < S
        new(1, 4, 2, 77, 21, 16, 16, Causal: true),                    // causal, L > S, GQA
        new(2, 2, 1, 13, 29, 9, 11, Mask: [13, 29]),                   // [L, S]
        new(2, 2, 1, 13, 29, 9, 11, Mask: [2, 1, 13, 29], BoolMask: true), // [B, 1, L, S]
        new(2, 3, 3, 13, 29, 9, 11, Mask: [1, 3, 13, 29]),             // [1, Hq, L, S]
        new(2, 2, 2, 13, 29, 9, 11, Causal: true, Mask: [2, 2, 13, 29], BoolMask: true), // [B, Hq, L, S] + causal
        new(1, 1, 1, 17, 19, 17, 23, Mask: [1, 19]),                   // broadcast over rows
        new(1, 2, 1, 21, 70, 16, 16, Scale: 0.37f),                    // custom scale
        new(1, 8, 2, 383, 389, 64, 64, Causal: true),                  // GPU-sized: many blocks, GQA, causal
        new(1, 4, 4, 131, 259, 128, 128),                              // GPU-sized: E = 128
    ];

    public static IEnumerable<VerifyCase> Cases() =>
        Backward.Select(s => new VerifyCase("sdpa-backward", s.ToString(), (dev, rng) => Run(dev, rng, s)));

    private static IReadOnlyList<VerifyResult> Run(Device dev, Random rng, Shape c)
    {
        var q = VerifyKit.Random(rng, (long)c.B * c.Hq * c.L * c.E);
        var k = VerifyKit.Random(rng, (long)c.B * c.Hkv * c.S * c.E);
        var v = VerifyKit.Random(rng, (long)c.B * c.Hkv * c.S * c.Ev);
        var g = VerifyKit.Random(rng, (long)c.B * c.Hq * c.L * c.Ev);
        var mask = SdpaVerify.Mask(rng, c);
        float scale = c.Scale ?? 1f / MathF.Sqrt(c.E);
        var (rq, rk, rv) = ReferenceOps.SdpaBackward(q, k, v, g, c.B, c.Hq, c.Hkv, c.L, c.S, c.E, c.Ev, scale, c.Causal, mask, c.Mask);

        using var tq = dev.Upload(q, c.B, c.Hq, c.L, c.E);
        using var tk = dev.Upload(k, c.B, c.Hkv, c.S, c.E);
        using var tv = dev.Upload(v, c.B, c.Hkv, c.S, c.Ev);
        using var tg = dev.Upload(g, c.B, c.Hq, c.L, c.Ev);
        using var tm = SdpaVerify.UploadMask(dev, c, mask);
        var options = new SdpaOptions(c.Causal, c.Scale);
        using var to = VerifyKit.Poisoned(dev, c.B, c.Hq, c.L, c.Ev);
        using var tl = VerifyKit.Poisoned(dev, c.B, c.Hq, c.L);
        dev.Sdpa(tq, tk, tv, to, tl, tm, options);
        using var dq = VerifyKit.Poisoned(dev, c.B, c.Hq, c.L, c.E);
        using var dk = VerifyKit.Poisoned(dev, c.B, c.Hkv, c.S, c.E);
        using var dv = VerifyKit.Poisoned(dev, c.B, c.Hkv, c.S, c.Ev);
        dev.SdpaBackward(tq, tk, tv, to, tl, tg, dq, dk, dv, tm, options);
        return
        [
            VerifyKit.Check(dev, "grad_q", dq, rq, VerifyKit.Backward),
            VerifyKit.Check(dev, "grad_k", dk, rk, VerifyKit.Backward),
            VerifyKit.Check(dev, "grad_v", dv, rv, VerifyKit.Backward),
        ];
    }
}
