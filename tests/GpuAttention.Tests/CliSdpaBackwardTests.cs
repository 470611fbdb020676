using System.Text.Json;
using GpuAttention.IO;
using GpuAttention.Reference;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>`gpuattention run sdpa-backward` as a process: files in, gradients out, bad input rejected.</summary>
[Category("Slow")]   // a process, a compiler or a tuning run: skipped by the fast tier (--filter TestCategory!=Slow)
public class CliSdpaBackwardTests
{
    private string _in = null!, _out = null!;

    [SetUp] public void Dirs() { _in = CliRunner.TempDir(); _out = CliRunner.TempDir(); }
    [TearDown] public void Clean() { Directory.Delete(_in, true); Directory.Delete(_out, true); }

    private void Save(string name, float[] a, params int[] shape) => Npy.Write(Path.Combine(_in, name + ".npy"), NpyArray.FromFloats(a, shape));

    private static float[] F(double[] a) => a.Select(x => (float)x).ToArray();

    [Test]
    public void RunSdpaBackwardMatchesTheReference([Values("cpu", "opencl")] string backend)
    {
        if (backend != "cpu") { using var _ = TestUtil.OpenOrIgnore(backend); }
        int B = 1, Hq = 4, Hkv = 2, L = 11, S = 15, E = 12, Ev = 5;
        var rng = new Random(17);
        var q = TestUtil.Random(rng, B * Hq * L * E); var k = TestUtil.Random(rng, B * Hkv * S * E);
        var v = TestUtil.Random(rng, B * Hkv * S * Ev); var g = TestUtil.Random(rng, B * Hq * L * Ev);
        var mask = new bool[L * S];
        for (int i = 0; i < mask.Length; i++) mask[i] = rng.NextDouble() < 0.7;
        var fm = mask.Select(b => b ? 0f : float.NegativeInfinity).ToArray();
        var (ro, rl) = ReferenceOps.SdpaForward(q, k, v, B, Hq, Hkv, L, S, E, Ev, 0.5f, true, fm, [L, S]);
        Save("q", q, B, Hq, L, E); Save("k", k, B, Hkv, S, E); Save("v", v, B, Hkv, S, Ev);
        Npy.Write(Path.Combine(_in, "mask.npy"), NpyArray.FromBools(mask, L, S));
        Save("out", F(ro), B, Hq, L, Ev); Save("lse", F(rl), B, Hq, L); Save("grad_out", g, B, Hq, L, Ev);

        var (code, so, se) = CliRunner.Run("run", "sdpa-backward", "--backend", backend, "--in", _in, "--out", _out, "--causal", "--scale", "0.5", "--repeat", "2");
        Assert.That(code, Is.Zero, se);
        var (rq, rk, rv) = ReferenceOps.SdpaBackward(q, k, v, g, B, Hq, Hkv, L, S, E, Ev, 0.5f, true, fm, [L, S]);
        var dq = Npy.Read(Path.Combine(_out, "grad_q.npy"));
        var dk = Npy.Read(Path.Combine(_out, "grad_k.npy"));
        var dv = Npy.Read(Path.Combine(_out, "grad_v.npy"));
        Assert.That(dq.Shape, Is.EqualTo(new[] { B, Hq, L, E }));
        Assert.That(dk.Shape, Is.EqualTo(new[] { B, Hkv, S, E }));
        Assert.That(dv.Shape, Is.EqualTo(new[] { B, Hkv, S, Ev }));
        TestUtil.AssertClose(dq.Floats!, rq, 1e-4, "grad_q");
        TestUtil.AssertClose(dk.Floats!, rk, 1e-4, "grad_k");
        TestUtil.AssertClose(dv.Floats!, rv, 1e-4, "grad_v");
        using var json = JsonDocument.Parse(so.TrimEnd().Split('\n')[^1]);
        Assert.That(json.RootElement.GetProperty("op").GetString(), Is.EqualTo("sdpa-backward"));
        Assert.That(json.RootElement.GetProperty("repeats").GetInt32(), Is.EqualTo(2));
    }

    private void AssertFails(string mustMention)
    {
        var (code, so, se) = CliRunner.Run("run", "sdpa-backward", "--in", _in, "--out", _out);
        Assert.That(code, Is.EqualTo(1), $"stdout: {so}\nstderr: {se}");
        Assert.That(se, Does.Contain(mustMention));
        Assert.That(se.TrimEnd().Split('\n'), Has.Length.EqualTo(1), "one short message");
        Assert.That(Directory.EnumerateFileSystemEntries(_out), Is.Empty, "nothing written on failure");
    }

    [Test]
    public void BadInputIsRejectedAndNothingIsWritten()
    {
        var rng = new Random(2);
        Save("q", TestUtil.Random(rng, 24), 1, 2, 3, 4); Save("k", TestUtil.Random(rng, 20), 1, 1, 5, 4);
        Save("v", TestUtil.Random(rng, 10), 1, 1, 5, 2);
        Save("out", TestUtil.Random(rng, 12), 1, 2, 3, 2); Save("lse", TestUtil.Random(rng, 6), 1, 2, 3);
        AssertFails("grad_out: missing file");
        Save("grad_out", TestUtil.Random(rng, 18), 1, 2, 3, 3);
        AssertFails("grad_out: expected [B, Hq, L, Ev] = [1, 2, 3, 2], got [1, 2, 3, 3]");
        Save("grad_out", TestUtil.Random(rng, 12), 1, 2, 3, 2);
        Save("lse", TestUtil.Random(rng, 6), 2, 3);
        AssertFails("lse: expected [B, Hq, L] = [1, 2, 3], got [2, 3]");
        Save("lse", TestUtil.Random(rng, 6), 1, 2, 3);
        Npy.Write(Path.Combine(_in, "out.npy"), NpyArray.FromBools(new bool[12], 1, 2, 3, 2));
        AssertFails("out: expected float32");
    }
}
