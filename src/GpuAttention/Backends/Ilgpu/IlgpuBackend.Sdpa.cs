namespace GpuAttention.Backends.Ilgpu;

internal sealed partial class IlgpuBackend : ISdpaBackend, ISdpaBackwardBackend
{
    private IlgpuSdpa? _sdpa;

    /// <summary>The SDPA host class of this accelerator (created on first use; its scratch is freed with the backend).</summary>
    internal IlgpuSdpa SdpaOps => _sdpa ??= new IlgpuSdpa(Accelerator);

    /// <summary>Enqueues the fused SDPA forward (kernels/ilgpu/SdpaForward.cs) on the backend's stream.</summary>
    public void SdpaForward(in SdpaForwardArgs a) =>
        SdpaOps.Forward(Stream, a.Shape, View(a.Q), View(a.K), View(a.V), View(a.Mask), View(a.Out), View(a.Lse));

    /// <summary>Enqueues the fused SDPA backward (kernels/ilgpu/SdpaBackward.cs) on the backend's stream.</summary>
    public void SdpaBackward(in SdpaBackwardArgs a) =>
        SdpaOps.Backward(Stream, a.Shape, View(a.Q), View(a.K), View(a.V), View(a.Mask), View(a.Out), View(a.Lse), View(a.GradOut),
            View(a.GradQ), View(a.GradK), View(a.GradV));
}
