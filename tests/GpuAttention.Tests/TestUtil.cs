using GpuAttention.Backends.Kernels;
using GpuAttention.Reference;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>Shared helpers: deterministic random data, opening a backend or skipping with the reason, error checks.</summary>
internal static class TestUtil
{
    public static float[] Random(Random rng, long n, float scale = 1f)
    {
        var a = new float[n];
        for (long i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        return a;
    }

    /// <summary>Opens a device, or marks the test ignored with the reason the backend is missing. A spec with the suffix
    /// <c>/sdpa=cpu</c> or <c>/sdpa=gpu</c> (see <see cref="SdpaBackends"/>) forces that SDPA kernel variant on a kernel backend.</summary>
    public static Device OpenOrIgnore(string spec)
    {
        string? variant = null;
        int slash = spec.IndexOf("/sdpa=", StringComparison.Ordinal);
        if (slash >= 0) (spec, variant) = (spec[..slash], spec[(slash + "/sdpa=".Length)..]);
        Device d;
        try { d = Device.Open(spec); }
        catch (BackendUnavailableException e) { Assert.Ignore(e.Message); throw; }
        if (variant is not null) ((KernelBackend)d.Backend).SdpaVariant = KernelBackend.ParseSdpaVariant(variant);
        return d;
    }

    public static void AssertClose(ReadOnlySpan<float> actual, ReadOnlySpan<double> reference, double bound, string what)
    {
        double rel = ReferenceOps.RelativeError(actual, reference);
        if (rel <= bound) return;
        string where = "";
        for (int i = 0; i < actual.Length; i++)
            if (double.IsFinite(reference[i]) != float.IsFinite(actual[i]) || !double.IsFinite(reference[i]) && !actual[i].Equals((float)reference[i]))
            {
                where = $"; first non-finite mismatch at [{i}]: {actual[i]} vs reference {reference[i]}";
                break;
            }
        Assert.That(rel, Is.LessThanOrEqualTo(bound), $"{what}: relative error {rel:E3} > {bound:E1} (max abs {ReferenceOps.MaxAbsError(actual, reference):E3}){where}");
    }

    public static readonly string[] Backends = ["cpu", "opencl", "cuda"];

    /// <summary>The SDPA fixtures' backends: OpenCL once per SDPA kernel variant (the CPU-device kernels of sdpa_cpu.cl and the
    /// GPU-style ones of sdpa.cl / sdpa_backward.cl), whatever type the OpenCL device reports.</summary>
    public static readonly string[] SdpaBackends = ["cpu", "opencl/sdpa=cpu", "opencl/sdpa=gpu", "cuda"];
}
