using ILGPU;
using ILGPU.Runtime;

namespace GpuAttention.Kernels.Ilgpu;

/// <summary>Utility kernels of the ILGPU backend (host code: <c>src/GpuAttention/Backends/Ilgpu/IlgpuBackend.cs</c>).</summary>
internal static class UtilKernels
{
    /// <summary>Sets every element of <paramref name="data"/> to <paramref name="value"/>: a grid-stride loop with 64-bit
    /// indices (buffers may exceed 2³¹ elements), launched explicitly grouped (256 threads, as many groups as needed up to a cap).</summary>
    public static void Fill(ArrayView<float> data, float value)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = (long)Grid.IdxX * Group.DimX + Group.IdxX; i < data.Length; i += stride)
            data[i] = value;
    }
}
