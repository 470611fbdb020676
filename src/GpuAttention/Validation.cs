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

    /// <summary>
    /// The aliasing rule of every op: inputs may be the same tensor as each other (self-attention <c>Sdpa(x, x, x)</c>,
    /// <c>Gemm(a, a)</c>); an output may not be the same tensor as an input or as another output.
    /// </summary>
    public static void NoAlias(ReadOnlySpan<(Tensor? t, string name)> inputs, ReadOnlySpan<(Tensor? t, string name)> outputs)
    {
        for (int o = 0; o < outputs.Length; o++)
        {
            var (t, name) = outputs[o];
            if (t is null) continue;
            foreach (var (i, iname) in inputs)
                if (ReferenceEquals(t, i))
                    throw new ArgumentException($"{name}: must not be the same tensor as the input {iname} (an output may not alias an input)", name);
            for (int p = 0; p < o; p++)
                if (ReferenceEquals(t, outputs[p].t))
                    throw new ArgumentException($"{name}: must not be the same tensor as the output {outputs[p].name}", name);
        }
    }

    public static void Finite(float x, string name)
    {
        if (!float.IsFinite(x)) throw new ArgumentOutOfRangeException(name, x, $"{name}: expected a finite number, got {x}");
    }
}
