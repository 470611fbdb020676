using GpuAttention.Backends;
using GpuAttention.Backends.Kernels;
using GpuAttention.Backends.OpenCL;
using GpuAttention.Backends.OpenCL.Native;
using GpuAttention.Diagnostics;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// The OpenCL layer over Silk.NET.OpenCL: a failed call is an <see cref="OpenClException"/> with the CL code and the call's name,
/// setting kernel arguments allocates nothing (a launch allocates no more than 128 B, however many arguments), and every handle is counted until released.
/// Skipped when OpenCL is absent.
/// </summary>
[TestFixture]
[NonParallelizable]
public class OpenClBindingTests
{
    private static OpenClBackend Open()
    {
        try { return (OpenClBackend)OpenClBackend.Create(0); }
        catch (BackendUnavailableException e) { Assert.Ignore(e.Message); throw; }
    }

    // 1x1 tiles: global n x n work-items in groups of one, valid on any device.
    private const string Defines = "-DTM=1 -DTN=1 -DWM=1 -DWN=1 -DTK=1 -DTRANS_A=0 -DTRANS_B=0";

    private static void Gemm(OpenClBackend be, IDeviceBuffer a, IDeviceBuffer b, IDeviceBuffer c, int n) =>
        be.Launch("gemm.cl", Defines, "gemm_batched", [n, n, 1], [1, 1, 1],
            [n, n, n, 1f, 0f, KernelArg.Of(a), 0L, 0L, n, KernelArg.Of(b), 0L, 0L, n, KernelArg.Of(c), 0L, 0L, n]);

    private static unsafe void SetArg(ClKernel k, int value) =>
        Cl.Check(Cl.Api.SetKernelArg(k.Raw, 0, sizeof(int), &value), "clSetKernelArg");

    [Test]
    public void KernelArgumentsAllocateNothing()
    {
        using var be = Open();
        const int n = 8;
        using var a = be.Allocate(n * n);
        using var b = be.Allocate(n * n);
        using var c = be.Allocate(n * n);
        be.Fill(a, 1); be.Fill(b, 2);
        Gemm(be, a, b, c, n); // builds the program and creates the kernel (allocates; not measured)
        be.Synchronize();
        long least = long.MaxValue;
        for (int round = 0; round < 3; round++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 50; i++) Gemm(be, a, b, c, n);
            least = Math.Min(least, GC.GetAllocatedBytesForCurrentThread() - before);
            be.Synchronize();
        }
        // No allocation per kernel argument (17 here); what a whole launch allocates (72 B measured on PoCL) is left to find.
        Assert.That(least, Is.LessThanOrEqualTo(50 * 128), "bytes allocated by 50 launches");
        var k = be.Programs.Kernel("gemm.cl", Defines, "gemm_batched");
        long argBytes = long.MaxValue;
        for (int round = 0; round < 3; round++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 50; i++) SetArg(k, n);
            argBytes = Math.Min(argBytes, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        Assert.That(argBytes, Is.Zero, "bytes allocated by 50 clSetKernelArg calls through Silk");
        var result = new float[n * n];
        be.Read(c, 0, result);
        Assert.That(result, Is.All.EqualTo(2f * n));
    }

    [Test]
    public void AFailedCallIsAnOpenClExceptionWithTheCodeAndTheCallName()
    {
        using var be = Open();
        const int n = 8;
        using var a = be.Allocate(n * n);
        // One argument more than gemm_batched takes: clSetKernelArg(17) fails with CL_INVALID_ARG_INDEX.
        var ex = Assert.Throws<OpenClException>(() => be.Launch("gemm.cl", Defines, "gemm_batched", [n, n, 1], [1, 1, 1],
            [n, n, n, 1f, 0f, KernelArg.Of(a), 0L, 0L, n, KernelArg.Of(a), 0L, 0L, n, KernelArg.Of(a), 0L, 0L, n, 0]))!;
        Assert.That(ex.Error, Is.EqualTo(-49));
        Assert.That(ex.ErrorName, Is.EqualTo("CL_INVALID_ARG_INDEX"));
        Assert.That(ex.Message, Does.Contain("clSetKernelArg(17)").And.Contain("CL_INVALID_ARG_INDEX (-49)"));
    }

    [Test]
    public void EveryHandleIsCountedUntilReleased()
    {
        long before = NativeResources.OpenClHandles;
        var be = Open();
        var buf = be.Allocate(16);
        Assert.That(NativeResources.OpenClHandles, Is.GreaterThanOrEqualTo(before + 3), "context, queue and buffer");
        buf.Dispose();
        be.Dispose();
        Assert.That(NativeResources.OpenClHandles, Is.EqualTo(before));
    }
}
