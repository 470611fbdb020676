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

    /// <summary>Opens a device, or marks the test ignored with the reason the backend is missing.</summary>
    public static Device OpenOrIgnore(string spec)
    {
        try { return Device.Open(spec); }
        catch (BackendUnavailableException e) { Assert.Ignore(e.Message); throw; }
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

    /// <summary>
    /// Skips the calling test on ILGPU's CPU simulator ("ilgpu:cpu"), which runs every GPU thread as an OS thread and every
    /// warp shuffle and barrier as a thread rendezvous: an SDPA backward of a few heads of 37 rows takes a minute there, a
    /// finite-difference sweep several. <paramref name="coveredBy"/> names the test that checks the same kernel behaviour on the
    /// simulator at a size it can afford (kept in the skip reason, so the report says where the coverage is).
    /// </summary>
    public static void SkipHeavyOnSimulator(string backend, string coveredBy)
    {
        if (backend == "ilgpu:cpu")
            Assert.Ignore($"ilgpu:cpu: too slow on ILGPU's CPU simulator (runs on ilgpu:cuda / ilgpu:opencl); on the simulator {coveredBy} covers it");
    }

    /// <summary>32×32 (query tile, key tile) pairs of an SDPA call, B·Hq·⌈L/32⌉·⌈S/32⌉: what its time on the simulator scales
    /// with (a backward costs the simulator about 1-2 s per pair on this project's 2-core VM; a forward about a fifth of that).</summary>
    public static long SdpaTilePairs(int b, int hq, int l, int s) => (long)b * hq * ((l + 31) / 32) * ((s + 31) / 32);

    /// <summary>Skips an SDPA case on "ilgpu:cpu" when it has more than <paramref name="maxTilePairs"/> tile pairs
    /// (<see cref="SdpaTilePairs"/>); the smaller cases of the same list still run there.</summary>
    public static void SkipLargeSdpaOnSimulator(string backend, int b, int hq, int l, int s, long maxTilePairs, string coveredBy)
    {
        long pairs = SdpaTilePairs(b, hq, l, s);
        if (backend == "ilgpu:cpu" && pairs > maxTilePairs)
            Assert.Ignore($"ilgpu:cpu: {pairs} tile pairs, above the {maxTilePairs} that ILGPU's CPU simulator runs in the suite (runs on ilgpu:cuda / ilgpu:opencl); on the simulator the smaller cases and {coveredBy} cover it");
    }

    /// <summary>Every fixture's backends. "ilgpu:cpu" is ILGPU's CPU simulator: families with an ILGPU kernel run it there, the rest
    /// fall back to the CPU backend with copies (<see cref="Device.SupportsOp"/>).</summary>
    public static readonly string[] Backends = ["cpu", "opencl", "cuda", "ilgpu:cpu"];
}
