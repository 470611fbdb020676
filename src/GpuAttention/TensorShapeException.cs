namespace GpuAttention;

/// <summary>
/// Thrown when a tensor passed to an operation has the wrong rank, shape, device or length.
/// The message names the tensor, the expected shape and the actual shape.
/// </summary>
public class TensorShapeException : ArgumentException
{
    /// <summary>The name of the offending tensor as the operation documents it (e.g. "q", "mask").</summary>
    public string TensorName { get; }
    /// <summary>What was expected, in words or as a shape such as "[B, Hq, L, E]".</summary>
    public string Expected { get; }
    /// <summary>What was given, e.g. "[2, 3, 5]".</summary>
    public string Actual { get; }

    public TensorShapeException(string tensorName, string expected, string actual)
        : base($"{tensorName}: expected {expected}, got {actual}", tensorName)
    {
        TensorName = tensorName;
        Expected = expected;
        Actual = actual;
    }

    /// <summary>Formats a shape as "[a, b, c]".</summary>
    public static string Format(ReadOnlySpan<int> shape) => "[" + string.Join(", ", shape.ToArray()) + "]";
}

/// <summary>Thrown when a backend or device asked for is not present; the message says why.</summary>
public class BackendUnavailableException : Exception
{
    public BackendUnavailableException(string message, Exception? inner = null) : base(message, inner) { }
}
