using System.Runtime.InteropServices;
using System.Text;

namespace GpuAttention.Backends.Cuda.Native;


/// <summary>
/// Hand-written bindings to the CUDA driver API (<c>libcuda.so.1</c> / <c>nvcuda.dll</c>), source-generated P/Invoke,
/// the <c>_v2</c> entry points that cuda.h maps its names to. Loaded lazily by <see cref="TryLoad"/>; the import name
/// "cuda" is resolved through <see cref="NativeImports"/>. Handles are <see cref="nint"/>, device pointers
/// <see cref="ulong"/> (CUdeviceptr); ownership lives in the SafeHandles of CudaHandles.cs.
/// </summary>
internal static unsafe partial class Cu
{
    private const string Lib = "cuda";

    // --- constants (cuda.h) ---
    public const int CUDA_SUCCESS = 0;
    public const int CUDA_ERROR_NO_DEVICE = 100;
    public const int CUDA_ERROR_UNSUPPORTED_PTX_VERSION = 222;

    public const int CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 1;
    public const int CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X = 2;
    public const int CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y = 3;
    public const int CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z = 4;
    public const int CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X = 5;
    public const int CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y = 6;
    public const int CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z = 7;
    public const int CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK = 8;
    public const int CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
    public const int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
    public const int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;

    public const uint CU_STREAM_NON_BLOCKING = 1;
    public const uint CU_EVENT_DEFAULT = 0;

    public const int CU_JIT_ERROR_LOG_BUFFER = 5;
    public const int CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6;

    // --- init / device ---
    [LibraryImport(Lib)] public static partial int cuInit(uint flags);
    [LibraryImport(Lib)] public static partial int cuDriverGetVersion(int* version);
    [LibraryImport(Lib)] public static partial int cuDeviceGetCount(int* count);
    [LibraryImport(Lib)] public static partial int cuDeviceGet(int* device, int ordinal);
    [LibraryImport(Lib)] public static partial int cuDeviceGetName(byte* name, int len, int device);
    [LibraryImport(Lib)] public static partial int cuDeviceGetAttribute(int* value, int attribute, int device);
    [LibraryImport(Lib)] public static partial int cuDeviceTotalMem_v2(nuint* bytes, int device);

    // --- context (the device's primary context, shared with other CUDA users in the process) ---
    [LibraryImport(Lib)] public static partial int cuDevicePrimaryCtxRetain(nint* context, int device);
    [LibraryImport(Lib)] public static partial int cuDevicePrimaryCtxRelease_v2(int device);
    [LibraryImport(Lib)] public static partial int cuCtxSetCurrent(nint context);
    [LibraryImport(Lib)] public static partial int cuCtxPushCurrent_v2(nint context);
    [LibraryImport(Lib)] public static partial int cuCtxPopCurrent_v2(nint* context);

    // --- memory ---
    [LibraryImport(Lib)] public static partial int cuMemAlloc_v2(ulong* dptr, nuint bytes);
    [LibraryImport(Lib)] public static partial int cuMemFree_v2(ulong dptr);
    [LibraryImport(Lib)] public static partial int cuMemcpyHtoDAsync_v2(ulong dst, void* src, nuint bytes, nint stream);
    [LibraryImport(Lib)] public static partial int cuMemcpyDtoHAsync_v2(void* dst, ulong src, nuint bytes, nint stream);
    [LibraryImport(Lib)] public static partial int cuMemsetD32Async(ulong dst, uint value, nuint count, nint stream);

    // --- modules / launch ---
    [LibraryImport(Lib)] public static partial int cuModuleLoadDataEx(nint* module, void* image, uint numOptions, int* options, void** optionValues);
    [LibraryImport(Lib)] public static partial int cuModuleUnload(nint module);
    [LibraryImport(Lib)] public static partial int cuModuleGetFunction(nint* function, nint module, byte* name);
    [LibraryImport(Lib)] public static partial int cuLaunchKernel(nint function, uint gridX, uint gridY, uint gridZ,
        uint blockX, uint blockY, uint blockZ, uint sharedMemBytes, nint stream, void** kernelParams, void** extra);

    // --- streams / events ---
    [LibraryImport(Lib)] public static partial int cuStreamCreate(nint* stream, uint flags);
    [LibraryImport(Lib)] public static partial int cuStreamDestroy_v2(nint stream);
    [LibraryImport(Lib)] public static partial int cuStreamSynchronize(nint stream);
    [LibraryImport(Lib)] public static partial int cuEventCreate(nint* evt, uint flags);
    [LibraryImport(Lib)] public static partial int cuEventDestroy_v2(nint evt);
    [LibraryImport(Lib)] public static partial int cuEventRecord(nint evt, nint stream);
    [LibraryImport(Lib)] public static partial int cuEventSynchronize(nint evt);
    [LibraryImport(Lib)] public static partial int cuEventElapsedTime(float* milliseconds, nint start, nint end);

    // --- errors ---
    [LibraryImport(Lib)] public static partial int cuGetErrorName(int error, byte** name);

    // --- loading ---

    /// <summary>Library names probed, in order, for the current OS (empty on macOS: no CUDA there).</summary>
    public static string[] Candidates =>
        OperatingSystem.IsWindows() ? ["nvcuda.dll"]
        : OperatingSystem.IsMacOS() ? []
        : ["libcuda.so.1", "libcuda.so"];

    private static readonly Lazy<(nint Handle, string? Error)> Loaded = new(Load, LazyThreadSafetyMode.ExecutionAndPublication);

    private static (nint, string?) Load()
    {
        if (Candidates.Length == 0) return (nint.Zero, "cuda: CUDA is not available on macOS");
        if (!NativeImports.TryLoadFirst(Candidates, out var h, out _))
            return (nint.Zero, OperatingSystem.IsWindows()
                ? "cuda: nvcuda.dll not found (no NVIDIA driver)"
                : "cuda: libcuda.so.1 not found (no NVIDIA driver)");
        try { NativeImports.Register(Lib, h); }
        catch (InvalidOperationException)
        {
            return (nint.Zero, "cuda: another DllImport resolver is already registered for GpuAttention; cannot bind the CUDA driver");
        }
        int err;
        try { err = cuInit(0); }
        catch (EntryPointNotFoundException e) { return (nint.Zero, $"cuda: the driver library lacks an entry point ({e.Message})"); }
        if (err != CUDA_SUCCESS)
            return (nint.Zero, err == CUDA_ERROR_NO_DEVICE
                ? "cuda: the NVIDIA driver found no CUDA device (cuInit: CUDA_ERROR_NO_DEVICE)"
                : $"cuda: cuInit failed with {ErrorName(err)} ({err})");
        return (h, null);
    }

    /// <summary>Loads the driver library and runs cuInit once; false with the reason when either fails.</summary>
    public static bool TryLoad(out string? reason)
    {
        var (h, err) = Loaded.Value;
        reason = err;
        return h != nint.Zero;
    }

    // --- helpers ---

    /// <summary>Throws <see cref="CudaException"/> unless <paramref name="err"/> is CUDA_SUCCESS.</summary>
    public static void Check(int err, string call)
    {
        if (err != CUDA_SUCCESS) throw new CudaException(call, err);
    }

    /// <summary>The CUresult name from cuGetErrorName, e.g. "CUDA_ERROR_OUT_OF_MEMORY".</summary>
    public static string ErrorName(int err)
    {
        byte* p = null;
        try
        {
            if (cuGetErrorName(err, &p) == CUDA_SUCCESS && p != null) return Marshal.PtrToStringUTF8((nint)p) ?? "CUDA_ERROR_UNKNOWN";
        }
        catch (DllNotFoundException) { }
        catch (EntryPointNotFoundException) { }
        return "CUDA_ERROR_UNKNOWN";
    }

    public static int Attribute(int device, int attribute)
    {
        int v;
        Check(cuDeviceGetAttribute(&v, attribute, device), "cuDeviceGetAttribute");
        return v;
    }

    public static string DeviceName(int device)
    {
        var buf = new byte[256];
        fixed (byte* p = buf) Check(cuDeviceGetName(p, buf.Length, device), "cuDeviceGetName");
        int n = Array.IndexOf(buf, (byte)0);
        return Encoding.UTF8.GetString(buf, 0, n < 0 ? buf.Length : n).Trim();
    }

    /// <summary>The driver's CUDA version as "major.minor", e.g. "12.4".</summary>
    public static string DriverVersion()
    {
        int v;
        return cuDriverGetVersion(&v) == CUDA_SUCCESS ? $"{v / 1000}.{v % 1000 / 10}" : "?";
    }
}
