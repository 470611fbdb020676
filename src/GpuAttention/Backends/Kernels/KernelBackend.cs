using GpuAttention.Backends.Kernels.Tuning;

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

/// <summary>One compiled configuration of a kernel file: the -D defines the host code passes and the kernels it launches from it.</summary>
internal readonly record struct KernelConfig(string File, string Defines, string[] Kernels)
{
    public override string ToString() => $"{File} {Defines}";
}

/// <summary>The device properties that tile choices (and so the -D defines) depend on.</summary>
internal readonly record struct KernelDeviceLimits(int MaxWorkGroupSize, long LocalMemBytes, bool IsGpu)
{
    /// <summary>A typical CUDA GPU: 1024 threads per block, 48 KiB of static shared memory per block.</summary>
    public static KernelDeviceLimits CudaGpu => new(1024, 48 * 1024, true);
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

    /// <summary>This device's <see cref="KernelDeviceLimits"/>.</summary>
    public KernelDeviceLimits Limits => new(MaxWorkGroupSize, LocalMemBytes, IsGpu);

    public bool SupportsOp(OpKind op) => OpSupport.Implements(this, op);

    /// <summary>
    /// Extension point for the compile checks: every (file, defines) configuration the op families' host code would
    /// launch on a device with <paramref name="limits"/>, over a representative range of shapes. The test suite
    /// compiles each through NVRTC (CUDA prelude, compute_80 and compute_90) and through OpenCL, so a kernel that
    /// would not build fails the suite before anyone reaches a GPU. An op family adds one line to
    /// <see cref="ShippedConfigFamilies"/>: a static method of its <c>KernelBackend.&lt;Family&gt;.cs</c> that
    /// yields its configurations through the same function its launch code uses to choose the defines.
    /// </summary>
    internal static IEnumerable<KernelConfig> ShippedKernelConfigs(KernelDeviceLimits limits) =>
        ShippedConfigFamilies.SelectMany(f => f(limits)).DistinctBy(c => (c.File, c.Defines));

    /// <summary>One entry per op family (see <see cref="ShippedKernelConfigs"/>).</summary>
    private static readonly Func<KernelDeviceLimits, IEnumerable<KernelConfig>>[] ShippedConfigFamilies =
    [
        SdpaShippedConfigs,
        SdpaBackwardShippedConfigs,
        GemmShippedConfigs,
        SpatialShippedConfigs,
        GlimpseShippedConfigs,
    ];

    /// <summary>
    /// Device scratch buffers by role (e.g. "sdpa.partial_acc"), kept across calls and grow-only. A buffer is never released
    /// while queued kernels may still use it: growing waits for the queue first, and the rest are freed by the backend's
    /// Dispose after its queue has finished. (Releasing right after enqueueing is legal in OpenCL, but oclgrind flagged it,
    /// and on CUDA a free synchronises the device.) The in-order queue makes reuse by the next call safe.
    /// </summary>
    private readonly Dictionary<string, IDeviceBuffer> _scratch = new();

    /// <summary>A scratch buffer of at least <paramref name="elements"/> float32 for <paramref name="role"/> (contents undefined).</summary>
    protected IDeviceBuffer Scratch(string role, long elements)
    {
        if (_scratch.TryGetValue(role, out var b))
        {
            if (b.Length >= elements) return b;
            Synchronize();
            b.Dispose();
            _scratch.Remove(role);
        }
        b = Allocate(Math.Max(elements, 1));
        _scratch[role] = b;
        return b;
    }

    /// <summary>Releases every scratch buffer; the backends' Dispose calls it after their queue has finished.</summary>
    protected void DisposeScratch()
    {
        foreach (var b in _scratch.Values) b.Dispose();
        _scratch.Clear();
    }

    // ---------------- tuning (see Tuning/TuningSpace.cs) ----------------

    /// <summary>Who tuning results of this device belong to (backend, platform, device name, driver version).</summary>
    public abstract TuningDeviceIdentity TuningIdentity { get; }

    private bool _tuningLoaded;
    private TuningCacheFile? _tuningFile;
    private readonly Dictionary<(string Family, string Key), TuningParams> _tuned = new();
    private readonly Dictionary<(string Family, string Key), TuningParams> _tuningOverrides = new();

    /// <summary>The warnings this backend gave about its tuning cache (also sent to <see cref="TuningCache.Warn"/>).</summary>
    internal List<string> TuningWarnings { get; } = [];

    /// <summary>
    /// Forces <paramref name="p"/> for <paramref name="space"/> and <paramref name="key"/> (null: back to cache / default). The tuner
    /// runs each candidate through the ordinary op entry points this way; tests use it too. The values must be valid on this device.
    /// </summary>
    internal void SetTuningOverride(TuningSpace space, TuningParams? p, string key = TuningSpace.AnyKey)
    {
        if (p is not null && space.Validate(p, Limits, key) is string why) throw new ArgumentException($"{space.Family}: {p}: {why}");
        if (p is null) _tuningOverrides.Remove((space.Family, key));
        else _tuningOverrides[(space.Family, key)] = p;
        _tuned.Clear();
    }

    /// <summary>
    /// The knob values <paramref name="space"/>'s define-choosing code uses on this device for shapes of <paramref name="key"/>:
    /// a tuner override, else the cached winner when the cache holds a valid, current one, else the built-in default. The cache
    /// file is read at the first call (lazily) and every result is memoised.
    /// </summary>
    internal TuningParams Tuned(TuningSpace space, string key = TuningSpace.AnyKey)
    {
        if (_tuningOverrides.TryGetValue((space.Family, key), out var o)) return o;
        if (_tuned.TryGetValue((space.Family, key), out var p)) return p;
        if (!_tuningLoaded)
        {
            _tuningLoaded = true;
            _tuningFile = TuningCache.Load(TuningIdentity, TuningWarning);
        }
        p = _tuningFile is null ? null
            : TuningCache.Lookup(_tuningFile, TuningCache.PathFor(TuningIdentity), space, key, Limits, TuningWarning);
        p ??= space.Default(Limits, key);
        _tuned[(space.Family, key)] = p;
        return p;
    }

    private void TuningWarning(string message)
    {
        if (TuningWarnings.Contains(message)) return;
        TuningWarnings.Add(message);
        TuningCache.Warn(message);
    }

    /// <summary>Rounds <paramref name="n"/> up to a multiple of <paramref name="m"/>.</summary>
    protected static long RoundUp(long n, long m) => (n + m - 1) / m * m;
}
