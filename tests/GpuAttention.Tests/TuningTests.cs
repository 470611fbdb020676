using GpuAttention.Backends.Kernels;
using GpuAttention.Backends.Kernels.Tuning;
using GpuAttention.Backends.OpenCL;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// The tuning model, cache and `tune` command: the cache round-trips; a cached winner changes the defines the backend launches
/// with and results stay correct; corrupt, stale, foreign and invalid cache contents are ignored with a warning; invalid
/// candidates are never run; `tune` on a tiny budget completes on PoCL and writes the cache; bad CLI input fails cleanly.
/// Each test uses its own temporary GPUATTENTION_TUNING_DIR (never the real home cache). OpenCL tests skip without OpenCL.
/// </summary>
[NonParallelizable]
[Category("Slow")]   // a process, a compiler or a tuning run: skipped by the fast tier (--filter TestCategory!=Slow)
public class TuningTests
{
    private string _dir = null!;

    [SetUp]
    public void TempCache()
    {
        _dir = CliRunner.TempDir();
        Environment.SetEnvironmentVariable("GPUATTENTION_TUNING_DIR", _dir);
    }

    [TearDown]
    public void Restore()
    {
        Environment.SetEnvironmentVariable("GPUATTENTION_TUNING_DIR", TuningCacheIsolation.Dir);
        Directory.Delete(_dir, true);
    }

    private static readonly TuningDeviceIdentity FakeId = new("opencl", "Some Platform", "Some Device (R) 9000", "1.2+test");

    private static TuningCacheEntry Entry(TuningSpace space, TuningParams p, string? hash = null) => new()
    {
        Family = space.Family,
        Params = p.Items.ToDictionary(i => i.Key, i => i.Value),
        SourceHash = hash ?? TuningCache.SourceHash(space),
        Shape = "test", Ms = 1.5, DefaultMs = 2.5, Rate = 3, Unit = "GFLOP/s", Tried = 7, TunedAt = "2026-01-01T00:00:00Z",
    };

    private static readonly KernelDeviceLimits Pocl = new(4096, 2 << 20, false);
    private static readonly TuningParams GemmAlt = TuningParams.Of(("TM", 16), ("TN", 64), ("TK", 8), ("WM", 2), ("WN", 8));
    private static readonly TuningParams SpatialAlt = TuningParams.Of(("CB", 16), ("TILE_P", 32), ("WG_P", 128), ("SCATTER_GROUPS", 4));
    private static readonly TuningParams GlimpseAlt = TuningParams.Of(("TILE_M", 16), ("TILE_N", 64), ("TILE_K", 8), ("WPT_M", 2), ("WPT_N", 4));

    [Test]
    public void CacheRoundTrips()
    {
        Assert.That(TuningCache.Directory, Is.EqualTo(Path.GetFullPath(_dir)));
        string path = TuningCache.Save(FakeId, [Entry(KernelBackend.GemmTuning, GemmAlt), Entry(KernelBackend.SpatialTuning, SpatialAlt)]);
        Assert.That(path, Is.EqualTo(TuningCache.PathFor(FakeId)));
        Assert.That(Path.GetFileName(path), Does.Match(@"^opencl-some-platform-some-device-r-9000-1\.2-test-[0-9a-f]{8}\.json$"));

        var warnings = new List<string>();
        var f = TuningCache.Load(FakeId, warnings.Add);
        Assert.That(warnings, Is.Empty);
        Assert.That(f, Is.Not.Null);
        Assert.That((f!.Backend, f.Platform, f.Device, f.Driver), Is.EqualTo((FakeId.Backend, FakeId.Platform, FakeId.Device, FakeId.Driver)));
        Assert.That(TuningCache.Lookup(f, path, KernelBackend.GemmTuning, TuningSpace.AnyKey, Pocl, warnings.Add), Is.EqualTo(GemmAlt));
        Assert.That(TuningCache.Lookup(f, path, KernelBackend.SpatialTuning, TuningSpace.AnyKey, Pocl, warnings.Add), Is.EqualTo(SpatialAlt));
        Assert.That(TuningCache.Lookup(f, path, KernelBackend.GlimpseTuning, TuningSpace.AnyKey, Pocl, warnings.Add), Is.Null, "no glimpse entry");
        Assert.That(f.Entries.Single(e => e.Family == "gemm").Ms, Is.EqualTo(1.5));

        // A second save replaces the family's entry and keeps the others.
        TuningCache.Save(FakeId, [Entry(KernelBackend.GemmTuning, KernelBackend.GemmTuning.Default(Pocl)), Entry(KernelBackend.GlimpseTuning, GlimpseAlt)]);
        f = TuningCache.Load(FakeId, warnings.Add)!;
        Assert.That(f.Entries.Select(e => e.Family), Is.EquivalentTo(new[] { "gemm", "glimpse", "grid-sample" }));
        Assert.That(TuningCache.Lookup(f, path, KernelBackend.GemmTuning, TuningSpace.AnyKey, Pocl, warnings.Add), Is.EqualTo(KernelBackend.GemmTuning.Default(Pocl)));
        Assert.That(TuningCache.Lookup(f, path, KernelBackend.GlimpseTuning, TuningSpace.AnyKey, Pocl, warnings.Add), Is.EqualTo(GlimpseAlt));
        Assert.That(warnings, Is.Empty);
    }

    [Test]
    public void CacheFolderFollowsXdgWhenTheVariableIsUnset()
    {
        string xdg = Path.Combine(_dir, "xdg");
        string? old = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        try
        {
            Environment.SetEnvironmentVariable("GPUATTENTION_TUNING_DIR", null);
            Environment.SetEnvironmentVariable("XDG_CACHE_HOME", xdg);
            Assert.That(TuningCache.Directory, Is.EqualTo(Path.Combine(xdg, "gpuattention", "tuning")));
        }
        finally
        {
            Environment.SetEnvironmentVariable("XDG_CACHE_HOME", old);
            Environment.SetEnvironmentVariable("GPUATTENTION_TUNING_DIR", _dir);
        }
    }

    [Test]
    public void BadEntriesAreIgnoredWithAWarning()
    {
        var warnings = new List<string>();
        string path = TuningCache.PathFor(FakeId);
        // Stale: the kernels changed since the entry was tuned.
        TuningCache.Save(FakeId, [Entry(KernelBackend.GemmTuning, GemmAlt, hash: "0000000000000000")]);
        Assert.That(TuningCache.Lookup(TuningCache.Load(FakeId, warnings.Add), path, KernelBackend.GemmTuning, TuningSpace.AnyKey, Pocl, warnings.Add), Is.Null);
        Assert.That(warnings, Has.One.Contains("stale"));
        // A value outside the declared candidates (never compiled by the tuner), and one the device cannot run.
        warnings.Clear();
        TuningCache.Save(FakeId, [Entry(KernelBackend.GemmTuning, GemmAlt.With("TM", 24))]);
        Assert.That(TuningCache.Lookup(TuningCache.Load(FakeId, warnings.Add), path, KernelBackend.GemmTuning, TuningSpace.AnyKey, Pocl, warnings.Add), Is.Null);
        Assert.That(warnings, Has.One.Contains("TM=24 is not one of the candidates"));
        warnings.Clear();
        TuningCache.Save(FakeId, [Entry(KernelBackend.GemmTuning, GemmAlt)]);   // 8 × 8 = 64 work-items
        var small = Pocl with { MaxWorkGroupSize = 32 };
        Assert.That(TuningCache.Lookup(TuningCache.Load(FakeId, warnings.Add), path, KernelBackend.GemmTuning, TuningSpace.AnyKey, small, warnings.Add), Is.Null);
        Assert.That(warnings, Has.One.Contains("work-group of 64 > 32"));
        // Another device's file under this device's name, another format version, broken JSON: the whole file is ignored.
        foreach (var (text, says) in new[]
        {
            (File.ReadAllText(path).Replace("Some Device (R) 9000", "Other Device"), "it is for opencl: Some Platform / Other Device"),
            (File.ReadAllText(path).Replace("\"version\": 1", "\"version\": 99"), "format version 99"),
            ("{ \"version\": 1, \"entries\": [ {", "not valid JSON"),
            ("null", "empty document"),
        })
        {
            warnings.Clear();
            File.WriteAllText(path, text);
            Assert.That(TuningCache.Load(FakeId, warnings.Add), Is.Null, says);
            Assert.That(warnings, Has.One.Contains(says).And.One.Contains("ignored"));
        }
    }

    [Test]
    public void DeclaredSpacesHaveValidDefaultsAndRespectTheDeviceLimits()
    {
        foreach (var limits in new[] { Pocl, KernelDeviceLimits.CudaGpu, new KernelDeviceLimits(64, 8 * 1024, true) })
            foreach (var space in TuningSpaces.All)
            {
                var def = space.Default(limits);
                Assert.That(space.Validate(def, limits), Is.Null, $"{space.Family} default {def} on {limits}");
                var order = space.CandidateOrder(limits, out int invalid);
                Assert.That(order[0], Is.EqualTo(def));
                Assert.That(order, Is.Unique);
                Assert.That(order.Count + invalid, Is.EqualTo(space.Knobs.Aggregate(1, (n, k) => n * k.Values.Length)));
                Assert.That(order.All(p => space.Validate(p, limits) is null));
            }
        // The built-in defaults are the configurations the compile checks cover (ShippedKernelConfigs).
        var shipped = KernelBackend.ShippedKernelConfigs(KernelDeviceLimits.CudaGpu).Select(c => c.Defines).ToList();
        Assert.That(shipped, Does.Contain(KernelBackend.GemmConfig(false, true, KernelDeviceLimits.CudaGpu).Defines));
        Assert.That(shipped, Does.Contain(KernelBackend.GlimpseGemmConfig(KernelDeviceLimits.CudaGpu).Defines));
        Assert.That(new KernelDeviceLimits(64, 8 * 1024, true) is var tiny && KernelBackend.GemmTuning.CandidateOrder(tiny, out int inv) is var o
            && inv > 0 && o.All(p => p["TM"] / p["WM"] * (p["TN"] / p["WN"]) <= 64), "candidates over the work-group limit are left out");
    }

    [Test]
    public void CachedWinnersChangeTheLaunchedDefinesAndResultsStayCorrect()
    {
        TuningDeviceIdentity id;
        using (var probe = TestUtil.OpenOrIgnore("opencl")) id = ((KernelBackend)probe.Backend).TuningIdentity;
        TuningCache.Save(id, [Entry(KernelBackend.GemmTuning, GemmAlt), Entry(KernelBackend.SpatialTuning, SpatialAlt), Entry(KernelBackend.GlimpseTuning, GlimpseAlt)]);

        using var dev = Device.Open("opencl");
        var be = (OpenClBackend)dev.Backend;
        string gemmDefines = "-DTM=16 -DTN=64 -DTK=8 -DWM=2 -DWN=8 -DTRANS_A=0 -DTRANS_B=0";
        Assert.That(be.GemmConfig(false, false).Defines, Is.EqualTo(gemmDefines));
        Assert.That(be.SpatialDefines, Does.StartWith("-DCB=16 -DTILE_P=32 "));
        Assert.That(be.GlimpseGemmConfig().Defines, Does.StartWith("-DTILE_M=16 -DTILE_N=64 -DTILE_K=8 -DWPT_M=2 -DWPT_N=4 "));
        Assert.That(be.TuningWarnings, Is.Empty);
        // Every workload's reference checks (odd shapes, both transposes, every path) pass with the cached tiles ...
        foreach (var w in TuningWorkloads.All)
            foreach (var c in w.Check(dev))
                Assert.That(c.Passed, $"{w.Space.Family}: {c.Name}: relative error {c.Error:E2} > {c.Bound:E0}");
        // ... and those are the programs that were built and launched.
        Assert.That(be.Programs.Contains("gemm.cl", gemmDefines));
        Assert.That(be.Programs.Contains("spatial.cl", be.SpatialDefines));
        Assert.That(be.Programs.Contains("glimpse.cl", be.GlimpseGemmConfig().Defines));
        Assert.That(be.Programs.Contains("gemm.cl", KernelBackend.GemmConfig(false, false, be.Limits).Defines), Is.False, "the default gemm tiles were not used");
    }

    [Test]
    public void CorruptCacheFileIsIgnoredWithAWarningAndOpsRunOnDefaults()
    {
        TuningDeviceIdentity id;
        using (var probe = TestUtil.OpenOrIgnore("opencl")) id = ((KernelBackend)probe.Backend).TuningIdentity;
        Directory.CreateDirectory(_dir);
        File.WriteAllText(TuningCache.PathFor(id), "{ this is not json");

        var warned = new List<string>();
        var old = TuningCache.Warn;
        TuningCache.Warn = warned.Add;
        try
        {
            using var dev = Device.Open("opencl");
            var be = (KernelBackend)dev.Backend;
            Assert.That(be.GemmConfig(false, false).Defines, Is.EqualTo(KernelBackend.GemmConfig(false, false, be.Limits).Defines));
            Assert.That(be.Tuned(KernelBackend.SpatialTuning), Is.EqualTo(KernelBackend.SpatialTuning.Default(be.Limits)));
            var checks = TuningWorkloads.All.Single(w => w.Space.Family == "gemm").Check(dev);
            Assert.That(checks.All(c => c.Passed));
            Assert.That(be.TuningWarnings, Has.Count.EqualTo(1), "warned once, not at every choice");
            Assert.That(warned, Has.Count.EqualTo(1));
            Assert.That(warned[0], Does.Contain(TuningCache.PathFor(id)).And.Contain("ignored").And.Contain("not valid JSON"));
        }
        finally { TuningCache.Warn = old; }

        // The CLI says the same on stderr and carries on.
        var (code, so, se) = CliRunner.Run("tune", "--show", "--backend", "opencl");
        Assert.That(code, Is.Zero, se);
        Assert.That(se, Does.StartWith("gpuattention: warning: tuning cache ").And.Contain("not valid JSON"));
        Assert.That(se, Does.Not.Contain("   at "));
        Assert.That(so, Does.Contain("ignored (see the warning)"));
    }

    [Test]
    public void InvalidCandidatesAreNeverRun()
    {
        using var dev = TestUtil.OpenOrIgnore("opencl");
        var be = (KernelBackend)dev.Backend;
        var g = KernelBackend.GemmTuning;
        // The gemm space with one more constraint: TK = 8 "does not fit" this device.
        var space = new TuningSpace
        {
            Family = g.Family, Files = g.Files, Knobs = g.Knobs, DefaultOf = g.DefaultOf,
            InvalidOf = (p, d, key) => p["TK"] == 8 ? "test: TK=8 does not fit" : g.InvalidOf(p, d, key),
        };
        var launched = new List<string>();
        var workload = new TuningWorkload(space, TuningSpace.AnyKey, "test", 2.0 * 40 * 40 * 40, "GFLOP/s",
            d =>
            {
                var a = d.Upload(new float[40 * 40], 40, 40);
                var c = d.Allocate(40, 40);
                return new TuningRun(() => { launched.Add(be.GemmConfig(false, false).Defines); d.Gemm(a, a, c); }, [a, c]);
            },
            d =>
            {
                launched.Add(be.GemmConfig(false, false).Defines);
                return TuningWorkloads.All.Single(w => w.Space.Family == "gemm").Check(d);
            });
        var r = Tuner.Tune(dev, workload, budgetSeconds: 3, repeats: 1, TextWriter.Null);
        Assert.That(r.Candidates, Has.Count.GreaterThanOrEqualTo(2));
        Assert.That(r.Candidates.All(c => c.Accepted), string.Join("\n", r.Candidates.Select(c => c.Rejected)));
        Assert.That(r.Invalid, Is.GreaterThan(0));
        Assert.That(launched, Is.Not.Empty);
        Assert.That(launched, Has.None.Contains("-DTK=8"));
        Assert.That(r.Candidates.Select(c => c.Params["TK"]), Has.None.EqualTo(8));
        Assert.That(be.GemmConfig(false, false).Defines, Is.EqualTo(KernelBackend.GemmConfig(false, false, be.Limits).Defines), "the tuner's override is gone afterwards");
        Assert.Throws<ArgumentException>(() => be.SetTuningOverride(space, space.Default(be.Limits).With("TK", 8)));
    }

    [Test]
    public void TuneOnATinyBudgetCompletesAndWritesTheCache()
    {
        TuningDeviceIdentity id;
        using (var probe = TestUtil.OpenOrIgnore("opencl")) id = ((KernelBackend)probe.Backend).TuningIdentity;
        var (code, so, se) = CliRunner.Run("tune", "--backend", "opencl", "--op", "grid-sample,glimpse", "--budget", "1", "--repeat", "1");
        Assert.That(code, Is.Zero, so + se);
        Assert.That(so, Does.Contain("grid-sample [*]").And.Contain("glimpse [*]").And.Contain("(default)").And.Contain("winner:"));
        Assert.That(so, Does.Contain("load average"));
        Assert.That(so, Does.Not.Contain("gemm [*]"));
        string path = TuningCache.PathFor(id);
        Assert.That(so, Does.Contain("wrote 2 winners to " + path));
        var warnings = new List<string>();
        var f = TuningCache.Load(id, warnings.Add);
        Assert.That(f, Is.Not.Null, string.Join("\n", warnings));
        Assert.That(f!.Entries.Select(e => e.Family), Is.EquivalentTo(new[] { "grid-sample", "glimpse" }));
        Assert.That(f.Entries.All(e => e.Ms > 0 && e.Tried >= 1 && e.Rate > 0));

        // The next process reads it: `tune --show` and `devices` say where it is and what it holds.
        (code, so, se) = CliRunner.Run("tune", "--show", "--backend", "opencl");
        Assert.That(code, Is.Zero, se);
        Assert.That(so, Does.Contain(Path.GetFileName(path)).And.Contain("grid-sample").And.Contain("current"));
        (code, so, _) = CliRunner.Run("devices");
        Assert.That(so, Does.Contain($"tuning cache: {Path.GetFullPath(_dir)} (1 device file"));

        // A dry run compiles, runs and writes nothing.
        File.Delete(path);
        (code, so, _) = CliRunner.Run("tune", "--backend", "opencl", "--dry-run");
        Assert.That(code, Is.Zero);
        Assert.That(so, Does.Contain("dry run").And.Contain("gemm [*]").And.Contain("valid"));
        Assert.That(File.Exists(path), Is.False);
    }

    [Test]
    public void BadTuneInputGivesOneLineErrors()
    {
        foreach (var (args, code, says) in new (string[], int, string)[]
        {
            (["tune", "--backend", "opencl", "--op", "attention"], 2, "--op: unknown op 'attention' (expected gemm, grid-sample, glimpse)"),
            (["tune", "--backend", "bogus"], 2, "--backend: expected cpu, opencl[:K], cuda[:K], ilgpu[:cuda[:K]|:opencl[:K]|:cpu] or auto, got 'bogus'"),
            (["tune", "--backend", "cpu"], 2, "only opencl[:K] and cuda[:K] have kernels to tune"),
            (["tune"], 2, "tune: expected --backend"),
            (["tune", "--backend", "opencl", "--budget", "-3"], 2, "--budget: expected a number of seconds > 0, got '-3'"),
            (["tune", "--backend", "opencl", "--frobnicate"], 2, "tune: unknown option '--frobnicate'"),
            (["tune", "--backend", "opencl:97"], 1, "opencl:97: no such device"),
            (["tune", "--backend", "cuda:0"], 1, "cuda"),
        })
        {
            if (args[^1] == "cuda:0")
                try { using var d = Device.Open("cuda"); continue; } catch (BackendUnavailableException) { }
            if (args[^1] == "opencl:97")
                try { using var d = Device.Open("opencl"); } catch (BackendUnavailableException) { continue; }
            var (c, so, se) = CliRunner.Run(args);
            string first = se.Split('\n')[0];
            Assert.That(c, Is.EqualTo(code), $"{string.Join(" ", args)}: {se}");
            Assert.That(first, Does.StartWith("gpuattention: ").And.Contain(says), string.Join(" ", args));
            Assert.That(se, Does.Not.Contain("   at ").And.Not.Contain("internal error"));
            Assert.That(se.TrimEnd('\n', '\r').Split('\n'), Has.Length.EqualTo(1), "one line: " + se);
            Assert.That(Directory.EnumerateFileSystemEntries(_dir), Is.Empty, "no cache written");
        }
    }
}
