using System.Globalization;

namespace GpuAttention.Cli;

/// <summary>The options of `gpuattention run OP` (CONTRACT.md, "Command line").</summary>
internal sealed class RunOptions
{
    public string Backend { get; private set; } = "cpu";
    public string? InDir { get; private set; }
    public string? OutDir { get; private set; }
    public bool Causal { get; private set; }
    public float? Scale { get; private set; }
    public int[]? Size { get; private set; }
    public bool AlignCorners { get; private set; }
    /// <summary>--atomic: grid-sample / spatial-transform backward use the opt-in nondeterministic atomic scatter.</summary>
    public bool Atomic { get; private set; }
    public string Mode { get; private set; } = "bilinear";
    public string Padding { get; private set; } = "zeros";
    public int Warmup { get; private set; } = 1;
    public int? Repeat { get; private set; }

    public static RunOptions Parse(string[] args)
    {
        var o = new RunOptions();
        for (int i = 0; i < args.Length; i++)
        {
            string a = args[i];
            string Value()
            {
                if (i + 1 >= args.Length || args[i + 1].StartsWith("--", StringComparison.Ordinal) && !IsNumber(args[i + 1]))
                    throw new UsageException($"{a}: expected a value");
                return args[++i];
            }
            switch (a)
            {
                case "--backend": o.Backend = Value(); break;
                case "--in": o.InDir = Value(); break;
                case "--out": o.OutDir = Value(); break;
                case "--causal": o.Causal = true; break;
                case "--align-corners": o.AlignCorners = true; break;
                case "--atomic": o.Atomic = true; break;
                case "--scale":
                    {
                        var v = Value();
                        if (!float.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var s) || !float.IsFinite(s))
                            throw new UsageException($"--scale: expected a finite number, got '{v}'");
                        o.Scale = s; break;
                    }
                case "--size":
                    {
                        var v = Value();
                        var parts = v.Split(',');
                        if (parts.Length != 2 || !int.TryParse(parts[0], out int h) || !int.TryParse(parts[1], out int w) || h <= 0 || w <= 0)
                            throw new UsageException($"--size: expected H,W with positive integers, got '{v}'");
                        o.Size = [h, w]; break;
                    }
                case "--mode":
                    o.Mode = Value();
                    if (o.Mode is not ("bilinear" or "nearest")) throw new UsageException($"--mode: expected bilinear or nearest, got '{o.Mode}'");
                    break;
                case "--padding":
                    o.Padding = Value();
                    if (o.Padding is not ("zeros" or "border" or "reflection")) throw new UsageException($"--padding: expected zeros, border or reflection, got '{o.Padding}'");
                    break;
                case "--warmup": o.Warmup = Count(a, Value(), 0); break;
                case "--repeat": o.Repeat = Count(a, Value(), 1); break;
                default: throw new UsageException($"unknown option '{a}'");
            }
        }
        if (o.InDir is null) throw new UsageException("--in DIR is required");
        if (o.OutDir is null) throw new UsageException("--out DIR is required");
        return o;
    }

    private static bool IsNumber(string s) => double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out _);

    private static int Count(string opt, string v, int min)
    {
        if (!int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out int n) || n < min)
            throw new UsageException($"{opt}: expected an integer ≥ {min}, got '{v}'");
        return n;
    }
}
