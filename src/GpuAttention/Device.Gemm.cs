using GpuAttention.Backends;

namespace GpuAttention;

public sealed partial class Device
{
    /// <summary>
    /// Batched matrix product <c>c = alpha·op(a)·op(b) + beta·c</c> (BLAS sgemm semantics, batched like
    /// <c>torch.baddbmm</c>), where op(x) is x or its transpose (of the last two dims). Tiled in local memory on kernel backends.
    /// </summary>
    /// <param name="a">[M, K] or [batch, M, K]; with <paramref name="transposeA"/> [K, M] or [batch, K, M]. A batch of 1 (or rank 2) is broadcast.</param>
    /// <param name="b">[K, N] or [batch, K, N]; with <paramref name="transposeB"/> [N, K] or [batch, N, K]. A batch of 1 (or rank 2) is broadcast.</param>
    /// <param name="c">[M, N] when a and b are both rank 2, else [batch, M, N]. Read only when beta ≠ 0.</param>
    /// <param name="transposeA">Use aᵀ.</param>
    /// <param name="transposeB">Use bᵀ.</param>
    /// <param name="alpha">Multiplier of the product (finite).</param>
    /// <param name="beta">Multiplier of the old c (finite); 0 means c is only written.</param>
    /// <exception cref="TensorShapeException">Ranks other than 2 or 3, inner dimensions that differ, batches that do not broadcast, c of the wrong shape.</exception>
    /// <exception cref="ArgumentException">Tensors of another device, c aliasing a or b, non-finite alpha or beta.</exception>
    public void Gemm(Tensor a, Tensor b, Tensor c, bool transposeA = false, bool transposeB = false, float alpha = 1f, float beta = 0f)
    {
        var (batch, m, n, k, batched) = ValidateGemm(a, b, transposeA, transposeB);
        CheckOwned(c, "c");
        Validation.Finite(alpha, "alpha"); Validation.Finite(beta, "beta");
        if (batched) Validation.Shape(c, "c", [batch, m, n], "[batch, M, N]");
        else Validation.Shape(c, "c", [m, n], "[M, N]");
        Validation.NoAlias([(a, "a"), (b, "b")], [(c, "c")]);
        long sa = a.Rank == 3 && a.Dim(0) != 1 ? (long)m * k : 0, sb = b.Rank == 3 && b.Dim(0) != 1 ? (long)k * n : 0;
        int lda = transposeA ? m : k, ldb = transposeB ? k : n;
        GemmInternal(new GemmArgs(batch, m, n, k, transposeA, transposeB, alpha, beta, null!, 0, sa, lda, null!, 0, sb, ldb, null!, 0, (long)m * n, n), a, b, c);
    }

    /// <summary>Allocating form of <see cref="Gemm(Tensor, Tensor, Tensor, bool, bool, float, float)"/>: returns a new op(a)·op(b)·alpha.</summary>
    public Tensor Gemm(Tensor a, Tensor b, bool transposeA = false, bool transposeB = false, float alpha = 1f)
    {
        var (batch, m, n, _, batched) = ValidateGemm(a, b, transposeA, transposeB);
        var c = batched ? Allocate(batch, m, n) : Allocate(m, n);
        try { Gemm(a, b, c, transposeA, transposeB, alpha, 0f); }
        catch { c.Dispose(); throw; }
        return c;
    }

    private (int Batch, int M, int N, int K, bool Batched) ValidateGemm(Tensor a, Tensor b, bool ta, bool tb)
    {
        CheckOwned(a, "a"); CheckOwned(b, "b");
        if (a.Rank is not (2 or 3)) throw new TensorShapeException("a", ta ? "rank 2 or 3 [batch, K, M]" : "rank 2 or 3 [batch, M, K]", a.ToString());
        if (b.Rank is not (2 or 3)) throw new TensorShapeException("b", tb ? "rank 2 or 3 [batch, N, K]" : "rank 2 or 3 [batch, K, N]", b.ToString());
        int m = ta ? a.Dim(-1) : a.Dim(-2), k = ta ? a.Dim(-2) : a.Dim(-1);
        int kb = tb ? b.Dim(-1) : b.Dim(-2), n = tb ? b.Dim(-2) : b.Dim(-1);
        if (kb != k) throw new TensorShapeException("b", tb ? $"[batch, N, K] with K = {k}" : $"[batch, K, N] with K = {k}", b.ToString());
        int ba = a.Rank == 3 ? a.Dim(0) : 1, bb = b.Rank == 3 ? b.Dim(0) : 1;
        if (ba != bb && ba != 1 && bb != 1) throw new TensorShapeException("b", $"a batch of {ba} or 1 (a has batch {ba})", b.ToString());
        return (Math.Max(ba, bb), m, n, k, a.Rank == 3 || b.Rank == 3);
    }

    /// <summary>Runs a strided GEMM whose buffers are those of <paramref name="a"/>, <paramref name="b"/>, <paramref name="c"/>
    /// (the args' buffer fields are replaced), after checking that every addressed element lies inside its tensor.</summary>
    internal void GemmInternal(GemmArgs g, Tensor a, Tensor b, Tensor c)
    {
        CheckOwned(a, "a"); CheckOwned(b, "b"); CheckOwned(c, "c");
        if (g.Batch < 0 || g.M < 0 || g.N < 0 || g.K < 0) throw new ArgumentException("gemm: negative size");
        static void InBounds(Tensor t, string name, long off, long stride, int batch, int rows, int cols, int ld)
        {
            if (batch == 0 || rows == 0 || cols == 0) return;
            if (ld < cols || off < 0 || stride < 0) throw new ArgumentException($"{name}: bad leading dimension {ld} or offset/stride", name);
            long last = off + (batch - 1) * stride + (long)(rows - 1) * ld + cols - 1;
            if (last >= t.Length) throw new TensorShapeException(name, $"at least {last + 1} elements", $"{t.Length} in {t}");
        }
        InBounds(a, "a", g.OffA, g.StrideA, g.Batch, g.TransA ? g.K : g.M, g.TransA ? g.M : g.K, g.Lda);
        InBounds(b, "b", g.OffB, g.StrideB, g.Batch, g.TransB ? g.N : g.K, g.TransB ? g.K : g.N, g.Ldb);
        InBounds(c, "c", g.OffC, g.StrideC, g.Batch, g.M, g.N, g.Ldc);
        Run(OpKind.Gemm, [a, b], [c], (g, a, b, c), static (be, m, x) =>
            ((IGemmBackend)be).Gemm(x.g with { A = m[x.a]!, B = m[x.b]!, C = m[x.c]! }));
    }
}
