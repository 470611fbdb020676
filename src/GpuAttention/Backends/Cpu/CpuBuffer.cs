using System.Runtime.InteropServices;

namespace GpuAttention.Backends.Cpu;

/// <summary>64-byte aligned native memory (so tensors may pass 2³¹ elements and SIMD loads are aligned).</summary>
internal sealed unsafe class CpuBuffer : IDeviceBuffer
{
    private float* _ptr;

    public CpuBuffer(long length)
    {
        Length = length;
        nuint bytes = (nuint)Math.Max(1, length) * sizeof(float);
        _ptr = (float*)NativeMemory.AlignedAlloc(bytes, 64);
        if (_ptr == null) throw new OutOfMemoryException($"cpu: could not allocate {bytes} bytes");
        if (length > 0) GC.AddMemoryPressure((long)bytes);
    }

    public long Length { get; }

    public float* Pointer => _ptr != null ? _ptr : throw new ObjectDisposedException(nameof(CpuBuffer));

    /// <summary>The whole buffer as a span (only for buffers under 2³¹ elements).</summary>
    public Span<float> Span => new(Pointer, checked((int)Length));

    public void Dispose()
    {
        var p = _ptr;
        _ptr = null;
        if (p != null)
        {
            NativeMemory.AlignedFree(p);
            if (Length > 0) GC.RemoveMemoryPressure(Length * sizeof(float));
        }
        GC.SuppressFinalize(this);
    }

    ~CpuBuffer() => Dispose();
}
