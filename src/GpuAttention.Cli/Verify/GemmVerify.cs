using System.Globalization;
using GpuAttention.Reference;

namespace GpuAttention.Cli.Verify;

/// <summary>
/// Verify cases of the batched GEMM <c>c = alpha·op(a)·op(b) + beta·c</c>: all four transpose combinations on sizes off the tiles,
/// alpha/beta (beta = 0 on a NaN-poisoned c must ignore it), a shared (batch 1 or rank 2) operand broadcast over the batch, rank 2 only,
/// degenerate 1-wide dims, and a GPU-sized product.
/// </summary>
internal static class GemmVerify
{
    /// <summary>One product; <paramref name="BatchA"/>/<paramref name="BatchB"/> 0 mean a rank-2 operand.</summary>
    private sealed record Shape(int BatchA, int BatchB, int M, int N, int K, bool Ta = false, bool Tb = false, float Alpha = 1f, float Beta = 0f)
    {
        public int Batch => Math.Max(Math.Max(BatchA, BatchB), 1);
        public bool Batched => BatchA > 0 || BatchB > 0;

        public override string ToString() => FormattableString.Invariant(
            $"a[{(BatchA > 0 ? BatchA + "," : "")}{(Ta ? $"{K},{M}" : $"{M},{K}")}]{(Ta ? "ᵀ" : "")} b[{(BatchB > 0 ? BatchB + "," : "")}{(Tb ? $"{N},{K}" : $"{K},{N}")}]{(Tb ? "ᵀ" : "")}")
            + (Alpha != 1f || Beta != 0f ? string.Create(CultureInfo.InvariantCulture, $" alpha={Alpha} beta={Beta}") : "");
    }

    private static readonly Shape[] All =
    [
        new(3, 3, 37, 53, 29),                                         // odd sizes, every tile has a tail
        new(3, 3, 37, 53, 29, Ta: true),
        new(3, 3, 37, 53, 29, Tb: true),
        new(3, 3, 37, 53, 29, Ta: true, Tb: true),
        new(2, 2, 65, 63, 130, Alpha: 0.7f, Beta: -1.3f),              // alpha and beta, c read
        new(2, 2, 33, 17, 9, Ta: true, Tb: true, Alpha: -2f, Beta: 0.5f),
        new(4, 1, 19, 23, 31),                                         // b of batch 1 broadcast
        new(1, 5, 23, 19, 17, Ta: true),                               // a of batch 1 broadcast
        new(3, 0, 21, 11, 13, Tb: true),                               // rank-2 b
        new(0, 0, 45, 39, 70, Alpha: 1.5f, Beta: 2f),                  // rank 2 only
        new(2, 2, 1, 1, 1),                                            // 1×1×1
        new(2, 2, 1, 77, 5, Tb: true),                                 // M = 1 (a row times a matrix)
        new(1, 1, 129, 1, 131, Ta: true),                              // N = 1
        new(4, 4, 509, 257, 383, Tb: true, Alpha: 0.5f, Beta: 1f),     // GPU-sized
    ];

    public static IEnumerable<VerifyCase> Cases() =>
        All.Select(s => new VerifyCase("gemm", s.ToString(), (dev, rng) => Run(dev, rng, s)));

    private static IReadOnlyList<VerifyResult> Run(Device dev, Random rng, Shape c)
    {
        int[] Dims(int batch, int rows, int cols) => batch > 0 ? [batch, rows, cols] : [rows, cols];
        var aShape = Dims(c.BatchA, c.Ta ? c.K : c.M, c.Ta ? c.M : c.K);
        var bShape = Dims(c.BatchB, c.Tb ? c.N : c.K, c.Tb ? c.K : c.N);
        var cShape = c.Batched ? new[] { c.Batch, c.M, c.N } : [c.M, c.N];
        var a = VerifyKit.Random(rng, aShape.Aggregate(1L, (x, d) => x * d));
        var b = VerifyKit.Random(rng, bShape.Aggregate(1L, (x, d) => x * d));
        var c0 = VerifyKit.Random(rng, cShape.Aggregate(1L, (x, d) => x * d));
        var reference = ReferenceOps.Gemm(a, b, c.Beta == 0 ? null : c0, c.Batch, c.M, c.N, c.K, c.Ta, c.Tb, c.Alpha, c.Beta,
            aBatched: c.BatchA > 1, bBatched: c.BatchB > 1);

        using var ta = dev.Upload(a, aShape);
        using var tb = dev.Upload(b, bShape);
        using var tc = c.Beta == 0 ? VerifyKit.Poisoned(dev, cShape) : dev.Upload(c0, cShape);   // beta = 0: NaN in c must not leak
        dev.Gemm(ta, tb, tc, c.Ta, c.Tb, c.Alpha, c.Beta);
        return [VerifyKit.Check(dev, "c", tc, reference, VerifyKit.Forward)];
    }
}
