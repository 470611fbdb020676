using System.Collections.Concurrent;
using System.Runtime.InteropServices;

namespace GpuAttention.Backends;

/// <summary>
/// The one DllImport resolver of this assembly (an assembly may register only one): each native binding
/// (CUDA driver, NVRTC) loads its library lazily, with its own per-OS probing, and registers the
/// handle here under the import name its <c>LibraryImport</c> declarations use. OpenCL goes through Silk.NET.OpenCL
/// (Native/Cl.cs), which uses <see cref="TryLoadFirst"/> only and resolves entry points itself.
/// </summary>
internal static class NativeImports
{
    private static readonly ConcurrentDictionary<string, nint> Handles = new(StringComparer.Ordinal);
    private static int _installed;

    /// <summary>Makes <c>[LibraryImport(<paramref name="importName"/>)]</c> resolve to <paramref name="handle"/>.</summary>
    /// <exception cref="InvalidOperationException">Some other code registered a DllImport resolver for this assembly first.</exception>
    public static void Register(string importName, nint handle)
    {
        Handles[importName] = handle;
        if (Interlocked.Exchange(ref _installed, 1) == 0)
        {
            try
            {
                NativeLibrary.SetDllImportResolver(typeof(NativeImports).Assembly,
                    static (name, _, _) => Handles.TryGetValue(name, out var h) ? h : nint.Zero);
            }
            catch
            {
                Handles.TryRemove(importName, out _);
                Volatile.Write(ref _installed, 0);
                throw;
            }
        }
    }

    /// <summary>Tries each candidate (a file name for the loader's search, or a full path) in order; the first that loads wins.</summary>
    public static bool TryLoadFirst(IEnumerable<string> candidates, out nint handle, out string? loaded)
    {
        foreach (var c in candidates)
        {
            if (NativeLibrary.TryLoad(c, out handle)) { loaded = c; return true; }
        }
        handle = nint.Zero;
        loaded = null;
        return false;
    }
}
