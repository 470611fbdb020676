using System.Reflection;

namespace GpuAttention.Backends.Ilgpu;

/// <summary>How an ILGPU kernel method is launched (which <c>EntryPointDescription</c> compiles it).</summary>
internal enum IlgpuKernelKind
{
    /// <summary>Takes <c>KernelConfig</c> (grid, group) at launch: <c>LoadStreamKernel</c> / <c>EntryPointDescription.FromExplicitlyGroupedKernel</c>.</summary>
    ExplicitlyGrouped,
    /// <summary>Takes an index (<c>Index1D</c>, …) as first parameter: <c>LoadAutoGroupedStreamKernel</c> / <c>EntryPointDescription.FromImplicitlyGroupedKernel</c>.</summary>
    ImplicitlyGrouped,
}

/// <summary>
/// One kernel configuration the host code ships: a kernel method in <c>kernels/ilgpu/</c> with every generic type parameter
/// bound (tile sizes and flags as struct type arguments), named for reports (e.g. "sdpa_forward&lt;Q64,K64,E64&gt;").
/// The PTX gate (<c>gpuattention ptx</c>, the ptxas tests) compiles exactly this list.
/// </summary>
internal sealed record IlgpuKernelConfig(string Family, string Name, MethodInfo Method, IlgpuKernelKind Kind);

/// <summary>Every ILGPU kernel configuration the host code can launch, over all op families (one line per family).</summary>
internal static class IlgpuKernelRegistry
{
    public static IEnumerable<IlgpuKernelConfig> All()
    {
        // Each op family's host class lists its own configurations: add one line per family, e.g.
        // foreach (var c in IlgpuSdpa.ShippedConfigs()) yield return c;
        // Then regenerate bench/results/ptxas-report.txt (gpuattention ptx --report FILE): PtxGateTests checks it lists every entry.
        foreach (var c in IlgpuBackend.ShippedUtilConfigs()) yield return c;
        foreach (var c in IlgpuGemm.ShippedConfigs()) yield return c;
        foreach (var c in IlgpuSdpa.ShippedConfigs()) yield return c;
        foreach (var c in IlgpuGlimpse.ShippedConfigs()) yield return c;
        foreach (var c in IlgpuSpatial.ShippedConfigs()) yield return c;
    }
}
