using System.Text;
using GpuAttention.Backends.Cuda.Native;
using GpuAttention.Backends.Kernels;
using GpuAttention.Backends.Kernels.Tuning;

namespace GpuAttention.Backends.Cuda;

/// <summary>One CUDA device found by <see cref="CudaBackend.Enumerate"/>.</summary>
internal sealed record CudaDeviceInfo(int Ordinal, string Name, int ComputeCapability, int Multiprocessors, long TotalMemoryBytes, string Description);

/// <summary>A device buffer of the CUDA backend: one cuMemAlloc allocation of <see cref="Length"/> float32 elements.</summary>
internal sealed class CudaBuffer(CuDeviceMemory memory, long length, CudaBackend owner) : IDeviceBuffer
{
    public CuDeviceMemory Memory { get; } = memory;
    public long Length { get; } = length;
    public CudaBackend Owner { get; } = owner;
    public void Dispose() => Memory.Dispose();
}

/// <summary>
/// The CUDA backend: the device's primary context and one stream. Kernels are the same <c>kernels/*.cl</c> as OpenCL's,
/// compiled by NVRTC after the CUDA branch of the prelude for the device's compute capability (<see cref="PtxCache"/>)
/// and launched with <c>cuLaunchKernel</c>; the host side of every op family is <see cref="KernelBackend"/>'s.
/// Launches and fills are asynchronous on the stream; <see cref="Read"/>, <see cref="Write"/> and
/// <see cref="Synchronize"/> wait for it. Not thread-safe by itself: <see cref="Device"/> serialises calls with its
/// queue lock; every call makes the context current on the calling thread.
/// </summary>
internal sealed unsafe class CudaBackend : KernelBackend, IDeviceTimer
{
    private readonly CuContext _context;
    private readonly CuStream _stream;
    private readonly CuEvent _start, _end;
    private readonly int _arch;
    private readonly int _maxGridY, _maxGridZ;
    private readonly Dictionary<(string File, string Defines), CuModule> _modules = new();
    private readonly Dictionary<(string File, string Defines, string Kernel), nint> _functions = new();

    private CudaBackend(CudaDeviceInfo info)
    {
        Info = info;
        int dev = info.Ordinal;
        nint ctx;
        Cu.Check(Cu.cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain");
        _context = new CuContext(ctx, dev);
        try
        {
            Cu.Check(Cu.cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
            nint s, e0, e1;
            Cu.Check(Cu.cuStreamCreate(&s, Cu.CU_STREAM_NON_BLOCKING), "cuStreamCreate");
            _stream = new CuStream(s, _context);
            Cu.Check(Cu.cuEventCreate(&e0, Cu.CU_EVENT_DEFAULT), "cuEventCreate");
            _start = new CuEvent(e0, _context);
            Cu.Check(Cu.cuEventCreate(&e1, Cu.CU_EVENT_DEFAULT), "cuEventCreate");
            _end = new CuEvent(e1, _context);
            MaxWorkGroupSize = Cu.Attribute(dev, Cu.CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK);
            LocalMemBytes = Cu.Attribute(dev, Cu.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK);
            _maxGridY = Cu.Attribute(dev, Cu.CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y);
            _maxGridZ = Cu.Attribute(dev, Cu.CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z);
            MaxBufferElements = info.TotalMemoryBytes / sizeof(float);
            _arch = PtxCache.TargetArch(info.ComputeCapability);
        }
        catch
        {
            _end?.Dispose(); _start?.Dispose(); _stream?.Dispose();
            _context.Dispose();
            throw;
        }
    }

    /// <summary>What Enumerate reported for this device.</summary>
    public CudaDeviceInfo Info { get; }

    public override TuningDeviceIdentity TuningIdentity =>
        new("cuda", $"CUDA sm_{Info.ComputeCapability}", Info.Name, Cu.DriverVersion());

    /// <summary>The virtual architecture the kernels are compiled for (compute_XY as XY).</summary>
    public int Arch => _arch;

    /// <summary>Where this backend's PTX comes from.</summary>
    internal PtxCache Ptx { get; } = PtxCache.Shared;

    /// <summary>Number of modules loaded so far (for tests and diagnostics).</summary>
    public int ModuleCount => _modules.Count;

    public override BackendKind Kind => BackendKind.Cuda;
    public override string DeviceName => Info.Name;
    public override long MaxBufferElements { get; }
    public override int MaxWorkGroupSize { get; }
    public override long LocalMemBytes { get; }
    public override bool IsGpu => true;

    // ---------------- discovery ----------------

    /// <summary>Every CUDA device, in driver order.</summary>
    /// <exception cref="BackendUnavailableException">No driver library, or cuInit failed; the message says why.</exception>
    public static List<CudaDeviceInfo> Enumerate()
    {
        if (!Cu.TryLoad(out var reason)) throw new BackendUnavailableException(reason!);
        int n;
        Cu.Check(Cu.cuDeviceGetCount(&n), "cuDeviceGetCount");
        var list = new List<CudaDeviceInfo>(n);
        string driver = Cu.DriverVersion();
        string nvrtc = Nvrtc.TryLoad(out _) ? $", NVRTC {Nvrtc.Version().Major}.{Nvrtc.Version().Minor}" : "";
        for (int i = 0; i < n; i++)
        {
            int dev;
            Cu.Check(Cu.cuDeviceGet(&dev, i), "cuDeviceGet");
            string name = Cu.DeviceName(dev);
            int cc = Cu.Attribute(dev, Cu.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR) * 10 + Cu.Attribute(dev, Cu.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
            int sms = Cu.Attribute(dev, Cu.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
            nuint mem;
            Cu.Check(Cu.cuDeviceTotalMem_v2(&mem, dev), "cuDeviceTotalMem");
            list.Add(new CudaDeviceInfo(dev, name, cc, sms, (long)mem,
                $"{name}, sm_{cc}, {sms} SM, {mem / (1024.0 * 1024 * 1024):F1} GiB, driver CUDA {driver}{nvrtc}"));
        }
        return list;
    }

    /// <summary>Why kernels cannot be compiled (NVRTC missing), or null when NVRTC is present.</summary>
    public static string? NvrtcProblem() => Nvrtc.TryLoad(out var reason) ? null : reason;

    /// <summary>Opens the <paramref name="index"/>-th device of <see cref="Enumerate"/>.</summary>
    /// <exception cref="BackendUnavailableException">The driver or NVRTC is missing, or the index is out of range.</exception>
    public static IBackend Create(int index)
    {
        var all = Enumerate();
        if (all.Count == 0) throw new BackendUnavailableException("cuda: the driver reports no CUDA device");
        if (index < 0 || index >= all.Count)
            throw new BackendUnavailableException($"cuda:{index}: no such device; there {(all.Count == 1 ? "is 1 CUDA device (cuda:0)" : $"are {all.Count} CUDA devices (cuda:0 .. cuda:{all.Count - 1})")}");
        if (NvrtcProblem() is string nv) throw new BackendUnavailableException($"cuda:{index}: {all[index].Name} found, but kernels cannot be compiled: {nv}");
        return new CudaBackend(all[index]);
    }

    // ---------------- memory and stream ----------------

    private void MakeCurrent() => Cu.Check(Cu.cuCtxSetCurrent(_context.Raw), "cuCtxSetCurrent");

    internal CudaBuffer B(IDeviceBuffer b) =>
        b is CudaBuffer c && ReferenceEquals(c.Owner, this) ? c : throw new ArgumentException("buffer belongs to another backend or device");

    public override IDeviceBuffer Allocate(long elements)
    {
        if (elements < 0 || elements > MaxBufferElements) throw new ArgumentOutOfRangeException(nameof(elements));
        MakeCurrent();
        ulong p;
        long bytes = Math.Max(1, elements) * sizeof(float);
        int err = Cu.cuMemAlloc_v2(&p, (nuint)bytes);
        if (err != Cu.CUDA_SUCCESS) throw new CudaException($"cuMemAlloc({bytes} bytes)", err);
        return new CudaBuffer(new CuDeviceMemory(p, _context), elements, this);
    }

    /// <summary>Copies and waits: <paramref name="src"/> is pageable memory that is only pinned for this call.</summary>
    public override void Write(IDeviceBuffer dst, long offset, ReadOnlySpan<float> src)
    {
        var d = B(dst);
        if (offset < 0 || offset + src.Length > d.Length) throw new ArgumentOutOfRangeException(nameof(offset));
        if (src.Length == 0) return;
        MakeCurrent();
        fixed (float* p = src)
        {
            Cu.Check(Cu.cuMemcpyHtoDAsync_v2(d.Memory.Pointer + (ulong)offset * sizeof(float), p, (nuint)src.Length * sizeof(float), _stream.Raw), "cuMemcpyHtoDAsync");
            Cu.Check(Cu.cuStreamSynchronize(_stream.Raw), "cuStreamSynchronize");
        }
        GC.KeepAlive(d);
    }

    public override void Read(IDeviceBuffer src, long offset, Span<float> dst)
    {
        var s = B(src);
        if (offset < 0 || offset + dst.Length > s.Length) throw new ArgumentOutOfRangeException(nameof(offset));
        if (dst.Length == 0) return;
        MakeCurrent();
        fixed (float* p = dst)
        {
            Cu.Check(Cu.cuMemcpyDtoHAsync_v2(p, s.Memory.Pointer + (ulong)offset * sizeof(float), (nuint)dst.Length * sizeof(float), _stream.Raw), "cuMemcpyDtoHAsync");
            Cu.Check(Cu.cuStreamSynchronize(_stream.Raw), "cuStreamSynchronize");
        }
        GC.KeepAlive(s);
    }

    public override void Fill(IDeviceBuffer dst, float value)
    {
        var d = B(dst);
        if (d.Length == 0) return;
        MakeCurrent();
        Cu.Check(Cu.cuMemsetD32Async(d.Memory.Pointer, BitConverter.SingleToUInt32Bits(value), (nuint)d.Length, _stream.Raw), "cuMemsetD32Async");
        GC.KeepAlive(d);
    }

    public override void Synchronize()
    {
        MakeCurrent();
        Cu.Check(Cu.cuStreamSynchronize(_stream.Raw), "cuStreamSynchronize");
    }

    public double TimeMs(Action enqueue)
    {
        MakeCurrent();
        Cu.Check(Cu.cuEventRecord(_start.Raw, _stream.Raw), "cuEventRecord");
        enqueue();
        MakeCurrent();
        Cu.Check(Cu.cuEventRecord(_end.Raw, _stream.Raw), "cuEventRecord");
        Cu.Check(Cu.cuEventSynchronize(_end.Raw), "cuEventSynchronize");
        float ms;
        Cu.Check(Cu.cuEventElapsedTime(&ms, _start.Raw, _end.Raw), "cuEventElapsedTime");
        return ms;
    }

    // ---------------- kernels ----------------

    /// <summary>The CUfunction <paramref name="kernel"/> of kernels/<paramref name="file"/> built with <paramref name="defines"/> (modules cached per file and defines).</summary>
    internal nint Function(string file, string defines, string kernel)
    {
        if (_functions.TryGetValue((file, defines, kernel), out var f)) return f;
        if (!_modules.TryGetValue((file, defines), out var module))
        {
            module = LoadModule(Ptx.Get(file, defines, _arch), $"{file} ({defines})");
            _modules[(file, defines)] = module;
        }
        var name = Encoding.ASCII.GetBytes(kernel + "\0");
        fixed (byte* n = name) Cu.Check(Cu.cuModuleGetFunction(&f, module.Raw, n), $"cuModuleGetFunction({kernel})");
        _functions[(file, defines, kernel)] = f;
        return f;
    }

    private CuModule LoadModule(string ptx, string what)
    {
        var image = Encoding.UTF8.GetBytes(ptx + "\0");
        var log = new byte[8192];
        nint module;
        int err;
        fixed (byte* img = image) fixed (byte* lg = log)
        {
            int* opts = stackalloc int[2] { Cu.CU_JIT_ERROR_LOG_BUFFER, Cu.CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES };
            void** vals = stackalloc void*[2] { lg, (void*)(nint)log.Length };
            err = Cu.cuModuleLoadDataEx(&module, img, 2, opts, vals);
        }
        if (err != Cu.CUDA_SUCCESS)
        {
            int end = Array.IndexOf(log, (byte)0);
            string jit = Encoding.UTF8.GetString(log, 0, end < 0 ? log.Length : end).Trim();
            string hint = err == Cu.CUDA_ERROR_UNSUPPORTED_PTX_VERSION
                ? $"the PTX from NVRTC {Nvrtc.Version().Major}.{Nvrtc.Version().Minor} is newer than this driver (CUDA {Cu.DriverVersion()}) accepts; use an NVRTC no newer than the driver (GPUATTENTION_NVRTC)"
                : jit;
            throw new CudaException($"cuModuleLoadDataEx({what})", err, hint.Length > 0 ? hint : null);
        }
        return new CuModule(module, _context);
    }

    /// <summary>
    /// Launches with grid = global / local per dimension (OpenCL NDRange → CUDA grid of blocks) and block = local;
    /// buffers pass as CUdeviceptr (an absent optional buffer as a null pointer), scalars by value. Does not wait.
    /// </summary>
    public override void Launch(string file, string defines, string kernel, ReadOnlySpan<long> global, ReadOnlySpan<int> local, ReadOnlySpan<KernelArg> args)
    {
        if (global.Length is < 1 or > 3 || local.Length != global.Length)
            throw new ArgumentException($"{kernel}: expected 1 to 3 dimensions with as many local sizes, got {global.Length} and {local.Length}");
        Span<uint> grid = [1, 1, 1];
        Span<uint> block = [1, 1, 1];
        long threads = 1;
        for (int i = 0; i < global.Length; i++)
        {
            if (local[i] <= 0) throw new ArgumentException($"{kernel}: local size {local[i]} in dimension {i}");
            if (global[i] == 0) return;
            if (global[i] % local[i] != 0) throw new ArgumentException($"{kernel}: global size {global[i]} is not a multiple of the local size {local[i]}");
            long g = global[i] / local[i];
            long max = i == 0 ? int.MaxValue : i == 1 ? _maxGridY : _maxGridZ;
            if (g > max) throw new NotSupportedException($"cuda: {kernel}: {g} blocks in grid dimension {"xyz"[i]} exceed the device's {max}");
            grid[i] = (uint)g;
            block[i] = (uint)local[i];
            threads *= local[i];
        }
        if (threads > MaxWorkGroupSize) throw new ArgumentException($"{kernel}: {threads} threads per block exceed the device's {MaxWorkGroupSize}");

        MakeCurrent();
        var f = Function(file, defines, kernel);
        int n = args.Length;
        ulong* slots = stackalloc ulong[Math.Max(1, n)];
        void** ptrs = stackalloc void*[Math.Max(1, n)];
        for (int i = 0; i < n; i++)
        {
            var a = args[i];
            slots[i] = 0;
            switch (a.Kind)
            {
                case KernelArgKind.Buffer: slots[i] = a.Buffer is null ? 0 : B(a.Buffer).Memory.Pointer; break;
                case KernelArgKind.Int32: *(int*)&slots[i] = (int)a.Int; break;
                case KernelArgKind.Int64: *(long*)&slots[i] = a.Int; break;
                case KernelArgKind.Float32: *(float*)&slots[i] = a.Float; break;
            }
            ptrs[i] = &slots[i];
        }
        int err = Cu.cuLaunchKernel(f, grid[0], grid[1], grid[2], block[0], block[1], block[2], 0, _stream.Raw, ptrs, null);
        if (err != Cu.CUDA_SUCCESS) throw new CudaException($"cuLaunchKernel({kernel}, grid {grid[0]}x{grid[1]}x{grid[2]}, block {block[0]}x{block[1]}x{block[2]})", err);
        for (int i = 0; i < n; i++) GC.KeepAlive(args[i].Buffer);
    }

    public override void Dispose()
    {
        try
        {
            if (!_stream.IsClosed && Cu.cuCtxSetCurrent(_context.Raw) == Cu.CUDA_SUCCESS) Cu.cuStreamSynchronize(_stream.Raw);
        }
        catch (ObjectDisposedException) { }
        DisposeScratch();
        foreach (var m in _modules.Values) m.Dispose();
        _modules.Clear();
        _functions.Clear();
        _end.Dispose();
        _start.Dispose();
        _stream.Dispose();
        _context.Dispose();   // the primary context is released once the last buffer of this device is freed too
    }
}
