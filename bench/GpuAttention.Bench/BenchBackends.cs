namespace GpuAttention.Bench;

/// <summary>
/// The backends a benchmark runs on: "cpu", "opencl", and "ilgpu" (ILGPU's CUDA or OpenCL accelerator) where
/// <see cref="Device.Probe"/> finds it: never ILGPU's CPU simulator, which is for verification. <c>$GPUATTENTION_BENCH_BACKENDS</c>
/// (comma-separated device specs, e.g. "cuda,ilgpu:cuda") replaces the list.
/// </summary>
public static class BenchBackends
{
    public static IEnumerable<string> List()
    {
        var env = Environment.GetEnvironmentVariable("GPUATTENTION_BENCH_BACKENDS");
        if (!string.IsNullOrWhiteSpace(env))
            return env.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var list = new List<string> { "cpu", "opencl" };
        if (Device.Probe().Any(d => d.Spec == "ilgpu" && d.Available)) list.Add("ilgpu");
        return list;
    }
}
