using GpuAttention.Backends;
using GpuAttention.Backends.Ilgpu;
using GpuAttention.Reference;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// The ILGPU SDPA kernels (kernels/ilgpu/Sdpa*.cs) through their launcher <see cref="IlgpuSdpa"/>, run directly on ILGPU's CPU
/// accelerator (a simulator with NVIDIA-like 32-wide warps) against the double reference: odd shapes with tails off every tile
/// (blocks of 16 or 32 rows, key tiles of 32), every head-dim bucket, masks in each broadcast form, GQA, causal L ≠ S, scale,
/// the split-key decode; outputs poisoned with NaN first. The simulator costs milliseconds per barrier: shapes stay small.
/// Also: every shipped configuration compiles to PTX for sm_80 and sm_90 (no GPU needed) without float64 or local memory.
/// </summary>
[NonParallelizable]
public class IlgpuSdpaKernelTests
{
    private Context _ctx = null!;
    private Accelerator _acc = null!;
    private IlgpuSdpa _sdpa = null!;

    [OneTimeSetUp]
    public void Open()
    {
        _ctx = Context.Create(b => b.CPU(CPUDeviceKind.Nvidia).Math(MathMode.Fast32BitOnly).EnableAlgorithms());
        _acc = _ctx.CreateCPUAccelerator(0);
        _sdpa = new IlgpuSdpa(_acc);
    }

    [OneTimeTearDown]
    public void Close()
    {
        _sdpa?.Dispose();
        _acc?.Dispose();
        _ctx?.Dispose();
    }

    public record Case(int B, int Hq, int Hkv, int L, int S, int E, int Ev, bool Causal = false, int[]? MaskShape = null, float? Scale = null,
        bool BoolMask = false, int SplitMinKeys = 512)
    {
        public override string ToString() =>
            $"B{B} Hq{Hq} Hkv{Hkv} L{L} S{S} E{E} Ev{Ev}{(Causal ? " causal" : "")}{(MaskShape is null ? "" : $" mask[{string.Join(",", MaskShape)}]{(BoolMask ? "bool" : "")}")}{(Scale is null ? "" : $" scale{Scale}")}{(SplitMinKeys != 512 ? $" split>={SplitMinKeys}" : "")}";
    }

    public static IEnumerable<Case> ForwardCases()
    {
        yield return new(1, 1, 1, 1, 1, 1, 1);
        yield return new(1, 1, 1, 5, 40, 1, 1);                            // E = Ev = 1, two key tiles
        yield return new(1, 2, 1, 37, 45, 17, 23);                         // GQA, tails off the 32-row block and the key tile
        yield return new(1, 3, 1, 9, 45, 64, 64);                          // bucket edge 64, GQA group of 3
        yield return new(1, 2, 2, 9, 7, 128, 96);
        yield return new(1, 1, 1, 17, 35, 200, 256);                       // 256 buckets (16-row blocks), 2 row blocks
        yield return new(1, 1, 1, 3, 5, 256, 65);
        yield return new(1, 1, 1, 4, 3, 65, 129);                          // odd head dims in the 128 / 256 buckets
        yield return new(2, 2, 2, 19, 41, 8, 5, Causal: true);             // causal, L < S
        yield return new(1, 2, 1, 45, 21, 16, 16, Causal: true);           // causal, L > S, GQA
        yield return new(1, 1, 1, 40, 40, 9, 7, Causal: true);             // causal, L = S over two blocks
        yield return new(2, 2, 1, 13, 29, 9, 11, MaskShape: [13, 29]);
        yield return new(2, 2, 1, 13, 29, 9, 11, MaskShape: [2, 1, 13, 29], BoolMask: true);
        yield return new(2, 3, 3, 13, 29, 9, 11, MaskShape: [1, 3, 13, 29]);
        yield return new(2, 2, 2, 13, 29, 9, 11, MaskShape: [2, 2, 13, 29], Causal: true, BoolMask: true);
        yield return new(1, 1, 1, 17, 19, 33, 3, MaskShape: [1, 19]);      // broadcast over rows
        yield return new(1, 2, 1, 21, 50, 31, 7, Scale: 0.37f);
        yield return new(2, 2, 1, 11, 37, 17, 23, Causal: true, MaskShape: [2, 2, 11, 37], Scale: 2f);
        yield return new(1, 2, 1, 1, 40, 16, 16);                          // L = 1 below the split threshold: the full kernel
        yield return new(1, 2, 1, 1, 300, 64, 64, SplitMinKeys: 64);       // decode: split keys (2 splits of 256)
        yield return new(2, 2, 2, 1, 600, 17, 130, SplitMinKeys: 64);      // decode, 3 splits, odd dims
        yield return new(1, 1, 1, 3, 333, 17, 5, MaskShape: [3, 333], SplitMinKeys: 64);   // decode, L = 3, mask + a fully masked row
        yield return new(1, 2, 1, 2, 300, 9, 9, Causal: true, SplitMinKeys: 1);           // causal decode: 2 visible keys, 1 split
    }

    public static IEnumerable<Case> BackwardCases()
    {
        yield return new(1, 1, 1, 1, 1, 1, 1);
        yield return new(1, 4, 2, 37, 45, 17, 23);                         // GQA, tails
        yield return new(1, 3, 1, 9, 40, 64, 64);                          // GQA group of 3, two key blocks
        yield return new(1, 1, 1, 9, 20, 130, 150);                        // 256 buckets (W = 2)
        yield return new(1, 1, 1, 5, 6, 256, 256);
        yield return new(1, 2, 2, 40, 7, 17, 23);
        yield return new(1, 2, 1, 1, 70, 16, 16);                          // L = 1
        yield return new(2, 2, 2, 19, 41, 9, 11, Causal: true);            // causal, L < S
        yield return new(1, 2, 1, 45, 21, 16, 16, Causal: true);           // causal, L > S, GQA
        yield return new(2, 2, 1, 13, 29, 9, 11, MaskShape: [13, 29]);
        yield return new(2, 2, 1, 13, 29, 9, 11, MaskShape: [2, 1, 13, 29], BoolMask: true);
        yield return new(2, 3, 3, 13, 29, 9, 11, MaskShape: [1, 3, 13, 29]);
        yield return new(2, 2, 2, 13, 29, 9, 11, MaskShape: [2, 2, 13, 29], Causal: true, BoolMask: true);
        yield return new(1, 1, 1, 17, 19, 17, 23, MaskShape: [1, 19]);     // broadcast over rows
        yield return new(1, 2, 1, 21, 40, 16, 16, Scale: 0.37f);
    }

    private static float[]? MakeMask(Random rng, Case c)
    {
        if (c.MaskShape is null) return null;
        long n = c.MaskShape.Aggregate(1L, (a, d) => a * d);
        var mask = new float[n];
        for (long i = 0; i < n; i++)
            mask[i] = c.BoolMask ? (rng.NextDouble() < 0.3 ? float.NegativeInfinity : 0f) : (rng.NextDouble() < 0.1 ? float.NegativeInfinity : (float)rng.NextDouble() * 2 - 1);
        if (c.MaskShape.Length >= 2 && c.MaskShape[^2] > 2)       // one fully masked row
            for (int j = 0; j < c.MaskShape[^1]; j++) mask[2 * c.MaskShape[^1] + j] = float.NegativeInfinity;
        return mask;
    }

    private static SdpaShape Shape(Case c) =>
        Device.ResolveSdpaShape([c.B, c.Hq, c.L, c.E], [c.B, c.Hkv, c.S, c.E], [c.B, c.Hkv, c.S, c.Ev], c.MaskShape, new SdpaOptions(c.Causal, c.Scale));

    private MemoryBuffer1D<float, Stride1D.Dense> Up(float[] data) => _acc.Allocate1D(data.Length == 0 ? [0f] : data);

    private MemoryBuffer1D<float, Stride1D.Dense> Poisoned(long n)
    {
        var a = new float[Math.Max(n, 1)];
        Array.Fill(a, float.NaN);
        return _acc.Allocate1D(a);
    }

    private static float[] Down(MemoryBuffer1D<float, Stride1D.Dense> b, long n) => b.GetAsArray1D()[..(int)n];

    private sealed record Data(float[] Q, float[] K, float[] V, float[] G, float[]? Mask);

    private static Data MakeData(Case c)
    {
        var rng = new Random(TestUtil.Seed(c.ToString()));
        var q = TestUtil.Random(rng, (long)c.B * c.Hq * c.L * c.E);
        var k = TestUtil.Random(rng, (long)c.B * c.Hkv * c.S * c.E);
        var v = TestUtil.Random(rng, (long)c.B * c.Hkv * c.S * c.Ev);
        var g = TestUtil.Random(rng, (long)c.B * c.Hq * c.L * c.Ev);
        return new(q, k, v, g, MakeMask(rng, c));
    }

    private (float[] O, float[] Lse) RunForward(Case c, Data d)
    {
        _sdpa.SplitMinKeys = c.SplitMinKeys;
        var s = Shape(c);
        long no = (long)c.B * c.Hq * c.L * c.Ev, nl = (long)c.B * c.Hq * c.L;
        using var q = Up(d.Q); using var k = Up(d.K); using var v = Up(d.V);
        using var m = d.Mask is null ? null : Up(d.Mask);
        using var o = Poisoned(no); using var l = Poisoned(nl);
        _sdpa.Forward(_acc.DefaultStream, s, q.View, k.View, v.View, m is null ? default : m.View, o.View, l.View);
        _acc.Synchronize();
        return (Down(o, no), Down(l, nl));
    }

    private (float[] Dq, float[] Dk, float[] Dv) RunBackward(Case c, Data d, float[] o, float[] lse)
    {
        var s = Shape(c);
        long nq = (long)c.B * c.Hq * c.L * c.E, nk = (long)c.B * c.Hkv * c.S * c.E, nv = (long)c.B * c.Hkv * c.S * c.Ev;
        using var q = Up(d.Q); using var k = Up(d.K); using var v = Up(d.V); using var g = Up(d.G);
        using var m = d.Mask is null ? null : Up(d.Mask);
        using var to = Up(o); using var tl = Up(lse);
        using var dq = Poisoned(nq); using var dk = Poisoned(nk); using var dv = Poisoned(nv);
        _sdpa.Backward(_acc.DefaultStream, s, q.View, k.View, v.View, m is null ? default : m.View, to.View, tl.View, g.View, dq.View, dk.View, dv.View);
        _acc.Synchronize();
        return (Down(dq, nq), Down(dk, nk), Down(dv, nv));
    }

    [TestCaseSource(nameof(ForwardCases))]
    public void ForwardMatchesReference(Case c)
    {
        var d = MakeData(c);
        float scale = c.Scale ?? 1f / MathF.Sqrt(c.E);
        var (ro, rl) = ReferenceOps.SdpaForward(d.Q, d.K, d.V, c.B, c.Hq, c.Hkv, c.L, c.S, c.E, c.Ev, scale, c.Causal, d.Mask, c.MaskShape);
        var (o, l) = RunForward(c, d);
        TestUtil.AssertClose(o, ro, 1e-5, "out");
        TestUtil.AssertClose(l, rl, 1e-5, "lse");
    }

    [TestCaseSource(nameof(BackwardCases))]
    public void BackwardMatchesReference(Case c)
    {
        var d = MakeData(c);
        float scale = c.Scale ?? 1f / MathF.Sqrt(c.E);
        var (rq, rk, rv) = ReferenceOps.SdpaBackward(d.Q, d.K, d.V, d.G, c.B, c.Hq, c.Hkv, c.L, c.S, c.E, c.Ev, scale, c.Causal, d.Mask, c.MaskShape);
        var (o, l) = RunForward(c, d);
        var (dq, dk, dv) = RunBackward(c, d, o, l);
        TestUtil.AssertClose(dq, rq, 1e-4, "grad_q");
        TestUtil.AssertClose(dk, rk, 1e-4, "grad_k");
        TestUtil.AssertClose(dv, rv, 1e-4, "grad_v");
    }

    [Test]
    public void FullyMaskedRowGivesZeroOutAndNegativeInfinityLse()
    {
        // Row 0 sees no key (the reference's convention: out = 0, lse = -inf; backward: grad_q = 0, nothing to dK, dV).
        var c = new Case(1, 1, 1, 3, 4, 2, 2, MaskShape: [3, 4], BoolMask: true);
        var mask = new float[] { float.NegativeInfinity, float.NegativeInfinity, float.NegativeInfinity, float.NegativeInfinity, 0, 0, float.NegativeInfinity, 0, 0, 0, 0, 0 };
        var d = new Data([1, 2, 3, 4, -1, 0.5f], [1, 0, 0, 1, 1, 1, -1, 2], [1, 2, 3, 4, 5, 6, 7, 8], [10, -10, 1, 2, 3, 4], mask);
        var (o, l) = RunForward(c, d);
        Assert.That(o[..2], Is.EqualTo(new float[] { 0, 0 }));
        Assert.That(l[0], Is.EqualTo(float.NegativeInfinity));
        var (dq, dk, dv) = RunBackward(c, d, o, l);
        Assert.That(dq[..2], Is.EqualTo(new float[] { 0, 0 }));
        var (rq, rk, rv) = ReferenceOps.SdpaBackward(d.Q, d.K, d.V, d.G, 1, 1, 1, 3, 4, 2, 2, 1f / MathF.Sqrt(2), false, mask, [3, 4]);
        TestUtil.AssertClose(dq, rq, 1e-4, "grad_q");
        TestUtil.AssertClose(dk, rk, 1e-4, "grad_k");
        TestUtil.AssertClose(dv, rv, 1e-4, "grad_v");
    }

    [Test]
    public void NonFiniteRowNeverReachesKeysWithZeroProbability()
    {
        // Query row 1 is NaN in q and in grad_out; causal hides keys 2.. from it: their dK, dV must stay finite.
        var c = new Case(1, 1, 1, 4, 5, 3, 2, Causal: true);
        var d = MakeData(c);
        d.Q[3] = float.NaN;
        d.G[2] = float.PositiveInfinity;
        var (o, l) = RunForward(c, d);
        var (_, dk, dv) = RunBackward(c, d, o, l);
        var (_, rk, rv) = ReferenceOps.SdpaBackward(d.Q, d.K, d.V, d.G, 1, 1, 1, 4, 5, 3, 2, 1f / MathF.Sqrt(3), true, null, null);
        for (int j = 2; j < 5; j++)
        {
            Assert.That(dk.Skip(j * 3).Take(3).All(float.IsFinite), Is.True, $"grad_k row {j}");
            Assert.That(dv.Skip(j * 2).Take(2).All(float.IsFinite), Is.True, $"grad_v row {j}");
        }
        TestUtil.AssertClose(dk, rk, 1e-4, "grad_k");
        TestUtil.AssertClose(dv, rv, 1e-4, "grad_v");
    }

    /// <summary>Central differences of loss = Σ out∘G through the double-precision forward (on the float inputs), against the
    /// kernels' backward: an independent check of the gradient formulas on GQA, causal and a mask with a fully masked row.</summary>
    [TestCase(false, false)]
    [TestCase(true, true)]
    public void BackwardMatchesFiniteDifferencesOfTheDoubleForward(bool causal, bool masked)
    {
        var c = new Case(1, 4, 2, 7, 9, 5, 6, causal, masked ? [7, 9] : null);
        var d = MakeData(c);
        var (o, l) = RunForward(c, d);
        var (gq, gk, gv) = RunBackward(c, d, o, l);
        double scale = 1.0 / Math.Sqrt(c.E);
        double[] q = d.Q.Select(x => (double)x).ToArray(), k = d.K.Select(x => (double)x).ToArray(), v = d.V.Select(x => (double)x).ToArray();
        double Loss()
        {
            var (y, _) = ReferenceOps.SdpaForward(q, k, v, c.B, c.Hq, c.Hkv, c.L, c.S, c.E, c.Ev, scale, c.Causal, d.Mask, c.MaskShape);
            double sum = 0;
            for (int i = 0; i < y.Length; i++) sum += y[i] * d.G[i];
            return sum;
        }
        const double h = 1e-5;
        foreach (var (host, grad, name) in new[] { (q, gq, "q"), (k, gk, "k"), (v, gv, "v") })
        {
            var numeric = new double[host.Length];
            for (int i = 0; i < host.Length; i++)
            {
                double x = host[i];
                host[i] = x + h; double up = Loss();
                host[i] = x - h; double down = Loss();
                host[i] = x;
                numeric[i] = (up - down) / (2 * h);
            }
            TestUtil.AssertClose(grad, numeric, 1e-4, $"grad_{name} vs finite differences");
        }
    }

    /// <summary>Central differences of loss = Σ out∘G through the kernels' own float forward, against their backward (a tiny
    /// causal, masked shape: every difference is two simulator launches).</summary>
    [Test]
    public void BackwardMatchesFiniteDifferencesOfTheKernelForward()
    {
        var c = new Case(1, 1, 1, 3, 4, 2, 2, Causal: true, MaskShape: [3, 4]);
        var d = MakeData(c);
        var (o, l) = RunForward(c, d);
        var (gq, gk, gv) = RunBackward(c, d, o, l);
        double Loss()
        {
            var (y, _) = RunForward(c, d);
            double sum = 0;
            for (int i = 0; i < y.Length; i++) if (float.IsFinite(y[i])) sum += (double)y[i] * d.G[i];
            return sum;
        }
        const float h = 1e-2f;
        foreach (var (host, grad, name) in new[] { (d.Q, gq, "q"), (d.K, gk, "k"), (d.V, gv, "v") })
        {
            var numeric = new double[host.Length];
            for (int i = 0; i < host.Length; i++)
            {
                float x = host[i];
                host[i] = x + h; double up = Loss();
                host[i] = x - h; double down = Loss();
                host[i] = x;
                numeric[i] = (up - down) / (2 * h);
            }
            TestUtil.AssertClose(grad, numeric, 2e-3, $"grad_{name} vs finite differences");
        }
    }

    [Test]
    public void BackwardIsBitForBitRepeatable()
    {
        var c = new Case(1, 2, 1, 9, 40, 5, 7, MaskShape: [9, 40]);   // GQA, two key blocks, a fully masked row
        var d = MakeData(c);
        var (o, l) = RunForward(c, d);
        var first = RunBackward(c, d, o, l);
        var second = RunBackward(c, d, o, l);
        Assert.That(second.Dq, Is.EqualTo(first.Dq).AsCollection, "grad_q");
        Assert.That(second.Dk, Is.EqualTo(first.Dk).AsCollection, "grad_k");
        Assert.That(second.Dv, Is.EqualTo(first.Dv).AsCollection, "grad_v");
    }

    [Test]
    public void EmptyDimensionsWriteZerosOrNothing()
    {
        // S = 0: every row fully masked (out 0, lse -inf; grad_q 0). L = 0: grad_k = grad_v = 0.
        var c = new Case(1, 2, 1, 3, 0, 4, 5);
        var d = MakeData(c);
        var (o, l) = RunForward(c, d);
        Assert.That(o.All(x => x == 0f) && l.All(float.IsNegativeInfinity), Is.True);
        var (dq, _, _) = RunBackward(c, d, o, l);
        Assert.That(dq.All(x => x == 0f), Is.True);
        var c2 = new Case(1, 2, 1, 0, 3, 4, 5);
        var d2 = MakeData(c2);
        var (_, dk, dv) = RunBackward(c2, d2, [], []);
        Assert.That(dk.All(x => x == 0f) && dv.All(x => x == 0f), Is.True);
    }

    [Test]
    public void ShippedConfigsCoverEveryBucketAndAreInTheRegistry()
    {
        var names = IlgpuSdpa.ShippedConfigs().Select(x => x.Name).ToList();
        Assert.That(names, Has.Count.EqualTo(9 * 4 + 2));
        Assert.That(names, Is.Unique);
        Assert.That(IlgpuKernelRegistry.All().Select(x => x.Name), Is.SupersetOf(names));
    }

    /// <summary>Every shipped configuration through ILGPU's PTX backend (no GPU needed): no float64 math crept in, and no
    /// local memory (register micro-tiles stayed scalars).</summary>
    [TestCase("sm_80")]
    [TestCase("sm_90")]
    public void EveryShippedConfigCompilesToPtx(string arch)
    {
        var a = arch == "sm_80" ? CudaArchitecture.SM_80 : CudaArchitecture.SM_90;
        using var ctx = Context.Create(b => b.Math(MathMode.Fast32BitOnly).EnableAlgorithms());
        using var backend = new PTXBackend(ctx, new CudaCapabilityContext(a), a, CudaInstructionSet.ISA_78, null);
        foreach (var cfg in IlgpuSdpa.ShippedConfigs())
        {
            var ck = backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(cfg.Method), default);
            string ptx = ((PTXCompiledKernel)ck).PTXAssembly;
            Assert.That(ptx, Does.Contain(".entry"), cfg.Name);
            Assert.That(ptx, Does.Not.Contain(".f64"), $"{cfg.Name}: float64 in the PTX");
            Assert.That(ptx, Does.Not.Contain(".local"), $"{cfg.Name}: local memory in the PTX");
        }
    }
}
