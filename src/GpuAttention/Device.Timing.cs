using System.Diagnostics;
using GpuAttention.Backends;

namespace GpuAttention;

public sealed partial class Device
{
    /// <summary>Whether <see cref="TimeMs"/> measures on the device (events) rather than on the host.</summary>
    internal bool HasDeviceTimer => Backend is IDeviceTimer;

    /// <summary>
    /// Runs <paramref name="enqueue"/> (which enqueues work on this device) and returns how long the work took in
    /// milliseconds, synchronised: device-side events where the backend has them (CUDA), else a host stopwatch
    /// around the enqueue and a <see cref="Synchronize"/>. Used by the CLI's <c>--repeat</c>.
    /// </summary>
    internal double TimeMs(Action enqueue)
    {
        lock (QueueLock)
        {
            var be = Backend;
            if (be is IDeviceTimer timer) return timer.TimeMs(enqueue);
            long t0 = Stopwatch.GetTimestamp();
            enqueue();
            be.Synchronize();
            return Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        }
    }
}
