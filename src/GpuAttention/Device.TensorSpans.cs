using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using GpuAttention.Backends;
using GpuAttention.Backends.Cpu;

namespace GpuAttention;

/// <summary>Interop with System.Numerics.Tensors (<see cref="ReadOnlyTensorSpan{T}"/>, <see cref="TensorSpan{T}"/>,
/// <see cref="Tensor{T}"/>; not experimental since version 10).</summary>
public sealed partial class Device
{
    /// <summary>
    /// Allocates a tensor with the shape of <paramref name="data"/> (its <c>Lengths</c>) and copies the data in. A row-major
    /// contiguous span is copied straight to the device; any other layout (a transposed or sliced view, a broadcast with
    /// stride 0) is gathered in row-major order through a host buffer first.
    /// </summary>
    /// <exception cref="ArgumentException">A dimension above <see cref="int.MaxValue"/>.</exception>
    public Tensor Upload(ReadOnlyTensorSpan<float> data)
    {
        var t = Allocate(ShapeOf(data.Lengths, "data"));
        try { Upload(t, data); }
        catch { t.Dispose(); throw; }
        return t;
    }

    /// <summary>Copies <paramref name="data"/> into <paramref name="destination"/>, whose shape its <c>Lengths</c> must equal
    /// (layouts as in <see cref="Upload(ReadOnlyTensorSpan{float})"/>).</summary>
    /// <exception cref="TensorShapeException">The lengths differ from the tensor's shape.</exception>
    public void Upload(Tensor destination, ReadOnlyTensorSpan<float> data)
    {
        CheckOwned(destination, "destination");
        CheckLengths(destination, data.Lengths, "data");
        if (destination.Length == 0) return;
        if (IsRowMajor(data.Lengths, data.Strides))
        {
            ref float first = ref Unsafe.AsRef(in data.GetPinnableReference());
            lock (QueueLock)
                for (long off = 0; off < destination.Length; off += Chunk)
                    Backend.Write(destination.Buffer, off, MemoryMarshal.CreateReadOnlySpan(ref Unsafe.Add(ref first, (nint)off), (int)Math.Min(Chunk, destination.Length - off)));
            return;
        }
        var host = new float[destination.Length];
        data.FlattenTo(host);
        lock (QueueLock) Backend.Write(destination.Buffer, 0, host);
    }

    /// <summary>
    /// Copies <paramref name="source"/> into <paramref name="destination"/> (waits for queued work), whose <c>Lengths</c> must equal
    /// the tensor's shape. A row-major contiguous destination is written straight from the device; another layout (e.g. a
    /// transposed view) is written element by element from a host copy.
    /// </summary>
    /// <exception cref="TensorShapeException">The lengths differ from the tensor's shape.</exception>
    public void Download(Tensor source, TensorSpan<float> destination)
    {
        CheckOwned(source, "source");
        CheckLengths(source, destination.Lengths, "destination");
        if (source.Length == 0) return;
        if (IsRowMajor(destination.Lengths, destination.Strides))
        {
            ref float first = ref destination.GetPinnableReference();
            lock (QueueLock)
                for (long off = 0; off < source.Length; off += Chunk)
                    Backend.Read(source.Buffer, off, MemoryMarshal.CreateSpan(ref Unsafe.Add(ref first, (nint)off), (int)Math.Min(Chunk, source.Length - off)));
            return;
        }
        var host = Download(source);
        var lengths = destination.Lengths;
        new ReadOnlyTensorSpan<float>(host, lengths, RowMajorStrides(lengths)).CopyTo(destination);
    }

    /// <summary>
    /// A tensor of the cpu device over caller memory, without a copy: ops read and write <paramref name="memory"/> itself,
    /// which stays pinned until the tensor is disposed (the caller keeps it alive and does not touch it while ops run).
    /// Only the managed cpu device can do this; other devices need <see cref="Upload(ReadOnlyTensorSpan{float})"/>.
    /// </summary>
    /// <param name="memory">Row-major data, exactly the product of <paramref name="shape"/> elements.</param>
    /// <param name="shape">The dimensions, outermost first.</param>
    /// <exception cref="NotSupportedException">This device is not the cpu device.</exception>
    /// <exception cref="TensorShapeException">memory.Length differs from the product of the shape.</exception>
    public Tensor Wrap(Memory<float> memory, params int[] shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        if (Backend is not CpuBackend)
            throw new NotSupportedException($"{Spec}: only the cpu device can use caller memory without a copy; upload the data instead");
        var copy = (int[])shape.Clone();
        long n = Tensor.Product(copy);
        if (memory.Length != n)
            throw new TensorShapeException("memory", $"{n} elements for shape {TensorShapeException.Format(copy)}", $"{memory.Length} elements");
        lock (QueueLock) return new Tensor(this, new CpuBuffer(memory.Pin(), n), copy);
    }

    /// <summary>
    /// A tensor of the cpu device over the memory of a dense row-major <see cref="Tensor{T}"/>, without a copy (as
    /// <see cref="Wrap(Memory{float}, int[])"/>): the shape is its <c>Lengths</c>; it stays pinned until the tensor is disposed.
    /// </summary>
    /// <exception cref="NotSupportedException">This device is not the cpu device.</exception>
    /// <exception cref="ArgumentException"><paramref name="tensor"/> is not dense and row-major (e.g. a transposed view).</exception>
    public unsafe Tensor Wrap(Tensor<float> tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (Backend is not CpuBackend)
            throw new NotSupportedException($"{Spec}: only the cpu device can use caller memory without a copy; upload the data instead");
        if (!IsRowMajor(tensor.Lengths, tensor.Strides))
            throw new ArgumentException("tensor: must be dense and row-major to be used without a copy (upload a strided tensor instead)", nameof(tensor));
        var shape = ShapeOf(tensor.Lengths, "tensor");
        var pin = tensor.GetPinnedHandle();
        try { lock (QueueLock) return new Tensor(this, new CpuBuffer(pin, tensor.FlattenedLength), shape); }
        catch { pin.Dispose(); throw; }
    }

    private static int[] ShapeOf(ReadOnlySpan<nint> lengths, string name)
    {
        var shape = new int[lengths.Length];
        for (int i = 0; i < shape.Length; i++)
            shape[i] = lengths[i] <= int.MaxValue ? (int)lengths[i] : throw new ArgumentException($"{name}: dimension {i} is {lengths[i]}, above {int.MaxValue}", name);
        return shape;
    }

    private static void CheckLengths(Tensor t, ReadOnlySpan<nint> lengths, string name)
    {
        bool same = lengths.Length == t.Rank;
        for (int i = 0; same && i < lengths.Length; i++) same = lengths[i] == t.Shape[i];
        if (!same) throw new TensorShapeException(name, $"lengths {t} (the tensor's shape)", "[" + string.Join(", ", lengths.ToArray()) + "]");
    }

    /// <summary>True when element [i0, i1, …] sits at Σ i_k·(product of the later lengths): dense and in row-major order
    /// (strides of dimensions of length 1 do not matter).</summary>
    internal static bool IsRowMajor(ReadOnlySpan<nint> lengths, ReadOnlySpan<nint> strides)
    {
        nint expected = 1;
        for (int i = lengths.Length - 1; i >= 0; i--)
        {
            if (lengths[i] == 0) return true;
            if (lengths[i] != 1 && strides[i] != expected) return false;
            expected *= lengths[i];
        }
        return true;
    }

    private static nint[] RowMajorStrides(ReadOnlySpan<nint> lengths)
    {
        var s = new nint[lengths.Length];
        nint acc = 1;
        for (int i = lengths.Length - 1; i >= 0; i--) { s[i] = acc; acc *= Math.Max(lengths[i], 1); }
        return s;
    }

    /// <summary>Elements per host↔device copy call (a span holds at most 2³¹ − 1).</summary>
    private const int Chunk = 1 << 30;
}
