using System.Reflection;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;

namespace GpuAttention.Backends.Ilgpu;

/// <summary>One accelerator kind ILGPU offers: CUDA, OpenCL or its CPU simulator.</summary>
internal enum IlgpuTarget { Cuda, OpenCL, Cpu }

/// <summary>What <see cref="IlgpuRuntime.Discover"/> found for one ILGPU device.</summary>
/// <param name="Spec">"ilgpu:cuda:0", "ilgpu:opencl:1", "ilgpu:cpu".</param>
/// <param name="Target">Accelerator kind.</param>
/// <param name="Index">Index among the devices of that kind (for OpenCL: over every OpenCL device, refused ones included).</param>
/// <param name="Name">The device's name.</param>
/// <param name="Problem">Why ILGPU cannot open it (e.g. no generic address space), else null.</param>
internal sealed record IlgpuDeviceInfo(string Spec, IlgpuTarget Target, int Index, string Name, string? Problem);

/// <summary>
/// ILGPU contexts and device discovery. ILGPU loads its native libraries by the bare names <c>cuda</c> and
/// <c>OpenCL</c>, which on Linux resolve only to the development symlinks <c>libcuda.so</c> / <c>libOpenCL.so</c>
/// (packages <c>nvidia-cuda-dev</c>, <c>ocl-icd-opencl-dev</c>); a machine with just the runtimes has only
/// <c>libcuda.so.1</c> / <c>libOpenCL.so.1</c>. <see cref="EnsureResolver"/> installs a <see cref="DllImportResolver"/> on ILGPU's
/// assembly that tries the versioned runtime names first, so ILGPU finds the driver and the ICD loader either way.
/// </summary>
internal static class IlgpuRuntime
{
    private static int _resolverState; // 0 not tried, 1 installed, 2 another resolver was there first
    private static readonly Lazy<IReadOnlyList<IlgpuDeviceInfo>> _discovered = new(DiscoverCore);

    /// <summary>Installs the library-name resolver on ILGPU's assembly once (safe to call from anywhere, any number of times).</summary>
    public static void EnsureResolver()
    {
        if (Interlocked.CompareExchange(ref _resolverState, 1, 0) != 0) return;
        try { NativeLibrary.SetDllImportResolver(typeof(Context).Assembly, Resolve); }
        catch (InvalidOperationException) { _resolverState = 2; } // the embedding application set its own: leave it be
    }

    private static nint Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        if (!OperatingSystem.IsLinux()) return 0;
        string[] candidates = name switch
        {
            "OpenCL" or "opencl" => ["libOpenCL.so.1", "libOpenCL.so"],
            "cuda" => ["libcuda.so.1", "libcuda.so"],
            _ => [],
        };
        foreach (var c in candidates)
            if (NativeLibrary.TryLoad(c, out nint h)) return h;
        return 0; // default probing (and ILGPU's own "not found" handling)
    }

    /// <summary>A context for one accelerator kind with this library's settings: 32-bit float math only (no float64
    /// creeping into kernels), ILGPU.Algorithms, and for the CPU simulator NVIDIA-like warps of 32 and groups up to 1024.</summary>
    public static Context CreateContext(IlgpuTarget target)
    {
        EnsureResolver();
        return Context.Create(b =>
        {
            b.Math(MathMode.Fast32BitOnly).EnableAlgorithms();
            switch (target)
            {
                case IlgpuTarget.Cuda: b.Cuda(); break;
                case IlgpuTarget.OpenCL: b.OpenCL(_ => true); break; // every device: refused ones are reported, not hidden
                default: b.CPU(CPUDeviceKind.Nvidia); break;
            }
        });
    }

    /// <summary>Every ILGPU device of this machine (cached per process: drivers do not appear while it runs).</summary>
    public static IReadOnlyList<IlgpuDeviceInfo> Discover() => _discovered.Value;

    /// <summary>Why ILGPU has no CUDA device here (null when it has one).</summary>
    public static string? CudaProblem { get; private set; }

    /// <summary>Why ILGPU has no OpenCL device here (null when it lists at least one).</summary>
    public static string? OpenClProblem { get; private set; }

    /// <summary>Why ILGPU has no device of kind <paramref name="target"/> (runs discovery if needed).</summary>
    public static string NoDeviceReason(IlgpuTarget target)
    {
        _ = Discover();
        return (target == IlgpuTarget.Cuda ? CudaProblem : OpenClProblem) ?? $"ilgpu:{target.ToString().ToLowerInvariant()}: no device";
    }

    /// <summary>Parses "ilgpu", "ilgpu:cuda[:K]", "ilgpu:opencl[:K]", "ilgpu:cpu" (lower case); null for a plain "ilgpu".</summary>
    /// <exception cref="ArgumentException">Any other form.</exception>
    public static (IlgpuTarget Target, int Index)? ParseSpec(string spec)
    {
        var parts = spec.Split(':');
        if (parts[0] != "ilgpu" || parts.Length > 3) throw Bad();
        if (parts.Length == 1) return null;
        IlgpuTarget t = parts[1] switch { "cuda" => IlgpuTarget.Cuda, "opencl" => IlgpuTarget.OpenCL, "cpu" => IlgpuTarget.Cpu, _ => throw Bad() };
        int k = 0;
        if (parts.Length == 3 && (!int.TryParse(parts[2], out k) || k < 0)) throw Bad();
        return (t, k);
        ArgumentException Bad() => new($"backend: expected ilgpu, ilgpu:cuda[:K], ilgpu:opencl[:K] or ilgpu:cpu, got '{spec}'", nameof(spec));
    }

    private static IReadOnlyList<IlgpuDeviceInfo> DiscoverCore()
    {
        var list = new List<IlgpuDeviceInfo>();
        try
        {
            using var ctx = CreateContext(IlgpuTarget.Cuda);
            var devs = ctx.GetCudaDevices();
            for (int i = 0; i < devs.Count; i++)
                list.Add(new($"ilgpu:cuda:{i}", IlgpuTarget.Cuda, i, $"{devs[i].Name} (sm_{(int)devs[i].Architecture!.Value.Major}{devs[i].Architecture!.Value.Minor})", null));
            if (devs.Count == 0)
                CudaProblem = NativeLibrary.TryLoad("libcuda.so.1", out nint h) || NativeLibrary.TryLoad("libcuda.so", out h)
                    ? "ilgpu:cuda: the CUDA driver reports no device ILGPU supports"
                    : "ilgpu:cuda: libcuda.so.1 not found (no NVIDIA driver)";
        }
        catch (Exception e) { CudaProblem = $"ilgpu:cuda: {e.GetType().Name}: {e.Message}"; }
        try
        {
            using var ctx = CreateContext(IlgpuTarget.OpenCL);
            var devs = ctx.GetCLDevices();
            for (int i = 0; i < devs.Count; i++)
                list.Add(new($"ilgpu:opencl:{i}", IlgpuTarget.OpenCL, i, $"{devs[i].Name} ({devs[i].Vendor})", OpenClRefusal(ctx, devs[i])));
            if (devs.Count == 0)
                OpenClProblem = NativeLibrary.TryLoad("libOpenCL.so.1", out nint h) || NativeLibrary.TryLoad("libOpenCL.so", out h)
                    ? "ilgpu:opencl: the OpenCL ICD loader lists no device"
                    : "ilgpu:opencl: libOpenCL.so.1 not found (install ocl-icd-libopencl1 and a driver)";
        }
        catch (Exception e) { OpenClProblem = $"ilgpu:opencl: {e.GetType().Name}: {e.Message}"; }
        list.Add(new("ilgpu:cpu", IlgpuTarget.Cpu, 0, "ILGPU CPU simulator (warp 32, 1024 threads per group; verification only, slow)", null));
        return list;
    }

    /// <summary>Why ILGPU's OpenCL backend would refuse <paramref name="d"/>, else null. ILGPU's generated OpenCL C needs the
    /// generic address space (OpenCL 2.0 / 3.0 optional feature); PoCL 3.x on CPUs and NVIDIA's OpenCL do not offer it, and ILGPU's
    /// accelerator constructor throws <see cref="ILGPU.CapabilityNotSupportedException"/> for them.</summary>
    private static string? OpenClRefusal(Context ctx, CLDevice d)
    {
        try
        {
            using var acc = d.CreateAccelerator(ctx);
            return null;
        }
        catch (CapabilityNotSupportedException e)
        {
            return $"ILGPU refuses this OpenCL device: {e.Message.TrimEnd('.')} (ILGPU's OpenCL backend needs the generic address space; the OpenCL C kernels of the 'opencl' backend run on it)";
        }
        catch (Exception e) { return $"ILGPU cannot open this OpenCL device: {e.GetType().Name}: {e.Message}"; }
    }
}
