using System.Runtime.InteropServices;

namespace GpuAttention.Backends.Cpu;

/// <summary>
/// Freed CPU-backend buffers kept for the next allocation of the same size class (a caching allocator, as PyTorch's device
/// allocators): memory fresh from the OS costs a page fault per 4 KB page on first touch, which in a layer that allocates
/// its intermediates per call dominated the call (MultiHeadAttention B1 L1024 E512 H8 causal forward+backward on the 2-core
/// VM: 108–133 ms with fresh buffers, 51 ms with this cache timed directly, 39–43 ms in BenchmarkDotNet). Buffers of at least <see cref="MinBytes"/> are rounded
/// up to a multiple of <see cref="Granule"/> and, when freed, cached while the cache holds at most <see cref="CapBytes"/>;
/// anything else goes back to the OS at once. Thread-safe (a leaked buffer is freed by its finalizer). <see cref="Trim"/>
/// (<see cref="Device.ReleaseCachedMemory"/>) and <see cref="Dispose"/> (the device's) free what is cached. GC memory
/// pressure follows the memory held from the OS (added when allocated, removed when freed), not the buffers' lifetimes.
/// </summary>
internal sealed unsafe class CpuBufferCache : IDisposable
{
    internal const long MinBytes = 64 * 1024;
    internal const long Granule = 64 * 1024;
    internal const long CapBytes = 1L << 30;

    private readonly object _lock = new();
    private readonly Dictionary<long, Stack<nint>> _free = [];
    private long _cached;
    private bool _disposed;

    /// <summary>Bytes this cache holds now.</summary>
    internal long CachedBytes { get { lock (_lock) return _cached; } }

    /// <summary>The allocation size of a request of <paramref name="bytes"/>: rounded up to the granule when cacheable.</summary>
    internal static long SizeClass(long bytes) => bytes < MinBytes ? bytes : (bytes + Granule - 1) / Granule * Granule;

    /// <summary>A cached block of exactly <paramref name="bytes"/> (a size class), or 0.</summary>
    internal nint Take(long bytes)
    {
        if (bytes < MinBytes) return 0;
        lock (_lock)
        {
            if (_disposed || !_free.TryGetValue(bytes, out var s) || s.Count == 0) return 0;
            _cached -= bytes;
            Diagnostics.NativeResources.CpuCacheChanged(-bytes);
            return s.Pop();
        }
    }

    /// <summary>Keeps a freed block for reuse; false (the caller frees it) when it is small, the cache is full or disposed.</summary>
    internal bool TryReturn(nint p, long bytes)
    {
        if (bytes < MinBytes) return false;
        lock (_lock)
        {
            if (_disposed || _cached + bytes > CapBytes) return false;
            if (!_free.TryGetValue(bytes, out var s)) _free[bytes] = s = new Stack<nint>();
            s.Push(p);
            _cached += bytes;
            Diagnostics.NativeResources.CpuCacheChanged(bytes);
            return true;
        }
    }

    /// <summary>Allocates a block of <paramref name="bytes"/> from the OS (64-byte aligned) and adds it to the GC's memory pressure; 0 when out of memory.</summary>
    internal static nint AllocateFromOs(long bytes)
    {
        nint p;
        try { p = (nint)NativeMemory.AlignedAlloc((nuint)bytes, 64); }
        catch (OutOfMemoryException) { p = 0; }
        if (p != 0) GC.AddMemoryPressure(bytes);
        return p;
    }

    /// <summary>Returns a block to the OS and removes it from the GC's memory pressure.</summary>
    internal static void FreeToOs(nint p, long bytes)
    {
        NativeMemory.AlignedFree((void*)p);
        GC.RemoveMemoryPressure(bytes);
    }

    /// <summary>Frees every cached block.</summary>
    internal void Trim()
    {
        List<(nint, long)> blocks = [];
        lock (_lock)
        {
            foreach (var (bytes, s) in _free)
                while (s.Count > 0) blocks.Add((s.Pop(), bytes));
            Diagnostics.NativeResources.CpuCacheChanged(-_cached);
            _cached = 0;
        }
        foreach (var (p, bytes) in blocks) FreeToOs(p, bytes);
    }

    public void Dispose()
    {
        lock (_lock) _disposed = true;
        Trim();
    }
}
