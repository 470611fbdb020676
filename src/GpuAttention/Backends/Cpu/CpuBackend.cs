using System.Runtime.Intrinsics.X86;

namespace GpuAttention.Backends.Cpu;

/// <summary>
/// The managed CPU backend: native aligned buffers, SIMD kernels (System.Runtime.Intrinsics / System.Numerics.Tensors),
/// work split over all cores with <see cref="Parallel"/>. Runs synchronously: every op has finished when it returns.
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

    public IDeviceBuffer Allocate(long elements) => new CpuBuffer(elements);

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

    public bool SupportsOp(OpKind op) => OpSupport.Implements(this, op);

    public void Dispose() { }
}
