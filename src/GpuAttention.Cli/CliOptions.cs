using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;

namespace GpuAttention.Cli;

/// <summary>
/// Option factories for System.CommandLine with the CLI's own one-line messages: every value is parsed here (not by the
/// library's type converters), so an error reads <c>--scale: expected a finite number, got 'x'</c> rather than a .NET type name.
/// </summary>
internal static class CliOptions
{
    /// <summary>The backend words of the contract, for help texts only: <see cref="Device.Open"/> decides what is valid.</summary>
    public const string BackendHelp =
        "cpu, opencl[:K], cuda[:K], ilgpu, ilgpu:cuda[:K], ilgpu:opencl[:K], ilgpu:cpu or auto (checked when the device opens)";

    /// <summary>--backend, passed to <see cref="Device.Open"/> as given.</summary>
    public static Option<string?> Backend(string? defaultValue = "cpu", string? extra = null) =>
        Text("--backend", $"The device: {BackendHelp}{(extra is null ? "" : "; " + extra)}.", "BACKEND", defaultValue);

    /// <summary>A string option; <paramref name="defaultValue"/> null means "absent" (the value is null).</summary>
    public static Option<string?> Text(string name, string description, string helpName, string? defaultValue = null) =>
        Parsed<string?>(name, description, helpName, s => s, defaultValue);

    /// <summary>A flag (no value).</summary>
    public static Option<bool> Flag(string name, string description, bool hidden = false) =>
        new(name) { Description = description, Arity = ArgumentArity.Zero, Hidden = hidden };

    /// <summary>One of <paramref name="choices"/>.</summary>
    public static Option<string> Choice(string name, string description, string defaultValue, params string[] choices) =>
        Parsed<string>(name, $"{description}.", string.Join("|", choices),
            s => choices.Contains(s) ? s : throw new FormatException($"expected {Words(choices)}, got '{s}'"), defaultValue);

    /// <summary>An integer in [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public static Option<int> Int(string name, string description, int min, int defaultValue, int max = int.MaxValue) =>
        Parsed(name, description, "N", s => ParseInt(s, min, max), defaultValue);

    /// <summary>An optional integer in [<paramref name="min"/>, <paramref name="max"/>] (null when absent).</summary>
    public static Option<int?> OptionalInt(string name, string description, int min, int max = int.MaxValue) =>
        Parsed<int?>(name, description, "N", s => ParseInt(s, min, max), null);

    /// <summary>A finite number ≥ <paramref name="min"/> (exclusive when <paramref name="exclusive"/>), null when absent.</summary>
    public static Option<double?> Number(string name, string description, string helpName, double min = double.NegativeInfinity, bool exclusive = false) =>
        Parsed<double?>(name, description, helpName, s =>
        {
            if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !double.IsFinite(v))
                throw new FormatException($"expected a finite number, got '{s}'");
            if (exclusive ? v <= min : v < min) throw new FormatException($"expected a number {(exclusive ? ">" : "≥")} {min.ToString(CultureInfo.InvariantCulture)}, got '{s}'");
            return v;
        }, null);

    /// <summary>
    /// A comma-separated list of words, each one of <paramref name="known"/> when given. Absent, System.CommandLine gives an
    /// empty array (not null) for an array-typed option: callers treat empty as absent.
    /// </summary>
    public static Option<string[]?> List(string name, string description, string helpName, IReadOnlyCollection<string>? known = null) =>
        Parsed<string[]?>(name, description, helpName, s =>
        {
            var words = s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (words.Length == 0) throw new FormatException("expected at least one word");
            if (known is not null && words.FirstOrDefault(w => !known.Contains(w, StringComparer.OrdinalIgnoreCase)) is { } bad)
                throw new FormatException($"unknown op '{bad}' (expected some of {string.Join(", ", known)})");
            return words;
        }, null);

    /// <summary>
    /// An option of one value parsed by <paramref name="parse"/>; a <see cref="FormatException"/> from it becomes the parse error
    /// <c>NAME: message</c>. Absent, the option has <paramref name="defaultValue"/>.
    /// </summary>
    public static Option<T> Parsed<T>(string name, string description, string helpName, Func<string, T> parse, T defaultValue)
    {
        var o = new Option<T>(name)
        {
            Description = description,
            HelpName = helpName,
            Arity = ArgumentArity.ExactlyOne,
            DefaultValueFactory = _ => defaultValue,
        };
        o.CustomParser = r =>
        {
            if (r.Tokens.Count == 0) { r.AddError($"{name}: expected a value ({helpName})"); return defaultValue; }
            string s = r.Tokens[^1].Value;
            try { return parse(s); }
            catch (FormatException e) { r.AddError($"{name}: {e.Message}"); return defaultValue; }
        };
        return o;
    }

    private static int ParseInt(string s, int min, int max)
    {
        if (!int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) || v < min || v > max)
            throw new FormatException(max == int.MaxValue ? $"expected an integer ≥ {min}, got '{s}'" : $"expected an integer in {min}..{max}, got '{s}'");
        return v;
    }

    /// <summary>"a, b or c".</summary>
    public static string Words(IReadOnlyList<string> w) => w.Count == 1 ? w[0] : string.Join(", ", w.Take(w.Count - 1)) + " or " + w[^1];

    /// <summary>Opens <paramref name="spec"/>: a spec <see cref="Device.Open"/> does not know is a usage error (exit 2) about --backend.</summary>
    public static Device OpenDevice(string spec)
    {
        try { return Device.Open(spec); }
        catch (ArgumentException e)
        {
            string m = CliErrors.Clean(e);
            if (m.StartsWith("backend: ", StringComparison.Ordinal)) m = m["backend: ".Length..];
            throw new UsageException($"--backend: {m}");
        }
    }
}
