namespace GpuAttention.Backends;

/// <summary>
/// Resolved arguments of a strided batched GEMM, C = Alpha·op(A)·op(B) + Beta·C, for batch index t &lt; Batch:
/// op(A)[m, k] = TransA ? A[OffA + t·StrideA + k·Lda + m] : A[OffA + t·StrideA + m·Lda + k] (an M×K matrix),
/// op(B)[k, n] = TransB ? B[OffB + t·StrideB + n·Ldb + k] : B[OffB + t·StrideB + k·Ldb + n] (K×N),
/// C[m, n] at C[OffC + t·StrideC + m·Ldc + n] (M×N). A stride of 0 broadcasts an operand over the batch.
/// Beta = 0 means C is not read (NaN or garbage in C does not propagate), as in BLAS.
/// </summary>
internal readonly record struct GemmArgs(int Batch, int M, int N, int K, bool TransA, bool TransB, float Alpha, float Beta,
    IDeviceBuffer A, long OffA, long StrideA, int Lda,
    IDeviceBuffer B, long OffB, long StrideB, int Ldb,
    IDeviceBuffer C, long OffC, long StrideC, int Ldc)
{
    /// <summary>2·Batch·M·N·K.</summary>
    public double Flops => 2.0 * Batch * M * (double)N * K;
}

/// <summary>Backends with a tiled GEMM kernel implement this.</summary>
internal interface IGemmBackend
{
    void Gemm(in GemmArgs args);
}
