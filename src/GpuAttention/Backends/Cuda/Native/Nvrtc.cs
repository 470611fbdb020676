using System.Runtime.InteropServices;

namespace GpuAttention.Backends.Cuda.Native;

/// <summary>
/// Hand-written bindings to NVRTC, the CUDA runtime compiler (CUDA C++ → PTX; needs no GPU). Loaded lazily by
/// <see cref="TryLoad"/>, which probes the CUDA 13, 12 and 11.2+ sonames (and the Windows DLL names), then
/// <c>$CUDA_PATH</c> and <c>/usr/local/cuda</c>; <c>GPUATTENTION_NVRTC</c> names a library file to use instead.
/// The import name "nvrtc" is resolved through <see cref="NativeImports"/>.
/// </summary>
internal static unsafe partial class Nvrtc
{
    private const string Lib = "nvrtc";

    public const int NVRTC_SUCCESS = 0;
    public const int NVRTC_ERROR_COMPILATION = 6;

    [LibraryImport(Lib)] public static partial int nvrtcVersion(int* major, int* minor);
    [LibraryImport(Lib)] public static partial int nvrtcGetNumSupportedArchs(int* count);
    [LibraryImport(Lib)] public static partial int nvrtcGetSupportedArchs(int* archs);
    [LibraryImport(Lib)] public static partial int nvrtcCreateProgram(nint* program, byte* source, byte* name, int numHeaders, byte** headers, byte** includeNames);
    [LibraryImport(Lib)] public static partial int nvrtcDestroyProgram(nint* program);
    [LibraryImport(Lib)] public static partial int nvrtcCompileProgram(nint program, int numOptions, byte** options);
    [LibraryImport(Lib)] public static partial int nvrtcGetPTXSize(nint program, nuint* size);
    [LibraryImport(Lib)] public static partial int nvrtcGetPTX(nint program, byte* ptx);
    [LibraryImport(Lib)] public static partial int nvrtcGetProgramLogSize(nint program, nuint* size);
    [LibraryImport(Lib)] public static partial int nvrtcGetProgramLog(nint program, byte* log);
    [LibraryImport(Lib)] public static partial byte* nvrtcGetErrorString(int result);

    /// <summary>Library names probed, in order, for the current OS.</summary>
    public static string[] Candidates
    {
        get
        {
            var names = OperatingSystem.IsWindows()
                ? new[] { "nvrtc64_130_0.dll", "nvrtc64_120_0.dll", "nvrtc64_112_0.dll" }
                : OperatingSystem.IsMacOS() ? []
                : new[] { "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so" };
            var list = new List<string>();
            if (Environment.GetEnvironmentVariable("GPUATTENTION_NVRTC") is { Length: > 0 } explicitPath) list.Add(explicitPath);
            list.AddRange(names);
            foreach (var root in new[] { Environment.GetEnvironmentVariable("CUDA_PATH"), OperatingSystem.IsWindows() ? null : "/usr/local/cuda" })
            {
                if (string.IsNullOrEmpty(root)) continue;
                foreach (var sub in OperatingSystem.IsWindows() ? new[] { "bin", Path.Combine("bin", "x64") } : ["lib64", Path.Combine("targets", "x86_64-linux", "lib")])
                    foreach (var n in names) list.Add(Path.Combine(root, sub, n));
            }
            return list.ToArray();
        }
    }

    /// <summary>The short names of <see cref="Candidates"/> for messages, e.g. "libnvrtc.so.13, libnvrtc.so.12, ...".</summary>
    public static string CandidateNames => OperatingSystem.IsWindows()
        ? "nvrtc64_130_0.dll, nvrtc64_120_0.dll, nvrtc64_112_0.dll"
        : "libnvrtc.so.13, libnvrtc.so.12, libnvrtc.so.11.2, libnvrtc.so";

    private static readonly Lazy<(nint Handle, string? Loaded, string? Error)> LoadedLib = new(Load, LazyThreadSafetyMode.ExecutionAndPublication);

    private static (nint, string?, string?) Load()
    {
        if (OperatingSystem.IsMacOS()) return (nint.Zero, null, "nvrtc: CUDA is not available on macOS");
        if (!NativeImports.TryLoadFirst(Candidates, out var h, out var loaded))
            return (nint.Zero, null, $"nvrtc: none of {CandidateNames} found (install the CUDA toolkit's NVRTC, e.g. Debian's libnvrtc11.2 or pip's nvidia-cuda-nvrtc-cu12, or set GPUATTENTION_NVRTC)");
        try { NativeImports.Register(Lib, h); }
        catch (InvalidOperationException)
        {
            return (nint.Zero, null, "nvrtc: another DllImport resolver is already registered for GpuAttention; cannot bind NVRTC");
        }
        try
        {
            int major, minor;
            if (nvrtcVersion(&major, &minor) != NVRTC_SUCCESS) return (nint.Zero, null, $"nvrtc: nvrtcVersion failed in {loaded}");
        }
        catch (EntryPointNotFoundException e) { return (nint.Zero, null, $"nvrtc: {loaded} lacks an entry point ({e.Message})"); }
        return (h, loaded, null);
    }

    /// <summary>Loads NVRTC once; false with the reason when it is missing.</summary>
    public static bool TryLoad(out string? reason)
    {
        var (h, _, err) = LoadedLib.Value;
        reason = err;
        return h != nint.Zero;
    }

    /// <summary>The library file that was loaded (null when missing).</summary>
    public static string? LoadedFrom => LoadedLib.Value.Loaded;

    /// <summary>NVRTC's version, e.g. (11, 8). Call after <see cref="TryLoad"/> succeeded.</summary>
    public static (int Major, int Minor) Version()
    {
        int major, minor;
        Check(nvrtcVersion(&major, &minor), "nvrtcVersion");
        return (major, minor);
    }

    /// <summary>The virtual architectures this NVRTC can target, as numbers (e.g. 52 … 90), ascending.</summary>
    public static int[] SupportedArchs()
    {
        int n;
        try
        {
            if (nvrtcGetNumSupportedArchs(&n) != NVRTC_SUCCESS || n <= 0) return [];
        }
        catch (EntryPointNotFoundException) { return []; }   // NVRTC before 11.2
        var a = new int[n];
        fixed (int* p = a) Check(nvrtcGetSupportedArchs(p), "nvrtcGetSupportedArchs");
        Array.Sort(a);
        return a;
    }

    public static string ErrorString(int result)
    {
        try
        {
            var p = nvrtcGetErrorString(result);
            if (p != null) return Marshal.PtrToStringUTF8((nint)p) ?? $"NVRTC error {result}";
        }
        catch (DllNotFoundException) { }
        return $"NVRTC error {result}";
    }

    public static void Check(int result, string call)
    {
        if (result != NVRTC_SUCCESS) throw new InvalidOperationException($"nvrtc: {call} failed with {ErrorString(result)} ({result})");
    }
}
