using GpuAttention.Backends.Cpu;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>The managed CPU backend's buffer cache: freed tensors of 64 KB or more are handed to the next allocation of
/// their size class, small ones are not kept, ReleaseCachedMemory and Dispose free what is kept.</summary>
[NonParallelizable]
public unsafe class CpuBufferCacheTests
{
    private static CpuBufferCache Cache(Device d) => ((CpuBackend)d.Backend).Cache;
    private static nint Address(Tensor t) => (nint)((CpuBuffer)t.Buffer).Pointer;

    [Test]
    public void FreedBufferIsReusedByTheNextAllocationOfItsSizeClass()
    {
        using var d = Device.Open("cpu");
        var t = d.Allocate(256 * 1024);                 // 1 MiB
        nint p = Address(t);
        t.Dispose();
        Assert.That(Cache(d).CachedBytes, Is.EqualTo(1 << 20));
        using var u = d.Allocate(512, 511);             // 1 MiB − 2 KiB: the same 64 KiB size class
        Assert.That(Address(u), Is.EqualTo(p), "reused block");
        Assert.That(Cache(d).CachedBytes, Is.Zero);
        using var w = d.Allocate(256 * 1024);           // the cache is empty again: fresh memory, not u's
        Assert.That(Address(w), Is.Not.EqualTo(p));
    }

    [Test]
    public void SmallBuffersGoBackToTheOsAtOnce()
    {
        using var d = Device.Open("cpu");
        for (int i = 0; i < 100; i++) d.Allocate(1000 + i).Dispose();   // < 64 KiB each
        Assert.That(Cache(d).CachedBytes, Is.Zero);
    }

    [Test]
    public void ReleaseCachedMemoryAndDisposeFreeWhatIsKept()
    {
        var d = Device.Open("cpu");
        for (int i = 1; i <= 4; i++) d.Allocate(i * 100_000).Dispose();
        Assert.That(Cache(d).CachedBytes, Is.GreaterThan(0));
        d.ReleaseCachedMemory();
        Assert.That(Cache(d).CachedBytes, Is.Zero);
        var cache = Cache(d);
        d.Allocate(200_000).Dispose();
        Assert.That(cache.CachedBytes, Is.GreaterThan(0));
        var keep = d.Allocate(300_000);
        d.Dispose();
        Assert.That(cache.CachedBytes, Is.Zero, "freed with the device");
        keep.Dispose();                                  // after the device: freed, not cached
        Assert.That(cache.CachedBytes, Is.Zero);
        Assert.Throws<ObjectDisposedException>(() => d.ReleaseCachedMemory());
    }

    [Test]
    public void AReusedBufferIsFullyWrittenByTheOpThatGetsIt()
    {
        // A freed output full of NaN comes back as the next output of the same size: the op must not read it.
        using var d = Device.Open("cpu");
        var rng = new Random(5);
        int B = 1, H = 2, L = 300, E = 64;
        var q = TestUtil.Random(rng, B * H * L * E);
        using var tq = d.Upload(q, B, H, L, E);
        var poisoned = d.Allocate(B, H, L, E);
        d.Fill(poisoned, float.NaN);
        nint p = Address(poisoned);
        poisoned.Dispose();
        using var o = d.Allocate(B, H, L, E);
        Assert.That(Address(o), Is.EqualTo(p));
        using var lse = d.Allocate(B, H, L);
        d.Sdpa(tq, tq, tq, o, lse);
        var r = GpuAttention.Reference.ReferenceOps.SdpaForward(q, q, q, B, H, H, L, L, E, E, 1f / MathF.Sqrt(E), false, null, null);
        TestUtil.AssertClose(d.Download(o), r.Out, 1e-5, "out");
    }
}
