namespace GpuAttention.Diagnostics;

/// <summary>
/// Process-wide counts of the native resources the library holds right now: CPU-backend buffers (aligned native
/// memory) and OpenCL objects (contexts, queues, buffers, programs, kernels). Each is incremented when the resource
/// is created and decremented when it is released (by Dispose or, for a leaked one, by its finalizer), so a count
/// that keeps rising over create/dispose cycles is a leak. Used by the lifetime tests and <c>gpuattention soak</c>.
/// </summary>
public static class NativeResources
{
    private static long _cpuBuffers, _cpuBytes, _cpuCached, _openClHandles;

    /// <summary>Live CPU-backend buffers.</summary>
    public static long CpuBuffers => Interlocked.Read(ref _cpuBuffers);

    /// <summary>Bytes of native memory held by live CPU-backend buffers.</summary>
    public static long CpuBytes => Interlocked.Read(ref _cpuBytes);

    /// <summary>Bytes of native memory kept by CPU-backend buffer caches for reuse (freed buffers' memory; released by
    /// <see cref="Device.ReleaseCachedMemory"/> and when the device is disposed), not counted in <see cref="CpuBytes"/>.</summary>
    public static long CpuCachedBytes => Interlocked.Read(ref _cpuCached);

    /// <summary>Live OpenCL handles (cl_context, cl_command_queue, cl_mem, cl_program, cl_kernel) not yet released.</summary>
    public static long OpenClHandles => Interlocked.Read(ref _openClHandles);

    internal static void CpuBufferCreated(long bytes) { Interlocked.Increment(ref _cpuBuffers); Interlocked.Add(ref _cpuBytes, bytes); }
    internal static void CpuBufferReleased(long bytes) { Interlocked.Decrement(ref _cpuBuffers); Interlocked.Add(ref _cpuBytes, -bytes); }
    internal static void CpuCacheChanged(long bytes) => Interlocked.Add(ref _cpuCached, bytes);
    internal static void OpenClHandleCreated() => Interlocked.Increment(ref _openClHandles);
    internal static void OpenClHandleReleased() => Interlocked.Decrement(ref _openClHandles);
}
