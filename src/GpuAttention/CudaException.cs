using GpuAttention.Backends.Cuda.Native;

namespace GpuAttention;

/// <summary>A CUDA driver API call returned an error; the message names the call and the CUresult name.</summary>
public sealed class CudaException : Exception
{
    /// <summary>Creates the exception for <paramref name="call"/> failing with <paramref name="error"/>.</summary>
    public CudaException(string call, int error, string? detail = null)
        : base($"cuda: {call} failed with {Cu.ErrorName(error)} ({error})" + (detail is null ? "" : ": " + detail))
    {
        Call = call;
        Error = error;
    }

    /// <summary>The driver API function that failed, e.g. "cuLaunchKernel".</summary>
    public string Call { get; }

    /// <summary>The raw CUresult.</summary>
    public int Error { get; }
}
