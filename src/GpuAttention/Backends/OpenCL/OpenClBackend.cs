using GpuAttention.Backends.Kernels;
using GpuAttention.Backends.Kernels.Tuning;
using GpuAttention.Backends.OpenCL.Native;
using Silk.NET.OpenCL;

namespace GpuAttention.Backends.OpenCL;

/// <summary>One OpenCL device found by <see cref="OpenClBackend.Enumerate"/>.</summary>
internal sealed record OpenClDeviceInfo(string Name, string Platform, bool IsGpu, string Description);

/// <summary>A device buffer of the OpenCL backend: one cl_mem of <see cref="Length"/> float32 elements.</summary>
internal sealed class OpenClBuffer(ClMem mem, long length, OpenClBackend owner) : IDeviceBuffer
{
    public ClMem Mem { get; } = mem;
    public long Length { get; } = length;
    public OpenClBackend Owner { get; } = owner;
    public void Dispose() => Mem.Dispose();
}

/// <summary>
/// The OpenCL backend: one context and one in-order command queue on one device. Kernels are enqueued
/// without waiting; <see cref="Read"/> and <see cref="Write"/> block; <see cref="Synchronize"/> is clFinish.
/// Not thread-safe by itself: <see cref="Device"/> serialises calls with its queue lock.
/// </summary>
internal sealed unsafe partial class OpenClBackend : KernelBackend
{
    private readonly ClContext _context;
    private readonly ClQueue _queue;
    private readonly nint _device;
    private ClMem? _dummy;

    private OpenClBackend(nint device, OpenClDeviceInfo info)
    {
        _device = device;
        Info = info;
        int err;
        nint dev = device;
        var ctx = Cl.Api.CreateContext(null, 1, &dev, null, null, &err);
        Cl.Check(err, "clCreateContext");
        _context = new ClContext(ctx);
        var q = Cl.Api.CreateCommandQueue(ctx, device, (CommandQueueProperties)0, &err);
        if (err != Cl.CL_SUCCESS) { _context.Dispose(); Cl.Check(err, "clCreateCommandQueue"); }
        _queue = new ClQueue(q);
        ulong maxAlloc = Cl.DeviceValue<ulong>(device, DeviceInfo.MaxMemAllocSize);
        MaxBufferElements = (long)Math.Min(maxAlloc / sizeof(float), long.MaxValue / sizeof(float));
        MaxWorkGroupSize = (int)Cl.DeviceValue<nuint>(device, DeviceInfo.MaxWorkGroupSize);
        LocalMemBytes = (long)Cl.DeviceValue<ulong>(device, DeviceInfo.LocalMemSize);
        Programs = new ProgramCache(_context, device);
        TuningIdentity = new TuningDeviceIdentity("opencl", info.Platform, info.Name, Cl.DeviceString(device, DeviceInfo.DriverVersion));
    }

    public override TuningDeviceIdentity TuningIdentity { get; }

    /// <summary>What Enumerate reported for this device.</summary>
    public OpenClDeviceInfo Info { get; }

    /// <summary>Compiled programs and kernels of this device.</summary>
    internal ProgramCache Programs { get; }

    public override int MaxWorkGroupSize { get; }
    public override long LocalMemBytes { get; }
    public override bool IsGpu => Info.IsGpu;

    public override BackendKind Kind => BackendKind.OpenCL;
    public override string DeviceName => Info.Name;
    public override long MaxBufferElements { get; }

    // ---------------- discovery ----------------

    private static List<(nint Device, OpenClDeviceInfo Info)> Discover()
    {
        if (!Cl.TryLoad(out var reason)) throw new BackendUnavailableException(reason!);
        uint np;
        int err = Cl.Api.GetPlatformIDs(0, null, &np);
        if (err == Cl.CL_PLATFORM_NOT_FOUND_KHR || err == Cl.CL_SUCCESS && np == 0)
            throw new BackendUnavailableException(OperatingSystem.IsLinux()
                ? "opencl: no OpenCL platform (the ICD loader found no ICD in /etc/OpenCL/vendors; install one such as pocl-opencl-icd or a GPU driver)"
                : "opencl: no OpenCL platform (no OpenCL driver is installed)");
        if (err != Cl.CL_SUCCESS) throw new BackendUnavailableException($"opencl: clGetPlatformIDs failed with {Cl.ErrorName(err)} ({err})");
        var platforms = new nint[np];
        fixed (nint* p = platforms) Cl.Check(Cl.Api.GetPlatformIDs(np, p, null), "clGetPlatformIDs");
        var list = new List<(nint, OpenClDeviceInfo)>();
        foreach (var platform in platforms)
        {
            uint nd;
            err = Cl.Api.GetDeviceIDs(platform, DeviceType.All, 0, null, &nd);
            if (err == Cl.CL_DEVICE_NOT_FOUND || nd == 0) continue;
            Cl.Check(err, "clGetDeviceIDs");
            var devices = new nint[nd];
            fixed (nint* d = devices) Cl.Check(Cl.Api.GetDeviceIDs(platform, DeviceType.All, nd, d, null), "clGetDeviceIDs");
            string pname = Cl.PlatformString(platform, PlatformInfo.Name);
            foreach (var d in devices)
            {
                string name = Cl.DeviceString(d, DeviceInfo.Name);
                ulong type = Cl.DeviceValue<ulong>(d, DeviceInfo.Type);
                uint cu = Cl.DeviceValue<uint>(d, DeviceInfo.MaxComputeUnits);
                var ver = Cl.DeviceString(d, DeviceInfo.Version).Split(' ', StringSplitOptions.RemoveEmptyEntries);
                string version = ver.Length >= 2 ? ver[0] + " " + ver[1] : string.Join(" ", ver);
                bool gpu = (type & (ulong)DeviceType.Gpu) != 0;
                list.Add((d, new OpenClDeviceInfo(name, pname, gpu, $"{pname} / {name}, {version}, {cu} CU")));
            }
        }
        return list;
    }

    /// <summary>All OpenCL devices over all platforms, in loader order (platform, then device).</summary>
    /// <exception cref="BackendUnavailableException">No OpenCL library or no platform; the message says why.</exception>
    public static List<OpenClDeviceInfo> Enumerate() => Discover().Select(d => d.Info).ToList();

    /// <summary>Opens the <paramref name="index"/>-th device of <see cref="Enumerate"/>.</summary>
    /// <exception cref="BackendUnavailableException">OpenCL is missing or the index is out of range.</exception>
    public static IBackend Create(int index)
    {
        var all = Discover();
        if (all.Count == 0) throw new BackendUnavailableException("opencl: the ICD loader found no devices");
        if (index < 0 || index >= all.Count)
            throw new BackendUnavailableException($"opencl:{index}: no such device; there {(all.Count == 1 ? "is 1 OpenCL device (opencl:0)" : $"are {all.Count} OpenCL devices (opencl:0 .. opencl:{all.Count - 1})")}");
        var (dev, info) = all[index];
        return new OpenClBackend(dev, info);
    }

    // ---------------- memory and queue ----------------

    internal OpenClBuffer B(IDeviceBuffer b) =>
        b is OpenClBuffer o && ReferenceEquals(o.Owner, this) ? o : throw new ArgumentException("buffer belongs to another backend or device");

    public override IDeviceBuffer Allocate(long elements)
    {
        if (elements < 0 || elements > MaxBufferElements) throw new ArgumentOutOfRangeException(nameof(elements));
        return new OpenClBuffer(CreateMem(Math.Max(1, elements) * sizeof(float)), elements, this);
    }

    private ClMem CreateMem(long bytes)
    {
        int err;
        var h = Cl.Api.CreateBuffer(_context.Raw, MemFlags.ReadWrite, (nuint)bytes, null, &err);
        Cl.Check(err, $"clCreateBuffer({bytes} bytes)");
        return new ClMem(h);
    }

    public override void Write(IDeviceBuffer dst, long offset, ReadOnlySpan<float> src)
    {
        var d = B(dst);
        if (offset < 0 || offset + src.Length > d.Length) throw new ArgumentOutOfRangeException(nameof(offset));
        if (src.Length == 0) return;
        fixed (float* p = src)
            Cl.Check(Cl.Api.EnqueueWriteBuffer(_queue.Raw, d.Mem.Raw, true, (nuint)(offset * sizeof(float)), (nuint)src.Length * sizeof(float), p, 0, null, null), "clEnqueueWriteBuffer");
        GC.KeepAlive(d);
    }

    public override void Read(IDeviceBuffer src, long offset, Span<float> dst)
    {
        var s = B(src);
        if (offset < 0 || offset + dst.Length > s.Length) throw new ArgumentOutOfRangeException(nameof(offset));
        if (dst.Length == 0) return;
        fixed (float* p = dst)
            Cl.Check(Cl.Api.EnqueueReadBuffer(_queue.Raw, s.Mem.Raw, true, (nuint)(offset * sizeof(float)), (nuint)dst.Length * sizeof(float), p, 0, null, null), "clEnqueueReadBuffer");
        GC.KeepAlive(s);
    }

    public override void Fill(IDeviceBuffer dst, float value)
    {
        var d = B(dst);
        if (d.Length == 0) return;
        if (Info.Platform == "Oclgrind")
        {
            // oclgrind's uninitialized-value checker does not see clEnqueueFillBuffer as a store: memory filled that way reads
            // as uninitialized to every later kernel (a false report; CI runs the kernels under oclgrind and requires an empty
            // log). On the simulator, fill with blocking writes instead.
            var chunk = new float[(int)Math.Min(d.Length, 1 << 16)];
            Array.Fill(chunk, value);
            for (long o = 0; o < d.Length; o += chunk.Length) Write(d, o, chunk.AsSpan(0, (int)Math.Min(chunk.Length, d.Length - o)));
            return;
        }
        Cl.Check(Cl.Api.EnqueueFillBuffer(_queue.Raw, d.Mem.Raw, &value, sizeof(float), 0, (nuint)d.Length * sizeof(float), 0, null, null), "clEnqueueFillBuffer");
        GC.KeepAlive(d);
    }

    public override void Synchronize() => Cl.Check(Cl.Api.Finish(_queue.Raw), "clFinish");

    /// <summary>A one-element buffer bound to optional buffer arguments that are absent (e.g. no mask).</summary>
    private ClMem Dummy => _dummy ??= CreateMem(sizeof(float));

    // ---------------- kernel launch helpers ----------------

    // Allocation free on success: the call's name for the exception is formatted only when the call failed.
    private static void Arg<T>(ClKernel k, uint i, T value) where T : unmanaged
    {
        int err = Cl.Api.SetKernelArg(k.Raw, i, (nuint)sizeof(T), &value);
        if (err != Cl.CL_SUCCESS) throw new OpenClException($"clSetKernelArg({i})", err);
    }

    /// <summary>
    /// Sets the arguments and enqueues the kernel. The cl_kernel objects are shared through the program cache and
    /// clSetKernelArg on a shared kernel is not thread-safe: <see cref="Device"/> serialises launches with its queue lock.
    /// </summary>
    public override void Launch(string file, string defines, string kernel, ReadOnlySpan<long> global, ReadOnlySpan<int> local, ReadOnlySpan<KernelArg> args)
    {
        var k = Programs.Kernel(file, defines, kernel);
        for (int i = 0; i < args.Length; i++)
        {
            var a = args[i];
            switch (a.Kind)
            {
                case KernelArgKind.Buffer: Arg(k, (uint)i, (a.Buffer is null ? Dummy : B(a.Buffer).Mem).Raw); break;
                case KernelArgKind.Int32: Arg(k, (uint)i, (int)a.Int); break;
                case KernelArgKind.Int64: Arg(k, (uint)i, a.Int); break;
                case KernelArgKind.Float32: Arg(k, (uint)i, a.Float); break;
            }
        }
        uint dims = (uint)global.Length;
        nuint* g = stackalloc nuint[3];
        nuint* l = stackalloc nuint[3];
        for (int i = 0; i < dims; i++)
        {
            if (global[i] % local[i] != 0) throw new ArgumentException($"{kernel}: global size {global[i]} is not a multiple of the local size {local[i]}");
            g[i] = (nuint)global[i]; l[i] = (nuint)local[i];
        }
        int err = Cl.Api.EnqueueNdrangeKernel(_queue.Raw, k.Raw, dims, null, g, l, 0, null, null);
        if (err != Cl.CL_SUCCESS) throw new OpenClException($"clEnqueueNDRangeKernel({kernel})", err);
        for (int i = 0; i < args.Length; i++) GC.KeepAlive(args[i].Buffer);
    }

    public override void Dispose()
    {
        try { if (!_queue.IsClosed) Cl.Api.Finish(_queue.Raw); } catch (ObjectDisposedException) { }
        Programs.Dispose();
        _dummy?.Dispose();
        DisposeScratch();
        _queue.Dispose();
        _context.Dispose();
    }
}
