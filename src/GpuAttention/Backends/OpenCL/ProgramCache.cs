using System.Text;
using GpuAttention.Backends.OpenCL.Native;
using Silk.NET.OpenCL;

namespace GpuAttention.Backends.OpenCL;

/// <summary>
/// Programs compiled from <see cref="KernelSources.WithPrelude"/> with -D defines, cached per
/// (source file, defines) for the one device/context of its backend (CLBlast style), and the kernel
/// objects created from them.
/// <para>Thread safety: a cached cl_kernel is shared, and clSetKernelArg + clEnqueueNDRangeKernel on a shared
/// kernel object is not thread-safe (the arguments are state of the kernel object). <see cref="Device"/> serialises
/// every backend call with its queue lock, which makes this safe; the cache's own dictionaries are guarded by a lock too.</para>
/// </summary>
internal sealed unsafe class ProgramCache : IDisposable
{
    private readonly ClContext _context;
    private readonly nint _device;
    private readonly object _lock = new();
    private readonly Dictionary<(string File, string Defines), ClProgram> _programs = new();
    private readonly Dictionary<(string File, string Defines, string Kernel), ClKernel> _kernels = new();

    public ProgramCache(ClContext context, nint device)
    {
        _context = context;
        _device = device;
    }

    /// <summary>Number of programs compiled so far (for tests and diagnostics).</summary>
    public int ProgramCount { get { lock (_lock) return _programs.Count; } }

    /// <summary>Whether kernels/<paramref name="file"/> was built with exactly <paramref name="defines"/> (for tests: what the host launched).</summary>
    public bool Contains(string file, string defines) { lock (_lock) return _programs.ContainsKey((file, defines)); }

    /// <summary>The kernel <paramref name="kernel"/> of kernels/<paramref name="file"/> built with <paramref name="defines"/> (e.g. "-DHEAD_DIM=64").</summary>
    public ClKernel Kernel(string file, string defines, string kernel)
    {
        lock (_lock)
        {
            if (_kernels.TryGetValue((file, defines, kernel), out var k)) return k;
            if (!_programs.TryGetValue((file, defines), out var p))
            {
                p = Build(KernelSources.WithPrelude(file), defines, file);
                _programs[(file, defines)] = p;
            }
            k = CreateKernel(p, kernel);
            _kernels[(file, defines, kernel)] = k;
            return k;
        }
    }

    /// <summary>Compiles arbitrary OpenCL C (uncached). Throws <see cref="KernelCompileException"/> with the build log on a compile error.</summary>
    public ClProgram Build(string source, string options, string name = "<source>")
    {
        var bytes = Encoding.UTF8.GetBytes(source);
        int err;
        nint h;
        fixed (byte* s = bytes)
        {
            byte* sp = s;
            nuint len = (nuint)bytes.Length;
            h = Cl.Api.CreateProgramWithSource(_context.Raw, 1, &sp, &len, &err);
        }
        Cl.Check(err, "clCreateProgramWithSource");
        var program = new ClProgram(h);
        try
        {
            var opts = Encoding.UTF8.GetBytes(options + "\0");
            nint dev = _device;
            fixed (byte* o = opts) err = Cl.Api.BuildProgram(program.Raw, 1, &dev, o, null, null);
            if (err != Cl.CL_SUCCESS)
            {
                string log = BuildLog(program);
                if (err == Cl.CL_BUILD_PROGRAM_FAILURE || log.Length > 0) throw new KernelCompileException("opencl", name, options, log, "clBuildProgram: " + Cl.ErrorName(err));
                Cl.Check(err, "clBuildProgram");
            }
            GC.KeepAlive(_context);
            return program;
        }
        catch
        {
            program.Dispose();
            throw;
        }
    }

    /// <summary>Creates a kernel object from a built program.</summary>
    public static ClKernel CreateKernel(ClProgram program, string name)
    {
        var n = Encoding.ASCII.GetBytes(name + "\0");
        int err;
        nint k;
        fixed (byte* p = n) k = Cl.Api.CreateKernel(program.Raw, p, &err);
        Cl.Check(err, $"clCreateKernel({name})");
        return new ClKernel(k);
    }

    private string BuildLog(ClProgram program)
    {
        nuint size;
        if (Cl.Api.GetProgramBuildInfo(program.Raw, _device, ProgramBuildInfo.BuildLog, 0, null, &size) != Cl.CL_SUCCESS || size == 0) return "";
        var buf = new byte[(int)size];
        fixed (byte* b = buf)
            if (Cl.Api.GetProgramBuildInfo(program.Raw, _device, ProgramBuildInfo.BuildLog, size, b, null) != Cl.CL_SUCCESS) return "";
        return Cl.Decode(buf);
    }

    public void Dispose()
    {
        lock (_lock)
        {
            foreach (var k in _kernels.Values) k.Dispose();
            foreach (var p in _programs.Values) p.Dispose();
            _kernels.Clear();
            _programs.Clear();
        }
    }
}
