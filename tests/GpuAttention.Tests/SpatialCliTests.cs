using GpuAttention.IO;
using GpuAttention.Reference;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>`gpuattention run affine-grid[-backward]` and `grid-sample[-backward]` as a user runs them.</summary>
[Category("Slow")]   // a process, a compiler or a tuning run: skipped by the fast tier (--filter TestCategory!=Slow)
public class SpatialCliTests
{
    private string _in = null!, _out = null!;

    [SetUp] public void Dirs() { _in = CliRunner.TempDir(); _out = CliRunner.TempDir(); }
    [TearDown] public void Clean() { Directory.Delete(_in, true); Directory.Delete(_out, true); }

    private float[] Save(string name, Random rng, float scale, params int[] shape)
    {
        var a = TestUtil.Random(rng, shape.Aggregate(1L, (x, d) => x * d), scale);
        Npy.Write(Path.Combine(_in, name + ".npy"), NpyArray.FromFloats(a, shape));
        return a;
    }

    private NpyArray Load(string name) => Npy.Read(Path.Combine(_out, name + ".npy"));

    private static void Ok((int Code, string Stdout, string Stderr) r) => Assert.That(r.Code, Is.Zero, r.Stderr);

    [Test]
    public void GridSampleForwardAndBackward([Values("cpu", "opencl")] string backend)
    {
        if (backend != "cpu") { using var _ = TestUtil.OpenOrIgnore(backend); }
        var rng = new Random(21);
        var input = Save("input", rng, 1f, 2, 3, 7, 6);
        var grid = Save("grid", rng, 1.5f, 2, 4, 5, 2);
        var gout = Save("grad_out", rng, 1f, 2, 3, 4, 5);
        var o = new GridSampleOptions(GridSampleMode.Bilinear, GridSamplePadding.Reflection, true);
        string[] opts = ["--backend", backend, "--in", _in, "--out", _out, "--mode", "bilinear", "--padding", "reflection", "--align-corners"];
        Ok(CliRunner.Run(["run", "grid-sample", .. opts]));
        Ok(CliRunner.Run(["run", "grid-sample-backward", .. opts, "--repeat", "2"]));
        var di = ReferenceOps.ToDouble(input); var dg = ReferenceOps.ToDouble(grid);
        var outp = Load("out");
        Assert.That(outp.Shape, Is.EqualTo(new[] { 2, 3, 4, 5 }));
        TestUtil.AssertClose(outp.Floats!, ReferenceOps.GridSample(di, dg, 2, 3, 7, 6, 4, 5, o), 1e-5, "out");
        var (rgi, rgg) = ReferenceOps.GridSampleBackward(di, dg, ReferenceOps.ToDouble(gout), 2, 3, 7, 6, 4, 5, o);
        TestUtil.AssertClose(Load("grad_input").Floats!, rgi, 1e-4, "grad_input");
        TestUtil.AssertClose(Load("grad_grid").Floats!, rgg, 1e-4, "grad_grid");
    }

    [Test]
    public void GridSampleBackwardAtomic([Values("cpu", "opencl")] string backend)
    {
        if (backend != "cpu") { using var _ = TestUtil.OpenOrIgnore(backend); }
        var rng = new Random(24);
        var input = Save("input", rng, 1f, 2, 3, 5, 4);
        var grid = Save("grid", rng, 0.4f, 2, 6, 7, 2);          // contracting: output points collide on input pixels
        var gout = Save("grad_out", rng, 1f, 2, 3, 6, 7);
        var o = new GridSampleOptions(GridSampleMode.Bilinear, GridSamplePadding.Border, false);
        Ok(CliRunner.Run("run", "grid-sample-backward", "--backend", backend, "--in", _in, "--out", _out, "--padding", "border", "--atomic"));
        var (rgi, rgg) = ReferenceOps.GridSampleBackward(ReferenceOps.ToDouble(input), ReferenceOps.ToDouble(grid), ReferenceOps.ToDouble(gout),
            2, 3, 5, 4, 6, 7, o);
        TestUtil.AssertClose(Load("grad_input").Floats!, rgi, 1e-4, "grad_input");
        TestUtil.AssertClose(Load("grad_grid").Floats!, rgg, 1e-4, "grad_grid");
    }

    [Test]
    public void AffineGridForwardAndBackward()
    {
        var rng = new Random(22);
        var theta = Save("theta", rng, 1f, 3, 2, 3);
        var gg = Save("grad_grid", rng, 1f, 3, 5, 4, 2);
        Ok(CliRunner.Run("run", "affine-grid", "--in", _in, "--out", _out, "--size", "5,4"));
        Ok(CliRunner.Run("run", "affine-grid-backward", "--in", _in, "--out", _out, "--size", "5,4"));
        var grid = Load("grid");
        Assert.That(grid.Shape, Is.EqualTo(new[] { 3, 5, 4, 2 }));
        TestUtil.AssertClose(grid.Floats!, ReferenceOps.AffineGrid(ReferenceOps.ToDouble(theta), 3, 5, 4, false), 1e-5, "grid");
        TestUtil.AssertClose(Load("grad_theta").Floats!, ReferenceOps.AffineGridBackward(ReferenceOps.ToDouble(gg), 3, 5, 4, false), 1e-4, "grad_theta");
    }

    private void AssertFails(int expectedCode, string mustMention, params string[] args) => CliRunner.AssertFails(_out, expectedCode, mustMention, args);

    [Test]
    public void BadInputFailsCleanly()
    {
        var rng = new Random(23);
        Save("theta", rng, 1f, 2, 2, 3);
        AssertFails(2, "--size", "run", "affine-grid", "--in", _in, "--out", _out);
        Save("theta", rng, 1f, 2, 3, 3);
        AssertFails(1, "theta: expected [N, 2, 3]", "run", "affine-grid", "--in", _in, "--out", _out, "--size", "4,4");
        Save("grad_grid", rng, 1f, 2, 4, 5, 2);
        AssertFails(1, "grad_grid:", "run", "affine-grid-backward", "--in", _in, "--out", _out, "--size", "5,4");
        Save("input", rng, 1f, 2, 3, 4, 5);
        AssertFails(1, "grid: missing file", "run", "grid-sample", "--in", _in, "--out", _out);
        Save("grid", rng, 1f, 3, 4, 5, 2);
        AssertFails(1, "grid: expected [N, Hout, Wout, 2] with N = 2", "run", "grid-sample", "--in", _in, "--out", _out);
        Save("grid", rng, 1f, 2, 4, 5, 2);
        Save("grad_out", rng, 1f, 2, 3, 5, 4);
        AssertFails(1, "grad_out: expected [N, C, Hout, Wout] = [2, 3, 4, 5]", "run", "grid-sample-backward", "--in", _in, "--out", _out);
        AssertFails(2, "--mode", "run", "grid-sample", "--in", _in, "--out", _out, "--mode", "bicubic");
        AssertFails(2, "--padding", "run", "grid-sample", "--in", _in, "--out", _out, "--padding", "wrap");
    }
}
