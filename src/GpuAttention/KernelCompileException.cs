namespace GpuAttention;

/// <summary>
/// A kernel failed to compile, whichever compiler the backend uses: the OpenCL driver's <c>clBuildProgram</c>
/// (<see cref="Compiler"/> = "opencl"), NVRTC for the CUDA backend ("nvrtc"), or ILGPU's kernel compiler ("ilgpu").
/// The message names the compiler, the kernel source and the options, followed by the compiler's full log.
/// </summary>
public sealed class KernelCompileException : Exception
{
    /// <summary>Creates the exception for <paramref name="source"/> compiled by <paramref name="compiler"/> with
    /// <paramref name="options"/>; <paramref name="error"/> is the compiler's error name or code.</summary>
    public KernelCompileException(string compiler, string source, string options, string log, string error, Exception? inner = null)
        : base($"{compiler}: kernel {source} failed to compile ({error}; options: {options}); log:\n{log}", inner)
    {
        Compiler = compiler;
        SourceName = source;
        Options = options;
        Log = log;
    }

    /// <summary>Which compiler failed: "opencl", "nvrtc" or "ilgpu".</summary>
    public string Compiler { get; }

    /// <summary>The name of the kernel source (e.g. "sdpa.cl", or the kernel method for ILGPU).</summary>
    public string SourceName { get; }

    /// <summary>The compiler options (defines, architecture).</summary>
    public string Options { get; }

    /// <summary>The compiler's full build log.</summary>
    public string Log { get; }
}
