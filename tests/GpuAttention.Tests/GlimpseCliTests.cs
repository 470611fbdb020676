using System.Text.Json;
using GpuAttention.IO;
using GpuAttention.Reference;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>`run glimpse` and `run glimpse-backward` as a user runs them: files in, files out, exit codes, one-line errors.</summary>
[Category("Slow")]   // a process, a compiler or a tuning run: skipped by the fast tier (--filter TestCategory!=Slow)
public class GlimpseCliTests
{
    private string _in = null!, _out = null!;

    [SetUp] public void Dirs() { _in = CliRunner.TempDir(); _out = CliRunner.TempDir(); }
    [TearDown] public void Clean() { Directory.Delete(_in, true); Directory.Delete(_out, true); }

    private void Save(string name, float[] a, params int[] shape) => Npy.Write(Path.Combine(_in, name + ".npy"), NpyArray.FromFloats(a, shape));

    [Test]
    public void GlimpseAndBackwardMatchTheReference([Values("cpu", "opencl")] string backend)
    {
        if (backend != "cpu") { using var _ = TestUtil.OpenOrIgnore(backend); }
        int N = 2, C = 3, H = 19, W = 23, h = 6, w = 7;
        var rng = new Random(21);
        var img = TestUtil.Random(rng, N * C * H * W);
        var p = GlimpseTests.Params(rng, new GlimpseTests.Case(N, C, H, W, h, w));
        var g = TestUtil.Random(rng, N * C * h * w);
        Save("image", img, N, C, H, W); Save("params", p, N, 6); Save("grad_out", g, N, C, h, w);

        var (code, so, se) = CliRunner.Run("run", "glimpse", "--backend", backend, "--in", _in, "--out", _out, "--size", $"{h},{w}", "--repeat", "2");
        Assert.That(code, Is.Zero, se);
        var o = Npy.Read(Path.Combine(_out, "out.npy"));
        Assert.That(o.Shape, Is.EqualTo(new[] { N, C, h, w }));
        TestUtil.AssertClose(o.Floats!, ReferenceOps.GlimpseForward(img, p, N, C, H, W, h, w), 1e-5, "out");
        using (var json = JsonDocument.Parse(so.TrimEnd().Split('\n')[^1]))
            Assert.That(json.RootElement.GetProperty("op").GetString(), Is.EqualTo("glimpse"));

        (code, _, se) = CliRunner.Run("run", "glimpse-backward", "--backend", backend, "--in", _in, "--out", _out);
        Assert.That(code, Is.Zero, se);
        var (ri, rp, _) = ReferenceOps.GlimpseBackward(img, p, g, N, C, H, W, h, w);
        var gi = Npy.Read(Path.Combine(_out, "grad_image.npy"));
        var gp = Npy.Read(Path.Combine(_out, "grad_params.npy"));
        Assert.That(gi.Shape, Is.EqualTo(new[] { N, C, H, W }));
        Assert.That(gp.Shape, Is.EqualTo(new[] { N, 6 }));
        TestUtil.AssertClose(gi.Floats!, ri, 1e-4, "grad_image");
        TestUtil.AssertClose(gp.Floats!, rp, 1e-4, "grad_params");
    }

    private void AssertFails(int expectedCode, string mustMention, params string[] args) => CliRunner.AssertFails(_out, expectedCode, mustMention, args);

    [Test]
    public void BadInputGivesOneLineErrorsAndWritesNothing()
    {
        var rng = new Random(4);
        Save("image", TestUtil.Random(rng, 2 * 1 * 5 * 6), 2, 1, 5, 6);
        AssertFails(2, "--size", "run", "glimpse", "--in", _in, "--out", _out);
        AssertFails(1, "params: missing file", "run", "glimpse", "--in", _in, "--out", _out, "--size", "3,3");
        Save("params", TestUtil.Random(rng, 12), 3, 4);
        AssertFails(1, "params: expected [N, 6] = [2, 6]", "run", "glimpse", "--in", _in, "--out", _out, "--size", "3,3");
        Save("params", TestUtil.Random(rng, 12), 2, 6);
        AssertFails(1, "grad_out: missing file", "run", "glimpse-backward", "--in", _in, "--out", _out);
        Save("grad_out", TestUtil.Random(rng, 2 * 2 * 3 * 3), 2, 2, 3, 3);
        AssertFails(1, "grad_out: expected [N, C, h, w] = [2, 1,", "run", "glimpse-backward", "--in", _in, "--out", _out);
        Save("image", TestUtil.Random(rng, 30), 5, 6);
        AssertFails(1, "image: expected rank 4", "run", "glimpse", "--in", _in, "--out", _out, "--size", "3,3");
        AssertFails(2, "--size", "run", "glimpse", "--in", _in, "--out", _out, "--size", "3");
    }
}
