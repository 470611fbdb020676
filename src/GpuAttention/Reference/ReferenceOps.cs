namespace GpuAttention.Reference;

/// <summary>Straightforward double-precision reference implementations, used to verify the kernels.</summary>
public static class ReferenceOps
{
    /// <summary>
    /// SDPA forward in double: for each query row, scores <c>s_j = scale·q·k_j + mask</c> (causal keeps j ≤ i),
    /// <c>out = Σ softmax(s)_j v_j</c>, <c>lse = max + log Σ exp(s_j − max)</c>. A fully masked row gives out 0, lse −∞.
    /// Tensors are row-major: q [B,Hq,L,E], k [B,Hkv,S,E], v [B,Hkv,S,Ev]; the additive mask has shape
    /// <paramref name="maskShape"/> (rank 2–4), broadcast right-aligned to [B,Hq,L,S].
    /// </summary>
    /// <returns>out [B,Hq,L,Ev] and lse [B,Hq,L].</returns>
    public static (double[] Out, double[] Lse) SdpaForward(float[] q, float[] k, float[] v, int B, int Hq, int Hkv, int L, int S, int E, int Ev,
        float scale, bool causal, float[]? mask, int[]? maskShape)
    {
        ArgumentNullException.ThrowIfNull(q); ArgumentNullException.ThrowIfNull(k); ArgumentNullException.ThrowIfNull(v);
        if (Hkv <= 0 || Hq % Hkv != 0) throw new ArgumentException($"Hq ({Hq}) must be a multiple of Hkv ({Hkv})");
        if (q.Length != (long)B * Hq * L * E || k.Length != (long)B * Hkv * S * E || v.Length != (long)B * Hkv * S * Ev)
            throw new ArgumentException("q, k or v length does not match the shape");
        long sb = 0, sh = 0, sl = 0, ss = 0;
        if (mask is not null)
        {
            if (maskShape is null || maskShape.Length is < 2 or > 4) throw new ArgumentException("maskShape must have rank 2 to 4", nameof(maskShape));
            var m4 = new int[] { 1, 1, 1, 1 };
            for (int i = 0; i < maskShape.Length; i++) m4[4 - maskShape.Length + i] = maskShape[i];
            int[] full = [B, Hq, L, S];
            for (int i = 0; i < 4; i++)
                if (m4[i] != 1 && m4[i] != full[i]) throw new ArgumentException($"mask shape [{string.Join(", ", maskShape)}] does not broadcast to [{B}, {Hq}, {L}, {S}]");
            if (mask.Length != (long)m4[0] * m4[1] * m4[2] * m4[3]) throw new ArgumentException("mask length does not match maskShape");
            ss = m4[3] == 1 ? 0 : 1;
            sl = m4[2] == 1 ? 0 : m4[3];
            sh = m4[1] == 1 ? 0 : (long)m4[2] * m4[3];
            sb = m4[0] == 1 ? 0 : (long)m4[1] * m4[2] * m4[3];
        }
        var outp = new double[(long)B * Hq * L * Ev];
        var lse = new double[(long)B * Hq * L];
        int group = Hq / Hkv;
        // One task per query row (b, h, i); scratch buffers per worker.
        Parallel.For(0, (long)B * Hq * L, () => (new double[S], new double[Ev]), (row, _, buf) =>
        {
            var (s, acc) = buf;
            int i = (int)(row % L), h = (int)(row / L % Hq), b = (int)(row / L / Hq), hk = h / group;
            long kBase = ((long)b * Hkv + hk) * S, qo = row * E;
            double max = double.NegativeInfinity;
            for (int j = 0; j < S; j++)
            {
                double d = 0;
                long ko = (kBase + j) * E;
                for (int e = 0; e < E; e++) d += (double)q[qo + e] * k[ko + e];
                d *= scale;
                if (mask is not null) d += mask[b * sb + h * sh + i * sl + j * ss];
                if (causal && j > i) d = double.NegativeInfinity;
                s[j] = d;
                if (d > max) max = d;
            }
            if (double.IsNegativeInfinity(max))
            {
                lse[row] = double.NegativeInfinity; // outputs stay 0
                return buf;
            }
            double sum = 0;
            Array.Clear(acc);
            for (int j = 0; j < S; j++)
            {
                double p = Math.Exp(s[j] - max);
                sum += p;
                if (p == 0) continue;
                long vo = (kBase + j) * Ev;
                for (int e = 0; e < Ev; e++) acc[e] += p * v[vo + e];
            }
            for (int e = 0; e < Ev; e++) outp[row * Ev + e] = acc[e] / sum;
            lse[row] = max + Math.Log(sum);
            return buf;
        }, _ => { });
        return (outp, lse);
    }
}
