using GpuAttention.Backends;

namespace GpuAttention;

/// <summary>
/// A dense, row-major float32 tensor that lives in the memory of one <see cref="Device"/>.
/// Created by <see cref="Device.Allocate(int[])"/> or <see cref="Device.Upload(ReadOnlySpan{float}, int[])"/>;
/// owns a native buffer, so dispose it (double dispose is safe; use after dispose throws
/// <see cref="ObjectDisposedException"/>).
/// </summary>
public sealed class Tensor : IDisposable
{
    private readonly int[] _shape;
    private IDeviceBuffer? _buffer;

    internal Tensor(Device device, IDeviceBuffer buffer, int[] shape)
    {
        Device = device;
        _buffer = buffer;
        _shape = shape;
        Length = Product(shape);
    }

    /// <summary>The device whose memory holds this tensor.</summary>
    public Device Device { get; }

    /// <summary>The dimensions, outermost first.</summary>
    public ReadOnlySpan<int> Shape => _shape;

    /// <summary>Number of dimensions.</summary>
    public int Rank => _shape.Length;

    /// <summary>Number of elements (64-bit).</summary>
    public long Length { get; }

    /// <summary>Size of dimension <paramref name="i"/>; negative indices count from the end.</summary>
    public int Dim(int i) => _shape[i < 0 ? _shape.Length + i : i];

    /// <summary>True once disposed.</summary>
    public bool IsDisposed => _buffer is null;

    internal IDeviceBuffer Buffer => _buffer ?? throw new ObjectDisposedException(nameof(Tensor));

    internal int[] ShapeArray => _shape;

    /// <summary>Shape formatted as "[a, b, c]".</summary>
    public override string ToString() => TensorShapeException.Format(_shape);

    /// <summary>
    /// Releases the device memory. Safe to call more than once and from several threads, also while another thread runs an
    /// op on the device: the release takes the device's queue lock, so it waits for an op that is being enqueued or run;
    /// an op called after it throws <see cref="ObjectDisposedException"/>.
    /// </summary>
    public void Dispose()
    {
        if (_buffer is null) return;
        lock (Device.QueueLock)
        {
            Interlocked.Exchange(ref _buffer, null)?.Dispose();
        }
    }

    internal static long Product(ReadOnlySpan<int> shape)
    {
        long n = 1;
        foreach (var d in shape)
        {
            if (d < 0) throw new ArgumentOutOfRangeException(nameof(shape), $"shape: negative dimension {d} in {TensorShapeException.Format(shape)}");
            try { n = checked(n * d); }
            catch (OverflowException) { throw new ArgumentOutOfRangeException(nameof(shape), $"shape: {TensorShapeException.Format(shape)} has more than 2^63 elements"); }
        }
        return n;
    }
}
