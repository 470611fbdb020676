namespace GpuAttention.Cli;

/// <summary>The options of `gpuattention run OP` (CONTRACT.md, "Command line"), as parsed by <see cref="RunCommand"/>.</summary>
internal sealed class RunOptions
{
    public string Backend { get; init; } = "cpu";
    public string? InDir { get; init; }
    public string? OutDir { get; init; }
    public bool Causal { get; init; }
    public float? Scale { get; init; }
    public int[]? Size { get; init; }
    public bool AlignCorners { get; init; }
    /// <summary>--atomic: grid-sample / spatial-transform backward use the opt-in nondeterministic atomic scatter.</summary>
    public bool Atomic { get; init; }
    public string Mode { get; init; } = "bilinear";
    public string Padding { get; init; } = "zeros";
    public int Warmup { get; init; } = 1;
    public int? Repeat { get; init; }
}
