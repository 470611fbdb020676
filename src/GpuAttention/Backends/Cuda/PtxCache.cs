using System.Collections.Concurrent;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using GpuAttention.Backends.Cuda.Native;

namespace GpuAttention.Backends.Cuda;

/// <summary>
/// PTX of the kernel files compiled by NVRTC after the CUDA branch of the prelude, cached in memory per
/// (architecture, file, defines) and on disk in a user cache folder, keyed by the SHA-256 of (source, NVRTC options,
/// architecture, NVRTC version), so a second process skips NVRTC. Disk files are written atomically (temporary file,
/// then rename); a cache folder that cannot be written is ignored. Thread-safe.
/// <para>Folder: <c>$GPUATTENTION_CACHE_DIR/ptx</c> if set (the value <c>off</c> disables the disk cache), else
/// <c>$XDG_CACHE_HOME/gpuattention/ptx</c>, else <c>LocalApplicationData/GpuAttention/ptx</c>.</para>
/// </summary>
internal sealed class PtxCache
{
    private static readonly Lazy<PtxCache> SharedCache = new(() => new PtxCache(DefaultDirectory()));
    private readonly ConcurrentDictionary<(int Arch, string File, string Defines), Lazy<string>> _memory = new();
    private int _compiles, _diskHits;

    /// <summary>Creates a cache that stores PTX under <paramref name="directory"/> (null: memory only).</summary>
    public PtxCache(string? directory) => Directory = directory;

    /// <summary>The process-wide cache in the default folder.</summary>
    public static PtxCache Shared => SharedCache.Value;

    /// <summary>The disk folder, or null for a memory-only cache.</summary>
    public string? Directory { get; }

    /// <summary>Number of NVRTC compilations this cache ran.</summary>
    public int Compiles => Volatile.Read(ref _compiles);

    /// <summary>Number of PTX files loaded from disk instead of compiled.</summary>
    public int DiskHits => Volatile.Read(ref _diskHits);

    /// <summary>The default disk folder (see the class remarks), or null when disabled.</summary>
    public static string? DefaultDirectory()
    {
        var env = Environment.GetEnvironmentVariable("GPUATTENTION_CACHE_DIR");
        if (env is { Length: > 0 }) return env.Equals("off", StringComparison.OrdinalIgnoreCase) ? null : Path.Combine(env, "ptx");
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        if (xdg is { Length: > 0 } && Path.IsPathRooted(xdg)) return Path.Combine(xdg, "gpuattention", "ptx");
        var local = Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData);
        return local.Length > 0 ? Path.Combine(local, "GpuAttention", "ptx") : null;
    }

    /// <summary>The CUDA source of a kernel file: <c>#define CUDA</c>, the prelude, then the file.</summary>
    public static string Source(string file) => "#define CUDA\n" + KernelSources.WithPrelude(file);

    /// <summary>
    /// NVRTC options for a kernel built with <paramref name="defines"/> (the host code's "-DNAME=V" words, space separated)
    /// for virtual architecture compute_<paramref name="arch"/>.
    /// </summary>
    /// <exception cref="ArgumentException">A word of <paramref name="defines"/> is not of the form -DNAME or -DNAME=VALUE.</exception>
    public static string[] Options(string defines, int arch)
    {
        var list = new List<string> { $"--gpu-architecture=compute_{arch}", "--generate-line-info" };
        foreach (var word in defines.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries))
        {
            if (!word.StartsWith("-D", StringComparison.Ordinal) || word.Length == 2 || word[2] == '=')
                throw new ArgumentException($"defines: expected words of the form -DNAME or -DNAME=VALUE, got '{word}'", nameof(defines));
            list.Add("--define-macro=" + word[2..]);
        }
        return list.ToArray();
    }

    /// <summary>
    /// The architecture to compile for on a device of compute capability <paramref name="deviceArch"/> (e.g. 90):
    /// the device's own when NVRTC knows it, else the newest NVRTC target below it (the driver JIT-compiles PTX forward).
    /// </summary>
    /// <exception cref="NotSupportedException">NVRTC cannot target this device at all.</exception>
    public static int TargetArch(int deviceArch)
    {
        var supported = Nvrtc.SupportedArchs();
        if (supported.Length == 0 || supported.Contains(deviceArch)) return deviceArch;
        var below = supported.Where(a => a <= deviceArch).ToArray();
        if (below.Length == 0)
            throw new NotSupportedException($"nvrtc: NVRTC {Nvrtc.Version().Major}.{Nvrtc.Version().Minor} cannot target compute_{deviceArch} (oldest it supports: compute_{supported[0]})");
        return below[^1];
    }

    /// <summary>The PTX of <c>kernels/<paramref name="file"/></c> with <paramref name="defines"/> for compute_<paramref name="arch"/>.</summary>
    /// <exception cref="KernelCompileException">The kernel does not compile (with NVRTC's log).</exception>
    /// <exception cref="BackendUnavailableException">NVRTC is missing.</exception>
    public string Get(string file, string defines, int arch)
    {
        var lazy = _memory.GetOrAdd((arch, file, defines), k => new Lazy<string>(() => Load(k.File, k.Defines, k.Arch), LazyThreadSafetyMode.ExecutionAndPublication));
        try { return lazy.Value; }
        catch
        {
            _memory.TryRemove(new KeyValuePair<(int, string, string), Lazy<string>>((arch, file, defines), lazy));
            throw;
        }
    }

    private string Load(string file, string defines, int arch)
    {
        if (!Nvrtc.TryLoad(out var reason)) throw new BackendUnavailableException(reason!);
        var source = Source(file);
        var options = Options(defines, arch);
        var (major, minor) = Nvrtc.Version();
        string? path = Directory is null ? null : Path.Combine(Directory, Key(source, options, arch, $"{major}.{minor}") + ".ptx");
        if (path is not null)
        {
            try
            {
                if (File.Exists(path))
                {
                    var cached = File.ReadAllText(path);
                    if (cached.Length > 0) { Interlocked.Increment(ref _diskHits); return cached; }
                }
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        var ptx = NvrtcCompiler.Compile(source, file, options);
        Interlocked.Increment(ref _compiles);
        if (path is not null) TryWrite(path, ptx);
        return ptx;
    }

    /// <summary>SHA-256 (hex) of everything that determines the PTX.</summary>
    public static string Key(string source, IReadOnlyList<string> options, int arch, string nvrtcVersion)
    {
        var text = string.Join("\0", [source, string.Join("\n", options), arch.ToString(System.Globalization.CultureInfo.InvariantCulture), nvrtcVersion]);
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));
    }

    private static void TryWrite(string path, string ptx)
    {
        string tmp = path + "." + Environment.ProcessId + "." + Guid.NewGuid().ToString("N") + ".tmp";
        try
        {
            System.IO.Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllText(tmp, ptx, new UTF8Encoding(false));
            File.Move(tmp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Debug.WriteLine($"gpuattention: PTX cache not written ({e.Message})");
            try { File.Delete(tmp); } catch (Exception) { }
        }
    }
}
