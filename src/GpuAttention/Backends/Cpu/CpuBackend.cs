using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace GpuAttention.Backends.Cpu;

/// <summary>
/// The managed CPU backend: native aligned buffers, SIMD kernels (System.Runtime.Intrinsics / System.Numerics.Tensors),
/// work split over all cores with <see cref="CpuWorkers"/>. Runs synchronously: every op has finished when it returns.
/// A steady-state op call allocates no managed memory: work items are static functions over a context struct on the
/// caller's stack, and scratch is per thread and grow-only.
/// </summary>
internal sealed unsafe partial class CpuBackend : IBackend
{
    public BackendKind Kind => BackendKind.Cpu;

    public string DeviceName { get; } = Describe();

    public long MaxBufferElements => long.MaxValue / sizeof(float);

    public static string Describe()
    {
        string simd = Avx512F.IsSupported ? "AVX-512" : Avx2.IsSupported ? "AVX2" : System.Numerics.Vector.IsHardwareAccelerated ? $"{System.Numerics.Vector<float>.Count * 32}-bit SIMD" : "scalar";
        return $"managed CPU ({Environment.ProcessorCount} threads, {simd})";
    }

    /// <summary>Freed buffers kept for reuse (see <see cref="CpuBufferCache"/>); freed with the backend.</summary>
    internal CpuBufferCache Cache { get; } = new();

    public IDeviceBuffer Allocate(long elements) => new CpuBuffer(elements, Cache);

    internal static CpuBuffer B(IDeviceBuffer b) => b as CpuBuffer ?? throw new ArgumentException("buffer belongs to another backend");

    public void Write(IDeviceBuffer dst, long offset, ReadOnlySpan<float> src)
    {
        var d = B(dst);
        if (offset < 0 || offset + src.Length > d.Length) throw new ArgumentOutOfRangeException(nameof(offset));
        src.CopyTo(new Span<float>(d.Pointer + offset, src.Length));
    }

    public void Read(IDeviceBuffer src, long offset, Span<float> dst)
    {
        var s = B(src);
        if (offset < 0 || offset + dst.Length > s.Length) throw new ArgumentOutOfRangeException(nameof(offset));
        new ReadOnlySpan<float>(s.Pointer + offset, dst.Length).CopyTo(dst);
    }

    public void Fill(IDeviceBuffer dst, float value)
    {
        var d = B(dst);
        for (long i = 0; i < d.Length; i += int.MaxValue)
            new Span<float>(d.Pointer + i, (int)Math.Min(int.MaxValue, d.Length - i)).Fill(value);
    }

    public void Synchronize() { }

    /// <summary>
    /// A grow-only, pinned scratch of at least <paramref name="n"/> floats kept in <paramref name="slot"/> (a [ThreadStatic]
    /// field of the calling thread): allocated on first use and when a call needs more, then reused, so a steady-state op
    /// call allocates nothing. The contents are undefined. Op-level buffers each have a slot of their own, apart from the
    /// slots of work items (the calling thread runs work items too). Throws <see cref="OverflowException"/> past 2³¹ − 1 floats.
    /// </summary>
    internal static float* GrowScratch(ref float[]? slot, long n)
    {
        var arr = slot;
        if (arr is null || arr.Length < n)
        {
            slot = null;   // the old array may go before the larger one is allocated
            slot = arr = GC.AllocateUninitializedArray<float>(checked((int)Math.Max(n, 16)), pinned: true);
        }
        return (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(arr));
    }

    /// <summary>Item count for <see cref="CpuWorkers.For"/>; more than <see cref="int.MaxValue"/> items is not supported.</summary>
    internal static int WorkItems(long items, string what) =>
        items <= int.MaxValue ? (int)items : throw new NotSupportedException($"too many {what} for one call ({items} work items; at most {int.MaxValue})");

    public bool SupportsOp(OpKind op) => OpSupport.Implements(this, op);

    public void Dispose() => Cache.Dispose();
}
