namespace GpuAttention.Reference;

public static partial class ReferenceOps
{
    /// <summary>Parameters of a multi-head attention layer in double (biases null when absent); W* are [E, din] row-major.</summary>
    public sealed record MhaParams(int E, int H, int KDim, int VDim, double[] Wq, double[] Wk, double[] Wv, double[] Wo,
        double[]? Bq, double[]? Bk, double[]? Bv, double[]? Bo);

    /// <summary>Gradients of the multi-head attention layer in double.</summary>
    public sealed record MhaGrads(double[] Query, double[] Key, double[] Value, double[] Wq, double[] Wk, double[] Wv, double[] Wo,
        double[]? Bq, double[]? Bk, double[]? Bv, double[]? Bo);

    /// <summary>nn.MultiheadAttention (batch_first, need_weights=False) forward in double: returns out [B, L, E].</summary>
    public static double[] MhaForward(MhaParams p, double[] query, double[] key, double[] value, int B, int L, int S, bool causal, float[]? mask, int[]? maskShape)
    {
        int hd = p.E / p.H;
        var q = Proj(query, p.Wq, p.Bq, B, L, p.E, p.H, hd);
        var k = Proj(key, p.Wk, p.Bk, B, S, p.KDim, p.H, hd);
        var v = Proj(value, p.Wv, p.Bv, B, S, p.VDim, p.H, hd);
        var (o, _) = SdpaForward(q, k, v, B, p.H, p.H, L, S, hd, hd, 1 / Math.Sqrt(hd), causal, mask, maskShape);
        var y = new double[(long)B * L * p.E];
        for (int b = 0; b < B; b++)
        for (int i = 0; i < L; i++)
        for (int e = 0; e < p.E; e++)
        {
            double s = p.Bo?[e] ?? 0;
            for (int h = 0; h < p.H; h++)
            for (int c = 0; c < hd; c++) s += o[(((long)b * p.H + h) * L + i) * hd + c] * p.Wo[(long)e * p.E + h * hd + c];
            y[((long)b * L + i) * p.E + e] = s;
        }
        return y;
    }

    /// <summary>Backward of <see cref="MhaForward"/> in double, by the chain rule through the projections and <see cref="SdpaBackward(double[], double[], double[], double[], int, int, int, int, int, int, int, double, bool, float[], int[])"/>.</summary>
    public static MhaGrads MhaBackward(MhaParams p, double[] query, double[] key, double[] value, double[] gradOut, int B, int L, int S,
        bool causal, float[]? mask, int[]? maskShape)
    {
        int E = p.E, H = p.H, hd = E / H;
        var q = Proj(query, p.Wq, p.Bq, B, L, E, H, hd);
        var k = Proj(key, p.Wk, p.Bk, B, S, p.KDim, H, hd);
        var v = Proj(value, p.Wv, p.Bv, B, S, p.VDim, H, hd);
        double scale = 1 / Math.Sqrt(hd);
        var (o, _) = SdpaForward(q, k, v, B, H, H, L, S, hd, hd, scale, causal, mask, maskShape);
        var dO = new double[o.Length];
        var dWo = new double[E * E];
        var dbo = p.Bo is null ? null : new double[E];
        for (int b = 0; b < B; b++)
        for (int i = 0; i < L; i++)
        for (int e = 0; e < E; e++)
        {
            double g = gradOut[((long)b * L + i) * E + e];
            if (dbo is not null) dbo[e] += g;
            for (int h = 0; h < H; h++)
            for (int c = 0; c < hd; c++)
            {
                long oi = (((long)b * H + h) * L + i) * hd + c;
                dO[oi] += g * p.Wo[(long)e * E + h * hd + c];
                dWo[(long)e * E + h * hd + c] += g * o[oi];
            }
        }
        var (dq, dk, dv) = SdpaBackward(q, k, v, dO, B, H, H, L, S, hd, hd, scale, causal, mask, maskShape);
        var (dx, dWq, dbq) = ProjBack(dq, query, p.Wq, p.Bq is not null, B, L, E, H, hd);
        var (dkx, dWk, dbk) = ProjBack(dk, key, p.Wk, p.Bk is not null, B, S, p.KDim, H, hd);
        var (dvx, dWv, dbv) = ProjBack(dv, value, p.Wv, p.Bv is not null, B, S, p.VDim, H, hd);
        return new MhaGrads(dx, dkx, dvx, dWq, dWk, dWv, dWo, dbq, dbk, dbv, dbo);
    }

    private static double[] Proj(double[] x, double[] w, double[]? bias, int B, int n, int din, int H, int hd)
    {
        var p = new double[(long)B * H * n * hd];
        for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
        for (int i = 0; i < n; i++)
        for (int c = 0; c < hd; c++)
        {
            double s = bias?[h * hd + c] ?? 0;
            for (int d = 0; d < din; d++) s += x[((long)b * n + i) * din + d] * w[(long)(h * hd + c) * din + d];
            p[(((long)b * H + h) * n + i) * hd + c] = s;
        }
        return p;
    }

    private static (double[] Dx, double[] Dw, double[]? Db) ProjBack(double[] dp, double[] x, double[] w, bool hasBias, int B, int n, int din, int H, int hd)
    {
        var dx = new double[(long)B * n * din];
        var dw = new double[(long)H * hd * din];
        var db = hasBias ? new double[H * hd] : null;
        for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
        for (int i = 0; i < n; i++)
        for (int c = 0; c < hd; c++)
        {
            double g = dp[(((long)b * H + h) * n + i) * hd + c];
            if (db is not null) db[h * hd + c] += g;
            for (int d = 0; d < din; d++)
            {
                dw[(long)(h * hd + c) * din + d] += g * x[((long)b * n + i) * din + d];
                dx[((long)b * n + i) * din + d] += g * w[(long)(h * hd + c) * din + d];
            }
        }
        return (dx, dw, db);
    }
}
