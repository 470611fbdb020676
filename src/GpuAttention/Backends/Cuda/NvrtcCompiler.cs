using System.Text;
using GpuAttention.Backends.Cuda.Native;

namespace GpuAttention.Backends.Cuda;

/// <summary>Compiles CUDA C++ to PTX with NVRTC (no GPU needed). Thread-safe (each call has its own nvrtcProgram).</summary>
internal static unsafe class NvrtcCompiler
{
    /// <summary>
    /// Compiles <paramref name="source"/> (named <paramref name="name"/> in messages and #line directives) with the
    /// NVRTC <paramref name="options"/> and returns the PTX text.
    /// </summary>
    /// <exception cref="BackendUnavailableException">NVRTC is not installed; the message says which libraries were probed.</exception>
    /// <exception cref="KernelCompileException">The source did not compile; the message holds NVRTC's log.</exception>
    public static string Compile(string source, string name, IReadOnlyList<string> options)
    {
        if (!Nvrtc.TryLoad(out var reason)) throw new BackendUnavailableException(reason!);
        var src = Encoding.UTF8.GetBytes(source + "\0");
        var nm = Encoding.UTF8.GetBytes(name + "\0");
        nint raw;
        fixed (byte* s = src) fixed (byte* n = nm)
            Nvrtc.Check(Nvrtc.nvrtcCreateProgram(&raw, s, n, 0, null, null), "nvrtcCreateProgram");
        using var program = new NvrtcProgram(raw);

        var opts = options.Select(o => Encoding.UTF8.GetBytes(o + "\0")).ToArray();
        var handles = opts.Select(o => System.Runtime.InteropServices.GCHandle.Alloc(o, System.Runtime.InteropServices.GCHandleType.Pinned)).ToArray();
        int err;
        try
        {
            var ptrs = stackalloc byte*[Math.Max(1, opts.Length)];
            for (int i = 0; i < opts.Length; i++) ptrs[i] = (byte*)handles[i].AddrOfPinnedObject();
            err = Nvrtc.nvrtcCompileProgram(program.Raw, opts.Length, ptrs);
        }
        finally
        {
            foreach (var h in handles) h.Free();
        }
        if (err != Nvrtc.NVRTC_SUCCESS)
            throw new KernelCompileException("nvrtc", name, string.Join(" ", options), Log(program), "nvrtcCompileProgram: " + Nvrtc.ErrorString(err));

        nuint size;
        Nvrtc.Check(Nvrtc.nvrtcGetPTXSize(program.Raw, &size), "nvrtcGetPTXSize");
        var ptx = new byte[(int)size];
        fixed (byte* p = ptx) Nvrtc.Check(Nvrtc.nvrtcGetPTX(program.Raw, p), "nvrtcGetPTX");
        int end = Array.IndexOf(ptx, (byte)0);
        return Encoding.UTF8.GetString(ptx, 0, end < 0 ? ptx.Length : end);
    }

    private static string Log(NvrtcProgram program)
    {
        nuint size;
        if (Nvrtc.nvrtcGetProgramLogSize(program.Raw, &size) != Nvrtc.NVRTC_SUCCESS || size <= 1) return "";
        var buf = new byte[(int)size];
        fixed (byte* b = buf)
            if (Nvrtc.nvrtcGetProgramLog(program.Raw, b) != Nvrtc.NVRTC_SUCCESS) return "";
        int end = Array.IndexOf(buf, (byte)0);
        return Encoding.UTF8.GetString(buf, 0, end < 0 ? buf.Length : end).Trim();
    }
}
