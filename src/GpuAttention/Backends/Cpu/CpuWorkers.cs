namespace GpuAttention.Backends.Cpu;

/// <summary>
/// A tiny fork-join pool for the CPU kernels: ProcessorCount − 1 dedicated background threads plus the caller take
/// work items 0..count−1 from a shared counter. Unlike <see cref="Parallel.For(int, int, Action{int})"/> it allocates
/// nothing per call (the body is a function pointer with a context pointer), so a steady-state op call is allocation
/// free. One call at a time: a concurrent or nested call runs its items inline on the calling thread.
/// </summary>
internal static unsafe class CpuWorkers
{
    private static readonly int s_workers = Math.Max(0, Environment.ProcessorCount - 1);
    private static readonly SemaphoreSlim s_start = new(0);
    private static readonly ManualResetEventSlim s_done = new(false);
    private static readonly object s_initLock = new();
    private static bool s_started;
    private static int s_busy, s_next, s_count, s_pending;
    private static delegate*<void*, int, void> s_body;
    private static void* s_ctx;
    private static Exception? s_error;
    private static readonly long[] s_workerAllocated = new long[Math.Max(1, Environment.ProcessorCount - 1)];

    /// <summary>Managed bytes allocated so far by the pool's worker threads (each updated after it finishes its share of a
    /// call): with <see cref="GC.GetAllocatedBytesForCurrentThread"/> of the caller, the allocations of an op call, without
    /// those of unrelated threads (tests use it).</summary>
    internal static long WorkerAllocatedBytes
    {
        get
        {
            long sum = 0;
            for (int t = 0; t < s_workerAllocated.Length; t++) sum += Volatile.Read(ref s_workerAllocated[t]);
            return sum;
        }
    }

    /// <summary>Number of threads that run items (workers + caller).</summary>
    public static int Threads => s_workers + 1;

    /// <summary>Runs body(ctx, i) for i in [0, count) over all cores; returns when every item has finished.</summary>
    public static void For(int count, delegate*<void*, int, void> body, void* ctx)
    {
        if (count <= 0) return;
        if (s_workers == 0 || count == 1 || Interlocked.CompareExchange(ref s_busy, 1, 0) != 0)
        {
            for (int i = 0; i < count; i++) body(ctx, i);
            return;
        }
        try
        {
            EnsureStarted();
            s_body = body; s_ctx = ctx; s_count = count; s_error = null;
            Volatile.Write(ref s_next, 0);
            int helpers = Math.Min(s_workers, count - 1);
            s_pending = helpers;
            s_done.Reset();
            s_start.Release(helpers);
            try { Drain(); }
            finally { s_done.Wait(); }
            if (s_error is { } e) throw new AggregateException(e);
        }
        finally
        {
            s_body = null; s_ctx = null;
            Volatile.Write(ref s_busy, 0);
        }
    }

    private static void Drain()
    {
        int i;
        while ((i = Interlocked.Increment(ref s_next) - 1) < s_count) s_body(s_ctx, i);
    }

    private static void EnsureStarted()
    {
        if (Volatile.Read(ref s_started)) return;
        lock (s_initLock)
        {
            if (s_started) return;
            for (int t = 0; t < s_workers; t++)
            {
                int index = t;
                new Thread(() => Worker(index)) { IsBackground = true, Name = $"GpuAttention CPU worker {t}" }.Start();
            }
            Volatile.Write(ref s_started, true);
        }
    }

    private static void Worker(int index)
    {
        while (true)
        {
            s_start.Wait();
            try { Drain(); }
            catch (Exception e) { s_error = e; Volatile.Write(ref s_next, int.MaxValue / 2); }
            Volatile.Write(ref s_workerAllocated[index], GC.GetAllocatedBytesForCurrentThread());
            if (Interlocked.Decrement(ref s_pending) == 0) s_done.Set();
        }
    }
}
