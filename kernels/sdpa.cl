// Fused scaled dot-product attention (FlashAttention-2). Placeholder until the OpenCL backend lands.
