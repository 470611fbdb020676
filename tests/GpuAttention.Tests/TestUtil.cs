using GpuAttention.Backends.Kernels;
using GpuAttention.Reference;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>Shared helpers: deterministic random data, opening a backend or skipping with the reason, error checks.</summary>
internal static class TestUtil
{
    /// <summary>A seed that is the same in every process (FNV-1a of <paramref name="key"/>, e.g. a test case's ToString()):
    /// GetHashCode of a record class mixes in its Type's hash and of strings is randomised per process, so seeds from them
    /// would give each test run other data.</summary>
    public static int Seed(string key)
    {
        uint h = 2166136261;
        foreach (char ch in key) { h ^= ch; h *= 16777619; }
        return (int)(h & 0x7fffffff);
    }

    public static float[] Random(Random rng, long n, float scale = 1f)
    {
        var a = new float[n];
        for (long i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        return a;
    }

    /// <summary>Opens a device, or marks the test ignored with the reason the backend is missing. A spec with the suffix
    /// <c>/sdpa=cpu|gpu</c> (see <see cref="SdpaBackends"/>) or <c>/spatial=cpu|gpu</c> (see <see cref="SpatialBackends"/>)
    /// forces that kernel variant of the family on a kernel backend.</summary>
    public static Device OpenOrIgnore(string spec)
    {
        string? family = null, variant = null;
        int slash = spec.IndexOf('/');
        if (slash >= 0)
        {
            var kv = spec[(slash + 1)..].Split('=', 2);
            (spec, family, variant) = (spec[..slash], kv[0], kv.Length > 1 ? kv[1] : "");
        }
        Device d;
        try { d = Device.Open(spec); }
        catch (BackendUnavailableException e) { Assert.Ignore(e.Message); throw; }
        if (family is not null)
        {
            var be = (KernelBackend)d.Backend;
            switch (family)
            {
                case "sdpa": be.SdpaVariant = KernelBackend.ParseVariant(variant); break;
                case "spatial":
                    be.SpatialVariant = KernelBackend.ParseVariant(variant, KernelBackend.SpatialVariantEnv);
                    // the CPU-device grad_input scatter on every shape (by default small N·C takes the chunked one)
                    if (be.SpatialVariant == KernelVariant.Cpu) be.ChannelLastScatterOverride = true;
                    break;
                default: d.Dispose(); throw new ArgumentException($"test backend spec: unknown kernel family '{family}' in '{spec}/{family}={variant}'");
            }
        }
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

    /// <summary>The spatial fixtures' backends: OpenCL once per grid_sample kernel variant (the CPU-device kernels
    /// grid_sample_*_blocked, with the channel-last grad_input scatter forced on every shape, and the GPU-style ones),
    /// whatever type the OpenCL device reports.</summary>
    public static readonly string[] SpatialBackends = ["cpu", "opencl/spatial=cpu", "opencl/spatial=gpu", "cuda"];
}
