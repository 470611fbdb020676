namespace GpuAttention.Backends;

/// <summary>A block of device memory holding float32 elements.</summary>
internal interface IDeviceBuffer : IDisposable
{
    long Length { get; }
}

/// <summary>
/// The small backend interface (ggml style): memory, a queue and <see cref="SupportsOp"/>.
/// Operations live in per-family interfaces (<see cref="ISdpaBackend"/>, ...) that a backend
/// implements when it has kernels for them; <see cref="Device"/> falls back to the CPU
/// backend for the rest.
/// </summary>
internal interface IBackend : IDisposable
{
    BackendKind Kind { get; }
    /// <summary>Human-readable device name, e.g. "pthread-Intel(R) Xeon(R) ..." or "cpu (2 threads, AVX2)".</summary>
    string DeviceName { get; }
    /// <summary>Largest single allocation in elements.</summary>
    long MaxBufferElements { get; }
    IDeviceBuffer Allocate(long elements);
    /// <summary>Blocking copy host → device at element offset.</summary>
    void Write(IDeviceBuffer dst, long offset, ReadOnlySpan<float> src);
    /// <summary>Blocking copy device → host at element offset (waits for queued work).</summary>
    void Read(IDeviceBuffer src, long offset, Span<float> dst);
    /// <summary>Sets every element (used to poison outputs in tests).</summary>
    void Fill(IDeviceBuffer dst, float value);
    /// <summary>Waits until all queued work has finished.</summary>
    void Synchronize();
    bool SupportsOp(OpKind op);
}
