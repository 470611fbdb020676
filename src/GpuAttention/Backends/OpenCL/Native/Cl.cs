using System.Runtime.InteropServices;
using System.Text;
using Silk.NET.Core.Contexts;
using Silk.NET.OpenCL;

namespace GpuAttention.Backends.OpenCL.Native;


/// <summary>
/// The thin layer over Silk.NET.OpenCL: <see cref="Api"/> is Silk's <see cref="CL"/> bound to the ICD loader that
/// <see cref="TryLoad"/> found (probed per OS with <see cref="NativeLibrary"/>, entry points resolved by
/// <see cref="NativeLibrary.GetExport"/>, so neither Silk's own loader nor reflection is involved and a trimmed app
/// keeps working). Handles are passed as <see cref="nint"/>; ownership lives in the SafeHandles of ClHandles.cs.
/// The helpers turn error codes into <see cref="OpenClException"/>.
/// </summary>
internal static unsafe class Cl
{
    // --- the cl.h codes the backend tests for (Silk's ErrorCodes holds them too; ints compare without casts) ---
    public const int CL_SUCCESS = (int)ErrorCodes.Success;
    public const int CL_DEVICE_NOT_FOUND = (int)ErrorCodes.DeviceNotFound;
    public const int CL_BUILD_PROGRAM_FAILURE = (int)ErrorCodes.BuildProgramFailure;
    public const int CL_PLATFORM_NOT_FOUND_KHR = -1001;

    private static CL? s_api;

    /// <summary>Silk's OpenCL API; valid after <see cref="TryLoad"/> returned true (every handle comes from a loaded API).</summary>
    public static CL Api => s_api ?? throw new InvalidOperationException("opencl: the OpenCL library is not loaded");

    // --- loading ---

    /// <summary>Library names probed, in order, for the current OS.</summary>
    public static string[] Candidates =>
        OperatingSystem.IsWindows() ? ["OpenCL.dll"]
        : OperatingSystem.IsMacOS() ? ["/System/Library/Frameworks/OpenCL.framework/OpenCL", "libOpenCL.dylib"]
        : ["libOpenCL.so.1", "libOpenCL.so"];

    private static readonly Lazy<string?> Loaded = new(Load, LazyThreadSafetyMode.ExecutionAndPublication);

    private static string? Load()
    {
        if (NativeImports.TryLoadFirst(Candidates, out var h, out _))
        {
            // The library stays loaded for the process (as the ICD loader expects); a missing export surfaces as Silk's
            // SymbolLoadingException on first use of that call.
            s_api = new CL(new LamdaNativeContext(name => NativeLibrary.TryGetExport(h, name, out var f) ? f : 0));
            return null;
        }
        string hint = OperatingSystem.IsWindows() ? "install a GPU driver that ships OpenCL.dll"
            : OperatingSystem.IsMacOS() ? "the OpenCL framework is missing"
            : "install ocl-icd-libopencl1 and an ICD such as pocl-opencl-icd";
        return $"opencl: {Candidates[0]} not found ({hint})";
    }

    /// <summary>Loads the OpenCL library once; false with the reason when it is missing.</summary>
    public static bool TryLoad(out string? reason)
    {
        reason = Loaded.Value;
        return reason is null;
    }

    // --- helpers ---

    /// <summary>Throws <see cref="OpenClException"/> unless <paramref name="err"/> is CL_SUCCESS.</summary>
    public static void Check(int err, string call)
    {
        if (err != CL_SUCCESS) throw new OpenClException(call, err);
    }

    public static string PlatformString(nint platform, PlatformInfo param)
    {
        nuint size;
        Check(Api.GetPlatformInfo(platform, param, 0, null, &size), "clGetPlatformInfo");
        var buf = new byte[(int)size];
        fixed (byte* p = buf) Check(Api.GetPlatformInfo(platform, param, size, p, null), "clGetPlatformInfo");
        return Decode(buf);
    }

    public static string DeviceString(nint device, DeviceInfo param)
    {
        nuint size;
        Check(Api.GetDeviceInfo(device, param, 0, null, &size), "clGetDeviceInfo");
        var buf = new byte[(int)size];
        fixed (byte* p = buf) Check(Api.GetDeviceInfo(device, param, size, p, null), "clGetDeviceInfo");
        return Decode(buf);
    }

    public static T DeviceValue<T>(nint device, DeviceInfo param) where T : unmanaged
    {
        T v = default;
        Check(Api.GetDeviceInfo(device, param, (nuint)sizeof(T), &v, null), "clGetDeviceInfo");
        return v;
    }

    public static string Decode(byte[] buf)
    {
        int n = Array.IndexOf(buf, (byte)0);
        return Encoding.UTF8.GetString(buf, 0, n < 0 ? buf.Length : n).Trim();
    }

    /// <summary>The CL error name of a cl_int error code (cl.h names).</summary>
    public static string ErrorName(int e) => e switch
    {
        0 => "CL_SUCCESS",
        -1 => "CL_DEVICE_NOT_FOUND",
        -2 => "CL_DEVICE_NOT_AVAILABLE",
        -3 => "CL_COMPILER_NOT_AVAILABLE",
        -4 => "CL_MEM_OBJECT_ALLOCATION_FAILURE",
        -5 => "CL_OUT_OF_RESOURCES",
        -6 => "CL_OUT_OF_HOST_MEMORY",
        -7 => "CL_PROFILING_INFO_NOT_AVAILABLE",
        -8 => "CL_MEM_COPY_OVERLAP",
        -9 => "CL_IMAGE_FORMAT_MISMATCH",
        -10 => "CL_IMAGE_FORMAT_NOT_SUPPORTED",
        -11 => "CL_BUILD_PROGRAM_FAILURE",
        -12 => "CL_MAP_FAILURE",
        -13 => "CL_MISALIGNED_SUB_BUFFER_OFFSET",
        -14 => "CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST",
        -15 => "CL_COMPILE_PROGRAM_FAILURE",
        -16 => "CL_LINKER_NOT_AVAILABLE",
        -17 => "CL_LINK_PROGRAM_FAILURE",
        -18 => "CL_DEVICE_PARTITION_FAILED",
        -19 => "CL_KERNEL_ARG_INFO_NOT_AVAILABLE",
        -30 => "CL_INVALID_VALUE",
        -31 => "CL_INVALID_DEVICE_TYPE",
        -32 => "CL_INVALID_PLATFORM",
        -33 => "CL_INVALID_DEVICE",
        -34 => "CL_INVALID_CONTEXT",
        -35 => "CL_INVALID_QUEUE_PROPERTIES",
        -36 => "CL_INVALID_COMMAND_QUEUE",
        -37 => "CL_INVALID_HOST_PTR",
        -38 => "CL_INVALID_MEM_OBJECT",
        -39 => "CL_INVALID_IMAGE_FORMAT_DESCRIPTOR",
        -40 => "CL_INVALID_IMAGE_SIZE",
        -41 => "CL_INVALID_SAMPLER",
        -42 => "CL_INVALID_BINARY",
        -43 => "CL_INVALID_BUILD_OPTIONS",
        -44 => "CL_INVALID_PROGRAM",
        -45 => "CL_INVALID_PROGRAM_EXECUTABLE",
        -46 => "CL_INVALID_KERNEL_NAME",
        -47 => "CL_INVALID_KERNEL_DEFINITION",
        -48 => "CL_INVALID_KERNEL",
        -49 => "CL_INVALID_ARG_INDEX",
        -50 => "CL_INVALID_ARG_VALUE",
        -51 => "CL_INVALID_ARG_SIZE",
        -52 => "CL_INVALID_KERNEL_ARGS",
        -53 => "CL_INVALID_WORK_DIMENSION",
        -54 => "CL_INVALID_WORK_GROUP_SIZE",
        -55 => "CL_INVALID_WORK_ITEM_SIZE",
        -56 => "CL_INVALID_GLOBAL_OFFSET",
        -57 => "CL_INVALID_EVENT_WAIT_LIST",
        -58 => "CL_INVALID_EVENT",
        -59 => "CL_INVALID_OPERATION",
        -60 => "CL_INVALID_GL_OBJECT",
        -61 => "CL_INVALID_BUFFER_SIZE",
        -62 => "CL_INVALID_MIP_LEVEL",
        -63 => "CL_INVALID_GLOBAL_WORK_SIZE",
        -64 => "CL_INVALID_PROPERTY",
        -65 => "CL_INVALID_IMAGE_DESCRIPTOR",
        -66 => "CL_INVALID_COMPILER_OPTIONS",
        -67 => "CL_INVALID_LINKER_OPTIONS",
        -68 => "CL_INVALID_DEVICE_PARTITION_COUNT",
        -69 => "CL_INVALID_PIPE_SIZE",
        -70 => "CL_INVALID_DEVICE_QUEUE",
        -1001 => "CL_PLATFORM_NOT_FOUND_KHR",
        _ => "CL_UNKNOWN_ERROR",
    };
}
