using GpuAttention.Backends;

namespace GpuAttention;

public sealed partial class Device
{
    /// <summary>
    /// Fused scaled dot-product attention, backward: the gradients of a loss with respect to q, k and v given its gradient
    /// <paramref name="gradOut"/> with respect to <c>out = softmax(q·kᵀ·scale + mask)·v</c>. FlashAttention-2's backward
    /// (Dao 2023, arXiv:2307.08691, Algorithm 2, without atomics): D = rowsum(dO∘O); a pass parallel over key blocks
    /// accumulates dK and dV over the query rows of every query head of the GQA group; a pass parallel over query blocks
    /// accumulates dQ; the probabilities are recomputed as P = exp(scale·q·kᵀ + mask − lse). Never forms an L×S matrix
    /// in device memory. Deterministic (no floating-point atomics). The mask is not differentiated (as a constant).
    /// </summary>
    /// <param name="q">Queries [B, Hq, L, E].</param>
    /// <param name="k">Keys [B, Hkv, S, E]; Hq % Hkv == 0.</param>
    /// <param name="v">Values [B, Hkv, S, Ev].</param>
    /// <param name="output">The forward's out [B, Hq, L, Ev] (from <see cref="Sdpa(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor?, SdpaOptions)"/> with the same arguments).</param>
    /// <param name="lse">The forward's lse [B, Hq, L]; a row with lse = −∞ (fully masked) contributes nothing.</param>
    /// <param name="gradOut">dLoss/dout [B, Hq, L, Ev].</param>
    /// <param name="gradQ">Written: dLoss/dq [B, Hq, L, E].</param>
    /// <param name="gradK">Written: dLoss/dk [B, Hkv, S, E], summed over the query heads that share each key head.</param>
    /// <param name="gradV">Written: dLoss/dv [B, Hkv, S, Ev], summed likewise.</param>
    /// <param name="mask">The forward's mask, if any (additive float; bool masks through <see cref="UploadMask"/>), broadcastable to [B, Hq, L, S].</param>
    /// <param name="options">The forward's causal flag and scale (default 1/√E).</param>
    /// <remarks>Edge conventions (FlashAttention's, checked against the double reference on every backend): a fully masked row
    /// (lse = −∞) has grad_q = 0 and adds nothing to grad_k, grad_v; a key whose probability is exactly 0 for a row (masked or
    /// causal-hidden) receives nothing from that row, so NaN/∞ in the row's grad_out or q never reach it (0·∞ is not formed);
    /// NaN in one element of grad_out row i reaches grad_q row i, and grad_k, grad_v only in the rows of the keys row i sees
    /// (grad_v only in that column). Empty dimensions give zero gradients (S = 0: grad_q = 0; L = 0 or Ev = 0: grad_k = grad_v = 0);
    /// E = 0 or Ev = 0 run on the CPU backend (with copies) on every device.</remarks>
    /// <exception cref="TensorShapeException">A tensor has the wrong rank or shape; the message names it.</exception>
    /// <exception cref="ArgumentException">Tensors of another device, outputs aliasing inputs or each other, non-finite scale.</exception>
    public void SdpaBackward(Tensor q, Tensor k, Tensor v, Tensor output, Tensor lse, Tensor gradOut,
        Tensor gradQ, Tensor gradK, Tensor gradV, Tensor? mask = null, SdpaOptions options = default)
    {
        var s = ValidateSdpaBackward(q, k, v, output, lse, gradOut, mask, options);
        CheckOwned(gradQ, "grad_q"); CheckOwned(gradK, "grad_k"); CheckOwned(gradV, "grad_v");
        Validation.Shape(gradQ, "grad_q", [s.B, s.Hq, s.L, s.E], "[B, Hq, L, E]");
        Validation.Shape(gradK, "grad_k", [s.B, s.Hkv, s.S, s.E], "[B, Hkv, S, E]");
        Validation.Shape(gradV, "grad_v", [s.B, s.Hkv, s.S, s.Ev], "[B, Hkv, S, Ev]");
        Validation.NoAlias([(q, "q"), (k, "k"), (v, "v"), (mask, "mask"), (output, "out"), (lse, "lse"), (gradOut, "grad_out")],
            [(gradQ, "grad_q"), (gradK, "grad_k"), (gradV, "grad_v")]);
        Run(OpKind.SdpaBackward, [q, k, v, mask, output, lse, gradOut], [gradQ, gradK, gradV], (s, q, k, v, mask, output, lse, gradOut, gradQ, gradK, gradV), static (be, m, x) =>
            ((ISdpaBackwardBackend)be).SdpaBackward(new SdpaBackwardArgs(x.s, m[x.q]!, m[x.k]!, m[x.v]!, m[x.mask], m[x.output]!, m[x.lse]!, m[x.gradOut]!,
                m[x.gradQ]!, m[x.gradK]!, m[x.gradV]!)), onCpu: s.E == 0 || s.Ev == 0);
    }

    /// <summary>Allocating form of <see cref="SdpaBackward(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor?, SdpaOptions)"/>:
    /// returns new (grad_q [B,Hq,L,E], grad_k [B,Hkv,S,E], grad_v [B,Hkv,S,Ev]).</summary>
    public (Tensor GradQ, Tensor GradK, Tensor GradV) SdpaBackward(Tensor q, Tensor k, Tensor v, Tensor output, Tensor lse, Tensor gradOut,
        Tensor? mask = null, SdpaOptions options = default)
    {
        var s = ValidateSdpaBackward(q, k, v, output, lse, gradOut, mask, options);
        Tensor? dq = null, dk = null, dv = null;
        try
        {
            dq = Allocate(s.B, s.Hq, s.L, s.E);
            dk = Allocate(s.B, s.Hkv, s.S, s.E);
            dv = Allocate(s.B, s.Hkv, s.S, s.Ev);
            SdpaBackward(q, k, v, output, lse, gradOut, dq, dk, dv, mask, options);
            return (dq, dk, dv);
        }
        catch { dq?.Dispose(); dk?.Dispose(); dv?.Dispose(); throw; }
    }

    private SdpaShape ValidateSdpaBackward(Tensor q, Tensor k, Tensor v, Tensor output, Tensor lse, Tensor gradOut, Tensor? mask, SdpaOptions options)
    {
        var s = ValidateSdpa(q, k, v, mask, options);
        CheckOwned(output, "out"); CheckOwned(lse, "lse"); CheckOwned(gradOut, "grad_out");
        CheckSdpaBackwardInputs(s, output.Shape, lse.Shape, gradOut.Shape);
        return s;
    }

    /// <summary>Host-side shape checks of the backward's extra inputs (used by the CLI before it allocates).</summary>
    internal static void CheckSdpaBackwardInputs(in SdpaShape s, ReadOnlySpan<int> output, ReadOnlySpan<int> lse, ReadOnlySpan<int> gradOut)
    {
        static void Check(ReadOnlySpan<int> actual, string name, ReadOnlySpan<int> expected, string symbolic)
        {
            if (!actual.SequenceEqual(expected))
                throw new TensorShapeException(name, $"{symbolic} = {TensorShapeException.Format(expected)}", TensorShapeException.Format(actual));
        }
        Check(output, "out", [s.B, s.Hq, s.L, s.Ev], "[B, Hq, L, Ev]");
        Check(lse, "lse", [s.B, s.Hq, s.L], "[B, Hq, L]");
        Check(gradOut, "grad_out", [s.B, s.Hq, s.L, s.Ev], "[B, Hq, L, Ev]");
    }
}
