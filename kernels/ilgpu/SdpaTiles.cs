using System.Runtime.CompilerServices;
using ILGPU;

namespace GpuAttention.Kernels.Ilgpu;

// Compile-time configuration of the SDPA kernels (SdpaForward.cs, SdpaBackward.cs): struct type arguments whose properties
// return literals. ILGPU inlines the property getters of a struct type parameter, so every size below becomes an IR constant:
// fixed-size shared arrays, shifts instead of divisions, dead branches of unused accumulator columns removed.
//
// Head-dimension buckets: E (q/k) and Ev (v/out) are each rounded up to 64, 128 or 256 (any E, Ev in 1..256 runs; loops over
// the head dimension use the actual E / Ev, the bucket only sizes the shared tiles and the register accumulators).
// A bucket is a power of two, which the shared-memory swizzle (SdpaMath.Swz) and the index arithmetic rely on.
//
// Warps per block (W1..W8): every warp owns 4 rows (query rows in the forward and dQ pass, key rows in the dK/dV pass), so a
// block owns 4·W rows. The host (IlgpuSdpa) takes the largest W whose shared memory fits in 48 KiB, the static shared-memory
// limit of one block on sm_80/sm_90 without the dynamic opt-in (which ILGPU does not request):
//   forward:   4W·E + 32·max(E, Ev) floats  → W = 8 (BM = 32 rows, 256 threads) for E ≤ 128, W = 4 (BM = 16) for E = 256.
//   backward:  4W·(E + Ev) + 32·max(E, Ev)  → W = 8 up to E + Ev = 256 (e.g. 64/64, 128/128 = exactly 48 KiB), W = 2 with a
//              256 bucket on either side.
// At 48 KiB a block, an sm_80 SM (164 KiB usable) holds 3 blocks = 24 warps, an sm_90 SM (227 KiB) 4 blocks = 32 warps; the
// 64-bucket forward (40 KiB) fits 4 / 5 blocks. Larger blocks would reuse each streamed K/V tile for more rows but cut
// occupancy below what the fp32 SIMT loop (shared-memory-bandwidth bound, see SdpaForward.cs) needs to hide latency.
//
// ptxas 11.8 -v -arch=sm_80 on ILGPU 1.5.3's PTX (ISA 7.8, MathMode.Fast32BitOnly), every shipped configuration:
// 0 bytes stack frame, 0 spill stores/loads, no .local in the PTX (the Row4 micro-tiles stay in registers).
//   kernel (E,Ev bucket, W)            registers  smem      kernel                     registers  smem
//   forward 64/64 W8                   64         16 KiB    dq 64/64 W8                72         24 KiB
//   forward 64/256 W8                  96         40 KiB    dq 128/128 W8              80         48 KiB
//   forward 128/128 W8                 72         32 KiB    dq 256/256 W2              106        48 KiB
//   forward 128/256 W8                 96         48 KiB    dkdv 64/64 W8              48         24 KiB
//   forward 256/256 W4                 96         48 KiB    dkdv 128/128 W8            72         48 KiB
//   decode split 64/64 W1              64         9 KiB     dkdv 256/256 W2            128        48 KiB
//   decode split 256/256 W1            95         36 KiB    combine / preprocess       32 / 30    0
// (sm_90: forward 256/256 96, dq 128/128 90, dkdv 256/256 150 registers, also spill-free.) With 256 threads a block, 64
// registers allow 4 blocks per SM by registers, 72–96 allow 2–3; shared memory allows 3 (sm_80) or 4 (sm_90) 48 KiB blocks,
// so the two limits agree and neither wastes the other. The decode split (one warp a block, many blocks) is bounded by shared
// memory at 256 buckets (4 blocks = 4 warps an SM on sm_80): enough for the short split launches, a known limit (see IlgpuSdpa).

/// <summary>Head-dimension buckets of an SDPA kernel: E and Ev rounded up to 64, 128 or 256, and their maximum.</summary>
internal interface ISdpaHeads
{
    /// <summary>Bucket of E (q/k head dim): row length of the Q and K tiles in shared memory.</summary>
    int E { get; }
    /// <summary>Bucket of Ev (v/out head dim).</summary>
    int Ev { get; }
    /// <summary>max(E, Ev): row stride of the shared 32-row streamed tile that holds K, then V (or Q, then dO).</summary>
    int Max { get; }
}

/// <summary>Warps per thread block (each warp owns 4 rows).</summary>
internal interface ISdpaWarps
{
    /// <summary>Warps per block.</summary>
    int Count { get; }
}

/// <summary>Forward kernel flavour: a full forward (writes out and lse) or one split of the split-key decode (writes partials).</summary>
internal interface ISdpaMode
{
    /// <summary>True: the block's rows are all L (≤ 4) rows of one (b, h) and its keys one split; partial (m, l, acc) are written.</summary>
    bool Split { get; }
}

internal struct H64x64 : ISdpaHeads { public int E => 64; public int Ev => 64; public int Max => 64; }
internal struct H64x128 : ISdpaHeads { public int E => 64; public int Ev => 128; public int Max => 128; }
internal struct H64x256 : ISdpaHeads { public int E => 64; public int Ev => 256; public int Max => 256; }
internal struct H128x64 : ISdpaHeads { public int E => 128; public int Ev => 64; public int Max => 128; }
internal struct H128x128 : ISdpaHeads { public int E => 128; public int Ev => 128; public int Max => 128; }
internal struct H128x256 : ISdpaHeads { public int E => 128; public int Ev => 256; public int Max => 256; }
internal struct H256x64 : ISdpaHeads { public int E => 256; public int Ev => 64; public int Max => 256; }
internal struct H256x128 : ISdpaHeads { public int E => 256; public int Ev => 128; public int Max => 256; }
internal struct H256x256 : ISdpaHeads { public int E => 256; public int Ev => 256; public int Max => 256; }

internal struct W1 : ISdpaWarps { public int Count => 1; }
internal struct W2 : ISdpaWarps { public int Count => 2; }
internal struct W4 : ISdpaWarps { public int Count => 4; }
internal struct W8 : ISdpaWarps { public int Count => 8; }

internal struct FullMode : ISdpaMode { public bool Split => false; }
internal struct SplitMode : ISdpaMode { public bool Split => true; }

/// <summary>Scalar arguments of the SDPA kernels (one struct: ILGPU passes it by value in the kernel's parameter space).</summary>
internal struct SdpaParams
{
    public int Hq, Hkv, L, S, E, Ev;
    /// <summary>Softmax scale (natural).</summary>
    public float Scale;
    /// <summary>Scale · log2(e): scores are kept in the log2 domain so that every exponential is one exp2 (ex2 on PTX).</summary>
    public float ScaleLog2;
    public int Causal, HasMask;
    /// <summary>Mask element (b, h, i, j) at b·Msb + h·Msh + i·Msl + j·Mss (0 on broadcast dims).</summary>
    public long Msb, Msh, Msl, Mss;
    /// <summary>Split-key decode: keys per split and the number of splits (unused by the full forward).</summary>
    public int KeysPerSplit, NumSplits;
}

/// <summary>Four per-row values of one thread (its warp's 4 rows): a register micro-tile column, written as scalars so that it
/// stays in registers (an array would live in local memory on a GPU).</summary>
internal struct Row4
{
    public float A, B, C, D;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Row4(float a, float b, float c, float d) { A = a; B = b; C = c; D = d; }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Row4 All(float x) => new(x, x, x, x);

    /// <summary>this + p ∘ v.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly Row4 Fma(Row4 p, float v) => new(A + p.A * v, B + p.B * v, C + p.C * v, D + p.D * v);

    /// <summary>this + (p == 0 ? 0 : p ∘ v) per row: a zero weight adds nothing, even for a non-finite v (no 0·∞).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly Row4 FmaNz(Row4 w, Row4 p, float v) => new(
        p.A == 0f ? A : A + w.A * v, p.B == 0f ? B : B + w.B * v, p.C == 0f ? C : C + w.C * v, p.D == 0f ? D : D + w.D * v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly Row4 Mul(Row4 s) => new(A * s.A, B * s.B, C * s.C, D * s.D);

    /// <summary>Every lane gets lane <paramref name="src"/>'s values (4 shfl.idx).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly Row4 Broadcast(int src) =>
        new(Warp.Shuffle(A, src), Warp.Shuffle(B, src), Warp.Shuffle(C, src), Warp.Shuffle(D, src));
}
