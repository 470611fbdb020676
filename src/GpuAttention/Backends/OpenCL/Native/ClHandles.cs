using System.Runtime.InteropServices;

namespace GpuAttention.Backends.OpenCL.Native;

/// <summary>
/// Base of the OpenCL object handles: a pointer-sized handle released once with its clRelease* (<see cref="Release"/>).
/// Every live handle is counted in <see cref="Diagnostics.NativeResources.OpenClHandles"/>.
/// </summary>
internal abstract class ClHandle : SafeHandle
{
    protected ClHandle(nint handle) : base(nint.Zero, ownsHandle: true)
    {
        SetHandle(handle);
        if (handle != nint.Zero) Diagnostics.NativeResources.OpenClHandleCreated();
    }

    /// <summary>Calls the object's clRelease*; true on success.</summary>
    protected abstract bool Release(nint h);

    protected sealed override bool ReleaseHandle()
    {
        Diagnostics.NativeResources.OpenClHandleReleased();
        return Release(handle);
    }

    public override bool IsInvalid => handle == nint.Zero;

    /// <summary>The raw handle for a native call; the caller keeps this object alive across the call.</summary>
    public nint Raw => IsClosed ? throw new ObjectDisposedException(GetType().Name) : handle;
}

/// <summary>A cl_context.</summary>
internal sealed class ClContext(nint h) : ClHandle(h)
{
    protected override bool Release(nint h) => Cl.Api.ReleaseContext(h) == Cl.CL_SUCCESS;
}

/// <summary>A cl_command_queue.</summary>
internal sealed class ClQueue(nint h) : ClHandle(h)
{
    protected override bool Release(nint h) => Cl.Api.ReleaseCommandQueue(h) == Cl.CL_SUCCESS;
}

/// <summary>A cl_mem buffer (OpenCL defers the actual free until queued commands using it have finished).</summary>
internal sealed class ClMem(nint h) : ClHandle(h)
{
    protected override bool Release(nint h) => Cl.Api.ReleaseMemObject(h) == Cl.CL_SUCCESS;
}

/// <summary>A cl_program.</summary>
internal sealed class ClProgram(nint h) : ClHandle(h)
{
    protected override bool Release(nint h) => Cl.Api.ReleaseProgram(h) == Cl.CL_SUCCESS;
}

/// <summary>A cl_kernel.</summary>
internal sealed class ClKernel(nint h) : ClHandle(h)
{
    protected override bool Release(nint h) => Cl.Api.ReleaseKernel(h) == Cl.CL_SUCCESS;
}
