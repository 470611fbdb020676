using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace GpuAttention.Backends.Kernels.Tuning;

/// <summary>Who a tuning result belongs to: backend, platform, device name and driver version (a result is only reused on the same).</summary>
internal sealed record TuningDeviceIdentity(string Backend, string Platform, string Device, string Driver)
{
    /// <summary>A file name made of the identity: lower case, runs of anything but [a-z0-9.] as '-', at most 100 characters,
    /// plus 8 hex digits of a hash of the exact identity (so two identities that sanitise alike still get two files).</summary>
    public string FileName
    {
        get
        {
            string full = $"{Backend}|{Platform}|{Device}|{Driver}";
            var sb = new StringBuilder();
            foreach (char ch in $"{Backend}-{Platform}-{Device}-{Driver}".ToLowerInvariant())
            {
                bool ok = ch is >= 'a' and <= 'z' or >= '0' and <= '9' or '.';
                if (ok) sb.Append(ch);
                else if (sb.Length > 0 && sb[^1] != '-') sb.Append('-');
            }
            string name = sb.ToString().Trim('-', '.');
            if (name.Length > 100) name = name[..100].TrimEnd('-', '.');
            string hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(full)))[..8];
            return $"{name}-{hash}.json";
        }
    }

    public override string ToString() => $"{Backend}: {Platform} / {Device}, driver {Driver}";
}

/// <summary>The JSON document of one device's tuning cache file.</summary>
internal sealed class TuningCacheFile
{
    /// <summary>Format version; a file of another version is ignored (with a warning) and rewritten by the next tune.</summary>
    public int Version { get; set; } = TuningCache.FormatVersion;
    public string Backend { get; set; } = "";
    public string Platform { get; set; } = "";
    public string Device { get; set; } = "";
    public string Driver { get; set; } = "";
    public List<TuningCacheEntry> Entries { get; set; } = [];
}

/// <summary>One tuned winner: family, shape key, knob values, and how it was measured.</summary>
internal sealed class TuningCacheEntry
{
    public string Family { get; set; } = "";
    public string Key { get; set; } = TuningSpace.AnyKey;
    public Dictionary<string, int> Params { get; set; } = [];
    /// <summary>Hash of the family's kernel sources (with the prelude) when tuned: a different hash now means stale.</summary>
    public string SourceHash { get; set; } = "";
    public string Shape { get; set; } = "";
    public double Ms { get; set; }
    public double DefaultMs { get; set; }
    public double Rate { get; set; }
    public string Unit { get; set; } = "";
    public int Tried { get; set; }
    public string TunedAt { get; set; } = "";
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(TuningCacheFile))]
internal sealed partial class TuningJsonContext : JsonSerializerContext;

/// <summary>
/// The per-device tuning cache (CLBlast style): one JSON file per device identity under <see cref="Directory"/>, written by
/// `gpuattention tune` and read lazily by <see cref="KernelBackend"/> when it first chooses defines. A file that does not
/// parse, is of another format version or of another device is ignored as a whole; an entry whose kernel sources changed
/// since tuning (stale) or whose values are not valid on this device is ignored alone. Each is reported once through
/// <see cref="Warn"/> and the built-in defaults are used: a bad cache never fails an op.
/// </summary>
internal static class TuningCache
{
    public const int FormatVersion = 1;

    /// <summary>Where warnings go (stderr by default: "gpuattention: warning: ...").</summary>
    public static Action<string> Warn { get; set; } = m => Console.Error.WriteLine("gpuattention: warning: " + m);

    /// <summary>
    /// The cache folder: <c>$GPUATTENTION_TUNING_DIR</c>, else <c>$XDG_CACHE_HOME/gpuattention/tuning</c>, else
    /// <c>~/.cache/gpuattention/tuning</c> (read at every call, so tests can point it at a temporary folder).
    /// </summary>
    public static string Directory
    {
        get
        {
            string? dir = Environment.GetEnvironmentVariable("GPUATTENTION_TUNING_DIR");
            if (!string.IsNullOrEmpty(dir)) return Path.GetFullPath(dir);
            string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
            string root = !string.IsNullOrEmpty(xdg) ? xdg : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
            return Path.GetFullPath(Path.Combine(root, "gpuattention", "tuning"));
        }
    }

    public static string PathFor(TuningDeviceIdentity id) => Path.Combine(Directory, id.FileName);

    /// <summary>Hash of the kernel sources a family's results depend on (its files and the prelude).</summary>
    public static string SourceHash(TuningSpace space)
    {
        var sb = new StringBuilder(KernelSources.Get("prelude.cl"));
        foreach (var f in space.Files) sb.Append('\0').Append(KernelSources.Get(f));
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(sb.ToString())))[..16];
    }

    /// <summary>Readable output (×, →, + as they are), still through the source-generated context (trim-safe).</summary>
    private static readonly TuningJsonContext Json = new(new JsonSerializerOptions(TuningJsonContext.Default.Options) { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });

    public static string Serialize(TuningCacheFile f) => JsonSerializer.Serialize(f, Json.TuningCacheFile);

    /// <summary>Parses a cache file's text; null (and <paramref name="error"/>) when it is not a cache file of this format.</summary>
    public static TuningCacheFile? Parse(string json, out string? error)
    {
        try
        {
            var f = JsonSerializer.Deserialize(json, TuningJsonContext.Default.TuningCacheFile);
            error = f is null ? "empty document"
                : f.Version != FormatVersion ? $"format version {f.Version}, expected {FormatVersion}"
                : f.Entries is null || f.Entries.Any(e => e is null || e.Params is null || string.IsNullOrEmpty(e.Family)) ? "malformed entries"
                : null;
            return error is null ? f : null;
        }
        catch (JsonException e)
        {
            error = "not valid JSON: " + e.Message.Split('\n')[0];
            return null;
        }
    }

    /// <summary>
    /// Reads the cache file of <paramref name="id"/>: null when there is none, or (after a warning) when it cannot be read,
    /// does not parse, or belongs to another device.
    /// </summary>
    public static TuningCacheFile? Load(TuningDeviceIdentity id, Action<string>? warn = null)
    {
        warn ??= Warn;
        string path = PathFor(id);
        string text;
        try
        {
            if (!File.Exists(path)) return null;
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            warn($"tuning cache {path} ignored (cannot be read: {e.Message}); using the built-in defaults");
            return null;
        }
        var f = Parse(text, out var error);
        if (f is null)
        {
            warn($"tuning cache {path} ignored ({error}); using the built-in defaults; rerun `gpuattention tune` to rewrite it");
            return null;
        }
        if (f.Backend != id.Backend || f.Platform != id.Platform || f.Device != id.Device || f.Driver != id.Driver)
        {
            warn($"tuning cache {path} ignored (it is for {f.Backend}: {f.Platform} / {f.Device}, driver {f.Driver}; this is {id}); using the built-in defaults");
            return null;
        }
        return f;
    }

    /// <summary>Stores <paramref name="entries"/> in the cache file of <paramref name="id"/> (replacing entries of the same family
    /// and key, keeping the others of a valid existing file), written to a temporary file first and then moved into place.</summary>
    public static string Save(TuningDeviceIdentity id, IEnumerable<TuningCacheEntry> entries)
    {
        string path = PathFor(id);
        System.IO.Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        TuningCacheFile? old = null;
        if (File.Exists(path))
        {
            try { old = Parse(File.ReadAllText(path), out _); } catch (IOException) { }
        }
        var f = new TuningCacheFile { Backend = id.Backend, Platform = id.Platform, Device = id.Device, Driver = id.Driver };
        var list = entries.ToList();
        if (old is not null && old.Backend == id.Backend && old.Device == id.Device && old.Platform == id.Platform && old.Driver == id.Driver)
            f.Entries.AddRange(old.Entries.Where(o => !list.Any(n => n.Family == o.Family && n.Key == o.Key)));
        f.Entries.AddRange(list);
        f.Entries.Sort((a, b) => string.CompareOrdinal(a.Family + "\0" + a.Key, b.Family + "\0" + b.Key));
        string tmp = path + ".tmp-" + Environment.ProcessId;
        File.WriteAllText(tmp, Serialize(f) + "\n");
        File.Move(tmp, path, overwrite: true);
        return path;
    }

    /// <summary>
    /// The valid winner of <paramref name="space"/> for <paramref name="key"/> in <paramref name="file"/> on a device with
    /// <paramref name="limits"/>, or null; a stale or invalid entry gives null and a warning through <paramref name="warn"/>.
    /// </summary>
    public static TuningParams? Lookup(TuningCacheFile? file, string path, TuningSpace space, string key, KernelDeviceLimits limits, Action<string> warn)
    {
        var e = file?.Entries.LastOrDefault(x => x.Family == space.Family && x.Key == key);
        if (e is null) return null;
        if (e.SourceHash != SourceHash(space))
        {
            warn($"tuning cache {path}: the {space.Family} entry is stale (kernels changed since it was tuned); using the built-in defaults; rerun `gpuattention tune --op {space.Family}`");
            return null;
        }
        var p = ToParams(space, e.Params);
        string? why = space.Validate(p, limits, key);
        if (why is not null)
        {
            warn($"tuning cache {path}: the {space.Family} entry ({p}) is not valid on this device ({why}); using the built-in defaults");
            return null;
        }
        return p;
    }

    /// <summary>A stored knob map as parameters in the space's knob order (unknown names kept at the end, so validation sees them).</summary>
    public static TuningParams ToParams(TuningSpace space, Dictionary<string, int> values)
    {
        var p = TuningParams.Empty;
        foreach (var k in space.Knobs)
            if (values.TryGetValue(k.Name, out int v)) p = p.With(k.Name, v);
        foreach (var (n, v) in values)
            if (!p.TryGet(n, out _)) p = p.With(n, v);
        return p;
    }
}
