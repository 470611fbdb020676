namespace GpuAttention.Backends.Kernels;

/// <summary>Kind of a kernel argument.</summary>
internal enum KernelArgKind : byte { Buffer, Int32, Int64, Float32 }

/// <summary>
/// One argument of a kernel launch: a device buffer (null for an absent optional buffer), or a scalar
/// whose C type in the kernel is <c>int</c>, <c>int64</c> or <c>float</c>.
/// </summary>
internal readonly struct KernelArg
{
    public readonly KernelArgKind Kind;
    public readonly IDeviceBuffer? Buffer;
    public readonly long Int;
    public readonly float Float;

    private KernelArg(KernelArgKind kind, IDeviceBuffer? buffer, long i, float f) { Kind = kind; Buffer = buffer; Int = i; Float = f; }

    public static KernelArg Of(IDeviceBuffer? buffer) => new(KernelArgKind.Buffer, buffer, 0, 0);
    public static implicit operator KernelArg(int x) => new(KernelArgKind.Int32, null, x, 0);
    public static implicit operator KernelArg(long x) => new(KernelArgKind.Int64, null, x, 0);
    public static implicit operator KernelArg(float x) => new(KernelArgKind.Float32, null, 0, x);
    public static implicit operator KernelArg(bool x) => new(KernelArgKind.Int32, null, x ? 1 : 0, 0);
}

/// <summary>
/// The common base of the backends that run the kernels of <c>kernels/*.cl</c> (OpenCL, and CUDA through NVRTC):
/// they provide memory and <see cref="Launch"/>; the host side of each op family (tile choice, -D defines,
/// arguments, grid) is written once, in <c>KernelBackend.&lt;Family&gt;.cs</c>, for both — CLBlast style.
/// Launches are asynchronous (in-order queue / stream).
/// </summary>
internal abstract partial class KernelBackend : IBackend
{
    public abstract BackendKind Kind { get; }
    public abstract string DeviceName { get; }
    public abstract long MaxBufferElements { get; }
    public abstract IDeviceBuffer Allocate(long elements);
    public abstract void Write(IDeviceBuffer dst, long offset, ReadOnlySpan<float> src);
    public abstract void Read(IDeviceBuffer src, long offset, Span<float> dst);
    public abstract void Fill(IDeviceBuffer dst, float value);
    public abstract void Synchronize();
    public abstract void Dispose();

    /// <summary>Largest work-group (thread block) size.</summary>
    public abstract int MaxWorkGroupSize { get; }
    /// <summary>Local (shared) memory per work-group in bytes.</summary>
    public abstract long LocalMemBytes { get; }
    /// <summary>True for GPUs (tile choices differ from CPU OpenCL devices such as PoCL).</summary>
    public abstract bool IsGpu { get; }

    /// <summary>
    /// Enqueues kernel <paramref name="kernel"/> of <c>kernels/<paramref name="file"/></c> compiled with <paramref name="defines"/>
    /// (cached per device, file and defines). <paramref name="global"/> counts work-items per dimension (OpenCL NDRange;
    /// each a multiple of <paramref name="local"/>), 1 to 3 dimensions.
    /// </summary>
    public abstract void Launch(string file, string defines, string kernel, ReadOnlySpan<long> global, ReadOnlySpan<int> local, ReadOnlySpan<KernelArg> args);

    public bool SupportsOp(OpKind op) => OpSupport.Implements(this, op);

    /// <summary>Rounds <paramref name="n"/> up to a multiple of <paramref name="m"/>.</summary>
    protected static long RoundUp(long n, long m) => (n + m - 1) / m * m;
}
