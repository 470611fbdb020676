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
    private readonly CpuBufferCache? _cache;   // where Dispose returns the memory (null: freed to the OS)

    /// <summary>A buffer over caller memory: <paramref name="pin"/> keeps it in place until <see cref="Dispose"/>, which unpins
    /// it and frees nothing.</summary>
    public CpuBuffer(MemoryHandle pin, long length)
    {
        _pin = pin;
        _external = true;
        Length = length;
        _ptr = length == 0 && pin.Pointer == null ? (nint)1 : (nint)pin.Pointer;   // an empty buffer still reads as live
    }

    /// <summary>A buffer of <paramref name="length"/> floats (contents undefined), from <paramref name="cache"/> when it holds
    /// a block of the size class, else fresh from the OS.</summary>
    public CpuBuffer(long length, CpuBufferCache? cache = null)
    {
        Length = length;
        long bytes = CpuBufferCache.SizeClass(Math.Max(1, length) * sizeof(float));
        _cache = cache;
        _ptr = cache?.Take(bytes) ?? 0;
        if (_ptr == 0) _ptr = CpuBufferCache.AllocateFromOs(bytes);
        if (_ptr == 0)
        {
            GC.SuppressFinalize(this);
            throw new OutOfMemoryException($"cpu: out of memory allocating {bytes} bytes ({length} float32 elements)");
        }
        _bytes = bytes;
        Diagnostics.NativeResources.CpuBufferCreated(_bytes);
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
            if (_cache is null || !_cache.TryReturn(p, _bytes)) CpuBufferCache.FreeToOs(p, _bytes);
            Diagnostics.NativeResources.CpuBufferReleased(_bytes);
        }
        GC.SuppressFinalize(this);
    }

    ~CpuBuffer() => Dispose();
}
