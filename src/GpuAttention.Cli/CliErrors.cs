namespace GpuAttention.Cli;

/// <summary>A command-line usage error (unknown option, missing argument): exit code 2.</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>Bad input detected by the CLI itself (missing file, wrong dtype): exit code 1.</summary>
internal sealed class InputException(string message) : Exception(message);
