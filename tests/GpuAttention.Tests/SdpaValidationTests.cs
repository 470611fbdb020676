using NUnit.Framework;

namespace GpuAttention.Tests;

public class SdpaValidationTests
{
    private static Device Cpu() => Device.Open("cpu");

    [TestCase(new[] { 1, 2, 3 }, new[] { 1, 2, 4, 8 }, new[] { 1, 2, 4, 8 }, "q")]
    [TestCase(new[] { 1, 2, 3, 8 }, new[] { 1, 2, 4, 7 }, new[] { 1, 2, 4, 8 }, "k")]
    [TestCase(new[] { 1, 3, 3, 8 }, new[] { 1, 2, 4, 8 }, new[] { 1, 2, 4, 8 }, "k")]   // Hq % Hkv != 0
    [TestCase(new[] { 2, 2, 3, 8 }, new[] { 1, 2, 4, 8 }, new[] { 1, 2, 4, 8 }, "k")]   // batch mismatch
    [TestCase(new[] { 1, 2, 3, 8 }, new[] { 1, 2, 4, 8 }, new[] { 1, 2, 5, 8 }, "v")]
    public void WrongShapesNameTheTensor(int[] qs, int[] ks, int[] vs, string name)
    {
        using var d = Cpu();
        using var q = d.Allocate(qs); using var k = d.Allocate(ks); using var v = d.Allocate(vs);
        var e = Assert.Throws<TensorShapeException>(() => d.Sdpa(q, k, v));
        Assert.That(e!.TensorName, Is.EqualTo(name));
        Assert.That(e.Message, Does.StartWith(name + ":").And.Contain("expected"));
    }

    [TestCase(new[] { 3, 5 })]
    [TestCase(new[] { 1, 2, 3, 4, 5 })]
    [TestCase(new[] { 2, 1, 3, 4 })]
    public void MaskThatDoesNotBroadcastIsRejected(int[] maskShape)
    {
        using var d = Cpu();
        using var q = d.Allocate(1, 2, 3, 8); using var k = d.Allocate(1, 2, 4, 8); using var v = d.Allocate(1, 2, 4, 8);
        using var m = d.Allocate(maskShape);
        var e = Assert.Throws<TensorShapeException>(() => d.Sdpa(q, k, v, m));
        Assert.That(e!.TensorName, Is.EqualTo("mask"));
    }

    [Test]
    public void OutputsAreCheckedAndMayNotAliasInputs()
    {
        using var d = Cpu();
        using var q = d.Allocate(1, 1, 3, 4); using var k = d.Allocate(1, 1, 3, 4); using var v = d.Allocate(1, 1, 3, 4);
        using var lse = d.Allocate(1, 1, 3);
        using var badOut = d.Allocate(1, 1, 3, 5);
        Assert.That(Assert.Throws<TensorShapeException>(() => d.Sdpa(q, k, v, badOut, lse))!.TensorName, Is.EqualTo("out"));
        Assert.Throws<ArgumentException>(() => d.Sdpa(q, k, v, q, lse));
    }

    [Test]
    public void TensorsOfAnotherDeviceAndDisposedTensorsAreRejected()
    {
        using var d1 = Cpu(); using var d2 = Cpu();
        using var q = d1.Allocate(1, 1, 3, 4); using var k = d2.Allocate(1, 1, 3, 4); using var v = d1.Allocate(1, 1, 3, 4);
        Assert.Throws<ArgumentException>(() => d1.Sdpa(q, k, v));
        var gone = d1.Allocate(1, 1, 3, 4);
        gone.Dispose();
        gone.Dispose();   // double dispose is safe
        Assert.Throws<ObjectDisposedException>(() => d1.Sdpa(q, gone, v));
    }

    [Test]
    public void NonFiniteScaleIsRejected()
    {
        using var d = Cpu();
        using var q = d.Allocate(1, 1, 3, 4); using var k = d.Allocate(1, 1, 3, 4); using var v = d.Allocate(1, 1, 3, 4);
        Assert.Throws<ArgumentOutOfRangeException>(() => d.Sdpa(q, k, v, null, new SdpaOptions(Scale: float.NaN)));
    }

    [Test]
    public void UnknownBackendSpecsAreRejected()
    {
        Assert.Throws<ArgumentException>(() => Device.Open("tpu"));
        Assert.Throws<ArgumentException>(() => Device.Open("opencl:x"));
        Assert.Throws<BackendUnavailableException>(() => Device.Open("cpu:1"));
    }
}
