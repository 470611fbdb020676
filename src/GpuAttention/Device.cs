using GpuAttention.Backends;
using GpuAttention.Backends.Cpu;
using GpuAttention.Backends.Cuda;
using GpuAttention.Backends.Cuda.Native;
using GpuAttention.Backends.Ilgpu;
using GpuAttention.Backends.OpenCL;

namespace GpuAttention;

/// <summary>What <see cref="Device.Probe"/> found for one backend or device.</summary>
/// <param name="Spec">The name to pass to <see cref="Device.Open"/>, e.g. "opencl:0"; for a missing backend its bare name.</param>
/// <param name="Backend">The backend kind.</param>
/// <param name="Name">Device name, or empty when missing.</param>
/// <param name="Available">Whether <see cref="Device.Open"/> would succeed.</param>
/// <param name="Reason">Why the backend is missing (library not found, no platform, ...), else null.</param>
public sealed record DeviceDescription(string Spec, BackendKind Backend, string Name, bool Available, string? Reason);

/// <summary>
/// One compute device (managed CPU, an OpenCL device or a CUDA device) with its own memory and queue.
/// All tensors used in one call must belong to the same device. Operations are enqueued
/// asynchronously where the backend allows; <see cref="Download(Tensor)"/> and
/// <see cref="Synchronize"/> wait. Methods are safe to call from several threads
/// (the device serialises its queue with a lock).
/// </summary>
public sealed partial class Device : IDisposable
{
    private readonly IBackend _backend;
    private CpuBackend? _cpuFallback;
    private bool _disposed;
    internal readonly object QueueLock = new();

    private Device(IBackend backend, string spec)
    {
        _backend = backend;
        Spec = spec;
    }

    internal IBackend Backend => _disposed ? throw new ObjectDisposedException(nameof(Device)) : _backend;

    /// <summary>The backend this device runs on.</summary>
    public BackendKind Kind => _backend.Kind;

    /// <summary>The spec it was opened with after resolving "auto", e.g. "cpu" or "opencl:0".</summary>
    public string Spec { get; }

    /// <summary>The device's name as its driver reports it.</summary>
    public string Name => _backend.DeviceName;

    /// <summary>
    /// True for a simulator: today only "ilgpu:cpu", ILGPU's CPU accelerator, which runs each GPU thread of a group as an OS
    /// thread. It computes what the GPU kernels compute (the same code, barriers and warp shuffles included), several orders of
    /// magnitude slower: use it to check kernels without a GPU, never to time them.
    /// </summary>
    public bool IsSimulator => _backend is IlgpuBackend { Target: IlgpuTarget.Cpu };

    /// <summary>
    /// Opens a device: "cpu" (managed, always present), "opencl" or "opencl:K" (K-th OpenCL device over all
    /// platforms), "cuda" or "cuda:K", the ILGPU backends "ilgpu:cuda[:K]", "ilgpu:opencl[:K]" (K over every OpenCL device),
    /// "ilgpu:cpu" (ILGPU's CPU simulator: verification only, slow) and "ilgpu" (ILGPU's CUDA device 0, else its first OpenCL
    /// device it accepts; never the simulator: with neither it throws, naming why each is missing), or "auto" (CUDA through NVRTC,
    /// else ILGPU's CUDA, else an OpenCL GPU, else an ILGPU OpenCL device, else the managed CPU; never a simulator).
    /// </summary>
    /// <exception cref="BackendUnavailableException">The backend or device is not present; the message says why.</exception>
    /// <exception cref="ArgumentException">The spec is not one of the forms above.</exception>
    public static Device Open(string spec = "cpu")
    {
        ArgumentNullException.ThrowIfNull(spec);
        var s = spec.Trim().ToLowerInvariant();
        if (s == "auto") return OpenAuto();
        if (s == "ilgpu" || s.StartsWith("ilgpu:", StringComparison.Ordinal)) return OpenIlgpu(s);
        var (name, index) = ParseSpec(s);
        return name switch
        {
            "cpu" => index == 0 ? new Device(new CpuBackend(), "cpu") : throw new BackendUnavailableException($"cpu:{index}: there is only one managed CPU device (cpu)"),
            "opencl" => new Device(OpenClBackend.Create(index), $"opencl:{index}"),
            "cuda" => new Device(CudaBackend.Create(index), $"cuda:{index}"),
            _ => throw new ArgumentException($"backend: expected cpu, opencl[:K], cuda[:K], ilgpu[:cuda[:K]|:opencl[:K]|:cpu] or auto, got '{spec}'", nameof(spec)),
        };
    }

    private static (string, int) ParseSpec(string s)
    {
        int colon = s.IndexOf(':');
        if (colon < 0) return (s, 0);
        if (!int.TryParse(s.AsSpan(colon + 1), out int k) || k < 0)
            throw new ArgumentException($"backend: expected a device index after ':', got '{s}'", "spec");
        return (s[..colon], k);
    }

    private static Device OpenAuto()
    {
        try { return new Device(CudaBackend.Create(0), "cuda:0"); }
        catch (Exception e) when (e is BackendUnavailableException or CudaException) { }
        if (TryIlgpu(IlgpuTarget.Cuda) is { } ic) return ic;
        try
        {
            var devices = OpenClBackend.Enumerate();
            int gpu = devices.FindIndex(d => d.IsGpu);
            if (gpu >= 0) return new Device(OpenClBackend.Create(gpu), $"opencl:{gpu}");
        }
        catch (BackendUnavailableException) { }
        if (TryIlgpu(IlgpuTarget.OpenCL) is { } io) return io;
        return new Device(new CpuBackend(), "cpu");
    }

    /// <summary>The first ILGPU device of <paramref name="target"/> that ILGPU accepts, else null.</summary>
    private static Device? TryIlgpu(IlgpuTarget target)
    {
        foreach (var d in IlgpuRuntime.Discover())
        {
            if (d.Target != target || d.Problem is not null) continue;
            try { return new Device(IlgpuBackend.Create(d.Target, d.Index), d.Spec); }
            catch (BackendUnavailableException) { }
        }
        return null;
    }

    private static Device OpenIlgpu(string s)
    {
        if (IlgpuRuntime.ParseSpec(s) is var (target, index))
            return new Device(IlgpuBackend.Create(target, index), target == IlgpuTarget.Cpu ? "ilgpu:cpu" : $"ilgpu:{target.ToString().ToLowerInvariant()}:{index}");
        var best = TryIlgpu(IlgpuTarget.Cuda) ?? TryIlgpu(IlgpuTarget.OpenCL);
        if (best is not null) return best;
        var refused = IlgpuRuntime.Discover().Where(d => d.Problem is not null).Select(d => $"{d.Spec}: {d.Problem}");
        throw new BackendUnavailableException("ilgpu: no ILGPU GPU accelerator (" + string.Join("; ",
            new[] { IlgpuRuntime.CudaProblem, IlgpuRuntime.OpenClProblem }.OfType<string>().Concat(refused))
            + "); 'ilgpu:cpu' opens ILGPU's CPU simulator explicitly");
    }

    /// <summary>Lists every backend and device found, and why a missing one is missing.</summary>
    public static IReadOnlyList<DeviceDescription> Probe()
    {
        var list = new List<DeviceDescription> { new("cpu", BackendKind.Cpu, CpuBackend.Describe(), true, null) };
        try
        {
            var devices = OpenClBackend.Enumerate();
            if (devices.Count == 0) list.Add(new("opencl", BackendKind.OpenCL, "", false, "opencl: the ICD loader found no devices"));
            for (int i = 0; i < devices.Count; i++)
                list.Add(new($"opencl:{i}", BackendKind.OpenCL, devices[i].Description, true, null));
        }
        catch (BackendUnavailableException e)
        {
            list.Add(new("opencl", BackendKind.OpenCL, "", false, e.Message));
        }
        try
        {
            var devices = CudaBackend.Enumerate();
            string? nvrtc = CudaBackend.NvrtcProblem();
            if (devices.Count == 0) list.Add(new("cuda", BackendKind.Cuda, "", false, "cuda: the driver reports no CUDA device"));
            for (int i = 0; i < devices.Count; i++)
                list.Add(new($"cuda:{i}", BackendKind.Cuda, devices[i].Description, nvrtc is null, nvrtc));
        }
        catch (Exception e) when (e is BackendUnavailableException or CudaException)
        {
            // Say every missing library: the driver's and, when it is missing too, NVRTC's.
            string? nvrtc = CudaBackend.NvrtcProblem();
            list.Add(new("cuda", BackendKind.Cuda, "", false, nvrtc is null ? e.Message : e.Message + "; " + nvrtc));
        }
        ProbeIlgpu(list);
        return list;
    }

    private static void ProbeIlgpu(List<DeviceDescription> list)
    {
        IReadOnlyList<IlgpuDeviceInfo> found;
        try { found = IlgpuRuntime.Discover(); }
        catch (Exception e) { list.Add(new("ilgpu", BackendKind.Ilgpu, "", false, $"ilgpu: {e.GetType().Name}: {e.Message}")); return; }
        var gpu = found.FirstOrDefault(d => d.Target != IlgpuTarget.Cpu && d.Problem is null);
        list.Add(gpu is not null
            ? new("ilgpu", BackendKind.Ilgpu, $"= {gpu.Spec}", true, null)
            : new("ilgpu", BackendKind.Ilgpu, "", false, "ilgpu: no ILGPU GPU accelerator (see ilgpu:cuda, ilgpu:opencl below; ilgpu:cpu is the simulator, opened only by name)"));
        if (IlgpuRuntime.CudaProblem is { } cp) list.Add(new("ilgpu:cuda", BackendKind.Ilgpu, "", false, cp));
        if (IlgpuRuntime.OpenClProblem is { } op) list.Add(new("ilgpu:opencl", BackendKind.Ilgpu, "", false, op));
        foreach (var d in found) list.Add(new(d.Spec, BackendKind.Ilgpu, d.Name, d.Problem is null, d.Problem));
    }

    /// <summary>Whether this device has its own kernel for <paramref name="op"/>; when it has not, the op runs on the CPU backend with copies.</summary>
    public bool SupportsOp(OpKind op) => Backend.SupportsOp(op);

    /// <summary>Allocates an uninitialised tensor of the given shape.</summary>
    /// <exception cref="ArgumentException">A negative dimension, more than 2⁶³ elements, or more elements than the device can
    /// hold in one buffer (checked before anything is allocated).</exception>
    /// <exception cref="OutOfMemoryException">The device has not enough free memory; the message names the device and the size.
    /// Nothing was allocated and the device stays usable.</exception>
    /// <exception cref="ObjectDisposedException">The device was disposed.</exception>
    public Tensor Allocate(params int[] shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        var copy = (int[])shape.Clone();
        long n = Tensor.Product(copy);
        var be = Backend;
        if (n > be.MaxBufferElements)
            throw new ArgumentException($"tensor {TensorShapeException.Format(copy)} has {n} elements, more than this device's largest buffer ({be.MaxBufferElements} float32 elements)", nameof(shape));
        lock (QueueLock)
        {
            be = Backend;
            IDeviceBuffer buffer;
            try { buffer = be.Allocate(n); }
            catch (Exception e) when (e is OutOfMemoryException || e is OpenClException { Error: -4 or -5 or -6 }
                                      || e is CudaException { Error: 2 })
            {
                throw new OutOfMemoryException($"{Spec}: out of memory allocating tensor {TensorShapeException.Format(copy)} ({n * sizeof(float)} bytes)", e);
            }
            if (PoisonAllocations && n > 0) be.Fill(buffer, float.NaN);
            return new Tensor(this, buffer, copy);
        }
    }

    /// <summary>When set, every tensor this device allocates starts as NaN (verification: an output element an op forgets to write,
    /// also in tensors that layers allocate themselves, then shows as NaN).</summary>
    internal bool PoisonAllocations { get; set; }

    /// <summary>Allocates a tensor of <paramref name="shape"/> and copies <paramref name="data"/> (row-major) into it.</summary>
    /// <exception cref="TensorShapeException">data.Length differs from the product of the shape.</exception>
    public Tensor Upload(ReadOnlySpan<float> data, params int[] shape)
    {
        var t = Allocate(shape);
        try { Upload(t, data); }
        catch { t.Dispose(); throw; }
        return t;
    }

    /// <summary>Copies a bool attention mask to the device as an additive float mask (True → 0, may attend; False → −∞).</summary>
    public Tensor UploadMask(ReadOnlySpan<bool> mask, params int[] shape)
    {
        var f = new float[mask.Length];
        for (int i = 0; i < f.Length; i++) f[i] = mask[i] ? 0f : float.NegativeInfinity;
        return Upload(f, shape);
    }

    /// <summary>Copies host data into an existing tensor of this device (blocking).</summary>
    public void Upload(Tensor destination, ReadOnlySpan<float> data)
    {
        CheckOwned(destination, "destination");
        if (data.Length != destination.Length)
            throw new TensorShapeException("data", $"{destination.Length} elements for shape {destination}", $"{data.Length} elements");
        lock (QueueLock) Backend.Write(destination.Buffer, 0, data);
    }

    /// <summary>Copies a tensor to host memory (waits for queued work).</summary>
    public void Download(Tensor source, Span<float> destination)
    {
        CheckOwned(source, "source");
        if (destination.Length != source.Length)
            throw new TensorShapeException("destination", $"{source.Length} elements for shape {source}", $"{destination.Length} elements");
        lock (QueueLock) Backend.Read(source.Buffer, 0, destination);
    }

    /// <summary>Copies a tensor to a new host array (waits for queued work).</summary>
    public float[] Download(Tensor source)
    {
        CheckOwned(source, "source");
        if (source.Length > Array.MaxLength) throw new ArgumentException($"source: {source.Length} elements do not fit in one array; download with a span", nameof(source));
        var a = new float[source.Length];
        Download(source, a);
        return a;
    }

    /// <summary>Sets every element of <paramref name="tensor"/> to <paramref name="value"/> (e.g. NaN to poison outputs).</summary>
    public void Fill(Tensor tensor, float value)
    {
        CheckOwned(tensor, "tensor");
        lock (QueueLock) Backend.Fill(tensor.Buffer, value);
    }

    /// <summary>Waits until all queued work on this device has finished.</summary>
    public void Synchronize()
    {
        lock (QueueLock) Backend.Synchronize();
    }

    internal void CheckOwned(Tensor t, string name)
    {
        ArgumentNullException.ThrowIfNull(t, name);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (t.IsDisposed) throw new ObjectDisposedException(name, $"{name}: tensor was disposed");
        if (!ReferenceEquals(t.Device, this))
            throw new ArgumentException($"{name}: tensor belongs to another Device instance ({t.Device.Spec}{(t.Device.IsDisposed ? ", disposed" : "")}) than the one called ({Spec}); "
                + "tensors cannot be shared between Device instances: download and upload it", name);
    }

    /// <summary>
    /// Runs an op on this device's backend, or, when the backend has no kernel for it, on the CPU backend
    /// with inputs copied to host memory and outputs copied back. <paramref name="run"/> gets the backend, the tensor →
    /// buffer map of that backend and <paramref name="state"/>; call sites pass a <c>static</c> lambda and their captures
    /// as a value tuple, and the tensor lists as spans (stack arrays), so the direct path allocates nothing.
    /// </summary>
    /// <param name="op">The op, for <see cref="IBackend.SupportsOp"/>.</param>
    /// <param name="inputs">Tensors the op reads (null entries: absent optional inputs).</param>
    /// <param name="outputs">Tensors the op writes (copied back after a fallback run).</param>
    /// <param name="state">What <paramref name="run"/> needs besides the backend and the buffers (shapes, tensors, options).</param>
    /// <param name="run">Launches the op on the given backend.</param>
    /// <param name="onCpu">Run on the CPU backend even when this device has a kernel (degenerate shapes the kernels do not take).</param>
    internal void Run<TState>(OpKind op, ReadOnlySpan<Tensor?> inputs, ReadOnlySpan<Tensor> outputs, TState state,
        Action<IBackend, BufferMap, TState> run, bool onCpu = false)
    {
        lock (QueueLock)
        {
            var be = Backend;
            if (be.SupportsOp(op) && !(onCpu && be.Kind != BackendKind.Cpu)) { run(be, default, state); return; }
            var cpu = _cpuFallback ??= new CpuBackend();
            var map = new Dictionary<Tensor, IDeviceBuffer>(ReferenceEqualityComparer.Instance);
            try
            {
                void Copy(Tensor? t)
                {
                    if (t is null || map.ContainsKey(t)) return;
                    var host = new float[t.Length];
                    be.Read(t.Buffer, 0, host);
                    var buf = cpu.Allocate(t.Length);
                    cpu.Write(buf, 0, host);
                    map[t] = buf;
                }
                foreach (var t in inputs) Copy(t);
                foreach (var t in outputs) Copy(t);
                run(cpu, new BufferMap(map), state);
                foreach (var t in outputs)
                {
                    var host = new float[t.Length];
                    cpu.Read(map[t], 0, host);
                    be.Write(t.Buffer, 0, host);
                }
            }
            finally
            {
                foreach (var b in map.Values) b.Dispose();
            }
        }
    }

    /// <summary>The buffers an op runs on: a tensor's own buffer (default), or its host copy on the CPU fallback.</summary>
    internal readonly struct BufferMap(Dictionary<Tensor, IDeviceBuffer>? copies)
    {
        public IDeviceBuffer? this[Tensor? t] => t is null ? null : copies is null ? t.Buffer : copies[t];
    }

    /// <summary>True once <see cref="Dispose"/> has run.</summary>
    public bool IsDisposed => _disposed;

    /// <summary>
    /// Returns the memory the managed CPU backend keeps for reuse to the OS (as <c>torch.cuda.empty_cache()</c> does for
    /// PyTorch's cache): freed CPU tensors of 64 KB or more are kept, up to 1 GiB per device, and handed to the next
    /// allocation of the same size, because memory fresh from the OS costs a page fault per page on first touch (a
    /// layer that allocates its intermediates per call ran 2–3× slower without the cache). Live tensors are not
    /// affected; <see cref="Diagnostics.NativeResources.CpuCachedBytes"/> tells what is kept. No effect on other backends.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The device was disposed.</exception>
    public void ReleaseCachedMemory()
    {
        lock (QueueLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            (_backend as Backends.Cpu.CpuBackend)?.Cache.Trim();
            _cpuFallback?.Cache.Trim();
        }
    }

    /// <summary>
    /// Releases the backend (queues, contexts, compiled kernels, scratch). Safe to call more than once and from several threads.
    /// Afterwards every method of the device, and every op on its tensors, throws <see cref="ObjectDisposedException"/>;
    /// its tensors may (and should) still be disposed.
    /// </summary>
    public void Dispose()
    {
        lock (QueueLock)
        {
            if (_disposed) return;
            _disposed = true;
            _backend.Dispose();
            _cpuFallback?.Dispose();
        }
    }
}
