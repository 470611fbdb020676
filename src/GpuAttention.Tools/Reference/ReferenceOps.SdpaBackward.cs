namespace GpuAttention.Reference;

public static partial class ReferenceOps
{
    /// <summary>
    /// Scaled dot-product attention forward in double precision on double inputs (used by finite-difference checks).
    /// Same semantics as <see cref="SdpaForward(float[], float[], float[], int, int, int, int, int, int, int, float, bool, float[], int[])"/>.
    /// </summary>
    public static (double[] Out, double[] Lse) SdpaForward(double[] q, double[] k, double[] v, int B, int Hq, int Hkv, int L, int S, int E, int Ev,
        double scale, bool causal, float[]? mask, int[]? maskShape)
    {
        var o = new double[(long)B * Hq * L * Ev];
        var lse = new double[(long)B * Hq * L];
        var p = new double[S];
        var mi = MaskIndexer.Create(maskShape, B, Hq, L, S);
        for (int b = 0; b < B; b++)
        for (int h = 0; h < Hq; h++)
        for (int i = 0; i < L; i++)
        {
            long row = ((long)b * Hq + h) * L + i;
            double l = Probabilities(q, k, mask, mi, b, h, i, Hq, Hkv, L, S, E, scale, causal, p);
            lse[row] = l;
            int hk = h / (Hq / Hkv);
            for (int j = 0; j < S; j++)
            {
                if (p[j] == 0) continue;
                long vo = (((long)b * Hkv + hk) * S + j) * Ev;
                for (int c = 0; c < Ev; c++) o[row * Ev + c] += p[j] * v[vo + c];
            }
        }
        return (o, lse);
    }

    /// <summary>
    /// Scaled dot-product attention backward in double precision, the textbook way (Vaswani et al. 2017; the gradient of
    /// softmax as in FlashAttention-2, Dao 2023, arXiv:2307.08691, eqs. for dV, dP, dS): for each query row the full
    /// probability row P = softmax(scale·q·kᵀ + mask) is formed, then dV += Pᵀ·dO, dP = dO·vᵀ,
    /// dS = P ∘ (dP − rowsum(dP ∘ P)), dQ = scale·dS·k, dK += scale·dSᵀ·q. Query heads of a GQA group add into the same dK, dV.
    /// A fully masked row (all scores −∞) contributes nothing; a key whose probability is exactly 0 (masked or causal-hidden) receives
    /// nothing from a row (no 0·NaN in its dK, dV rows from a non-finite dO or q row). Its own non-finite v still reaches the rows
    /// through rowsum(dP ∘ P) = dO·out (0·∞ = NaN, as the forward's out = P·V, like PyTorch's). Recomputes the forward itself; needs no out or lse.
    /// </summary>
    public static (double[] GradQ, double[] GradK, double[] GradV) SdpaBackward(float[] q, float[] k, float[] v, float[] gradOut,
        int B, int Hq, int Hkv, int L, int S, int E, int Ev, float scale, bool causal, float[]? mask, int[]? maskShape) =>
        SdpaBackward(ToDouble(q), ToDouble(k), ToDouble(v), ToDouble(gradOut), B, Hq, Hkv, L, S, E, Ev, scale, causal, mask, maskShape);

    /// <summary>Double-input form of <see cref="SdpaBackward(float[], float[], float[], float[], int, int, int, int, int, int, int, float, bool, float[], int[])"/>.</summary>
    public static (double[] GradQ, double[] GradK, double[] GradV) SdpaBackward(double[] q, double[] k, double[] v, double[] gradOut,
        int B, int Hq, int Hkv, int L, int S, int E, int Ev, double scale, bool causal, float[]? mask, int[]? maskShape)
    {
        var dq = new double[q.Length];
        var dk = new double[k.Length];
        var dv = new double[v.Length];
        var p = new double[S];
        var dp = new double[S];
        var mi = MaskIndexer.Create(maskShape, B, Hq, L, S);
        int group = Hkv == 0 ? 1 : Hq / Hkv;
        for (int b = 0; b < B; b++)
        for (int h = 0; h < Hq; h++)
        for (int i = 0; i < L; i++)
        {
            long row = ((long)b * Hq + h) * L + i;
            double l = Probabilities(q, k, mask, mi, b, h, i, Hq, Hkv, L, S, E, scale, causal, p);
            if (double.IsNegativeInfinity(l)) continue;          // fully masked row: out = 0 is constant
            long kvBase = ((long)b * Hkv + h / group) * S;
            double rowDot = 0;                                    // Σ_j P_j dP_j  (= dO · out)
            for (int j = 0; j < S; j++)
            {
                double d = 0;
                long vo = (kvBase + j) * Ev;
                for (int c = 0; c < Ev; c++) d += gradOut[row * Ev + c] * v[vo + c];
                dp[j] = d;
                rowDot += p[j] * d;                               // = dO·out: NaN when out is (0·∞ from a masked key's ∞ value, as in P·V)
            }
            for (int j = 0; j < S; j++)
            {
                if (p[j] == 0) continue;
                long vo = (kvBase + j) * Ev, ko = (kvBase + j) * E;
                for (int c = 0; c < Ev; c++) dv[vo + c] += p[j] * gradOut[row * Ev + c];
                double ds = p[j] * (dp[j] - rowDot) * scale;
                for (int c = 0; c < E; c++)
                {
                    dq[row * E + c] += ds * k[ko + c];
                    dk[ko + c] += ds * q[row * E + c];
                }
            }
        }
        return (dq, dk, dv);
    }

    /// <summary>p[j] = softmax row i of (b, h); returns its log-sum-exp (−∞ and p = 0 when fully masked, NaN when a score is NaN).</summary>
    private static double Probabilities(double[] q, double[] k, float[]? mask, MaskIndexer mi, int b, int h, int i,
        int Hq, int Hkv, int L, int S, int E, double scale, bool causal, double[] p)
    {
        long qo = (((long)b * Hq + h) * L + i) * E;
        long kBase = ((long)b * Hkv + h / (Hq / Hkv)) * S;
        double max = double.NegativeInfinity;
        bool nan = false;
        for (int j = 0; j < S; j++)
        {
            double dot = 0;
            for (int e = 0; e < E; e++) dot += q[qo + e] * k[(kBase + j) * E + e];
            double x = dot * scale;
            if (mask is not null) x += mask[mi.Index(b, h, i, j)];
            if (causal && j > i) x = double.NegativeInfinity;
            p[j] = x;
            if (x > max) max = x;
            nan |= double.IsNaN(x);
        }
        if (nan)
        {
            // NaN scores poison the row, except for the keys causal masking hides (they are absent, as in the kernels)
            for (int j = 0; j < S; j++) p[j] = causal && j > i ? 0 : double.NaN;
            return double.NaN;
        }
        if (double.IsNegativeInfinity(max)) { Array.Clear(p, 0, S); return double.NegativeInfinity; }
        double sum = 0;
        for (int j = 0; j < S; j++) { p[j] = Math.Exp(p[j] - max); sum += p[j]; }
        for (int j = 0; j < S; j++) p[j] /= sum;
        return max + Math.Log(sum);
    }

}
