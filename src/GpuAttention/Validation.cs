namespace GpuAttention;

/// <summary>Shape checks shared by all ops. Every failure names the tensor and the expected shape.</summary>
internal static class Validation
{
    public static void Rank(Tensor t, string name, int rank, string expected)
    {
        if (t.Rank != rank) throw new TensorShapeException(name, expected, t.ToString());
    }

    public static void Shape(Tensor t, string name, ReadOnlySpan<int> shape, string symbolic)
    {
        if (!t.Shape.SequenceEqual(shape))
            throw new TensorShapeException(name, $"{symbolic} = {TensorShapeException.Format(shape)}", t.ToString());
    }

    /// <summary>Outputs must not be the same tensor as any input or another output.</summary>
    public static void NoAlias(ReadOnlySpan<(Tensor? t, string name)> all)
    {
        for (int i = 0; i < all.Length; i++)
            for (int j = i + 1; j < all.Length; j++)
                if (all[i].t is not null && ReferenceEquals(all[i].t, all[j].t))
                    throw new ArgumentException($"{all[j].name}: must not be the same tensor as {all[i].name}", all[j].name);
    }

    public static void Finite(float x, string name)
    {
        if (!float.IsFinite(x)) throw new ArgumentOutOfRangeException(name, x, $"{name}: expected a finite number, got {x}");
    }
}
