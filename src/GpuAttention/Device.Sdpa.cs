using GpuAttention.Backends;

namespace GpuAttention;

public sealed partial class Device
{
    /// <summary>
    /// Fused scaled dot-product attention, forward: <c>out = softmax(q·kᵀ·scale + mask)·v</c>, with the
    /// natural-log log-sum-exp of each row's scaled, masked scores in <paramref name="lse"/>. Semantics of
    /// PyTorch's <c>torch.nn.functional.scaled_dot_product_attention</c>; the kernel is FlashAttention-2's
    /// forward (Dao 2023, arXiv:2307.08691): tiled over queries and keys with an online softmax, never an L×S matrix in memory.
    /// </summary>
    /// <param name="q">Queries [B, Hq, L, E].</param>
    /// <param name="k">Keys [B, Hkv, S, E]; Hq % Hkv == 0 (grouped-query attention: query head h reads key head h / (Hq/Hkv)).</param>
    /// <param name="v">Values [B, Hkv, S, Ev].</param>
    /// <param name="output">Written: [B, Hq, L, Ev].</param>
    /// <param name="lse">Written: [B, Hq, L]. A fully masked row gets out = 0 and lse = −∞ (FlashAttention's convention).</param>
    /// <param name="mask">Optional additive float mask (bool masks: <see cref="UploadMask"/>), broadcastable to [B, Hq, L, S]
    /// from the right: [L, S], [B, 1, L, S], [1, Hq, L, S], [B, Hq, L, S], or any shape whose dims are 1 or the full size.</param>
    /// <param name="options">Causal (key j kept for query i when j ≤ i, top-left aligned) and scale (default 1/√E).</param>
    /// <remarks>Empty dimensions are allowed: B, Hq, L = 0 give empty outputs; S = 0 (no keys) makes every row fully masked
    /// (out = 0, lse = −∞); E = 0 makes every score 0 (a uniform softmax, lse = log S); Ev = 0 gives an empty out and the lse.
    /// Shapes with E = 0 or Ev = 0 run on the CPU backend (with copies) on every device: the kernels need a head dimension.</remarks>
    /// <exception cref="TensorShapeException">A tensor has the wrong rank or shape; the message names it.</exception>
    /// <exception cref="ArgumentException">Tensors of another device, outputs aliasing inputs, non-finite scale.</exception>
    public void Sdpa(Tensor q, Tensor k, Tensor v, Tensor output, Tensor lse, Tensor? mask = null, SdpaOptions options = default)
    {
        var shape = ValidateSdpa(q, k, v, mask, options);
        CheckOwned(output, "out"); CheckOwned(lse, "lse");
        Validation.Shape(output, "out", [shape.B, shape.Hq, shape.L, shape.Ev], "[B, Hq, L, Ev]");
        Validation.Shape(lse, "lse", [shape.B, shape.Hq, shape.L], "[B, Hq, L]");
        Validation.NoAlias([(q, "q"), (k, "k"), (v, "v"), (mask, "mask")], [(output, "out"), (lse, "lse")]);
        Run(OpKind.Sdpa, [q, k, v, mask], [output, lse], (shape, q, k, v, mask, output, lse), static (be, m, x) =>
            ((ISdpaBackend)be).SdpaForward(new SdpaForwardArgs(x.shape, m[x.q]!, m[x.k]!, m[x.v]!, m[x.mask], m[x.output]!, m[x.lse]!)),
            onCpu: shape.E == 0 || shape.Ev == 0);
    }

    /// <summary>Allocating form of <see cref="Sdpa(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor?, SdpaOptions)"/>: returns new (out [B,Hq,L,Ev], lse [B,Hq,L]).</summary>
    public (Tensor Out, Tensor Lse) Sdpa(Tensor q, Tensor k, Tensor v, Tensor? mask = null, SdpaOptions options = default)
    {
        var s = ValidateSdpa(q, k, v, mask, options);
        var o = Allocate(s.B, s.Hq, s.L, s.Ev);
        var l = Allocate(s.B, s.Hq, s.L);
        try { Sdpa(q, k, v, o, l, mask, options); }
        catch { o.Dispose(); l.Dispose(); throw; }
        return (o, l);
    }

    internal SdpaShape ValidateSdpa(Tensor q, Tensor k, Tensor v, Tensor? mask, SdpaOptions options)
    {
        CheckOwned(q, "q"); CheckOwned(k, "k"); CheckOwned(v, "v");
        if (mask is not null) CheckOwned(mask, "mask");
        return ResolveSdpaShape(q.Shape, k.Shape, v.Shape, mask is null ? null : mask.ShapeArray, options);
    }

    /// <summary>Checks the SDPA shapes (host-side too, used by the CLI before it allocates) and resolves the mask strides.</summary>
    internal static SdpaShape ResolveSdpaShape(ReadOnlySpan<int> q, ReadOnlySpan<int> k, ReadOnlySpan<int> v, int[]? mask, SdpaOptions options)
    {
        string F(ReadOnlySpan<int> s) => TensorShapeException.Format(s);
        if (q.Length != 4) throw new TensorShapeException("q", "rank 4 [B, Hq, L, E]", F(q));
        int B = q[0], Hq = q[1], L = q[2], E = q[3];
        if (k.Length != 4) throw new TensorShapeException("k", "rank 4 [B, Hkv, S, E]", F(k));
        int Hkv = k[1], S = k[2];
        if (k[0] != B || k[3] != E || Hkv == 0 && Hq != 0)
            throw new TensorShapeException("k", $"[B, Hkv, S, E] with B = {B}, E = {E}", F(k));
        if (Hkv > 0 && Hq % Hkv != 0)
            throw new TensorShapeException("k", $"[B, Hkv, S, E] with Hq % Hkv == 0 (Hq = {Hq})", F(k));
        if (v.Length != 4 || v[0] != B || v[1] != Hkv || v[2] != S)
            throw new TensorShapeException("v", $"[B, Hkv, S, Ev] = [{B}, {Hkv}, {S}, Ev]", F(v));
        int Ev = v[3];
        float scale = options.Scale ?? (E > 0 ? 1f / MathF.Sqrt(E) : 1f);
        Validation.Finite(scale, "scale");
        long sb = 0, sh = 0, sl = 0, ss = 0;
        if (mask is not null)
        {
            if (mask.Length < 2 || mask.Length > 4)
                throw new TensorShapeException("mask", $"rank 2 to 4, broadcastable to [B, Hq, L, S] = [{B}, {Hq}, {L}, {S}]", F(mask));
            int[] full = [B, Hq, L, S];
            var m4 = new int[4];
            for (int i = 0; i < 4; i++) m4[i] = 1;
            for (int i = 0; i < mask.Length; i++) m4[4 - mask.Length + i] = mask[i];
            for (int i = 0; i < 4; i++)
                if (m4[i] != 1 && m4[i] != full[i])
                    throw new TensorShapeException("mask", $"broadcastable to [B, Hq, L, S] = [{B}, {Hq}, {L}, {S}]", F(mask));
            long s3 = m4[3] == 1 ? 0 : 1;
            long s2 = m4[2] == 1 ? 0 : m4[3];
            long s1 = m4[1] == 1 ? 0 : (long)m4[2] * m4[3];
            long s0 = m4[0] == 1 ? 0 : (long)m4[1] * m4[2] * m4[3];
            (sb, sh, sl, ss) = (s0, s1, s2, s3);
        }
        return new SdpaShape(B, Hq, Hkv, L, S, E, Ev, scale, options.IsCausal, sb, sh, sl, ss);
    }
}
