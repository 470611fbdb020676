using GpuAttention.Backends.Cuda;
using GpuAttention.Backends.Cuda.Native;
using GpuAttention.Backends.Kernels;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// The CUDA backend itself (the op families run on it through the backend-parametrized fixtures, see
/// <see cref="TestUtil.Backends"/>). Tests that need a GPU are skipped with the reason where CUDA is absent.
/// </summary>
[TestFixture]
[NonParallelizable]
public class CudaBackendTests
{
    private Device? _dev;
    private string? _unavailable;

    [OneTimeSetUp]
    public void OpenDevice()
    {
        try { _dev = Device.Open("cuda"); }
        catch (BackendUnavailableException e) { _unavailable = e.Message; }
    }

    [OneTimeTearDown]
    public void CloseDevice() => _dev?.Dispose();

    private Device Dev
    {
        get
        {
            if (_dev is null) Assert.Ignore(_unavailable ?? "cuda unavailable");
            return _dev!;
        }
    }

    private CudaBackend Backend => (CudaBackend)Dev.Backend;

    [Test]
    public void ProbeDescribesCudaOrSaysWhichLibraryIsMissing()
    {
        var cuda = Device.Probe().Where(d => d.Backend == BackendKind.Cuda).ToList();
        Assert.That(cuda, Is.Not.Empty);
        if (_dev is null)
        {
            Assert.That(cuda, Has.Count.EqualTo(1));
            Assert.That(cuda[0].Available, Is.False);
            Assert.That(cuda[0].Reason, Does.StartWith("cuda"));
            Assert.That(cuda[0].Reason, Does.Contain("libcuda.so.1").Or.Contain("nvcuda.dll").Or.Contain("cuInit").Or.Contain("nvrtc").Or.Contain("no CUDA device").Or.Contain("macOS"));
            Assert.That(_unavailable, Does.StartWith("cuda"));
            if (!Nvrtc.TryLoad(out var why)) Assert.That(cuda[0].Reason, Does.Contain(why!), "a missing NVRTC is named too");
        }
        else
        {
            Assert.That(cuda.All(d => d.Available && d.Spec.StartsWith("cuda:", StringComparison.Ordinal)));
            Assert.That(cuda[0].Name, Does.Contain("sm_"));
        }
    }

    [Test]
    public void OutOfRangeIndexSaysHowManyDevicesThereAre()
    {
        _ = Dev;
        var ex = Assert.Throws<BackendUnavailableException>(() => Device.Open("cuda:64"));
        Assert.That(ex!.Message, Does.Contain("no such device"));
    }

    [Test]
    public void WriteFillReadRoundTrip()
    {
        var d = Dev;
        var data = Enumerable.Range(0, 1001).Select(i => i * 0.5f).ToArray();
        using var t = d.Upload(data, 7, 11, 13);
        Assert.That(d.Download(t), Is.EqualTo(data));
        d.Fill(t, float.NaN);
        Assert.That(d.Download(t), Is.All.NaN);
        var be = Backend;
        var buf = be.Allocate(10);
        try
        {
            be.Fill(buf, -2f);
            be.Write(buf, 3, [1f, 2f, 3f]);
            var back = new float[4];
            be.Read(buf, 2, back);
            Assert.That(back, Is.EqualTo(new[] { -2f, 1f, 2f, 3f }));
        }
        finally { buf.Dispose(); }
    }

    [Test]
    public void ModulesAreCachedPerFileAndDefines()
    {
        var d = Dev;
        using var q = d.Upload(TestUtil.Random(new Random(1), 2 * 9 * 17), 1, 2, 9, 17);
        using var k = d.Upload(TestUtil.Random(new Random(2), 2 * 5 * 17), 1, 2, 5, 17);
        using var v = d.Upload(TestUtil.Random(new Random(3), 2 * 5 * 23), 1, 2, 5, 23);
        var (o1, l1) = d.Sdpa(q, k, v);
        int n = Backend.ModuleCount;
        var (o2, l2) = d.Sdpa(q, k, v, options: new SdpaOptions(IsCausal: true));
        using (o1) using (l1) using (o2) using (l2)
            Assert.That(Backend.ModuleCount, Is.EqualTo(n), "same head dims, same module");
        Assert.That(Backend.Arch, Is.GreaterThanOrEqualTo(50));
    }

    [Test]
    public void DeviceTimerMeasuresTheWork()
    {
        var d = Dev;
        Assert.That(d.HasDeviceTimer, Is.True);
        using var q = d.Upload(TestUtil.Random(new Random(1), 4 * 512 * 64), 1, 4, 512, 64);
        using var k = d.Upload(TestUtil.Random(new Random(2), 4 * 512 * 64), 1, 4, 512, 64);
        using var v = d.Upload(TestUtil.Random(new Random(3), 4 * 512 * 64), 1, 4, 512, 64);
        using var o = d.Allocate(1, 4, 512, 64);
        using var l = d.Allocate(1, 4, 512);
        d.Sdpa(q, k, v, o, l);                       // compile and warm up
        double ms = d.TimeMs(() => d.Sdpa(q, k, v, o, l));
        Assert.That(ms, Is.GreaterThan(0).And.LessThan(10_000));
    }

    [Test]
    public void LaunchChecksTheGrid()
    {
        var be = Backend;
        var (_, _, defines) = KernelBackend.SdpaConfig(4, 4, be.Limits);
        Assert.Throws<ArgumentException>(() => be.Launch("sdpa.cl", defines, "sdpa_forward", [33, 1], [32, 1], []));
        Assert.Throws<CudaException>(() => be.Function("sdpa.cl", defines, "no_such_kernel"));
    }
}
