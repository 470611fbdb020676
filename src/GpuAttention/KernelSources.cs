using System.Collections.Concurrent;
using System.Reflection;

namespace GpuAttention;

/// <summary>The OpenCL C sources in kernels/*.cl, embedded in this assembly as "kernels/NAME.cl".</summary>
internal static class KernelSources
{
    private static readonly ConcurrentDictionary<string, string> Cache = new();

    /// <summary>Names of every embedded kernel file, e.g. "prelude.cl", "sdpa.cl".</summary>
    public static IEnumerable<string> Names =>
        typeof(KernelSources).Assembly.GetManifestResourceNames()
            .Where(n => n.StartsWith("kernels/", StringComparison.Ordinal))
            .Select(n => n["kernels/".Length..]);

    /// <summary>The raw text of one kernel file.</summary>
    public static string Get(string file) => Cache.GetOrAdd(file, static f =>
    {
        using var s = typeof(KernelSources).Assembly.GetManifestResourceStream("kernels/" + f)
            ?? throw new InvalidOperationException($"kernel source kernels/{f} is not embedded");
        using var r = new StreamReader(s);
        return r.ReadToEnd();
    });

    /// <summary>The prelude followed by one op-family file: the text a backend compiles.</summary>
    public static string WithPrelude(string file) => Get("prelude.cl") + "\n#line 1 \"" + file + "\"\n" + Get(file);
}
