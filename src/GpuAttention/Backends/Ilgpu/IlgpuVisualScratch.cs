using ILGPU;
using ILGPU.Runtime;

namespace GpuAttention.Backends.Ilgpu;

/// <summary>
/// Named device scratch buffers of the glimpse and spatial launchers, grown on demand and kept across calls (allocating per
/// call would make CUDA synchronise). A buffer that must grow is replaced after the stream has drained, since kernels
/// already enqueued may still read the old one.
/// </summary>
internal sealed class IlgpuVisualScratch(Accelerator accelerator) : IDisposable
{
    private readonly Dictionary<string, MemoryBuffer1D<float, Stride1D.Dense>> _buffers = [];

    /// <summary>A view of at least <paramref name="length"/> floats (exactly that long) of the scratch buffer <paramref name="name"/>.</summary>
    public ArrayView<float> Get(string name, long length, AcceleratorStream stream)
    {
        if (length <= 0) return ArrayView<float>.Empty;
        if (!_buffers.TryGetValue(name, out var b) || b.Length < length)
        {
            if (b is not null)
            {
                stream.Synchronize();
                b.Dispose();
            }
            b = accelerator.Allocate1D<float>(length);
            _buffers[name] = b;
        }
        return ((ArrayView<float>)b.View).SubView(0, length);
    }

    /// <summary>Frees every scratch buffer.</summary>
    public void Dispose()
    {
        foreach (var b in _buffers.Values) b.Dispose();
        _buffers.Clear();
    }
}
