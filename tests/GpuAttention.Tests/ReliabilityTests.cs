using GpuAttention.Diagnostics;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// Lifetime, leaks, out-of-memory and concurrency on every backend present: double dispose, use after dispose, live native
/// handle counts over thousands of create/dispose cycles, a device that stays usable after running out of memory, one device
/// used from several threads at once (results equal to serial ones), and Tensor.Dispose racing with ops.
/// </summary>
[TestFixture("cpu")]
[TestFixture("opencl")]
[NonParallelizable]
public class ReliabilityTests(string backend)
{
    private static long Live() => NativeResources.CpuBuffers + NativeResources.OpenClHandles;

    private static void Settle() { GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect(); }

    [Test]
    public void DoubleDisposeIsSafeAndUseAfterDisposeThrowsObjectDisposed()
    {
        var d = TestUtil.OpenOrIgnore(backend);
        var t = d.Upload(new float[] { 1, 2, 3 }, 3);
        t.Dispose(); t.Dispose();
        Assert.That(t.IsDisposed);
        Assert.Throws<ObjectDisposedException>(() => d.Download(t));
        Assert.Throws<ObjectDisposedException>(() => d.Fill(t, 0f));
        var a = d.Upload(new float[6], 2, 3);
        var ex = Assert.Throws<ObjectDisposedException>(() => d.Gemm(a, t))!;
        Assert.That(ex.Message, Does.Contain("b"));
        var keep = d.Upload(new float[6], 3, 2);
        d.Dispose(); d.Dispose();
        Assert.That(d.IsDisposed);
        Assert.Throws<ObjectDisposedException>(() => d.Allocate(2));
        Assert.Throws<ObjectDisposedException>(() => d.Download(keep));
        Assert.Throws<ObjectDisposedException>(() => d.Synchronize());
        Assert.Throws<ObjectDisposedException>(() => d.Gemm(a, keep));
        keep.Dispose(); a.Dispose(); keep.Dispose();   // tensors outliving their device are still released
    }

    [Test]
    public void ThousandsOfCreateDisposeCyclesLeakNoNativeHandles()
    {
        using var d = TestUtil.OpenOrIgnore(backend);
        using (var warm = d.Upload(new float[7], 7)) d.Download(warm);
        Settle();
        long before = Live();
        for (int i = 0; i < 3000; i++)
        {
            var t = d.Allocate(1 + i % 97, 3);
            if (i % 10 == 0) d.Fill(t, i);
            t.Dispose();
            if (i % 3 == 0) t.Dispose();
        }
        Assert.That(Live(), Is.EqualTo(before), "live native handles after 3000 tensor create/dispose cycles");
        Assert.That(Live(), Is.GreaterThan(before - 1));   // and the counter did not go below (double release)
    }

    [Test]
    public void DeviceCreateDisposeCyclesAndEveryOpLeakNoNativeHandles()
    {
        using (var d0 = TestUtil.OpenOrIgnore(backend)) { }
        Settle();
        long before = Live();
        for (int i = 0; i < 20; i++)
        {
            using var d = Device.Open(backend);
            if (i < 2) foreach (var c in OpWorkload.Cases) c.Run(d);   // compiles programs, grows scratch: all released with the device
            else using (var t = d.Upload(new float[5], 5)) d.Download(t);
        }
        Settle();
        Assert.That(Live(), Is.EqualTo(before), "live native handles after opening and disposing the device 20 times");
    }

    [Test]
    public void OutOfMemoryIsAClearErrorAndTheDeviceStaysUsable()
    {
        using var d = TestUtil.OpenOrIgnore(backend);
        long before = Live();
        // 2^46 float32 = 256 TiB: more than any address space (CPU) and above any OpenCL device's max allocation.
        var ex = Assert.Catch<Exception>(() => d.Allocate(1 << 20, 1 << 20, 64))!;
        Assert.That(ex, Is.InstanceOf<OutOfMemoryException>().Or.InstanceOf<ArgumentException>());
        Assert.That(ex.Message, Does.Contain("[1048576, 1048576, 64]"));
        var overflow = Assert.Catch<ArgumentException>(() => d.Allocate(int.MaxValue, int.MaxValue, int.MaxValue))!;
        Assert.That(overflow.Message, Does.Contain("shape"));
        Assert.That(Live(), Is.EqualTo(before));
        using var t = d.Upload(new float[] { 1, 2, 3, 4 }, 2, 2);
        using var c = d.Gemm(t, t);
        Assert.That(d.Download(c), Is.EqualTo(new float[] { 7, 10, 15, 22 }));
    }

    [Test]
    public void ParallelCallersOnOneDeviceGetTheSerialResults()
    {
        using var d = TestUtil.OpenOrIgnore(backend);
        var cases = OpWorkload.Cases;
        var serial = cases.Select(c => c.Run(d)).ToArray();
        const int threads = 4, rounds = 2;
        var errors = new System.Collections.Concurrent.ConcurrentBag<string>();
        var workers = Enumerable.Range(0, threads).Select(w => new Thread(() =>
        {
            try
            {
                for (int r = 0; r < rounds; r++)
                    for (int i = 0; i < cases.Count; i++)
                    {
                        int c = (i + w * 5) % cases.Count;   // threads run different ops at the same time
                        double e = OpWorkload.WorstError(cases[c].Run(d), serial[c]);
                        if (e != 0) errors.Add($"thread {w}, {cases[c].Name}: differs from the serial result (relative {e:E2})");
                    }
            }
            catch (Exception e) { errors.Add($"thread {w}: {e.GetType().Name}: {e.Message}"); }
        })).ToList();
        workers.ForEach(t => t.Start());
        workers.ForEach(t => t.Join());
        Assert.That(errors, Is.Empty);
    }

    [Test]
    public void TensorDisposeRacingWithOpsGivesObjectDisposedOrAResultNeverACrash()
    {
        using var d = TestUtil.OpenOrIgnore(backend);
        var rng = new Random(5);
        int disposedSeen = 0, completed = 0;
        for (int round = 0; round < 40; round++)
        {
            var a = d.Upload(TestUtil.Random(rng, 33 * 17), 33, 17);
            var b = d.Upload(TestUtil.Random(rng, 17 * 29), 17, 29);
            using var c = d.Allocate(33, 29);
            var other = Exception_(() =>
            {
                var t = new Thread(() => { Thread.SpinWait(rng.Next(20000)); a.Dispose(); });
                t.Start();
                try
                {
                    for (int i = 0; i < 20; i++) { d.Gemm(a, b, c); d.Download(c); completed++; }
                }
                catch (ObjectDisposedException) { disposedSeen++; }
                t.Join();
            });
            Assert.That(other, Is.Null, "only ObjectDisposedException may come out of an op racing with Dispose");
            Assert.That(a.IsDisposed);
            b.Dispose();
        }
        Assert.That(disposedSeen + completed, Is.GreaterThan(0));
        using var x = d.Upload(new float[] { 2 }, 1, 1);
        using var y = d.Gemm(x, x);
        Assert.That(d.Download(y), Is.EqualTo(new float[] { 4 }), "device still usable");
    }

    private static Exception? Exception_(Action a)
    {
        try { a(); return null; } catch (Exception e) { return e; }
    }
}
