using System.Text.RegularExpressions;

namespace GpuAttention.Cli;

/// <summary>A command-line usage error (unknown option, missing argument): exit code 2.</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>Bad input detected by the CLI itself (missing file, wrong dtype): exit code 1.</summary>
internal sealed class InputException(string message) : Exception(message);

/// <summary>How the CLI turns failures into its one line on stderr.</summary>
internal static partial class CliErrors
{
    /// <summary>Exceptions that mean bad input or an unavailable device (exit 1, message only) rather than a defect.</summary>
    public static bool IsInputError(Exception e) => e is InputException or TensorShapeException or ArgumentException
        or InvalidDataException or FileNotFoundException or DirectoryNotFoundException or BackendUnavailableException or IOException
        or UnauthorizedAccessException or ObjectDisposedException or NotSupportedException or OutOfMemoryException;

    /// <summary>
    /// The exception's message on one line, without .NET's tails: " (Parameter 'x')" of an <see cref="ArgumentException"/>,
    /// "Actual value was …" of an <see cref="ArgumentOutOfRangeException"/>.
    /// </summary>
    public static string Clean(Exception e)
    {
        string m = e.Message;
        if (e is ArgumentException { ParamName: { } p })
        {
            m = m.Replace($" (Parameter '{p}')", "", StringComparison.Ordinal);
            if (e is ArgumentOutOfRangeException { ActualValue: { } v }) m = m.Replace($"Actual value was {v}.", "", StringComparison.Ordinal);
        }
        return OneLine(m);
    }

    /// <summary>Folds line breaks and runs of white space into single spaces; trims.</summary>
    public static string OneLine(string s) => Spaces().Replace(s.ReplaceLineEndings(" "), " ").Trim();

    /// <summary>Writes "gpuattention: MESSAGE" (and for usage errors "; see 'gpuattention CMD --help'") as one line on stderr.</summary>
    public static int Fail(int code, string message, string? commandPath = null)
    {
        string line = "gpuattention: " + OneLine(message);
        if (code == 2) line += $" (see '{commandPath ?? "gpuattention"} --help')";
        Console.Error.WriteLine(line);
        return code;
    }

    [GeneratedRegex(@"\s+")]
    private static partial Regex Spaces();
}
