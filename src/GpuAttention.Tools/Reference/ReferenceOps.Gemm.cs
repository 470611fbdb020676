namespace GpuAttention.Reference;

public static partial class ReferenceOps
{
    /// <summary>
    /// Batched GEMM in double, the triple loop: c[t] = alpha·op(a[t])·op(b[t]) + beta·c[t] for t &lt; batch, with a, b, c dense row-major
    /// ([batch|1, M, K] or, transposed, [batch|1, K, M]; [batch|1, K, N] or [batch|1, N, K]; [batch, M, N]). An operand whose
    /// <paramref name="aBatched"/> / <paramref name="bBatched"/> flag is false is shared by every batch. beta = 0 ignores c.
    /// </summary>
    public static double[] Gemm(float[] a, float[] b, float[]? c, int batch, int M, int N, int K, bool transA, bool transB,
        double alpha, double beta, bool aBatched = true, bool bBatched = true)
    {
        var r = new double[(long)batch * M * N];
        for (int t = 0; t < batch; t++)
        {
            long ao = aBatched ? (long)t * M * K : 0, bo = bBatched ? (long)t * K * N : 0, co = (long)t * M * N;
            for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++)
            {
                double s = 0;
                for (int k = 0; k < K; k++)
                    s += (double)a[ao + (transA ? (long)k * M + m : (long)m * K + k)] * b[bo + (transB ? (long)n * K + k : (long)k * N + n)];
                r[co + (long)m * N + n] = alpha * s + (beta == 0 ? 0 : beta * c![co + (long)m * N + n]);
            }
        }
        return r;
    }
}
