using System.Diagnostics.CodeAnalysis;
using System.Reflection;
using GpuAttention.Kernels.Ilgpu;
using ILGPU;
using ILGPU.Runtime;

namespace GpuAttention.Backends.Ilgpu;

/// <summary>
/// Host launcher of the ILGPU SDPA kernels (<c>kernels/ilgpu/Sdpa*.cs</c>) on one <see cref="Accelerator"/>: picks the
/// compile-time configuration (head-dim buckets, warps per block) of each call, loads and caches each kernel the first time
/// it is needed, and enqueues on the caller's stream without waiting. Owns small grow-only scratch buffers (split-key
/// partials, D of the backward, a 1-element stand-in for an absent mask). Not thread-safe: the backend serialises calls.
/// Empty B, Hq, L give no work here; E = 0 or Ev = 0 never reach it (the Device layer runs those on the CPU backend).
/// </summary>
internal sealed class IlgpuSdpa : IDisposable
{
    private readonly Accelerator _acc;
    private readonly Dictionary<MethodInfo, Delegate> _kernels = new();
    private MemoryBuffer1D<float, Stride1D.Dense>? _dummy, _partAcc, _partMl, _dsum;

    /// <summary>Creates the launcher for <paramref name="accelerator"/> (kernels are compiled lazily).</summary>
    public IlgpuSdpa(Accelerator accelerator) => _acc = accelerator;

    /// <summary>Calls with L ≤ 4 and at least this many visible keys take the split-key decode path.</summary>
    public int SplitMinKeys { get; set; } = 512;

    /// <summary>Keys per split of the decode path (a multiple of 32; 256 = 8 key tiles per block).</summary>
    public int SplitChunk { get; set; } = 256;

    /// <summary>Largest head dimension (E and Ev) the kernels take.</summary>
    public const int MaxHeadDim = 256;

    private const int SharedFloats = 48 * 1024 / sizeof(float);     // the static shared-memory limit of one block

    private static int Bucket(int d) => d <= 64 ? 64 : d <= 128 ? 128 : 256;

    private static Type HeadsType(int de, int dv) => (de, dv) switch
    {
        (64, 64) => typeof(H64x64), (64, 128) => typeof(H64x128), (64, 256) => typeof(H64x256),
        (128, 64) => typeof(H128x64), (128, 128) => typeof(H128x128), (128, 256) => typeof(H128x256),
        (256, 64) => typeof(H256x64), (256, 128) => typeof(H256x128), (256, 256) => typeof(H256x256),
        _ => throw new ArgumentOutOfRangeException(nameof(de), $"no head-dim bucket {de}x{dv}"),
    };

    private static Type WarpsType(int w) => w switch { 1 => typeof(W1), 2 => typeof(W2), 4 => typeof(W4), _ => typeof(W8) };

    /// <summary>Warps per forward block: the most (≤ 8) whose Q rows (4W·E) plus the streamed 32-row tile fit in 48 KiB.</summary>
    internal static int ForwardWarps(int de, int dv)
    {
        int w = 8;
        while (w > 1 && 4 * w * de + 32 * Math.Max(de, dv) > SharedFloats) w /= 2;
        return w;
    }

    /// <summary>Warps per backward block (dQ: Q and dO rows; dK/dV: K and V rows; plus the streamed tile), within 48 KiB.</summary>
    internal static int BackwardWarps(int de, int dv)
    {
        int w = 8;
        while (w > 1 && 4 * w * (de + dv) + 32 * Math.Max(de, dv) > SharedFloats) w /= 2;
        return w;
    }

    private static readonly int[] Buckets = [64, 128, 256];

    [UnconditionalSuppressMessage("Trimming", "IL2060", Justification = "the type arguments are the struct types of SdpaTiles.cs, referenced statically here")]
    private static MethodInfo Generic([DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicMethods)] Type t, string name, params Type[] args) =>
        t.GetMethod(name, BindingFlags.Public | BindingFlags.Static)!.MakeGenericMethod(args);

    private static MethodInfo ForwardMethod(int de, int dv, bool split) =>
        Generic(typeof(SdpaForwardKernels), nameof(SdpaForwardKernels.Forward), HeadsType(de, dv),
            WarpsType(split ? 1 : ForwardWarps(de, dv)), split ? typeof(SplitMode) : typeof(FullMode));

    private static MethodInfo DqMethod(int de, int dv) =>
        Generic(typeof(SdpaBackwardKernels), nameof(SdpaBackwardKernels.Dq), HeadsType(de, dv), WarpsType(BackwardWarps(de, dv)));

    private static MethodInfo DkDvMethod(int de, int dv) =>
        Generic(typeof(SdpaBackwardKernels), nameof(SdpaBackwardKernels.DkDv), HeadsType(de, dv), WarpsType(BackwardWarps(de, dv)));

    private static readonly MethodInfo CombineMethod = typeof(SdpaForwardKernels).GetMethod(nameof(SdpaForwardKernels.DecodeCombine))!;
    private static readonly MethodInfo PreprocessMethod = typeof(SdpaBackwardKernels).GetMethod(nameof(SdpaBackwardKernels.Preprocess))!;

    /// <summary>Every closed kernel configuration this launcher can pick (for the PTX gate): per head-dim bucket pair the forward,
    /// the decode split, dQ and dK/dV; plus the decode combine and the backward preprocess.</summary>
    internal static IEnumerable<IlgpuKernelConfig> ShippedConfigs()
    {
        const string family = "sdpa";
        foreach (int de in Buckets)
        foreach (int dv in Buckets)
        {
            string hd = $"E{de},Ev{dv}";
            yield return new(family, $"sdpa_forward<{hd},W{ForwardWarps(de, dv)}>", ForwardMethod(de, dv, false), IlgpuKernelKind.ExplicitlyGrouped);
            yield return new(family, $"sdpa_decode_split<{hd},W1>", ForwardMethod(de, dv, true), IlgpuKernelKind.ExplicitlyGrouped);
            yield return new(family, $"sdpa_bwd_dq<{hd},W{BackwardWarps(de, dv)}>", DqMethod(de, dv), IlgpuKernelKind.ExplicitlyGrouped);
            yield return new(family, $"sdpa_bwd_dkdv<{hd},W{BackwardWarps(de, dv)}>", DkDvMethod(de, dv), IlgpuKernelKind.ExplicitlyGrouped);
        }
        yield return new(family, "sdpa_decode_combine", CombineMethod, IlgpuKernelKind.ExplicitlyGrouped);
        yield return new(family, "sdpa_bwd_preprocess", PreprocessMethod, IlgpuKernelKind.ExplicitlyGrouped);
    }

    private TLauncher Load<TKernel, TLauncher>(MethodInfo method, Func<Accelerator, TKernel, TLauncher> load)
        where TKernel : Delegate where TLauncher : Delegate
    {
        if (_kernels.TryGetValue(method, out var d)) return (TLauncher)d;
        var launcher = load(_acc, method.CreateDelegate<TKernel>());
        _kernels[method] = launcher;
        return launcher;
    }

    private ArrayView<float> Grow(ref MemoryBuffer1D<float, Stride1D.Dense>? buf, long n)
    {
        n = Math.Max(n, 1);
        if (buf is null || buf.Length < n)
        {
            buf?.Dispose();                                 // CUDA frees synchronously: no kernel still uses it
            buf = _acc.Allocate1D<float>(n);
        }
        return buf.View.SubView(0, n);
    }

    private ArrayView<float> MaskOrDummy(ArrayView<float> mask, bool has) => has ? mask : Grow(ref _dummy, 1);

    private static SdpaParams Params(in SdpaShape s, bool hasMask) => new()
    {
        Hq = s.Hq, Hkv = s.Hkv, L = s.L, S = s.S, E = s.E, Ev = s.Ev,
        Scale = s.Scale, ScaleLog2 = s.Scale * SdpaMath.Log2E,
        Causal = s.Causal ? 1 : 0, HasMask = hasMask ? 1 : 0,
        Msb = s.MaskStrideB, Msh = s.MaskStrideH, Msl = s.MaskStrideL, Mss = s.MaskStrideS,
    };

    private static void CheckDims(in SdpaShape s, string op)
    {
        if (s.E < 1 || s.E > MaxHeadDim || s.Ev < 1 || s.Ev > MaxHeadDim)
            throw new NotSupportedException($"ilgpu: {op} needs head dimensions 1..{MaxHeadDim} (E = {s.E}, Ev = {s.Ev})");
        if ((long)s.B * s.Hq > int.MaxValue) throw new NotSupportedException($"ilgpu: {op}: B * Hq exceeds 2^31 - 1");
    }

    private static int CeilDiv(long a, int b) => checked((int)((a + b - 1) / b));

    /// <summary>Blocks of a flat grid (heads × tiles in grid X, whose limit is 2³¹ − 1 on every ILGPU target; CUDA's y and z
    /// stop at 65535, which long sequences or many heads would pass).</summary>
    private static int Blocks(long heads, int tiles) =>
        heads * tiles <= int.MaxValue ? (int)(heads * tiles)
        : throw new NotSupportedException($"ilgpu: sdpa needs {heads} x {tiles} thread blocks, more than 2^31 - 1");

    /// <summary>
    /// Enqueues the SDPA forward on <paramref name="stream"/>: out [B,Hq,L,Ev] and lse [B,Hq,L] (natural log) from q, k, v
    /// and the optional additive mask (<paramref name="mask"/> empty when there is none; addressed by the shape's strides).
    /// L ≤ 4 with at least <see cref="SplitMinKeys"/> visible keys takes the split-key decode (partials + combine).
    /// </summary>
    public void Forward(AcceleratorStream stream, in SdpaShape shape, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v,
        ArrayView<float> mask, ArrayView<float> o, ArrayView<float> lse)
    {
        var s = shape;
        if (s.B == 0 || s.Hq == 0 || s.L == 0) return;
        CheckDims(s, "sdpa");
        bool hasMask = mask.IsValid && mask.Length > 0;
        var p = Params(s, hasMask);
        var m = MaskOrDummy(mask, hasMask);
        int de = Bucket(s.E), dv = Bucket(s.Ev);
        int bh = s.B * s.Hq;
        int keys = s.Causal ? Math.Min(s.S, s.L) : s.S;

        if (s.L <= 4 && keys >= SplitMinKeys && keys > 0)
        {
            int chunk = Math.Max(32, SplitChunk / 32 * 32);
            int nsplit = CeilDiv(keys, chunk);
            long rows = (long)bh * s.L;
            p.KeysPerSplit = chunk;
            p.NumSplits = nsplit;
            var partAcc = Grow(ref _partAcc, rows * nsplit * s.Ev);
            var partMl = Grow(ref _partMl, rows * nsplit * 2);
            var split = Load<Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SdpaParams>,
                Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SdpaParams>>(
                ForwardMethod(de, dv, true), static (a, f) => a.LoadKernel(f));
            split(stream, new KernelConfig(Blocks(bh, nsplit), 32), q, k, v, m, partAcc, partMl, p);
            var combine = Load<Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>,
                Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>>(
                CombineMethod, static (a, f) => a.LoadKernel(f));
            combine(stream, new KernelConfig(checked((int)rows), 32), partAcc, partMl, o, lse, nsplit, s.Ev);
            return;
        }

        int w = ForwardWarps(de, dv);
        var fwd = Load<Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SdpaParams>,
            Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SdpaParams>>(
            ForwardMethod(de, dv, false), static (a, f) => a.LoadKernel(f));
        fwd(stream, new KernelConfig(Blocks(bh, CeilDiv(s.L, 4 * w)), 32 * w), q, k, v, m, o, lse, p);
    }

    /// <summary>
    /// Enqueues the SDPA backward on <paramref name="stream"/>: D = rowsum(dO∘O), then dK/dV (parallel over key blocks) and dQ
    /// (parallel over query blocks); every element of dQ, dK, dV is written (zeros where no row or key contributes).
    /// </summary>
    public void Backward(AcceleratorStream stream, in SdpaShape shape, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v,
        ArrayView<float> mask, ArrayView<float> o, ArrayView<float> lse, ArrayView<float> dO,
        ArrayView<float> dQ, ArrayView<float> dK, ArrayView<float> dV)
    {
        var s = shape;
        if (s.B == 0 || s.Hkv == 0) return;                 // every output is empty
        CheckDims(s, "sdpa-backward");
        bool hasMask = mask.IsValid && mask.Length > 0;
        var p = Params(s, hasMask);
        var m = MaskOrDummy(mask, hasMask);
        int de = Bucket(s.E), dv = Bucket(s.Ev);
        int w = BackwardWarps(de, dv);
        long rows = (long)s.B * s.Hq * s.L;

        var dsum = Grow(ref _dsum, rows);
        if (rows > 0)
        {
            var pre = Load<Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, long, int>,
                Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, long, int>>(
                PreprocessMethod, static (a, f) => a.LoadKernel(f));
            pre(stream, new KernelConfig(CeilDiv(rows, 4), 128), o, dO, dsum, rows, s.Ev);
        }
        if (s.S > 0)
        {
            var dkdv = Load<Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SdpaParams>,
                Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SdpaParams>>(
                DkDvMethod(de, dv), static (a, f) => a.LoadKernel(f));
            dkdv(stream, new KernelConfig(Blocks(s.B * s.Hkv, CeilDiv(s.S, 4 * w)), 32 * w), q, k, v, m, lse, dsum, dO, dK, dV, p);
        }
        if (rows > 0)
        {
            var dq = Load<Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SdpaParams>,
                Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SdpaParams>>(
                DqMethod(de, dv), static (a, f) => a.LoadKernel(f));
            dq(stream, new KernelConfig(Blocks(s.B * s.Hq, CeilDiv(s.L, 4 * w)), 32 * w), q, k, v, m, lse, dsum, dO, dQ, p);
        }
    }

    /// <summary>Frees the scratch buffers (loaded kernels belong to the accelerator).</summary>
    public void Dispose()
    {
        _dummy?.Dispose(); _partAcc?.Dispose(); _partMl?.Dispose(); _dsum?.Dispose();
        _dummy = _partAcc = _partMl = _dsum = null;
    }
}
