namespace GpuAttention.Backends.Ilgpu;

internal sealed partial class IlgpuBackend : IGemmBackend
{
    private IlgpuGemm? _gemm;

    /// <summary>The GEMM host class of this accelerator (created on first use).</summary>
    internal IlgpuGemm GemmOps => _gemm ??= new IlgpuGemm(Accelerator);

    public void Gemm(in GemmArgs args) => GemmOps.Run(Stream, args, View(args.A), View(args.B), View(args.C));
}
