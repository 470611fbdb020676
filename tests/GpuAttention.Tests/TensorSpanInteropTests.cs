using System.Numerics.Tensors;
using NUnit.Framework;
using NT = System.Numerics.Tensors.Tensor;

namespace GpuAttention.Tests;

/// <summary>System.Numerics.Tensors interop: upload from <see cref="ReadOnlyTensorSpan{T}"/> and download into
/// <see cref="TensorSpan{T}"/> on every backend (row-major, transposed, broadcast layouts), and on the cpu device tensors
/// over caller memory without a copy (<see cref="Device.Wrap(Memory{float}, int[])"/>, <see cref="Device.Wrap(Tensor{float})"/>).</summary>
[TestFixtureSource(typeof(TestUtil), nameof(TestUtil.Backends))]
public class TensorSpanInteropTests(string backend)
{
    private Device _d = null!;

    [OneTimeSetUp] public void Open() => _d = TestUtil.OpenOrIgnore(backend);
    [OneTimeTearDown] public void Close() => _d?.Dispose();

    private static float[] Seq(int n) => Enumerable.Range(0, n).Select(i => i * 0.5f - 3f).ToArray();

    [Test]
    public void RowMajorRoundTrip()
    {
        var data = Seq(2 * 3 * 4);
        var src = NT.Create(data, [2, 3, 4]);
        using var t = _d.Upload(src.AsReadOnlyTensorSpan());
        Assert.That(t.Shape.ToArray(), Is.EqualTo(new[] { 2, 3, 4 }));
        Assert.That(_d.Download(t), Is.EqualTo(data));
        var back = new float[24];
        _d.Download(t, new TensorSpan<float>(back, [2, 3, 4]));
        Assert.That(back, Is.EqualTo(data));
    }

    [Test]
    public void StridedLayoutsAreGatheredAndScattered()
    {
        var data = Seq(3 * 4);                                         // a [3, 4] row-major
        var transposed = new ReadOnlyTensorSpan<float>(data, [4, 3], [1, 4]);   // its transpose [4, 3], a view
        using var t = _d.Upload(transposed);
        var expected = new float[12];
        for (int i = 0; i < 4; i++) for (int j = 0; j < 3; j++) expected[i * 3 + j] = data[j * 4 + i];
        Assert.That(_d.Download(t), Is.EqualTo(expected));

        var row = new float[] { 1, 2, 3 };
        using var b = _d.Upload(new ReadOnlyTensorSpan<float>(row, [4, 3], [0, 1]));   // a row broadcast over 4 rows (stride 0)
        Assert.That(_d.Download(b), Is.EqualTo(row.Concat(row).Concat(row).Concat(row).ToArray()));

        // download into a transposed destination view: dst[j, i] = t[i, j]
        var dst = new float[12];
        _d.Download(t, new TensorSpan<float>(dst, [4, 3], [1, 4]));
        Assert.That(dst, Is.EqualTo(data));
    }

    [Test]
    public void UploadIntoAnExistingTensorAndLengthsAreChecked()
    {
        using var t = _d.Allocate(2, 5);
        var data = Seq(10);
        _d.Upload(t, new ReadOnlyTensorSpan<float>(data, [2, 5]));
        Assert.That(_d.Download(t), Is.EqualTo(data));
        var e = Assert.Throws<TensorShapeException>(() => _d.Upload(t, new ReadOnlyTensorSpan<float>(data, [5, 2])))!;
        Assert.That(e.TensorName, Is.EqualTo("data"));
        Assert.That(_d.Download(t), Is.EqualTo(data), "nothing written");
        Assert.Throws<TensorShapeException>(() => _d.Download(t, new TensorSpan<float>(new float[10], [10])));
    }

    [Test]
    public void SdpaOnUploadedTensorSpans()
    {
        var rng = new Random(TestUtil.Seed("tensorspan sdpa"));
        var x = TestUtil.Random(rng, 1 * 2 * 5 * 4);
        using var a = _d.Upload(new ReadOnlyTensorSpan<float>(x, [1, 2, 5, 4]));
        using var b = _d.Upload(x, 1, 2, 5, 4);
        var (o1, l1) = _d.Sdpa(a, a, a);
        var (o2, l2) = _d.Sdpa(b, b, b);
        using (o1) using (l1) using (o2) using (l2)
        {
            var got = NT.CreateFromShape<float>([1, 2, 5, 4]);
            _d.Download(o1, got.AsTensorSpan());
            Assert.That(got.ToArray(), Is.EqualTo(_d.Download(o2)));
        }
    }

    [Test]
    public void CpuWrapsCallerMemoryWithoutACopy()
    {
        if (_d.Kind != BackendKind.Cpu)
        {
            var tt = NT.Create(new float[4], [2, 2]);
            Assert.Throws<NotSupportedException>(() => _d.Wrap(new float[4].AsMemory(), 2, 2));
            Assert.Throws<NotSupportedException>(() => _d.Wrap(tt));
            return;
        }
        var rng = new Random(TestUtil.Seed("wrap"));
        int[] shape = [1, 2, 7, 6];
        var qArr = TestUtil.Random(rng, 84);
        var outArr = new float[1 + 84];                                 // an offset view: float-aligned, not 64-byte aligned
        var lseArr = NT.CreateFromShape<float>([1, 2, 7]);
        using var q = _d.Wrap(qArr.AsMemory(), shape);
        using var o = _d.Wrap(outArr.AsMemory(1), shape);
        using var l = _d.Wrap(lseArr);
        _d.Sdpa(q, q, q, o, l);
        _d.Synchronize();
        // the results are in the caller's arrays: no download
        using var qc = _d.Upload(qArr, shape);
        var (o2, l2) = _d.Sdpa(qc, qc, qc);
        using (o2) using (l2)
        {
            Assert.That(outArr[1..], Is.EqualTo(_d.Download(o2)));
            Assert.That(lseArr.ToArray(), Is.EqualTo(_d.Download(l2)));
        }
        // writes through the device reach the caller's memory and back
        _d.Fill(q, 2f);
        Assert.That(qArr, Is.All.EqualTo(2f));
        qArr[5] = -1f;
        Assert.That(_d.Download(q)[5], Is.EqualTo(-1f));
        Assert.Throws<TensorShapeException>(() => _d.Wrap(new float[5].AsMemory(), 2, 2));
        var transposed = NT.Create(new float[6], [2, 3], [1, 2]);
        Assert.Throws<ArgumentException>(() => _d.Wrap(transposed));
    }
}
