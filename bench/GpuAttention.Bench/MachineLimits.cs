using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GpuAttention.Bench;

/// <summary>
/// Machine-limit probe (<c>dotnet run -c Release --project bench/GpuAttention.Bench -- limits</c>): float32 FMA
/// throughput on all cores with the widest SIMD the JIT offers (Vector512 with AVX-512F, else Vector256 with FMA,
/// else Vector128), 16 independent accumulator chains per thread so FMA latency is hidden; and memory copy bandwidth
/// (bytes read + written per second) for a working set far beyond the last-level cache and for one that fits in L2.
/// Each kernel's GFLOP/s or GB/s can then be reported as a fraction of these limits.
/// </summary>
public static unsafe class MachineLimits
{
    /// <summary>Result of a probe run.</summary>
    public readonly record struct Limits(string Simd, int Threads, double FmaGflops1, double FmaGflopsAll, double CopyGBsDram, double CopyGBsL2);

    public static int Run(string[] args)
    {
        var r = Measure();
        Console.WriteLine($"machine: {Environment.ProcessorCount} threads, {r.Simd}");
        Console.WriteLine($"fp32 FMA peak, 1 thread : {r.FmaGflops1,8:F1} GFLOP/s");
        Console.WriteLine($"fp32 FMA peak, {r.Threads} threads: {r.FmaGflopsAll,8:F1} GFLOP/s");
        Console.WriteLine($"copy bandwidth, DRAM (2×512 MiB, {r.Threads} threads): {r.CopyGBsDram,8:F1} GB/s (read + write)");
        Console.WriteLine($"copy bandwidth, L2 (2×256 KiB per thread): {r.CopyGBsL2,8:F1} GB/s (read + write)");
        Console.WriteLine($"{{\"simd\": \"{r.Simd}\", \"threads\": {r.Threads}, \"fma_gflops_1\": {r.FmaGflops1:F1}, \"fma_gflops\": {r.FmaGflopsAll:F1}, \"copy_gbs_dram\": {r.CopyGBsDram:F1}, \"copy_gbs_l2\": {r.CopyGBsL2:F1}}}");
        return 0;
    }

    /// <summary>Runs every probe (best of several repetitions each, since the machine may be shared).</summary>
    public static Limits Measure()
    {
        int threads = Environment.ProcessorCount;
        string simd = Vector512.IsHardwareAccelerated && Avx512F.IsSupported ? "Vector512 FMA (AVX-512F)"
            : Fma.IsSupported ? "Vector256 FMA (AVX2+FMA)" : "Vector128 (mul+add)";
        const long iters = 20_000_000;
        double one = Best(5, () => RunThreads(1, _ => FmaChains(iters))) ;
        double all = Best(5, () => RunThreads(threads, _ => FmaChains(iters)));
        double flopsPerIter = 16.0 * LaneCount() * 2;
        double fma1 = iters * flopsPerIter / one / 1e9, fmaAll = threads * iters * flopsPerIter / all / 1e9;

        long big = 512L << 20;
        byte* src = (byte*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)big, 64);
        byte* dst = (byte*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)big, 64);
        try
        {
            new Span<byte>(src, int.MaxValue / 4).Fill(1);
            for (long i = 0; i < big; i += 4096) { src[i] = 1; dst[i] = 0; }   // touch every page
            long part = big / threads;
            double tDram = Best(5, () => RunThreads(threads, t => Buffer.MemoryCopy(src + t * part, dst + t * part, part, part)));
            double dram = 2.0 * big / tDram / 1e9;
            const int small = 256 << 10, reps = 4000;
            double tL2 = Best(5, () => RunThreads(threads, t =>
            {
                byte* s = src + t * part, d = dst + t * part;
                for (int k = 0; k < reps; k++) Buffer.MemoryCopy(s, d, small, small);
            }));
            double l2 = 2.0 * small * reps * threads / tL2 / 1e9;
            return new Limits(simd, threads, fma1, fmaAll, dram, l2);
        }
        finally
        {
            System.Runtime.InteropServices.NativeMemory.AlignedFree(src);
            System.Runtime.InteropServices.NativeMemory.AlignedFree(dst);
        }
    }

    private static int LaneCount() => Vector512.IsHardwareAccelerated && Avx512F.IsSupported ? 16 : Fma.IsSupported ? 8 : 4;

    private static double Best(int n, Func<double> f)
    {
        f();   // warm-up (JIT tiering, page faults)
        double best = double.MaxValue;
        for (int i = 0; i < n; i++) best = Math.Min(best, f());
        return best;
    }

    /// <summary>Runs body(t) on <paramref name="n"/> dedicated threads released together; returns wall seconds.</summary>
    private static double RunThreads(int n, Action<int> body)
    {
        // Each thread stamps its own start and end; the time is last end − first start. (Timing from the main thread after the
        // barrier missed the workers' first microseconds whenever the main thread resumed late: one 2-thread FMA probe read
        // 486 GFLOP/s against 2 × 218 of the 1-thread probe.)
        using var start = new Barrier(n + 1);
        var ts = new Thread[n];
        var t0 = new long[n]; var t1 = new long[n];
        for (int t = 0; t < n; t++)
        {
            int id = t;
            ts[t] = new Thread(() => { start.SignalAndWait(); t0[id] = Stopwatch.GetTimestamp(); body(id); t1[id] = Stopwatch.GetTimestamp(); }) { IsBackground = true };
            ts[t].Start();
        }
        start.SignalAndWait();
        foreach (var th in ts) th.Join();
        return (double)(t1.Max() - t0.Min()) / Stopwatch.Frequency;
    }

    private static float s_sink;

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void FmaChains(long iters)
    {
        if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported) s_sink = Fma512(iters);
        else if (Fma.IsSupported) s_sink = Fma256(iters);
        else s_sink = MulAdd128(iters);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float Fma512(long iters)
    {
        var m = Vector512.Create(0.999999f); var c = Vector512.Create(1e-7f);
        Vector512<float> a0 = Vector512.Create(1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0,
            a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0, a15 = a0;
        for (long i = 0; i < iters; i++)
        {
            a0 = Avx512F.FusedMultiplyAdd(a0, m, c); a1 = Avx512F.FusedMultiplyAdd(a1, m, c);
            a2 = Avx512F.FusedMultiplyAdd(a2, m, c); a3 = Avx512F.FusedMultiplyAdd(a3, m, c);
            a4 = Avx512F.FusedMultiplyAdd(a4, m, c); a5 = Avx512F.FusedMultiplyAdd(a5, m, c);
            a6 = Avx512F.FusedMultiplyAdd(a6, m, c); a7 = Avx512F.FusedMultiplyAdd(a7, m, c);
            a8 = Avx512F.FusedMultiplyAdd(a8, m, c); a9 = Avx512F.FusedMultiplyAdd(a9, m, c);
            a10 = Avx512F.FusedMultiplyAdd(a10, m, c); a11 = Avx512F.FusedMultiplyAdd(a11, m, c);
            a12 = Avx512F.FusedMultiplyAdd(a12, m, c); a13 = Avx512F.FusedMultiplyAdd(a13, m, c);
            a14 = Avx512F.FusedMultiplyAdd(a14, m, c); a15 = Avx512F.FusedMultiplyAdd(a15, m, c);
        }
        var s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11)) + ((a12 + a13) + (a14 + a15));
        return Vector512.Sum(s);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float Fma256(long iters)
    {
        var m = Vector256.Create(0.999999f); var c = Vector256.Create(1e-7f);
        Vector256<float> a0 = Vector256.Create(1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0,
            a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0, a15 = a0;
        for (long i = 0; i < iters; i++)
        {
            a0 = Fma.MultiplyAdd(a0, m, c); a1 = Fma.MultiplyAdd(a1, m, c); a2 = Fma.MultiplyAdd(a2, m, c); a3 = Fma.MultiplyAdd(a3, m, c);
            a4 = Fma.MultiplyAdd(a4, m, c); a5 = Fma.MultiplyAdd(a5, m, c); a6 = Fma.MultiplyAdd(a6, m, c); a7 = Fma.MultiplyAdd(a7, m, c);
            a8 = Fma.MultiplyAdd(a8, m, c); a9 = Fma.MultiplyAdd(a9, m, c); a10 = Fma.MultiplyAdd(a10, m, c); a11 = Fma.MultiplyAdd(a11, m, c);
            a12 = Fma.MultiplyAdd(a12, m, c); a13 = Fma.MultiplyAdd(a13, m, c); a14 = Fma.MultiplyAdd(a14, m, c); a15 = Fma.MultiplyAdd(a15, m, c);
        }
        var s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11)) + ((a12 + a13) + (a14 + a15));
        return Vector256.Sum(s);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float MulAdd128(long iters)
    {
        var m = Vector128.Create(0.999999f); var c = Vector128.Create(1e-7f);
        Vector128<float> a0 = Vector128.Create(1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (long i = 0; i < iters * 2; i++)   // 8 chains × 2 = 16 chains' worth of work per outer iteration
        {
            a0 = a0 * m + c; a1 = a1 * m + c; a2 = a2 * m + c; a3 = a3 * m + c;
            a4 = a4 * m + c; a5 = a5 * m + c; a6 = a6 * m + c; a7 = a7 * m + c;
        }
        return Vector128.Sum(((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)));
    }
}
