using System.Buffers;
using System.Runtime.InteropServices;

namespace GpuAttention.Backends.Cpu;

/// <summary>64-byte aligned native memory (so tensors may pass 2³¹ elements and SIMD loads are aligned), or caller memory
/// pinned for the buffer's life (<see cref="Device.Wrap(Memory{float}, int[])"/>: no copy; only float-aligned).</summary>
internal sealed unsafe class CpuBuffer : IDeviceBuffer
{
    private nint _ptr;
    private readonly long _bytes;
    private MemoryHandle _pin;
    private readonly bool _external;

    /// <summary>A buffer over caller memory: <paramref name="pin"/> keeps it in place until <see cref="Dispose"/>, which unpins
    /// it and frees nothing.</summary>
    public CpuBuffer(MemoryHandle pin, long length)
    {
        _pin = pin;
        _external = true;
        Length = length;
        _ptr = length == 0 && pin.Pointer == null ? (nint)1 : (nint)pin.Pointer;   // an empty buffer still reads as live
    }

    public CpuBuffer(long length)
    {
        Length = length;
        nuint bytes = (nuint)Math.Max(1, length) * sizeof(float);
        try { _ptr = (nint)NativeMemory.AlignedAlloc(bytes, 64); }
        catch (OutOfMemoryException) { _ptr = 0; }
        if (_ptr == 0)
        {
            GC.SuppressFinalize(this);
            throw new OutOfMemoryException($"cpu: out of memory allocating {bytes} bytes ({length} float32 elements)");
        }
        _bytes = (long)bytes;
        Diagnostics.NativeResources.CpuBufferCreated(_bytes);
        if (length > 0) GC.AddMemoryPressure(_bytes);
    }

    public long Length { get; }

    public float* Pointer
    {
        get
        {
            var p = Volatile.Read(ref _ptr);
            return p != 0 ? (float*)p : throw new ObjectDisposedException(nameof(CpuBuffer));
        }
    }

    /// <summary>The whole buffer as a span (only for buffers under 2³¹ elements).</summary>
    public Span<float> Span => new(Pointer, checked((int)Length));

    /// <summary>Frees the memory exactly once, also when called concurrently (the pointer is swapped out atomically).</summary>
    public void Dispose()
    {
        var p = Interlocked.Exchange(ref _ptr, 0);
        if (p != 0 && _external) _pin.Dispose();
        else if (p != 0)
        {
            NativeMemory.AlignedFree((void*)p);
            Diagnostics.NativeResources.CpuBufferReleased(_bytes);
            if (Length > 0) GC.RemoveMemoryPressure(_bytes);
        }
        GC.SuppressFinalize(this);
    }

    ~CpuBuffer() => Dispose();
}
