using GpuAttention.Backends.Ilgpu;
using ILGPU;
using ILGPU.Runtime;

namespace GpuAttention;

public sealed partial class Device
{
    /// <summary>
    /// Opens a device over an ILGPU <see cref="ILGPU.Runtime.Accelerator"/> the caller owns (an engine written on ILGPU):
    /// every op of this device is enqueued on <paramref name="stream"/> (default: the accelerator's default stream) and runs
    /// this library's ILGPU kernels on the caller's memory through <see cref="Wrap(ArrayView{float}, int[])"/>. Disposing the
    /// device releases only what it created itself (compiled kernels stay in the accelerator's cache); the accelerator, its
    /// context and the stream stay the caller's. Reads (<see cref="Download(Tensor)"/>), <see cref="Synchronize"/> and host
    /// copies synchronise the stream. Spec: "ilgpu:embedded".
    /// </summary>
    /// <param name="accelerator">An open ILGPU accelerator (CUDA, OpenCL or CPU). For float32-only kernels create its context
    /// with <c>Math(MathMode.Fast32BitOnly)</c> (the library's own contexts do); others work too.</param>
    /// <param name="stream">A stream of <paramref name="accelerator"/>, or null for its default stream.</param>
    /// <exception cref="ArgumentNullException"><paramref name="accelerator"/> is null.</exception>
    /// <exception cref="ObjectDisposedException">The accelerator was disposed.</exception>
    /// <exception cref="ArgumentException">The stream belongs to another accelerator.</exception>
    public static Device FromAccelerator(Accelerator accelerator, AcceleratorStream? stream = null) =>
        new(IlgpuBackend.Embed(accelerator, stream), "ilgpu:embedded");

    /// <summary>
    /// A tensor of <paramref name="shape"/> over the caller's memory <paramref name="view"/> (row-major, dense), without a copy:
    /// ops read and write the caller's buffer directly. The tensor does not own the memory: disposing it only detaches it, and
    /// the caller must keep the buffer alive while the tensor is used.
    /// </summary>
    /// <param name="view">Memory of this device's accelerator holding exactly the product of <paramref name="shape"/> elements
    /// (take a <c>SubView</c> for a part of a larger buffer).</param>
    /// <param name="shape">Dimensions, outermost first.</param>
    /// <exception cref="InvalidOperationException">This device is not an ILGPU device.</exception>
    /// <exception cref="ArgumentException">The view belongs to another accelerator; a negative dimension.</exception>
    /// <exception cref="TensorShapeException">The view's length differs from the product of the shape.</exception>
    public Tensor Wrap(ArrayView<float> view, params int[] shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        if (Backend is not IlgpuBackend be)
            throw new InvalidOperationException($"Wrap: device {Spec} is not an ILGPU device; open one with Device.FromAccelerator or an ilgpu spec");
        var copy = (int[])shape.Clone();
        long n = Tensor.Product(copy);
        if (view.Length != n)
            throw new TensorShapeException("view", $"{n} elements for shape {TensorShapeException.Format(copy)}", $"{view.Length} elements");
        if (n > 0 && view.GetAcceleratorType() != be.Accelerator.AcceleratorType)
            throw new ArgumentException($"view: memory of a {view.GetAcceleratorType()} accelerator, but this device runs on {be.Accelerator.AcceleratorType}", nameof(view));
        if (n > 0 && ((IArrayView)view).Buffer is { } mb && !ReferenceEquals(mb.Accelerator, be.Accelerator))
            throw new ArgumentException("view: memory of another accelerator than this device's", nameof(view));
        lock (QueueLock) return new Tensor(this, be.WrapExternal(view), copy);
    }

    /// <summary>A tensor of <paramref name="shape"/> over the caller's <paramref name="buffer"/> without a copy
    /// (see <see cref="Wrap(ArrayView{float}, int[])"/>); the buffer stays the caller's.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="buffer"/> is null.</exception>
    public Tensor Wrap(MemoryBuffer1D<float, Stride1D.Dense> buffer, params int[] shape)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        return Wrap(buffer.View, shape);
    }
}
