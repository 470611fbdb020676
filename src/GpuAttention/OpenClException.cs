using GpuAttention.Backends.OpenCL.Native;

namespace GpuAttention;

/// <summary>An OpenCL call returned an error code; the message names the call and the CL error name.</summary>
public sealed class OpenClException : Exception
{
    /// <summary>Creates the exception for <paramref name="call"/> failing with <paramref name="error"/>.</summary>
    public OpenClException(string call, int error, string? detail = null)
        : base($"opencl: {call} failed with {Cl.ErrorName(error)} ({error})" + (detail is null ? "" : ": " + detail))
    {
        Call = call;
        Error = error;
    }

    /// <summary>The OpenCL function that failed, e.g. "clEnqueueNDRangeKernel".</summary>
    public string Call { get; }

    /// <summary>The raw cl_int error code.</summary>
    public int Error { get; }

    /// <summary>The CL error name, e.g. "CL_INVALID_WORK_GROUP_SIZE".</summary>
    public string ErrorName => Cl.ErrorName(Error);
}
