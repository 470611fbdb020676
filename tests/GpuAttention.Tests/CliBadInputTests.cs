using System.Text;
using GpuAttention.IO;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// The bad-input pass of the CLI for every `run` op: its first input broken (not .npy), truncated, of the wrong dtype
/// (float64) and of the wrong rank, an unknown option and an unknown backend. Each gives exit 1 (2 for usage errors), one
/// line on stderr naming the tensor, no stack trace, and nothing in the output folder. Also the soak command's usage errors.
/// </summary>
[Category("Slow")]   // a process, a compiler or a tuning run: skipped by the fast tier (--filter TestCategory!=Slow)
public class CliBadInputTests
{
    private string _in = null!, _out = null!;
    [SetUp] public void Dirs() { _in = CliRunner.TempDir(); _out = CliRunner.TempDir(); }
    [TearDown] public void Clean() { Directory.Delete(_in, true); Directory.Delete(_out, true); }

    // The first input each op reads (CONTRACT.md's table), and the options it needs to get that far.
    private static readonly (string Op, string First, string[] Options, string[] Others)[] Ops =
    [
        ("sdpa", "q", [], ["k", "v"]), ("sdpa-backward", "q", [], ["k", "v", "out", "lse", "grad_out"]),
        ("affine-grid", "theta", ["--size", "3,4"], []), ("affine-grid-backward", "grad_grid", [], []),
        ("grid-sample", "input", [], ["grid"]), ("grid-sample-backward", "input", [], ["grid", "grad_out"]),
        ("glimpse", "image", ["--size", "3,4"], ["params"]), ("glimpse-backward", "image", [], ["params", "grad_out"]),
    ];

    private void AssertOneLineFailure(int code, string mustMention, string[] args)
    {
        var (c, so, se) = CliRunner.Run(args);
        Assert.That(c, Is.EqualTo(code), $"{string.Join(" ", args)}\nstdout: {so}\nstderr: {se}");
        Assert.That(se, Does.Contain(mustMention), string.Join(" ", args));
        Assert.That(se, Does.Not.Contain("   at "), "no stack trace");
        Assert.That(se, Does.Not.Contain("internal error"), "a clean input error, not an unexpected exception");
        if (code == 1) Assert.That(se.TrimEnd('\n', '\r').Split('\n'), Has.Length.EqualTo(1), "one line: " + se);
        Assert.That(Directory.EnumerateFileSystemEntries(_out), Is.Empty, "nothing written on failure");
    }

    private static byte[] Float64Npy(params int[] shape)
    {
        string header = $"{{'descr': '<f8', 'fortran_order': False, 'shape': ({string.Join(", ", shape)},), }}";
        header = header.PadRight(118) + "\n";
        long n = 1; foreach (var d in shape) n *= d;
        return [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0, (byte)header.Length, 0, .. Encoding.ASCII.GetBytes(header), .. new byte[n * 8]];
    }

    [Test]
    public void EveryRunOpRejectsBrokenTruncatedWrongDtypeAndWrongRankInputsCleanly([ValueSource(nameof(OpNames))] string opName)
    {
        var (op, first, options, others) = Ops.First(o => o.Op == opName);
        string file = Path.Combine(_in, first + ".npy");
        string[] Args(params string[] extra) => ["run", op, "--in", _in, "--out", _out, .. options, .. extra];

        File.WriteAllText(file, "this is not a numpy file");
        AssertOneLineFailure(1, $"{first}: not a .npy", Args());

        Npy.Write(file, NpyArray.FromFloats(new float[60], 3, 4, 5));
        File.WriteAllBytes(file, File.ReadAllBytes(file)[..150]);
        AssertOneLineFailure(1, $"{first}: truncated", Args());

        File.WriteAllBytes(file, Float64Npy(2, 3));
        AssertOneLineFailure(1, $"{first}: ", Args());

        foreach (var name in others.Append(first))   // every input rank 1: wrong for every op; the first is checked first
            Npy.Write(Path.Combine(_in, name + ".npy"), NpyArray.FromFloats(new float[7], 7));
        AssertOneLineFailure(1, ": expected", Args());   // names the first input it checks (glimpse-backward: grad_out)

        AssertOneLineFailure(2, "unknown option '--frobnicate'", Args("--frobnicate"));
        AssertOneLineFailure(2, "--backend", Args("--backend", "quantum"));
        AssertOneLineFailure(2, "--backend", Args("--backend", "opencl:x"));
        File.Delete(file);
        AssertOneLineFailure(1, first, Args());
    }

    public static IEnumerable<string> OpNames => Ops.Select(o => o.Op);

    [Test]
    public void SoakUsageErrorsExitWithTwo()
    {
        AssertOneLineFailure(2, "--minutes N or --iterations N", ["soak", "--backend", "cpu"]);
        AssertOneLineFailure(2, "--minutes", ["soak", "--minutes", "soon"]);
        AssertOneLineFailure(2, "unknown option '--bogus'", ["soak", "--iterations", "1", "--bogus"]);
        AssertOneLineFailure(2, "--backend", ["soak", "--iterations", "1", "--backend", "tpu"]);
        AssertOneLineFailure(2, "--case", ["soak", "--iterations", "1", "--case", "no such op"]);
    }

    [Test]
    public void SoakRunsEveryCaseAndReportsHandles()
    {
        var (code, so, se) = CliRunner.Run("soak", "--backend", "cpu", "--iterations", "2", "--skip", "multihead");
        Assert.That(code, Is.Zero, so + se);
        Assert.That(so, Does.Contain("soak: OK"));
        Assert.That(so, Does.Contain("cpu_buffers").And.Contain("opencl_handles").And.Contain("working_set_MB"));
        Assert.That(so, Does.Contain("2 iterations"));
    }
}
