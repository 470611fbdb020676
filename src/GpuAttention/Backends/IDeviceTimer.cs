namespace GpuAttention.Backends;

/// <summary>
/// Backends that can time work on the device itself (CUDA events) implement this; <see cref="Device"/> falls back to
/// host timing (a stopwatch around enqueue + synchronise) for the others.
/// </summary>
internal interface IDeviceTimer
{
    /// <summary>Records an event, runs <paramref name="enqueue"/> (which enqueues work), records a second event,
    /// waits for it and returns the device time between the two in milliseconds.</summary>
    double TimeMs(Action enqueue);
}
