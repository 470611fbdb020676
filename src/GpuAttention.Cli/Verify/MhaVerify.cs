using GpuAttention.Reference;

namespace GpuAttention.Cli.Verify;

/// <summary>
/// Verify cases of the <see cref="MultiHeadAttention"/> layer (projections on the GEMM, attention on the fused SDPA): forward output and
/// the backward's gradients of query, key, value and every parameter against <see cref="ReferenceOps.MhaForward"/> /
/// <see cref="ReferenceOps.MhaBackward"/>, with and without biases, kdim/vdim ≠ E, causal, masks, and a GPU-sized layer. Every
/// parameter (biases too) gets random values. The layer allocates its own results: verify runs with every allocation poisoned.
/// </summary>
internal static class MhaVerify
{
    private sealed record Shape(int B, int L, int S, int E, int H, int KDim, int VDim, bool Bias = true, bool Causal = false, int[]? Mask = null)
    {
        public override string ToString() =>
            $"B{B} L{L} S{S} E{E} H{H} kdim{KDim} vdim{VDim}{(Bias ? " bias" : "")}{(Causal ? " causal" : "")}"
            + (Mask is null ? "" : $" mask[{string.Join(",", Mask)}]");
    }

    private static readonly Shape[] All =
    [
        new(2, 5, 7, 12, 3, 5, 9),                                     // kdim, vdim ≠ E
        new(1, 1, 1, 4, 1, 4, 4, Bias: false),                         // one token, one head, no bias
        new(2, 13, 13, 24, 4, 24, 24, Causal: true),                   // self-attention shape, causal
        new(2, 9, 17, 18, 3, 7, 11, Bias: false, Mask: [9, 17]),       // [L, S] mask
        new(2, 11, 6, 20, 5, 20, 20, Mask: [2, 5, 11, 6]),             // [B, H, L, S] mask, L > S
        new(2, 255, 257, 256, 4, 256, 256, Causal: true),              // GPU-sized: head dim 64
    ];

    public static IEnumerable<VerifyCase> Cases() =>
        All.SelectMany(s => new[]
        {
            new VerifyCase("mha", s.ToString(), (dev, rng) => Run(dev, rng, s, backward: false)),
            new VerifyCase("mha-backward", s.ToString(), (dev, rng) => Run(dev, rng, s, backward: true)),
        });

    private static double[] D(float[] a) => ReferenceOps.ToDouble(a);

    private static IReadOnlyList<VerifyResult> Run(Device dev, Random rng, Shape c, bool backward)
    {
        using var m = new MultiHeadAttention(dev, c.E, c.H, c.Bias, c.KDim, c.VDim, seed: rng.Next());
        var vals = new Dictionary<string, double[]>();
        foreach (var (name, t) in m.Parameters)
        {
            var a = VerifyKit.Random(rng, t.Length, 0.5f);
            dev.Upload(t, a);
            vals[name] = D(a);
        }
        double[]? P(string n) => vals.GetValueOrDefault(n);
        var p = new ReferenceOps.MhaParams(c.E, c.H, c.KDim, c.VDim, P("q_proj_weight")!, P("k_proj_weight")!, P("v_proj_weight")!, P("out_proj.weight")!,
            P("q_proj_bias"), P("k_proj_bias"), P("v_proj_bias"), P("out_proj.bias"));

        var x = VerifyKit.Random(rng, (long)c.B * c.L * c.E);
        var kx = VerifyKit.Random(rng, (long)c.B * c.S * c.KDim);
        var vx = VerifyKit.Random(rng, (long)c.B * c.S * c.VDim);
        var g = VerifyKit.Random(rng, (long)c.B * c.L * c.E);
        float[]? mask = null;
        if (c.Mask is not null)
        {
            mask = new float[c.Mask.Aggregate(1L, (a, d) => a * d)];
            for (int i = 0; i < mask.Length; i++) mask[i] = rng.NextDouble() < 0.2 ? float.NegativeInfinity : (float)rng.NextDouble();
        }
        using var tx = dev.Upload(x, c.B, c.L, c.E);
        using var tk = dev.Upload(kx, c.B, c.S, c.KDim);
        using var tv = dev.Upload(vx, c.B, c.S, c.VDim);
        using var tm = mask is null ? null : dev.Upload(mask, c.Mask!);
        using var f = m.Forward(tx, tk, tv, tm, c.Causal);
        if (!backward)
            return [VerifyKit.Check(dev, "out", f.Output, ReferenceOps.MhaForward(p, D(x), D(kx), D(vx), c.B, c.L, c.S, c.Causal, mask, c.Mask), VerifyKit.Forward)];

        using var tg = dev.Upload(g, c.B, c.L, c.E);
        using var grads = m.Backward(f, tg);
        var r = ReferenceOps.MhaBackward(p, D(x), D(kx), D(vx), D(g), c.B, c.L, c.S, c.Causal, mask, c.Mask);
        var expected = new Dictionary<string, double[]?>
        {
            ["q_proj_weight"] = r.Wq, ["k_proj_weight"] = r.Wk, ["v_proj_weight"] = r.Wv, ["out_proj.weight"] = r.Wo,
            ["q_proj_bias"] = r.Bq, ["k_proj_bias"] = r.Bk, ["v_proj_bias"] = r.Bv, ["out_proj.bias"] = r.Bo,
        };
        var results = new List<VerifyResult>
        {
            VerifyKit.Check(dev, "grad_query", grads.Query, r.Query, VerifyKit.Backward),
            VerifyKit.Check(dev, "grad_key", grads.Key, r.Key, VerifyKit.Backward),
            VerifyKit.Check(dev, "grad_value", grads.Value, r.Value, VerifyKit.Backward),
        };
        if (grads.Parameters.Count != m.Parameters.Count)
            throw new InvalidOperationException($"backward returned {grads.Parameters.Count} parameter gradients for {m.Parameters.Count} parameters");
        foreach (var (name, t) in grads.Parameters)
        {
            if (name != "k_proj_bias")
            {
                results.Add(VerifyKit.Check(dev, name, t, expected[name]!, VerifyKit.Backward));
                continue;
            }
            // Softmax ignores a shift shared by a whole row of scores, so this gradient is exactly 0: the float result is pure rounding of
            // sums of the grad_k rows. It is measured against 0 relative to the size of the grad of k_proj_weight (same rows, times inputs).
            double norm = Math.Sqrt(r.Wk.Sum(x => x * x));
            var scaled = dev.Download(t).Select(x => (float)(x / norm)).ToArray();
            results.Add(VerifyKit.Check("k_bias/|dWk|", scaled, new double[t.Length], VerifyKit.Backward));
        }
        return results;
    }
}
