using System.Text.Json;
using GpuAttention.IO;
using GpuAttention.Reference;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>The CLI as a user runs it: files in, files out, exit codes and one-line errors.</summary>
[Category("Slow")]   // a process, a compiler or a tuning run: skipped by the fast tier (--filter TestCategory!=Slow)
public class CliTests
{
    private string _in = null!, _out = null!;

    [SetUp]
    public void Dirs() { _in = CliRunner.TempDir(); _out = CliRunner.TempDir(); }

    [TearDown]
    public void Clean() { Directory.Delete(_in, true); Directory.Delete(_out, true); }

    private float[] Save(string name, Random rng, params int[] shape)
    {
        var a = TestUtil.Random(rng, shape.Aggregate(1L, (x, d) => x * d));
        Npy.Write(Path.Combine(_in, name + ".npy"), NpyArray.FromFloats(a, shape));
        return a;
    }

    [Test]
    public void RunSdpaWritesOutAndLseMatchingTheReference([Values("cpu", "opencl", "cuda")] string backend)
    {
        if (backend != "cpu") { using var _ = TestUtil.OpenOrIgnore(backend); }
        var rng = new Random(11);
        var q = Save("q", rng, 1, 4, 9, 12); var k = Save("k", rng, 1, 2, 14, 12); var v = Save("v", rng, 1, 2, 14, 5);
        var mask = new bool[9 * 14];
        for (int i = 0; i < mask.Length; i++) mask[i] = rng.NextDouble() < 0.7;
        Npy.Write(Path.Combine(_in, "mask.npy"), NpyArray.FromBools(mask, 9, 14));
        var (code, so, se) = CliRunner.Run("run", "sdpa", "--backend", backend, "--in", _in, "--out", _out, "--causal", "--scale", "0.5", "--repeat", "3", "--warmup", "1");
        Assert.That(code, Is.Zero, se);
        var fm = mask.Select(b => b ? 0f : float.NegativeInfinity).ToArray();
        var (ro, rl) = ReferenceOps.SdpaForward(q, k, v, 1, 4, 2, 9, 14, 12, 5, 0.5f, true, fm, [9, 14]);
        var o = Npy.Read(Path.Combine(_out, "out.npy"));
        var l = Npy.Read(Path.Combine(_out, "lse.npy"));
        Assert.That(o.Shape, Is.EqualTo(new[] { 1, 4, 9, 5 }));
        Assert.That(l.Shape, Is.EqualTo(new[] { 1, 4, 9 }));
        TestUtil.AssertClose(o.Floats!, ro, 1e-5, "out");
        TestUtil.AssertClose(l.Floats!, rl, 1e-5, "lse");

        var last = so.TrimEnd().Split('\n')[^1];
        using var json = JsonDocument.Parse(last);
        Assert.That(json.RootElement.GetProperty("op").GetString(), Is.EqualTo("sdpa"));
        Assert.That(json.RootElement.GetProperty("repeats").GetInt32(), Is.EqualTo(3));
        Assert.That(json.RootElement.GetProperty("median_ms").GetDouble(), Is.GreaterThanOrEqualTo(json.RootElement.GetProperty("min_ms").GetDouble()));
        Assert.That(json.RootElement.GetProperty("device").GetString(), Is.Not.Empty);
    }

    [Test]
    public void DevicesListsCpuAndSaysWhyOthersAreMissing()
    {
        var (code, so, _) = CliRunner.Run("devices");
        Assert.That(code, Is.Zero);
        Assert.That(so, Does.StartWith("cpu"));
        Assert.That(so, Does.Contain("cuda"));
    }

    private void AssertFails(int expectedCode, string mustMention, params string[] args) => CliRunner.AssertFails(_out, expectedCode, mustMention, args);

    [Test]
    public void BadInputGivesOneLineErrorsAndWritesNothing()
    {
        var rng = new Random(3);
        Save("q", rng, 1, 2, 3, 4); Save("k", rng, 1, 2, 5, 4);
        AssertFails(1, "v: missing file", "run", "sdpa", "--in", _in, "--out", _out);
        Save("v", rng, 1, 2, 6, 4);
        AssertFails(1, "v:", "run", "sdpa", "--in", _in, "--out", _out);
        Save("v", rng, 1, 2, 5, 4);
        Save("k", rng, 1, 2, 5);
        AssertFails(1, "k:", "run", "sdpa", "--in", _in, "--out", _out);
        Save("k", rng, 1, 2, 5, 4);
        File.WriteAllBytes(Path.Combine(_in, "q.npy"), File.ReadAllBytes(Path.Combine(_in, "q.npy"))[..100]);
        AssertFails(1, "q: truncated", "run", "sdpa", "--in", _in, "--out", _out);
        File.WriteAllText(Path.Combine(_in, "q.npy"), "not numpy");
        AssertFails(1, "q: not a .npy", "run", "sdpa", "--in", _in, "--out", _out);
        Npy.Write(Path.Combine(_in, "q.npy"), NpyArray.FromBools(new bool[24], 1, 2, 3, 4));
        AssertFails(1, "q: expected float32", "run", "sdpa", "--in", _in, "--out", _out);
    }

    [Test]
    public void UsageErrorsExitWithTwo()
    {
        AssertFails(2, "unknown option '--bogus'", "run", "sdpa", "--in", _in, "--out", _out, "--bogus");
        AssertFails(2, "unknown OP 'nope'", "run", "nope", "--in", _in, "--out", _out);
        AssertFails(2, "--backend", "run", "sdpa", "--backend", "tpu", "--in", _in, "--out", _out);
        AssertFails(2, "--repeat", "run", "sdpa", "--in", _in, "--out", _out, "--repeat", "zero");
        AssertFails(2, "--in DIR is required", "run", "sdpa", "--out", _out);
    }
}

/// <summary>`gpuattention demo` end to end on the shipped image (small pixel count to stay fast).</summary>
public class DemoCliTests
{
    [Test]
    public void DemoWritesPicturesAndVerifies([Values("cpu", "opencl")] string backend)
    {
        if (backend != "cpu") { using var _ = TestUtil.OpenOrIgnore(backend); }
        var dir = CliRunner.TempDir();
        try
        {
            var (code, so, se) = CliRunner.Run("demo", "--backend", backend, "--out", dir, "--pixels", "600", "--repeat", "1");
            Assert.That(code, Is.Zero, so + se);
            Assert.That(so, Does.Contain("sdpa"));
            var overview = Path.Combine(dir, "sdpa_overview.png");
            Assert.That(File.Exists(overview), Is.True);
            var img = GpuAttention.Cli.Imaging.Image.Load(overview);
            Assert.That(img.Width, Is.GreaterThan(img.Height));
            foreach (var name in (string[])["sdpa_training.png", "glimpse_1.png", "glimpse_4.png", "glimpse_overview.png", "glimpse_learning.png",
                                            "spatial_crops.png", "spatial_learning.png"])
            {
                var path = Path.Combine(dir, name);
                Assert.That(File.Exists(path), Is.True, name);
                var pic = GpuAttention.Cli.Imaging.Image.Load(path);
                Assert.That(pic.Channels, Is.EqualTo(3), name);
                Assert.That(pic.Data.Max() - pic.Data.Min(), Is.GreaterThan(0.5f), $"{name} is nearly uniform");
            }
            foreach (var op in (string[])["sdpa backward", "glimpse forward", "glimpse backward", "affine_grid forward", "affine_grid backward",
                                          "grid_sample forward", "grid_sample backward", "spatial transform forward", "spatial transform backward"])
                Assert.That(so, Does.Contain(op));
            Assert.That(so, Does.Not.Contain("FAIL"));
            Assert.That(so, Does.Not.Contain("did NOT fall"));
            // Redirected: plain text, and the table (the lines drawn with box characters) fits 100 columns.
            Assert.That(so, Does.Not.Contain("\u001b"), "no ANSI escape codes in redirected output");
            var tableLines = so.Split('\n').Select(l => l.TrimEnd('\r')).Where(l => l.TrimStart().StartsWith('│') || l.StartsWith('╭') || l.StartsWith('╰')).ToList();
            Assert.That(tableLines, Has.Count.GreaterThan(10));
            Assert.That(tableLines.Max(l => l.Length), Is.LessThanOrEqualTo(100), string.Join("\n", tableLines));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void DemoTakesAJpegImage()
    {
        var dir = CliRunner.TempDir();
        try
        {
            var logo = GpuAttention.Cli.Imaging.Image.Load(Path.Combine(TestContext.CurrentContext.TestDirectory, "Fixtures", "logo.png"));
            var jpeg = Path.Combine(dir, "photo.jpg");
            GpuAttention.Cli.Imaging.ImageOps.Resize(logo, 320, 240).Save(jpeg);
            var outDir = Path.Combine(dir, "out");
            var (code, so, se) = CliRunner.Run("demo", "--image", jpeg, "--out", outDir, "--pixels", "100", "--repeat", "1");
            Assert.That(code, Is.Zero, so + se);
            Assert.That(so, Does.Contain("320×240 input"));
            Assert.That(File.Exists(Path.Combine(outDir, "sdpa_overview.png")), Is.True);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void DemoRejectsAMissingImage()
    {
        var (code, _, se) = CliRunner.Run("demo", "--image", "/nonexistent/picture.png");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(se, Does.Contain("picture.png"));
        Assert.That(se.TrimEnd().Split('\n'), Has.Length.EqualTo(1), se);
    }
}
