using GpuAttention.Backends;
using GpuAttention.Backends.Cpu;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// The CPU backend's kernels allocate no managed memory per call in steady state, on every path (AVX-512 and portable
/// SDPA forward and backward, split-key decoding, GEMM micro-kernels, glimpse with and without gamma, channel-first and
/// channel-last grid_sample with several channel blocks, fused theta, affine_grid). Called on the backend directly, so
/// the Device layer's own allocations are not counted. Allocations are counted on the calling thread and the worker
/// pool's threads (<see cref="CpuWorkers.WorkerAllocatedBytes"/>), not on unrelated threads of the process (the test host,
/// the runtime's background threads); each case runs twice first (grow-only scratch), then three calls are measured, up
/// to eight times with pauses between, and the least is taken (a worker may take an item kind for the first time later
/// and grow its scratch once), while an allocation per call shows in every measurement.
/// </summary>
[NonParallelizable]
public class CpuBackendAllocationTests
{
    internal static long Allocated(Action op)
    {
        op(); op();
        long least = long.MaxValue;
        for (int attempt = 0; attempt < 8 && least > 0; attempt++)
        {
            if (attempt > 0) Thread.Sleep(25 * attempt);   // let other threads' work (the test host reporting results) pass
            long before = GC.GetAllocatedBytesForCurrentThread() + CpuWorkers.WorkerAllocatedBytes;
            op(); op(); op();
            least = Math.Min(least, GC.GetAllocatedBytesForCurrentThread() + CpuWorkers.WorkerAllocatedBytes - before);
        }
        return least;
    }

    [Test]
    public void SteadyStateKernelsAllocateNothing()
    {
        using var be = new CpuBackend();
        var rng = new Random(5);
        var buffers = new List<IDeviceBuffer>();
        IDeviceBuffer U(long n)
        {
            var b = be.Allocate(n);
            be.Write(b, 0, TestUtil.Random(rng, n));
            buffers.Add(b);
            return b;
        }
        IDeviceBuffer Z(long n) { var b = be.Allocate(n); buffers.Add(b); return b; }
        try
        {
            // SDPA: GQA 4 query heads over 2 kv heads, E 40 and Ev 24 (not multiples of 16: the padded layouts), a [L, S] mask.
            const int Bt = 1, Hq = 4, Hkv = 2, L = 150, S = 170, E = 40, Ev = 24;
            var q = U((long)Bt * Hq * L * E); var k = U((long)Bt * Hkv * S * E); var v = U((long)Bt * Hkv * S * Ev);
            var mask = U((long)L * S);
            var o = Z((long)Bt * Hq * L * Ev); var lse = Z((long)Bt * Hq * L); var go = U((long)Bt * Hq * L * Ev);
            var dq = Z((long)Bt * Hq * L * E); var dk = Z((long)Bt * Hkv * S * E); var dv = Z((long)Bt * Hkv * S * Ev);
            SdpaShape Shape(int l, bool causal, bool masked) => new(Bt, Hq, Hkv, l, S, E, Ev, 1f / MathF.Sqrt(E), causal,
                0, 0, masked ? S : 0, masked ? 1 : 0);
            var plain = Shape(L, false, false);
            var causal = Shape(L, true, false);
            var masked = Shape(L, false, true);
            // Decoding (L = 1, 2 kv heads of work, S = 600): the decode path (split keys); L = 40 on one head: the split keys of the other paths.
            const int DecS = 600;
            var dq1 = U((long)Hq * E); var dk1 = U((long)Hkv * DecS * E); var dv1 = U((long)Hkv * DecS * Ev);
            var do1 = Z((long)Hq * Ev); var dl1 = Z(Hq);
            var decode = new SdpaShape(1, Hq, Hkv, 1, DecS, E, Ev, 0.2f, false, 0, 0, 0, 0);
            var dq40 = U(40L * E); var do40 = Z(40L * Ev); var dl40 = Z(40);

            // GEMM: batch 3, 70×90 from K = 300 (two depth blocks), plain and transposed operands.
            var ga = U(3L * 70 * 300); var gb = U(3L * 300 * 90); var gc = U(3L * 70 * 90);
            var gemm = new GemmArgs(3, 70, 90, 300, false, false, 1f, 0f, ga, 0, 70 * 300, 300, gb, 0, 300 * 90, 90, gc, 0, 70 * 90, 90);
            var gemmT = new GemmArgs(3, 70, 90, 300, true, true, 0.5f, 1f, ga, 0, 70 * 300, 70, gb, 0, 300 * 90, 300, gc, 0, 70 * 90, 90);

            // Glimpse: 3 images, 5 channels, 40×48 → 9×11, with gamma (and grad log gamma) and without.
            var gs = new GlimpseShape(3, 5, 40, 48, 9, 11);
            var img = U(3L * 5 * 40 * 48);
            var prm = Z(18);
            be.Write(prm, 0, [10, 1, 1, 12, 1.2f, 0.9f, 20, 0.8f, 1, 22, 1, 1.1f, 15, 1, 1, 15, 1, 1]);
            var gam = U(3); var glo = Z(3L * 5 * 9 * 11); var glgo = U(3L * 5 * 9 * 11);
            var gimg = Z(3L * 5 * 40 * 48); var gprm = Z(18); var glg = Z(3);

            // grid_sample: 2 images, 40 channels (3 groups of 16; several channel blocks per image on both paths), 30×34 → 20×24.
            GridSampleShape Gs(GridSampleMode mode, GridSamplePadding pad) => new(2, 40, 30, 34, 20, 24, mode, pad, false);
            var gsIn = U(2L * 40 * 30 * 34); var grid = U(2L * 20 * 24 * 2); var theta = U(12);
            var gsOut = Z(2L * 40 * 20 * 24); var gsGo = U(2L * 40 * 20 * 24);
            var gsGi = Z(2L * 40 * 30 * 34); var gsGg = Z(2L * 20 * 24 * 2); var gsGt = Z(12);
            var bil = Gs(GridSampleMode.Bilinear, GridSamplePadding.Zeros);
            var nea = Gs(GridSampleMode.Nearest, GridSamplePadding.Reflection);
            var ag = Z(2L * 20 * 24 * 2); var agGt = Z(12);

            var cases = new List<(string Name, Action Op)>
            {
                ("sdpa", () => be.SdpaForward(new SdpaForwardArgs(plain, q, k, v, null, o, lse))),
                ("sdpa causal", () => be.SdpaForward(new SdpaForwardArgs(causal, q, k, v, null, o, lse))),
                ("sdpa mask", () => be.SdpaForward(new SdpaForwardArgs(masked, q, k, v, mask, o, lse))),
                ("sdpa decode (split keys)", () => be.SdpaForward(new SdpaForwardArgs(decode, dq1, dk1, dv1, null, do1, dl1))),
                ("sdpa backward", () => be.SdpaBackward(new SdpaBackwardArgs(plain, q, k, v, null, o, lse, go, dq, dk, dv))),
                ("sdpa backward causal mask", () => be.SdpaBackward(new SdpaBackwardArgs(Shape(L, true, true), q, k, v, mask, o, lse, go, dq, dk, dv))),
                ("sdpa backward one-pass form", () =>
                {
                    int saved = CpuBackend.BwdFusedMinItemsPerThread;
                    CpuBackend.BwdFusedMinItemsPerThread = 0;
                    try { be.SdpaBackward(new SdpaBackwardArgs(Shape(L, true, true), q, k, v, mask, o, lse, go, dq, dk, dv)); }
                    finally { CpuBackend.BwdFusedMinItemsPerThread = saved; }
                }),
                ("sdpa forward L = 40 split keys (not the decode path)", () => be.SdpaForward(new SdpaForwardArgs(
                    new SdpaShape(1, 1, 1, 40, DecS, E, Ev, 0.2f, false, 0, 0, 0, 0), dq40, dk1, dv1, null, do40, dl40))),
                ("gemm", () => be.Gemm(gemm)),
                ("gemm transposed", () => be.Gemm(gemmT)),
                ("glimpse", () => be.GlimpseForward(new GlimpseForwardArgs(gs, img, prm, null, glo))),
                ("glimpse gamma", () => be.GlimpseForward(new GlimpseForwardArgs(gs, img, prm, gam, glo))),
                ("glimpse backward", () => be.GlimpseBackward(new GlimpseBackwardArgs(gs, img, prm, null, glgo, gimg, gprm, null))),
                ("glimpse backward gamma", () => be.GlimpseBackward(new GlimpseBackwardArgs(gs, img, prm, gam, glgo, gimg, gprm, glg))),
                ("grid_sample", () => be.GridSample(new GridSampleArgs(bil, gsIn, grid, null, gsOut))),
                ("grid_sample nearest theta", () => be.GridSample(new GridSampleArgs(nea, gsIn, null, theta, gsOut))),
                ("grid_sample backward", () => be.GridSampleBackward(new GridSampleBackwardArgs(bil, gsIn, grid, null, gsGo, gsGi, gsGg, null))),
                ("grid_sample backward theta", () => be.GridSampleBackward(new GridSampleBackwardArgs(bil, gsIn, null, theta, gsGo, gsGi, null, gsGt))),
                ("affine_grid", () => be.AffineGrid(new AffineGridArgs(2, 20, 24, false, theta, ag))),
                ("affine_grid backward", () => be.AffineGridBackward(new AffineGridBackwardArgs(2, 20, 24, true, ag, agGt))),
            };

            var report = new List<string>();
            bool sdpaFast = CpuBackend.FastSdpa, gemmFast = CpuBackend.FastGemm, gridFast = CpuBackend.FastGridSample, always = CpuBackend.FastGridSampleAlways;
            try
            {
                foreach (bool fast in CpuPath.HasAvx512 ? new[] { true, false } : [false])
                {
                    CpuBackend.FastSdpa = CpuBackend.FastGemm = CpuBackend.FastGridSample = CpuBackend.FastGridSampleAlways = fast;
                    foreach (var (name, op) in cases)
                    {
                        long bytes = Allocated(op);
                        if (bytes != 0) report.Add($"{(fast ? "avx512" : "portable")} {name}: {bytes} B / 3 calls");
                    }
                }
            }
            finally
            {
                CpuBackend.FastSdpa = sdpaFast; CpuBackend.FastGemm = gemmFast; CpuBackend.FastGridSample = gridFast; CpuBackend.FastGridSampleAlways = always;
            }
            Assert.That(report, Is.Empty);
        }
        finally
        {
            foreach (var b in buffers) b.Dispose();
        }
    }
}
