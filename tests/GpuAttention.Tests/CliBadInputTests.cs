using System.Text;
using GpuAttention.IO;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// The bad-input pass of the CLI for every `run` op: its first input broken (not .npy), truncated, of the wrong dtype
/// (float64) and of the wrong rank, an unknown option and an unknown backend. Each gives exit 1 (2 for usage errors), exactly one
/// line on stderr naming the tensor, no stack trace, no .NET tail such as "(Parameter 'x')", and nothing in the output folder.
/// Usage errors end with a hint naming the command's --help. Also every command's usage errors, --help and --version.
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

    private void AssertOneLineFailure(int code, string mustMention, string[] args) => AssertOneLine(code, mustMention, args, _out);

    /// <summary>Runs the CLI and asserts exit <paramref name="code"/> and exactly one clean line on stderr that mentions <paramref name="mustMention"/>.</summary>
    internal static void AssertOneLine(int code, string mustMention, string[] args, string? outDir = null)
    {
        var (c, so, se) = CliRunner.Run(args);
        string cmd = string.Join(" ", args);
        Assert.That(c, Is.EqualTo(code), $"{cmd}\nstdout: {so}\nstderr: {se}");
        Assert.That(se, Does.Contain(mustMention), cmd);
        Assert.That(se, Does.Not.Contain("   at "), "no stack trace");
        Assert.That(se, Does.Not.Contain("internal error"), "a clean input error, not an unexpected exception");
        Assert.That(se, Does.Not.Contain("(Parameter '").And.Not.Contain("Actual value was"), "no .NET tail: " + se);
        Assert.That(se.TrimEnd('\n', '\r').Split('\n'), Has.Length.EqualTo(1), $"one line: {cmd}\n{se}");
        Assert.That(se, Does.StartWith("gpuattention: "), cmd);
        if (code == 2) Assert.That(se, Does.Match(@"\(see 'gpuattention( [a-z]+)? --help'\)\s*$"), "a hint to the command's help: " + se);
        if (outDir is not null) Assert.That(Directory.EnumerateFileSystemEntries(outDir), Is.Empty, "nothing written on failure");
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
    public void RunUsageErrorsAreOneLineWithAHint()
    {
        string[] Args(params string[] extra) => ["run", "sdpa", "--in", _in, "--out", _out, .. extra];
        AssertOneLineFailure(2, "run: expected an OP", ["run"]);
        AssertOneLineFailure(2, "(see 'gpuattention run --help')", ["run", "nope", "--in", _in, "--out", _out]);
        AssertOneLineFailure(2, "--in DIR is required", ["run", "sdpa", "--out", _out]);
        AssertOneLineFailure(2, "--out DIR is required", ["run", "sdpa", "--in", _in]);
        AssertOneLineFailure(2, "--scale: expected a value", Args("--scale"));
        AssertOneLineFailure(2, "--scale: expected a finite number, got 'big'", Args("--scale", "big"));
        AssertOneLineFailure(2, "--scale: expected a finite number, got 'NaN'", Args("--scale", "NaN"));
        AssertOneLineFailure(2, "--size: expected H,W", Args("--size", "3"));
        AssertOneLineFailure(2, "--size: expected H,W", Args("--size", "0,4"));
        AssertOneLineFailure(2, "--mode: expected bilinear or nearest, got 'bicubic'", Args("--mode", "bicubic"));
        AssertOneLineFailure(2, "--padding: expected zeros, border or reflection, got 'wrap'", Args("--padding", "wrap"));
        AssertOneLineFailure(2, "--warmup: expected an integer ≥ 0, got '-1'", Args("--warmup", "-1"));
        AssertOneLineFailure(2, "--repeat: expected an integer ≥ 1, got '0'", Args("--repeat", "0"));
        AssertOneLineFailure(2, "run: unexpected argument 'extra'", ["run", "sdpa", "extra", "--in", _in, "--out", _out]);
        AssertOneLineFailure(2, "--backend", Args("--backend", "cuda:-1"));
        AssertOneLineFailure(2, "--size H,W", ["run", "affine-grid", "--in", _in, "--out", _out]);
        AssertOneLineFailure(2, "--size h,w", ["run", "glimpse", "--in", _in, "--out", _out]);
        AssertOneLineFailure(2, "unknown command 'frobnicate'", ["frobnicate"]);
        AssertOneLineFailure(2, "expected a command", []);
    }

    [Test]
    public void OtherCommandsUsageErrorsAreOneLineWithAHint()
    {
        AssertOneLineFailure(2, "--only: unknown op 'nope'", ["verify", "--only", "gemm,nope"]);
        AssertOneLineFailure(2, "--seed: expected an integer, got 'x'", ["verify", "--seed", "x"]);
        AssertOneLineFailure(2, "verify: unknown option '--fast'", ["verify", "--fast"]);
        AssertOneLineFailure(2, "--backend", ["verify", "--backend", "quantum"]);
        AssertOneLineFailure(2, "--pixels: expected an integer in 16..65536, got '3'", ["demo", "--pixels", "3"]);
        AssertOneLineFailure(2, "demo: unknown option '--colour'", ["demo", "--colour"]);
        AssertOneLineFailure(2, "--backend", ["demo", "--backend", "gpu", "--out", _out]);
        AssertOneLineFailure(2, "--budget: expected a number of seconds > 0, got '0'", ["tune", "--budget", "0"]);
        AssertOneLineFailure(2, "--op: unknown op 'conv'", ["tune", "--op", "conv"]);
        AssertOneLineFailure(2, "only opencl[:K] and cuda[:K]", ["tune", "--backend", "cpu", "--dry-run"]);
        AssertOneLineFailure(2, "devices: unexpected argument 'all'", ["devices", "all"]);
        AssertOneLineFailure(2, "ptx: expected --arch", ["ptx"]);
        AssertOneLineFailure(2, "--arch: expected sm_80 or sm_90, got 'sm_70'", ["ptx", "--arch", "sm_70", "--out", _out]);
    }

    [Test]
    public void OutNamingAFileIsAClearError()
    {
        var file = Path.Combine(_in, "not-a-folder");
        File.WriteAllText(file, "x");
        Npy.Write(Path.Combine(_in, "theta.npy"), NpyArray.FromFloats(new float[6], 1, 2, 3));
        AssertOneLineFailure(1, $"--out: '{file}' is a file", ["run", "affine-grid", "--in", _in, "--out", file, "--size", "2,2"]);
        Assert.That(File.ReadAllText(file), Is.EqualTo("x"), "the file is left alone");
        AssertOneLineFailure(1, $"--out: '{file}' is a file", ["demo", "--out", file]);
        AssertOneLineFailure(1, "--out: cannot create the folder", ["run", "affine-grid", "--in", _in, "--out", Path.Combine(file, "sub"), "--size", "2,2"]);
        AssertOneLineFailure(1, "--in: folder not found", ["run", "sdpa", "--in", Path.Combine(_in, "missing"), "--out", _out]);
    }

    [Test]
    public void DemoBadImagesAreOneLine()
    {
        var txt = Path.Combine(_in, "notes.png");
        File.WriteAllText(txt, "not a picture");
        AssertOneLineFailure(1, "notes.png: not an image", ["demo", "--image", txt, "--out", _out]);
        AssertOneLineFailure(1, "picture.jpg: no such file", ["demo", "--image", Path.Combine(_in, "picture.jpg"), "--out", _out]);
    }

    /// <summary>Every command has a help page (exit 0, on stdout, nothing on stderr) that shows its usage and options.</summary>
    [TestCase("run", "--backend", "--in", "--out", "--causal", "--scale", "--size", "--align-corners", "--mode", "--padding", "--warmup", "--repeat", "sdpa-backward", "grad_out")]
    [TestCase("devices")]
    [TestCase("verify", "--backend", "--seed", "--only")]
    [TestCase("demo", "--backend", "--image", "--out", "--pixels", "--repeat")]
    [TestCase("soak", "--backend", "--minutes", "--iterations", "--interval", "--case", "--skip", "--list")]
    [TestCase("tune", "--backend", "--op", "--budget", "--repeat", "--dry-run", "--show")]
    [TestCase("ptx", "--arch", "--out", "--report")]
    public void EveryCommandHasHelp(string command, params string[] mentions)
    {
        foreach (var flag in new[] { "--help", "-h" })
        {
            var (code, so, se) = CliRunner.Run(command, flag);
            Assert.That(code, Is.Zero, se);
            Assert.That(se, Is.Empty);
            Assert.That(so, Does.Contain($"gpuattention {command}"));
            foreach (var m in mentions) Assert.That(so, Does.Contain(m), $"{command} --help mentions {m}");
            Assert.That(so, Does.Not.Contain("\u001b["), "no ANSI codes in redirected help");
        }
        var (c2, so2, _) = CliRunner.Run("help", command);
        Assert.That(c2, Is.Zero);
        Assert.That(so2, Does.Contain($"gpuattention {command}"));
        // --help wins over a bad option on the same line.
        var (c3, so3, _) = CliRunner.Run(command, "--bogus", "--help");
        Assert.That(c3, Is.Zero);
        Assert.That(so3, Does.Contain($"gpuattention {command}"));
    }

    [Test]
    public void RootHelpListsEveryCommandOnOneLineEach()
    {
        var (code, so, se) = CliRunner.Run("--help");
        Assert.That(code, Is.Zero, se);
        foreach (var c in new[] { "run", "devices", "verify", "demo", "soak", "tune", "ptx" })
            Assert.That(so.Split('\n').Count(l => l.StartsWith("  " + c + " ", StringComparison.Ordinal)), Is.EqualTo(1), $"{c}:\n{so}");
        Assert.That(so.Split('\n').Max(l => l.TrimEnd().Length), Is.LessThanOrEqualTo(100), so);
    }

    [Test]
    public void VersionPrintsTheAssemblyVersion()
    {
        var (code, so, se) = CliRunner.Run("--version");
        Assert.That(code, Is.Zero, se);
        Assert.That(so.Trim(), Does.Match(@"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$"), "just the version: " + so);
        var (bad, _, err) = CliRunner.Run("run", "--version");
        Assert.That(bad, Is.EqualTo(2), err);
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
