namespace GpuAttention;

/// <summary>The operations a backend may implement. <see cref="Device.SupportsOp"/> asks the backend.</summary>
public enum OpKind
{
    /// <summary>Fused scaled dot-product attention, forward (out, lse).</summary>
    Sdpa,
    /// <summary>Fused scaled dot-product attention, backward (grad_q, grad_k, grad_v).</summary>
    SdpaBackward,
    /// <summary>Batched tiled GEMM, C = alpha op(A) op(B) + beta C.</summary>
    Gemm,
    /// <summary>affine_grid forward.</summary>
    AffineGrid,
    /// <summary>affine_grid backward (grad_theta).</summary>
    AffineGridBackward,
    /// <summary>grid_sample forward.</summary>
    GridSample,
    /// <summary>grid_sample backward (grad_input, grad_grid).</summary>
    GridSampleBackward,
    /// <summary>Separable Gaussian glimpse forward.</summary>
    Glimpse,
    /// <summary>Separable Gaussian glimpse backward (grad_image, grad_params).</summary>
    GlimpseBackward,
}

/// <summary>The kind of backend a <see cref="Device"/> runs on.</summary>
public enum BackendKind
{
    /// <summary>Managed CPU backend (C# SIMD, multi-threaded). Always present.</summary>
    Cpu,
    /// <summary>OpenCL 1.2 through the ICD loader (PoCL, vendor drivers).</summary>
    OpenCL,
    /// <summary>CUDA driver API with kernels compiled by NVRTC.</summary>
    Cuda,
    /// <summary>Hand-written C# kernels compiled by ILGPU, on its CUDA or OpenCL accelerator or its CPU simulator
    /// (<c>ilgpu:cpu</c>, for verification); also a device opened over a caller's accelerator (<see cref="Device.FromAccelerator"/>).</summary>
    Ilgpu,
}
