using GpuAttention.Backends;
using GpuAttention.Backends.Ilgpu;
using GpuAttention.Reference;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// The ILGPU backend itself on ILGPU's CPU simulator (ilgpu:cpu): both GEMM tile configurations forced on odd shapes with tails
/// off every tile, the embedding API (a Device over a caller's accelerator and buffers), device specs and discovery.
/// The shared fixtures (GemmTests, MultiHeadAttentionTests, …) run on ilgpu:cpu through <see cref="TestUtil.Backends"/>.
/// </summary>
[TestFixture]
public class IlgpuBackendTests
{
    public record GemmCase(int Batch, int M, int N, int K, bool TA, bool TB, float Alpha, float Beta, bool ABatched = true, bool BBatched = true)
    {
        public override string ToString() => $"b{Batch} {M}x{N}x{K}{(TA ? " Aᵀ" : "")}{(TB ? " Bᵀ" : "")} α{Alpha} β{Beta}{(ABatched ? "" : " A-shared")}{(BBatched ? "" : " B-shared")}";
    }

    public static IEnumerable<TestCaseData> ForcedTileCases()
    {
        GemmCase[] cases =
        [
            new(2, 67, 71, 35, false, false, 1f, 0f),                 // 64-tiles: 2×2 per batch, tails of 3 / 7 rows and columns, K tail 3
            new(1, 33, 65, 17, true, true, -0.5f, 0.25f),
            new(3, 29, 13, 40, true, false, 2f, 1f, ABatched: false),
            new(2, 5, 70, 1, false, true, 1f, 0f, BBatched: false),
        ];
        foreach (var tile in new[] { IlgpuGemmTile.Large, IlgpuGemmTile.Small })
        foreach (var c in cases)
            yield return new TestCaseData(tile.ToString(), c).SetArgDisplayNames(tile.ToString(), c.ToString());
    }

    [TestCaseSource(nameof(ForcedTileCases))]
    public void GemmTileMatchesReference(string tileName, GemmCase c)
    {
        var tile = Enum.Parse<IlgpuGemmTile>(tileName);
        using var device = Device.Open("ilgpu:cpu");
        var be = (IlgpuBackend)device.Backend;
        be.GemmOps.Force = tile;
        var rng = new Random(TestUtil.Seed(tile + c.ToString()));
        int ba = c.ABatched ? c.Batch : 1, bb = c.BBatched ? c.Batch : 1;
        var a = TestUtil.Random(rng, (long)ba * c.M * c.K);
        var b = TestUtil.Random(rng, (long)bb * c.K * c.N);
        var c0 = TestUtil.Random(rng, (long)c.Batch * c.M * c.N);
        using var ta = device.Upload(a, ba, c.TA ? c.K : c.M, c.TA ? c.M : c.K);
        using var tb = device.Upload(b, bb, c.TB ? c.N : c.K, c.TB ? c.K : c.N);
        using var tc = device.Allocate(c.Batch, c.M, c.N);
        if (c.Beta == 0) device.Fill(tc, float.NaN);
        else device.Upload(tc, c0);
        device.Gemm(ta, tb, tc, c.TA, c.TB, c.Alpha, c.Beta);
        Assert.That(be.GemmOps.Choose(new GemmArgs { M = c.M, N = c.N, Batch = c.Batch }), Is.EqualTo(tile));
        var r = ReferenceOps.Gemm(a, b, c0, c.Batch, c.M, c.N, c.K, c.TA, c.TB, c.Alpha, c.Beta, c.ABatched, c.BBatched);
        TestUtil.AssertClose(device.Download(tc), r, 1e-5, "c");
    }

    [Test]
    public void GemmRunsOnTheIlgpuKernelNotTheFallback()
    {
        using var device = Device.Open("ilgpu:cpu");
        Assert.That(device.Kind, Is.EqualTo(BackendKind.Ilgpu));
        Assert.That(device.Spec, Is.EqualTo("ilgpu:cpu"));
        Assert.That(device.SupportsOp(OpKind.Gemm), Is.True);
        Assert.That(device.Name, Does.Contain("simulator"));
    }

    [Test]
    public void FillAndCopiesRoundTrip()
    {
        using var device = Device.Open("ilgpu:cpu");
        using var t = device.Allocate(3, 1001);
        device.Fill(t, 2.5f);
        Assert.That(device.Download(t), Is.All.EqualTo(2.5f));
        var data = Enumerable.Range(0, 3003).Select(i => (float)i).ToArray();
        device.Upload(t, data);
        Assert.That(device.Download(t), Is.EqualTo(data));
        using var empty = device.Allocate(0, 4);
        device.Fill(empty, 1f);
        Assert.That(device.Download(empty), Is.Empty);
    }

    /// <summary>What an engine written on ILGPU does: its own context, accelerator, stream and buffers; a Device over them; the
    /// op; its own buffers read back. Nothing is copied into library-owned memory and disposing the device leaves the
    /// accelerator usable.</summary>
    [Test]
    public void EmbeddedInACallersAcceleratorGemmWritesTheCallersBuffer()
    {
        using var context = Context.Create(b => b.CPU(CPUDeviceKind.Nvidia).Math(MathMode.Fast32BitOnly).EnableAlgorithms());
        using var accelerator = context.CreateCPUAccelerator(0);
        using var stream = accelerator.CreateStream();
        const int batch = 2, m = 37, n = 41, k = 19;
        var rng = new Random(13);
        var a = TestUtil.Random(rng, batch * m * k);
        var b = TestUtil.Random(rng, k * n);
        using var bufA = accelerator.Allocate1D(a);
        using var bufB = accelerator.Allocate1D(b);
        using var bufC = accelerator.Allocate1D<float>(batch * m * n + 5);       // the engine's buffer is larger: wrap a SubView
        bufC.MemSet(0xFF);                                                        // NaN poison
        accelerator.Synchronize();

        using (var device = Device.FromAccelerator(accelerator, stream))
        {
            Assert.That(device.Kind, Is.EqualTo(BackendKind.Ilgpu));
            Assert.That(device.Spec, Is.EqualTo("ilgpu:embedded"));
            using var ta = device.Wrap(bufA, batch, m, k);
            using var tb = device.Wrap(bufB.View, k, n);
            using var tc = device.Wrap(bufC.View.SubView(0, batch * m * n), batch, m, n);
            device.Gemm(ta, tb, tc, alpha: 0.5f);
            device.Synchronize();

            Assert.Throws<TensorShapeException>(() => device.Wrap(bufA.View, batch, m, k + 1));
            using var other = Device.Open("cpu");
            Assert.Throws<InvalidOperationException>(() => other.Wrap(bufA.View, batch, m, k));
        }
        Assert.That(accelerator.IsDisposed, Is.False, "the caller's accelerator stays open");

        var got = bufC.GetAsArray1D();                                           // the engine reads its own buffer
        var r = ReferenceOps.Gemm(a, b, new float[batch * m * n], batch, m, n, k, false, false, 0.5f, 0f, true, false);
        TestUtil.AssertClose(got.AsSpan(0, batch * m * n), r, 1e-5, "c");
        Assert.That(got.AsSpan(batch * m * n).ToArray(), Is.All.NaN, "elements past the wrapped view untouched");
        // The wrapped buffers still belong to the caller: usable after the device is gone.
        Assert.That(bufA.GetAsArray1D(), Is.EqualTo(a));
    }

    /// <summary>The same for attention: the engine's q, k, v, out, lse, grad_out and gradient buffers wrapped, SDPA forward and
    /// backward (GQA, causal, L ≠ S, tails off the tiles) run on the engine's stream, results read from the engine's buffers.</summary>
    [Test]
    public void EmbeddedInACallersAcceleratorSdpaWritesTheCallersBuffers()
    {
        using var context = Context.Create(b => b.CPU(CPUDeviceKind.Nvidia).Math(MathMode.Fast32BitOnly).EnableAlgorithms());
        using var accelerator = context.CreateCPUAccelerator(0);
        using var stream = accelerator.CreateStream();
        const int B = 1, Hq = 4, Hkv = 2, L = 37, S = 45, E = 17, Ev = 9;
        var rng = new Random(TestUtil.Seed("embedded sdpa"));
        var q = TestUtil.Random(rng, B * Hq * L * E);
        var k = TestUtil.Random(rng, B * Hkv * S * E);
        var v = TestUtil.Random(rng, B * Hkv * S * Ev);
        var g = TestUtil.Random(rng, B * Hq * L * Ev);
        using var bq = accelerator.Allocate1D(q);
        using var bk = accelerator.Allocate1D(k);
        using var bv = accelerator.Allocate1D(v);
        using var bg = accelerator.Allocate1D(g);
        using var bo = accelerator.Allocate1D<float>(B * Hq * L * Ev);
        using var bl = accelerator.Allocate1D<float>(B * Hq * L);
        using var bdq = accelerator.Allocate1D<float>(q.Length);
        using var bdk = accelerator.Allocate1D<float>(k.Length);
        using var bdv = accelerator.Allocate1D<float>(v.Length);
        foreach (var buf in new[] { bo, bl, bdq, bdk, bdv }) buf.MemSet(0xFF);   // NaN poison
        accelerator.Synchronize();

        var opts = new SdpaOptions(IsCausal: true);
        using (var device = Device.FromAccelerator(accelerator, stream))
        {
            Assert.That(device.SupportsOp(OpKind.Sdpa) && device.SupportsOp(OpKind.SdpaBackward), Is.True);
            using var tq = device.Wrap(bq, B, Hq, L, E);
            using var tk = device.Wrap(bk, B, Hkv, S, E);
            using var tv = device.Wrap(bv, B, Hkv, S, Ev);
            using var tg = device.Wrap(bg, B, Hq, L, Ev);
            using var to = device.Wrap(bo, B, Hq, L, Ev);
            using var tl = device.Wrap(bl, B, Hq, L);
            using var tdq = device.Wrap(bdq, B, Hq, L, E);
            using var tdk = device.Wrap(bdk, B, Hkv, S, E);
            using var tdv = device.Wrap(bdv, B, Hkv, S, Ev);
            device.Sdpa(tq, tk, tv, to, tl, null, opts);
            device.SdpaBackward(tq, tk, tv, to, tl, tg, tdq, tdk, tdv, null, opts);
            device.Synchronize();
        }
        float scale = 1f / MathF.Sqrt(E);
        var (o, lse) = ReferenceOps.SdpaForward(q, k, v, B, Hq, Hkv, L, S, E, Ev, scale, true, null, null);
        TestUtil.AssertClose(bo.GetAsArray1D(), o, 1e-5, "out");
        TestUtil.AssertClose(bl.GetAsArray1D(), lse, 1e-5, "lse");
        var (dq, dk, dv) = ReferenceOps.SdpaBackward(q, k, v, g, B, Hq, Hkv, L, S, E, Ev, scale, true, null, null);
        TestUtil.AssertClose(bdq.GetAsArray1D(), dq, 1e-4, "grad_q");
        TestUtil.AssertClose(bdk.GetAsArray1D(), dk, 1e-4, "grad_k");
        TestUtil.AssertClose(bdv.GetAsArray1D(), dv, 1e-4, "grad_v");
    }

    [Test]
    public void WrapRejectsAnotherAcceleratorsMemory()
    {
        using var context = Context.Create(b => b.CPU(CPUDeviceKind.Nvidia).Math(MathMode.Fast32BitOnly));
        using var acc1 = context.CreateCPUAccelerator(0);
        using var acc2 = context.CreateCPUAccelerator(0);
        using var buf = acc2.Allocate1D<float>(6);
        using var device = Device.FromAccelerator(acc1);
        var e = Assert.Throws<ArgumentException>(() => device.Wrap(buf, 2, 3))!;
        Assert.That(e.Message, Does.Contain("view"));
        using var s2 = acc2.CreateStream();
        Assert.Throws<ArgumentException>(() => Device.FromAccelerator(acc1, s2));
    }

    [TestCase("ilgpu:bogus")]
    [TestCase("ilgpu:cuda:x")]
    [TestCase("ilgpu:cuda:1:2")]
    [TestCase("ilgpu:cpu:-1")]
    public void MalformedSpecsAreArgumentErrors(string spec) =>
        Assert.Throws<ArgumentException>(() => Device.Open(spec).Dispose());

    [Test]
    public void SecondSimulatorAndMissingDevicesSayWhy()
    {
        var e = Assert.Throws<BackendUnavailableException>(() => Device.Open("ilgpu:cpu:1").Dispose())!;
        Assert.That(e.Message, Does.Contain("ilgpu:cpu"));
        if (IlgpuRuntime.Discover().All(d => d.Target != IlgpuTarget.Cuda))
        {
            e = Assert.Throws<BackendUnavailableException>(() => Device.Open("ilgpu:cuda").Dispose())!;
            Assert.That(e.Message, Does.StartWith("ilgpu:cuda"));
        }
        if (IlgpuRuntime.Discover().All(d => d.Target == IlgpuTarget.Cpu || d.Problem is not null))
        {
            // No GPU accelerator ILGPU accepts (this machine): plain "ilgpu" refuses, naming each reason, and never opens the simulator.
            e = Assert.Throws<BackendUnavailableException>(() => Device.Open("ilgpu").Dispose())!;
            Assert.That(e.Message, Does.Contain("ilgpu:cpu"));
            Assert.That(e.Message, Does.Contain("ilgpu:cuda"));
        }
    }

    [Test]
    public void AutoNeverPicksTheSimulator()
    {
        using var d = Device.Open("auto");
        Assert.That(d.Spec, Is.Not.EqualTo("ilgpu:cpu"));
        Assert.That(d.Name, Does.Not.Contain("simulator"));
    }

    [Test]
    public void ProbeExplainsIlgpu()
    {
        var ilgpu = Device.Probe().Where(d => d.Backend == BackendKind.Ilgpu).ToList();
        Assert.That(ilgpu.Select(d => d.Spec), Does.Contain("ilgpu").And.Contain("ilgpu:cpu"));
        Assert.That(ilgpu.Single(d => d.Spec == "ilgpu:cpu").Available, Is.True);
        foreach (var d in ilgpu.Where(d => !d.Available))
            Assert.That(d.Reason, Is.Not.Null.And.Not.Empty, $"{d.Spec} is missing without a reason");
        // PoCL (CPU OpenCL devices) has no generic address space: ILGPU refuses it, and the reason says so.
        foreach (var d in ilgpu.Where(d => d.Spec.StartsWith("ilgpu:opencl:", StringComparison.Ordinal) && d.Name.Contains("pthread", StringComparison.OrdinalIgnoreCase)))
        {
            Assert.That(d.Available, Is.False);
            Assert.That(d.Reason, Does.Contain("generic address space").IgnoreCase);
        }
        if (ilgpu.Any(d => d.Spec.StartsWith("ilgpu:opencl:", StringComparison.Ordinal) && !d.Available))
        {
            var spec = ilgpu.First(d => d.Spec.StartsWith("ilgpu:opencl:", StringComparison.Ordinal) && !d.Available).Spec;
            var e = Assert.Throws<BackendUnavailableException>(() => Device.Open(spec).Dispose())!;
            Assert.That(e.Message, Does.Contain("generic address space").Or.Contain("ILGPU"));
        }
    }

    /// <summary>`verify --backend ilgpu:cpu` on the families with ILGPU kernels (the whole table takes many minutes on the
    /// simulator: its GPU-sized MHA case alone is thousands of group barriers).</summary>
    [Test]
    public void VerifyOnTheSimulatorPassesTheGemmCases()
    {
        // Longer than CliRunner's 120 s: the simulator's speed depends on how busy the cores are.
        var psi = new System.Diagnostics.ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (var arg in new[] { Path.GetFullPath(CliRunner.CliPath), "verify", "--backend", "ilgpu:cpu", "--only", "gemm" }) psi.ArgumentList.Add(arg);
        using var p = System.Diagnostics.Process.Start(psi)!;
        var soTask = p.StandardOutput.ReadToEndAsync();
        var seTask = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(900_000)) { p.Kill(true); Assert.Fail("verify --backend ilgpu:cpu --only gemm did not finish in 900 s"); }
        var (code, so, se) = (p.ExitCode, soTask.Result, seTask.Result);
        Assert.That(code, Is.Zero, so + se);
        Assert.That(so, Does.Contain("verify on ilgpu:cpu"));
        Assert.That(so.TrimEnd().Split('\n')[^1], Does.Match(@"^[1-9]\d* passed, 0 failed$"));
    }

    [Test]
    public void DevicesCommandExplainsIlgpu()
    {
        var (code, so, _) = CliRunner.Run("devices");
        Assert.That(code, Is.EqualTo(0));
        Assert.That(so, Does.Contain("ilgpu:cpu"));
        Assert.That(so, Does.Match(@"(?m)^ilgpu\s"));
        if (!IlgpuRuntime.Discover().Any(d => d.Target == IlgpuTarget.Cuda))
            Assert.That(so, Does.Contain("ilgpu:cuda"));
    }
}
