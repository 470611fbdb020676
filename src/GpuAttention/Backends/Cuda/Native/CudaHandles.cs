using System.Runtime.InteropServices;

namespace GpuAttention.Backends.Cuda.Native;

/// <summary>
/// A retained primary context of one device (cuDevicePrimaryCtxRetain), released with cuDevicePrimaryCtxRelease.
/// Every other CUDA handle adds a reference to its context, so the context outlives its buffers, streams, events
/// and modules whatever order they are disposed or finalized in.
/// </summary>
internal sealed class CuContext : SafeHandle
{
    public CuContext(nint context, int device) : base(nint.Zero, ownsHandle: true)
    {
        SetHandle(context);
        Device = device;
    }

    /// <summary>The CUdevice ordinal.</summary>
    public int Device { get; }

    public override bool IsInvalid => handle == nint.Zero;

    /// <summary>The raw CUcontext; the caller keeps this object alive across the call.</summary>
    public nint Raw => IsClosed ? throw new ObjectDisposedException(nameof(CuContext)) : handle;

    protected override bool ReleaseHandle() => Cu.cuDevicePrimaryCtxRelease_v2(Device) == Cu.CUDA_SUCCESS;
}

/// <summary>
/// Base of the handles that belong to a context: it holds a reference on the <see cref="CuContext"/> and makes the
/// context current (push / pop) around its release, which may run on the finalizer thread.
/// </summary>
internal abstract class CuOwnedHandle : SafeHandle
{
    private readonly CuContext _context;

    protected CuOwnedHandle(nint handle, CuContext context) : base(nint.Zero, ownsHandle: true)
    {
        bool added = false;
        context.DangerousAddRef(ref added);
        _context = context;
        SetHandle(handle);
    }

    public override bool IsInvalid => handle == nint.Zero;

    /// <summary>The raw handle; the caller keeps this object alive across the call.</summary>
    public nint Raw => IsClosed ? throw new ObjectDisposedException(GetType().Name) : handle;

    /// <summary>Releases the native object; the context is current.</summary>
    protected abstract int Release(nint h);

    protected sealed override unsafe bool ReleaseHandle()
    {
        int err = Cu.cuCtxPushCurrent_v2(_context.DangerousGetHandle());
        try
        {
            return Release(handle) == Cu.CUDA_SUCCESS;
        }
        finally
        {
            if (err == Cu.CUDA_SUCCESS) { nint popped; Cu.cuCtxPopCurrent_v2(&popped); }
            _context.DangerousRelease();
        }
    }
}

/// <summary>Device memory from cuMemAlloc (the handle is the CUdeviceptr).</summary>
internal sealed class CuDeviceMemory(ulong pointer, CuContext context) : CuOwnedHandle((nint)pointer, context)
{
    /// <summary>The CUdeviceptr.</summary>
    public ulong Pointer => (ulong)Raw;
    protected override int Release(nint h) => Cu.cuMemFree_v2((ulong)h);
}

/// <summary>A CUstream.</summary>
internal sealed class CuStream(nint stream, CuContext context) : CuOwnedHandle(stream, context)
{
    protected override int Release(nint h) => Cu.cuStreamDestroy_v2(h);
}

/// <summary>A CUevent.</summary>
internal sealed class CuEvent(nint evt, CuContext context) : CuOwnedHandle(evt, context)
{
    protected override int Release(nint h) => Cu.cuEventDestroy_v2(h);
}

/// <summary>A CUmodule loaded from PTX (its CUfunctions live as long as it does).</summary>
internal sealed class CuModule(nint module, CuContext context) : CuOwnedHandle(module, context)
{
    protected override int Release(nint h) => Cu.cuModuleUnload(h);
}

/// <summary>An nvrtcProgram (host-side compiler state; no context).</summary>
internal sealed class NvrtcProgram : SafeHandle
{
    public NvrtcProgram(nint program) : base(nint.Zero, ownsHandle: true) => SetHandle(program);

    public override bool IsInvalid => handle == nint.Zero;

    public nint Raw => IsClosed ? throw new ObjectDisposedException(nameof(NvrtcProgram)) : handle;

    protected override unsafe bool ReleaseHandle()
    {
        nint h = handle;
        return Nvrtc.nvrtcDestroyProgram(&h) == Nvrtc.NVRTC_SUCCESS;
    }
}
