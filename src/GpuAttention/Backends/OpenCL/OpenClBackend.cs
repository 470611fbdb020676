namespace GpuAttention.Backends.OpenCL;

/// <summary>One OpenCL device found by <see cref="OpenClBackend.Enumerate"/>.</summary>
internal sealed record OpenClDeviceInfo(string Name, string Platform, bool IsGpu, string Description);

/// <summary>PLACEHOLDER until the OpenCL bindings land.</summary>
internal sealed class OpenClBackend
{
    public static List<OpenClDeviceInfo> Enumerate() => throw new BackendUnavailableException("opencl: not built yet");
    public static IBackend Create(int index) => throw new BackendUnavailableException("opencl: not built yet");
}
