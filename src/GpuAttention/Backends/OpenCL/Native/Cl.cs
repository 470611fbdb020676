using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;

namespace GpuAttention.Backends.OpenCL.Native;


/// <summary>
/// Hand-written bindings to the OpenCL 1.2 ICD loader (source-generated P/Invoke). The library is found lazily
/// per OS by <see cref="TryLoad"/>; the import name "OpenCL" is resolved to it by a DllImport resolver.
/// Handles are passed as <see cref="nint"/>; ownership lives in the SafeHandles of ClHandles.cs.
/// </summary>
internal static unsafe partial class Cl
{
    private const string Lib = "OpenCL";

    // --- constants (cl.h) ---
    public const int CL_SUCCESS = 0;
    public const int CL_DEVICE_NOT_FOUND = -1;
    public const int CL_BUILD_PROGRAM_FAILURE = -11;
    public const int CL_PLATFORM_NOT_FOUND_KHR = -1001;

    public const uint CL_PLATFORM_VERSION = 0x0901;
    public const uint CL_PLATFORM_NAME = 0x0902;
    public const uint CL_PLATFORM_VENDOR = 0x0903;

    public const ulong CL_DEVICE_TYPE_CPU = 1 << 1;
    public const ulong CL_DEVICE_TYPE_GPU = 1 << 2;
    public const ulong CL_DEVICE_TYPE_ACCELERATOR = 1 << 3;
    public const ulong CL_DEVICE_TYPE_ALL = 0xFFFFFFFF;

    public const uint CL_DEVICE_TYPE = 0x1000;
    public const uint CL_DEVICE_MAX_COMPUTE_UNITS = 0x1002;
    public const uint CL_DEVICE_MAX_WORK_GROUP_SIZE = 0x1004;
    public const uint CL_DEVICE_MAX_MEM_ALLOC_SIZE = 0x1010;
    public const uint CL_DEVICE_LOCAL_MEM_SIZE = 0x1023;
    public const uint CL_DEVICE_NAME = 0x102B;
    public const uint CL_DEVICE_VENDOR = 0x102C;
    public const uint CL_DEVICE_VERSION = 0x102F;
    public const uint CL_DRIVER_VERSION = 0x102D;

    public const ulong CL_MEM_READ_WRITE = 1 << 0;
    public const uint CL_PROGRAM_BUILD_LOG = 0x1183;
    public const uint CL_KERNEL_WORK_GROUP_SIZE = 0x11B0;
    public const uint CL_TRUE = 1, CL_FALSE = 0;

    // --- platform / device ---
    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial int clGetPlatformIDs(uint numEntries, nint* platforms, uint* numPlatforms);

    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial int clGetPlatformInfo(nint platform, uint paramName, nuint size, void* value, nuint* sizeRet);

    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial int clGetDeviceIDs(nint platform, ulong deviceType, uint numEntries, nint* devices, uint* numDevices);

    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial int clGetDeviceInfo(nint device, uint paramName, nuint size, void* value, nuint* sizeRet);

    // --- context / queue ---
    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial nint clCreateContext(nint* properties, uint numDevices, nint* devices, nint pfnNotify, nint userData, int* errcode);

    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial nint clCreateCommandQueue(nint context, nint device, ulong properties, int* errcode);

    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial int clReleaseContext(nint context);

    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial int clReleaseCommandQueue(nint queue);

    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial int clFinish(nint queue);

    // --- memory ---
    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial nint clCreateBuffer(nint context, ulong flags, nuint size, void* hostPtr, int* errcode);

    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial int clReleaseMemObject(nint mem);

    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial int clEnqueueWriteBuffer(nint queue, nint buffer, uint blocking, nuint offset, nuint size, void* ptr,
        uint numEvents, nint* waitList, nint* evt);

    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial int clEnqueueReadBuffer(nint queue, nint buffer, uint blocking, nuint offset, nuint size, void* ptr,
        uint numEvents, nint* waitList, nint* evt);

    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial int clEnqueueFillBuffer(nint queue, nint buffer, void* pattern, nuint patternSize, nuint offset, nuint size,
        uint numEvents, nint* waitList, nint* evt);

    // --- programs / kernels ---
    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial nint clCreateProgramWithSource(nint context, uint count, byte** strings, nuint* lengths, int* errcode);

    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial int clBuildProgram(nint program, uint numDevices, nint* devices, byte* options, nint pfnNotify, nint userData);

    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial int clGetProgramBuildInfo(nint program, nint device, uint paramName, nuint size, void* value, nuint* sizeRet);

    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial int clReleaseProgram(nint program);

    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial nint clCreateKernel(nint program, byte* name, int* errcode);

    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial int clSetKernelArg(nint kernel, uint index, nuint size, void* value);

    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial int clGetKernelWorkGroupInfo(nint kernel, nint device, uint paramName, nuint size, void* value, nuint* sizeRet);

    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial int clEnqueueNDRangeKernel(nint queue, nint kernel, uint workDim, nuint* globalOffset, nuint* globalSize,
        nuint* localSize, uint numEvents, nint* waitList, nint* evt);

    [LibraryImport(Lib)] [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    public static partial int clReleaseKernel(nint kernel);

    // --- loading ---

    /// <summary>Library names probed, in order, for the current OS.</summary>
    public static string[] Candidates =>
        OperatingSystem.IsWindows() ? ["OpenCL.dll"]
        : OperatingSystem.IsMacOS() ? ["/System/Library/Frameworks/OpenCL.framework/OpenCL", "libOpenCL.dylib"]
        : ["libOpenCL.so.1", "libOpenCL.so"];

    private static readonly Lazy<(nint Handle, string? Error)> Loaded = new(Load, LazyThreadSafetyMode.ExecutionAndPublication);

    private static (nint, string?) Load()
    {
        foreach (var name in Candidates)
        {
            if (NativeLibrary.TryLoad(name, out var h))
            {
                // An assembly may have only one DllImport resolver: it is shared with the CUDA bindings (NativeImports).
                try
                {
                    NativeImports.Register(Lib, h);
                }
                catch (InvalidOperationException)
                {
                    return (nint.Zero, "opencl: another DllImport resolver is already registered for GpuAttention; cannot bind OpenCL");
                }
                return (h, null);
            }
        }
        string hint = OperatingSystem.IsWindows() ? "install a GPU driver that ships OpenCL.dll"
            : OperatingSystem.IsMacOS() ? "the OpenCL framework is missing"
            : "install ocl-icd-libopencl1 and an ICD such as pocl-opencl-icd";
        return (nint.Zero, $"opencl: {Candidates[0]} not found ({hint})");
    }

    /// <summary>Loads the OpenCL library once; false with the reason when it is missing.</summary>
    public static bool TryLoad(out string? reason)
    {
        var (h, err) = Loaded.Value;
        reason = err;
        return h != nint.Zero;
    }

    // --- helpers ---

    /// <summary>Throws <see cref="OpenClException"/> unless <paramref name="err"/> is CL_SUCCESS.</summary>
    public static void Check(int err, string call)
    {
        if (err != CL_SUCCESS) throw new OpenClException(call, err);
    }

    public static string PlatformString(nint platform, uint param)
    {
        nuint size;
        Check(clGetPlatformInfo(platform, param, 0, null, &size), "clGetPlatformInfo");
        var buf = new byte[(int)size];
        fixed (byte* p = buf) Check(clGetPlatformInfo(platform, param, size, p, null), "clGetPlatformInfo");
        return Decode(buf);
    }

    public static string DeviceString(nint device, uint param)
    {
        nuint size;
        Check(clGetDeviceInfo(device, param, 0, null, &size), "clGetDeviceInfo");
        var buf = new byte[(int)size];
        fixed (byte* p = buf) Check(clGetDeviceInfo(device, param, size, p, null), "clGetDeviceInfo");
        return Decode(buf);
    }

    public static T DeviceValue<T>(nint device, uint param) where T : unmanaged
    {
        T v = default;
        Check(clGetDeviceInfo(device, param, (nuint)sizeof(T), &v, null), "clGetDeviceInfo");
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
