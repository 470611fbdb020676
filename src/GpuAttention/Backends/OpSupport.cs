namespace GpuAttention.Backends;

/// <summary>Maps an <see cref="OpKind"/> to the backend interface that implements it.</summary>
internal static class OpSupport
{
    public static bool Implements(IBackend backend, OpKind op) => op switch
    {
        OpKind.Sdpa => backend is ISdpaBackend,
        OpKind.SdpaBackward => backend is ISdpaBackwardBackend,
        OpKind.Gemm => backend is IGemmBackend,
        OpKind.AffineGrid or OpKind.AffineGridBackward or OpKind.GridSample or OpKind.GridSampleBackward => backend is ISpatialBackend,
        OpKind.Glimpse or OpKind.GlimpseBackward => backend is IGlimpseBackend,
        // One line per op family; each family's interface lives beside its args (Backends/*Args.cs).
        _ => false,
    };
}
