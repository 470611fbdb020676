using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;
using GpuAttention.Kernels.Ilgpu;

namespace GpuAttention.Backends.Ilgpu;

/// <summary>
/// A buffer of the ILGPU backend: a view of float32 elements in the accelerator's memory, either a
/// <see cref="MemoryBuffer1D{T, TStride}"/> the backend allocated (owned: disposed with the buffer) or a caller's
/// view wrapped without a copy (<see cref="Device.Wrap(ArrayView{float}, int[])"/>: never disposed here).
/// </summary>
internal sealed class IlgpuBuffer : IDeviceBuffer
{
    private MemoryBuffer1D<float, Stride1D.Dense>? _owned;
    private ArrayView<float> _view;

    public IlgpuBuffer(MemoryBuffer1D<float, Stride1D.Dense> owned, IlgpuBackend owner)
    {
        _owned = owned;
        _view = owned.View;
        Owner = owner;
    }

    public IlgpuBuffer(ArrayView<float> external, IlgpuBackend owner)
    {
        _view = external;
        Owner = owner;
    }

    public IlgpuBackend Owner { get; }
    public long Length => _view.Length;
    public bool Owned => _owned is not null;
    public ArrayView<float> View => _view;

    public void Dispose()
    {
        _view = default;
        Interlocked.Exchange(ref _owned, null)?.Dispose();
    }
}

/// <summary>
/// The ILGPU backend: one accelerator (CUDA, OpenCL or the CPU simulator) and one <see cref="AcceleratorStream"/> on which
/// every copy, fill and kernel launch is enqueued. Kernels are C# methods in <c>kernels/ilgpu/</c>, compiled by ILGPU on first
/// use; each op family's host class (<see cref="IlgpuGemm"/>, …) lives beside this file and is hooked up in its own partial
/// file <c>IlgpuBackend.&lt;Family&gt;.cs</c> that implements the family's interface (<see cref="IGemmBackend"/>, …):
/// <see cref="SupportsOp"/> follows from the interfaces (<see cref="OpSupport"/>), ops without one fall back to the CPU backend.
/// Either owns its context and accelerator (<see cref="Create"/>) or runs on a caller's accelerator and stream
/// (<see cref="Device.FromAccelerator"/>), which it never disposes. Not thread-safe by itself: <see cref="Device"/> serialises
/// calls with its queue lock.
/// </summary>
internal sealed partial class IlgpuBackend : IBackend
{
    private readonly Context? _ownedContext;
    private readonly Accelerator? _ownedAccelerator;
    private readonly AcceleratorStream? _ownedStream;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, float>? _fill;
    private bool _disposed;

    private IlgpuBackend(Context? ctx, Accelerator acc, AcceleratorStream stream, bool ownsAccelerator, bool ownsStream, IlgpuTarget target)
    {
        _ownedContext = ctx;
        _ownedAccelerator = ownsAccelerator ? acc : null;
        _ownedStream = ownsStream ? stream : null;
        Accelerator = acc;
        Stream = stream;
        Target = target;
        MaxBufferElements = target == IlgpuTarget.Cpu ? Array.MaxLength : Math.Max(1, acc.MemorySize / sizeof(float));
    }

    /// <summary>The accelerator every kernel runs on (the caller's for an embedded device).</summary>
    internal Accelerator Accelerator { get; }

    /// <summary>The stream every copy, fill and launch is enqueued on (the caller's, or the accelerator's default stream, for an
    /// embedded device; else one the backend created).</summary>
    internal AcceleratorStream Stream { get; }

    /// <summary>The accelerator kind.</summary>
    internal IlgpuTarget Target { get; }

    public BackendKind Kind => BackendKind.Ilgpu;

    public string DeviceName => Target switch
    {
        IlgpuTarget.Cpu => $"ILGPU CPU simulator (warp {Accelerator.WarpSize}, {Accelerator.MaxNumThreadsPerGroup} threads per group)",
        _ => $"ILGPU {Target}: {Accelerator.Name}",
    };

    public long MaxBufferElements { get; }

    /// <summary>The view of a buffer of this backend (an empty view for null: an absent optional input).</summary>
    /// <exception cref="ArgumentException">The buffer belongs to another backend.</exception>
    internal static ArrayView<float> View(IDeviceBuffer? buffer) => buffer switch
    {
        null => default,
        IlgpuBuffer b => b.View,
        _ => throw new ArgumentException($"buffer of another backend ({buffer.GetType().Name}) passed to the ILGPU backend"),
    };

    /// <summary>Opens ILGPU's <paramref name="target"/> device number <paramref name="index"/> with its own context and stream.</summary>
    /// <exception cref="BackendUnavailableException">No such device, or ILGPU refuses it (the message says why).</exception>
    public static IlgpuBackend Create(IlgpuTarget target, int index)
    {
        string spec = target == IlgpuTarget.Cpu ? "ilgpu:cpu" : $"ilgpu:{target.ToString().ToLowerInvariant()}:{index}";
        if (target == IlgpuTarget.Cpu && index != 0)
            throw new BackendUnavailableException($"ilgpu:cpu:{index}: there is only one ILGPU CPU simulator (ilgpu:cpu)");
        var ctx = IlgpuRuntime.CreateContext(target);
        try
        {
            Accelerator acc;
            switch (target)
            {
                case IlgpuTarget.Cpu:
                    acc = ctx.CreateCPUAccelerator(0);
                    break;
                case IlgpuTarget.Cuda:
                {
                    var devs = ctx.GetCudaDevices();
                    if (index >= devs.Count)
                        throw new BackendUnavailableException(devs.Count == 0 ? IlgpuRuntime.NoDeviceReason(target) : $"{spec}: there are only {devs.Count} ILGPU CUDA devices");
                    acc = devs[index].CreateAccelerator(ctx);
                    break;
                }
                default:
                {
                    var devs = ctx.GetCLDevices();
                    if (index >= devs.Count)
                        throw new BackendUnavailableException(devs.Count == 0 ? IlgpuRuntime.NoDeviceReason(target) : $"{spec}: there are only {devs.Count} OpenCL devices");
                    try { acc = devs[index].CreateAccelerator(ctx); }
                    catch (CapabilityNotSupportedException e)
                    {
                        throw new BackendUnavailableException($"{spec}: ILGPU refuses {devs[index].Name}: {e.Message.TrimEnd('.')} "
                            + "(ILGPU's OpenCL backend needs the generic address space; use the 'opencl' backend for this device)");
                    }
                    break;
                }
            }
            try { return new IlgpuBackend(ctx, acc, acc.CreateStream(), ownsAccelerator: true, ownsStream: true, target); }
            catch { acc.Dispose(); throw; }
        }
        catch
        {
            ctx.Dispose();
            throw;
        }
    }

    /// <summary>A backend over a caller's accelerator and stream (default: the accelerator's default stream); disposing it
    /// leaves both alone.</summary>
    public static IlgpuBackend Embed(Accelerator accelerator, AcceleratorStream? stream)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        if (accelerator.IsDisposed) throw new ObjectDisposedException(nameof(accelerator), "accelerator: the accelerator was disposed");
        if (stream is not null && !ReferenceEquals(stream.Accelerator, accelerator))
            throw new ArgumentException("stream: the stream belongs to another accelerator than the one given", nameof(stream));
        var target = accelerator.AcceleratorType switch
        {
            AcceleratorType.Cuda => IlgpuTarget.Cuda,
            AcceleratorType.OpenCL => IlgpuTarget.OpenCL,
            _ => IlgpuTarget.Cpu,
        };
        return new IlgpuBackend(null, accelerator, stream ?? accelerator.DefaultStream, ownsAccelerator: false, ownsStream: false, target);
    }

    public IDeviceBuffer Allocate(long elements)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        try { return new IlgpuBuffer(Accelerator.Allocate1D<float>(Math.Max(elements, 0)), this); }
        catch (AcceleratorException e) when (e.Message.Contains("memory", StringComparison.OrdinalIgnoreCase))
        {
            throw new OutOfMemoryException(e.Message, e);
        }
    }

    /// <summary>Wraps a caller's view as a buffer of this backend (no copy; the caller keeps ownership).</summary>
    internal IlgpuBuffer WrapExternal(ArrayView<float> view) => new(view, this);

    private ArrayView<float> Own(IDeviceBuffer b, string what)
    {
        if (b is not IlgpuBuffer ib || !ReferenceEquals(ib.Owner, this))
            throw new ArgumentException($"{what}: buffer of another backend passed to {DeviceName}");
        return ib.View;
    }

    public void Write(IDeviceBuffer dst, long offset, ReadOnlySpan<float> src)
    {
        if (src.Length == 0) return;
        var view = Own(dst, "dst").SubView(offset, src.Length);
        Stream.Synchronize(); // earlier kernels may still read the destination
        ((ArrayView1D<float, Stride1D.Dense>)view).CopyFromCPU(Stream, src);
        Stream.Synchronize();
    }

    public void Read(IDeviceBuffer src, long offset, Span<float> dst)
    {
        if (dst.Length == 0) return;
        var view = Own(src, "src").SubView(offset, dst.Length);
        ((ArrayView1D<float, Stride1D.Dense>)view).CopyToCPU(Stream, dst);
        Stream.Synchronize();
    }

    public void Fill(IDeviceBuffer dst, float value)
    {
        var view = Own(dst, "dst");
        if (view.Length == 0) return;
        _fill ??= Accelerator.LoadKernel<ArrayView<float>, float>(UtilKernels.Fill);
        int group = Math.Min(256, Accelerator.MaxNumThreadsPerGroup);
        long groups = Math.Min((view.Length + group - 1) / group, Target == IlgpuTarget.Cpu ? 64 : 65535);
        _fill(Stream, new KernelConfig((int)groups, group), view, value);
    }

    public void Synchronize() => Stream.Synchronize();

    public bool SupportsOp(OpKind op) => OpSupport.Implements(this, op);

    /// <summary>The kernel configurations of the utility kernels (fill) for the PTX gate.</summary>
    internal static IEnumerable<IlgpuKernelConfig> ShippedUtilConfigs()
    {
        yield return new IlgpuKernelConfig("util", "fill", typeof(UtilKernels).GetMethod(nameof(UtilKernels.Fill))!, IlgpuKernelKind.ExplicitlyGrouped);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (!Accelerator.IsDisposed)
        {
            try { Stream.Synchronize(); } catch (Exception) { /* a failed kernel must not make dispose throw */ }
            // The op families' scratch lives on the accelerator: free it here also when the accelerator is the caller's.
            _sdpa?.Dispose();
            _glimpse?.Dispose();
            _spatial?.Dispose();
        }
        _ownedStream?.Dispose();
        _ownedAccelerator?.Dispose();
        _ownedContext?.Dispose();
    }
}
