using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// Op calls through the public <see cref="Device"/> API on the CPU backend allocate no managed memory in steady state (what
/// BenchmarkDotNet's MemoryDiagnoser reports for the benchmarks): validation, the op dispatch and the kernels together.
/// Measured as in <see cref="CpuBackendAllocationTests"/> (calling thread and worker pool, least of up to eight measurements
/// of three calls).
/// </summary>
[NonParallelizable]
public class DeviceAllocationTests
{
    [Test]
    public void SteadyStateOpsAllocateNothing()
    {
        using var d = Device.Open("cpu");
        var rng = new Random(3);
        Tensor U(params int[] shape)
        {
            long n = 1;
            foreach (var s in shape) n *= s;
            return d.Upload(TestUtil.Random(rng, n), shape);
        }
        // SDPA forward and backward (large enough for the AVX-512 path and the worker pool), GQA and causal.
        using var q = U(1, 4, 200, 64); using var k = U(1, 2, 300, 64); using var v = U(1, 2, 300, 64);
        using var o = d.Allocate(1, 4, 200, 64); using var lse = d.Allocate(1, 4, 200);
        using var go = U(1, 4, 200, 64);
        using var dq = d.Allocate(1, 4, 200, 64); using var dk = d.Allocate(1, 2, 300, 64); using var dv = d.Allocate(1, 2, 300, 64);
        var causal = new SdpaOptions(IsCausal: true);
        // GEMM, glimpse, grid_sample (channel-last path: 16 channels), affine_grid.
        using var a = U(3, 70, 50); using var b = U(3, 50, 90); using var c = d.Allocate(3, 70, 90);
        using var img = U(4, 16, 40, 48); using var prm = d.Upload([10, 1, 1, 12, 1.2f, 0.9f, 20, 0.8f, 1, 22, 1, 1.1f, 15, 1, 1, 15, 1, 1, 30, 1.1f, 1, 25, 1, 1], 4, 6);
        using var glo = d.Allocate(4, 16, 9, 11); using var glgo = U(4, 16, 9, 11);
        using var gi = d.Allocate(4, 16, 40, 48); using var gp = d.Allocate(4, 6);
        using var grid = U(4, 20, 24, 2); using var gso = d.Allocate(4, 16, 20, 24); using var gsgo = U(4, 16, 20, 24);
        using var gsgi = d.Allocate(4, 16, 40, 48); using var gsgg = d.Allocate(4, 20, 24, 2);
        using var theta = U(4, 2, 3); using var ag = d.Allocate(4, 20, 24, 2);

        var ops = new (string Name, Action Op)[]
        {
            ("sdpa", () => d.Sdpa(q, k, v, o, lse)),
            ("sdpa causal", () => d.Sdpa(q, k, v, o, lse, null, causal)),
            ("sdpa backward", () => d.SdpaBackward(q, k, v, o, lse, go, dq, dk, dv)),
            ("gemm", () => d.Gemm(a, b, c)),
            ("glimpse", () => d.Glimpse(img, prm, glo)),
            ("glimpse backward", () => d.GlimpseBackward(img, prm, glgo, gi, gp)),
            ("grid_sample", () => d.GridSample(img, grid, gso)),
            ("grid_sample backward", () => d.GridSampleBackward(img, grid, gsgo, gsgi, gsgg)),
            ("affine_grid", () => d.AffineGrid(theta, ag)),
        };
        var report = ops.Select(x => (x.Name, Bytes: CpuBackendAllocationTests.Allocated(x.Op))).ToList();
        Assert.That(report.Where(r => r.Bytes != 0).Select(r => $"{r.Name}: {r.Bytes} B"), Is.Empty);
    }
}
