namespace GpuAttention.Backends.Ilgpu;

/// <summary>The glimpse family on the ILGPU backend: <see cref="IGlimpseBackend"/> through <see cref="IlgpuGlimpse"/> on this backend's stream.</summary>
internal sealed partial class IlgpuBackend : IGlimpseBackend
{
    private IlgpuGlimpse? _glimpse;

    /// <summary>The glimpse host class of this accelerator (created on first use; its scratch is freed with the backend).</summary>
    internal IlgpuGlimpse GlimpseOps => _glimpse ??= new IlgpuGlimpse(Accelerator);

    public void GlimpseForward(in GlimpseForwardArgs a) =>
        GlimpseOps.GlimpseForward(Stream, a.Shape, View(a.Image), View(a.Params), View(a.Gamma), View(a.Out));

    public void GlimpseBackward(in GlimpseBackwardArgs a) =>
        GlimpseOps.GlimpseBackward(Stream, a.Shape, View(a.Image), View(a.Params), View(a.Gamma), View(a.GradOut), View(a.GradImage),
            View(a.GradParams), View(a.GradLogGamma));

    public void DrawParams(in DrawParamsArgs a) =>
        GlimpseOps.DrawParams(Stream, a.Shape, View(a.Draw), View(a.Params), View(a.Gamma));

    public void DrawParamsBackward(in DrawParamsBackwardArgs a) =>
        GlimpseOps.DrawParamsBackward(Stream, a.Shape, View(a.Draw), View(a.GradParams), View(a.GradLogGamma), View(a.GradDraw));
}
