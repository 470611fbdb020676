namespace GpuAttention.Backends.Ilgpu;

/// <summary>The spatial-transformer family on the ILGPU backend: <see cref="ISpatialBackend"/> through <see cref="IlgpuSpatial"/> on this
/// backend's stream (the grad_input scatter deterministic unless <see cref="GridSampleBackwardArgs.Atomic"/>).</summary>
internal sealed partial class IlgpuBackend : ISpatialBackend
{
    private IlgpuSpatial? _spatial;

    /// <summary>The spatial host class of this accelerator (created on first use; its scratch is freed with the backend).</summary>
    internal IlgpuSpatial SpatialOps => _spatial ??= new IlgpuSpatial(Accelerator);

    public void AffineGrid(in AffineGridArgs a) =>
        SpatialOps.AffineGrid(Stream, a.N, a.H, a.W, a.AlignCorners, View(a.Theta), View(a.Grid));

    public void AffineGridBackward(in AffineGridBackwardArgs a) =>
        SpatialOps.AffineGridBackward(Stream, a.N, a.H, a.W, a.AlignCorners, View(a.GradGrid), View(a.GradTheta));

    public void GridSample(in GridSampleArgs a) =>
        SpatialOps.GridSample(Stream, a.Shape, View(a.Input), View(a.Grid), View(a.Theta), View(a.Out));

    public void GridSampleBackward(in GridSampleBackwardArgs a) =>
        SpatialOps.GridSampleBackward(Stream, a.Shape, View(a.Input), View(a.Grid), View(a.Theta), View(a.GradOut), View(a.GradInput),
            View(a.GradGrid), View(a.GradTheta), a.Atomic);
}
