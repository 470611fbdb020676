namespace GpuAttention.Reference;

/// <summary>
/// Double-precision reference implementations: obviously correct, no tiling, no SIMD, single-threaded.
/// Every kernel of every backend is tested against these.
/// </summary>
public static partial class ReferenceOps
{
    /// <summary>
    /// Scaled dot-product attention forward in double precision: for each row, scores s_j = scale·q·k_j + mask_j
    /// (−∞ where causal hides key j &gt; i), out = Σ softmax(s)_j v_j, lse = log Σ exp(s_j).
    /// A fully masked row gives out = 0 and lse = −∞.
    /// </summary>
    /// <param name="mask">Optional additive mask whose shape (<paramref name="maskShape"/>, rank 2–4) broadcasts to [B, Hq, L, S] from the right.</param>
    public static (double[] Out, double[] Lse) SdpaForward(float[] q, float[] k, float[] v, int B, int Hq, int Hkv, int L, int S, int E, int Ev,
        float scale, bool causal, float[]? mask, int[]? maskShape)
    {
        var o = new double[(long)B * Hq * L * Ev];
        var lse = new double[(long)B * Hq * L];
        var s = new double[S];
        var mi = MaskIndexer.Create(maskShape, B, Hq, L, S);
        int group = Hkv == 0 ? 1 : Hq / Hkv;
        for (int b = 0; b < B; b++)
        for (int h = 0; h < Hq; h++)
        {
            int hk = h / group;
            for (int i = 0; i < L; i++)
            {
                long qo = (((long)b * Hq + h) * L + i) * E;
                double max = double.NegativeInfinity;
                bool nan = false;
                for (int j = 0; j < S; j++)
                {
                    long ko = (((long)b * Hkv + hk) * S + j) * E;
                    double dot = 0;
                    for (int e = 0; e < E; e++) dot += (double)q[qo + e] * k[ko + e];
                    double x = dot * scale;
                    if (mask is not null) x += mask[mi.Index(b, h, i, j)];
                    if (causal && j > i) x = double.NegativeInfinity;
                    s[j] = x;
                    if (x > max) max = x;
                    nan |= double.IsNaN(x);
                }
                long oo = (((long)b * Hq + h) * L + i) * Ev;
                long lo = ((long)b * Hq + h) * L + i;
                if (nan) { o.AsSpan((int)oo, Ev).Fill(double.NaN); lse[lo] = double.NaN; continue; }
                if (double.IsNegativeInfinity(max)) { lse[lo] = double.NegativeInfinity; continue; }
                double sum = 0;
                for (int j = 0; j < S; j++) { s[j] = Math.Exp(s[j] - max); sum += s[j]; }
                for (int j = 0; j < S; j++)
                {
                    long vo = (((long)b * Hkv + hk) * S + j) * Ev;
                    double p = s[j] / sum;
                    for (int e = 0; e < Ev; e++) o[oo + e] += p * v[vo + e];
                }
                lse[lo] = max + Math.Log(sum);
            }
        }
        return (o, lse);
    }

    /// <summary>Relative error ‖a − ref‖₂ / ‖ref‖₂ over finite reference entries; entries where both are the same infinity count as equal.
    /// Returns +∞ when <paramref name="actual"/> has a NaN (or a non-finite value) where the reference is finite.</summary>
    public static double RelativeError(ReadOnlySpan<float> actual, ReadOnlySpan<double> reference)
    {
        if (actual.Length != reference.Length) throw new ArgumentException($"actual: expected {reference.Length} elements, got {actual.Length}");
        double num = 0, den = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            double r = reference[i], a = actual[i];
            if (double.IsInfinity(r)) { if (a != r) return double.PositiveInfinity; continue; }
            if (double.IsNaN(r)) { if (!double.IsNaN(a)) return double.PositiveInfinity; continue; }
            if (!double.IsFinite(a)) return double.PositiveInfinity;
            num += (a - r) * (a - r);
            den += r * r;
        }
        return den == 0 ? Math.Sqrt(num) : Math.Sqrt(num / den);
    }

    /// <summary>Largest |a − ref| over finite reference entries (+∞ if a is not finite where ref is).</summary>
    public static double MaxAbsError(ReadOnlySpan<float> actual, ReadOnlySpan<double> reference)
    {
        double m = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            if (!double.IsFinite(reference[i])) continue;
            if (!float.IsFinite(actual[i])) return double.PositiveInfinity;
            m = Math.Max(m, Math.Abs(actual[i] - reference[i]));
        }
        return m;
    }
}

/// <summary>Maps (b, h, i, j) to the flat index of a mask broadcast from the right to [B, H, L, S].</summary>
internal readonly record struct MaskIndexer(long Sb, long Sh, long Sl, long Ss)
{
    public static MaskIndexer Create(int[]? shape, int B, int H, int L, int S)
    {
        if (shape is null) return default;
        var m = new int[4] { 1, 1, 1, 1 };
        for (int i = 0; i < shape.Length; i++) m[4 - shape.Length + i] = shape[i];
        int[] full = [B, H, L, S];
        for (int i = 0; i < 4; i++)
            if (m[i] != 1 && m[i] != full[i]) throw new ArgumentException($"mask: shape {TensorShapeException.Format(shape)} does not broadcast to [{B}, {H}, {L}, {S}]");
        return new MaskIndexer(m[0] == 1 ? 0 : (long)m[1] * m[2] * m[3], m[1] == 1 ? 0 : (long)m[2] * m[3], m[2] == 1 ? 0 : m[3], m[3] == 1 ? 0 : 1);
    }

    public long Index(int b, int h, int i, int j) => b * Sb + h * Sh + i * Sl + j * Ss;
}
