using System.Reflection;
using GpuAttention.Kernels.Ilgpu;
using ILGPU;
using ILGPU.Runtime;

namespace GpuAttention.Backends.Ilgpu;

/// <summary>
/// Host side of the ILGPU spatial-transformer kernels (kernels/ilgpu/Spatial.cs) on one <see cref="Accelerator"/>: affine_grid,
/// grid_sample and the fused transform-and-sample, forward and backward, mirroring <see cref="ISpatialBackend"/> one for one on
/// the caller's stream and <see cref="ArrayView{T}"/>s. Kernels are compiled on first use and cached; scratch (the fused path's
/// grid gradient, the scatter's partial copies) is kept across calls. Not thread-safe: one caller (one stream) at a time.
/// </summary>
internal sealed class IlgpuSpatial : IDisposable
{
    private readonly Accelerator _acc;
    private readonly IlgpuVisualScratch _scratch;

    private Action<AcceleratorStream, Index2D, ArrayView<float>, ArrayView<float>, int, int, int>? _affineForward;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int, int>? _affineBackward;
    private Action<AcceleratorStream, Index2D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SpatialParams>? _forward;
    private Action<AcceleratorStream, Index2D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SpatialParams>? _backwardGrid;
    private Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SpatialParams>? _backwardInput;
    private Action<AcceleratorStream, Index2D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SpatialParams>? _backwardInputAtomic;
    private Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, int, int>? _sumPartials;

    /// <summary>Launchers on <paramref name="accelerator"/> (owned by the caller; it must outlive this object).</summary>
    public IlgpuSpatial(Accelerator accelerator)
    {
        _acc = accelerator ?? throw new ArgumentNullException(nameof(accelerator));
        _scratch = new IlgpuVisualScratch(accelerator);
        ScatterGroups = accelerator.AcceleratorType == AcceleratorType.CPU ? 16 : 512;
    }

    /// <summary>
    /// How many groups the deterministic grad_input scatter aims for (point chunks are added until N·⌈C/cb⌉·chunks reaches it):
    /// 512 on GPUs (a few waves of 64-thread groups over 100+ SMs), 16 on ILGPU's CPU simulator. A function of the device
    /// only, so a result repeats bit for bit on a device; tests change it to exercise the chunked path.
    /// </summary>
    internal int ScatterGroups { get; set; }

    /// <summary>Every kernel configuration this class launches (one per kernel: mode, padding and align are launch arguments).</summary>
    internal static IEnumerable<IlgpuKernelConfig> ShippedConfigs()
    {
        const string family = "spatial";
        IlgpuKernelConfig Of(string name, IlgpuKernelKind kind) =>
            new(family, "spatial_" + name, typeof(SpatialKernels).GetMethod(name) ?? throw new MissingMethodException(nameof(SpatialKernels), name), kind);
        yield return Of(nameof(SpatialKernels.AffineGridForward), IlgpuKernelKind.ImplicitlyGrouped);
        yield return Of(nameof(SpatialKernels.AffineGridBackward), IlgpuKernelKind.ExplicitlyGrouped);
        yield return Of(nameof(SpatialKernels.Forward), IlgpuKernelKind.ImplicitlyGrouped);
        yield return Of(nameof(SpatialKernels.BackwardGrid), IlgpuKernelKind.ImplicitlyGrouped);
        yield return Of(nameof(SpatialKernels.BackwardInput), IlgpuKernelKind.ExplicitlyGrouped);
        yield return new(family, "spatial_" + nameof(SpatialKernels.BackwardInputAtomic), AtomicScatter(gpu: true), IlgpuKernelKind.ImplicitlyGrouped);
        yield return Of(nameof(SpatialKernels.SumPartials), IlgpuKernelKind.ImplicitlyGrouped);
    }

    /// <summary>The atomic scatter specialised for the device: the native float atomic on GPUs, the bitwise compare-and-swap
    /// loop on ILGPU's CPU simulator (see <see cref="BitwiseCasFloatAdd"/>).</summary>
    private static MethodInfo AtomicScatter(bool gpu) =>
        typeof(SpatialKernels).GetMethod(nameof(SpatialKernels.BackwardInputAtomic))!
            .MakeGenericMethod(gpu ? typeof(NativeFloatAdd) : typeof(BitwiseCasFloatAdd));

    private static void CheckIntRange(long value, string what)
    {
        if (value > int.MaxValue) throw new NotSupportedException($"ilgpu: spatial: {what} = {value} exceeds the kernels' 32-bit index range");
    }

    private static SpatialParams Params(in GridSampleShape s, bool fused) => new()
    {
        C = s.C, H = s.H, W = s.W, Hout = s.Hout, Wout = s.Wout, UseTheta = fused ? 1 : 0,
        Mode = (int)s.Mode, Padding = (int)s.Padding, Align = s.AlignCorners ? 1 : 0,
    };

    private static void CheckShape(in GridSampleShape s)
    {
        CheckIntRange((long)s.H * s.W, "H·W");
        CheckIntRange(s.OutPoints * s.N, "N·Hout·Wout");
    }

    /// <summary>affine_grid: theta [N, 2, 3] → grid [N, H, W, 2].</summary>
    public void AffineGrid(AcceleratorStream stream, int N, int H, int W, bool alignCorners, ArrayView<float> theta, ArrayView<float> grid)
    {
        long P = (long)H * W;
        if (N == 0 || P == 0) return;
        CheckIntRange(P * N, "N·H·W");
        _affineForward ??= _acc.LoadAutoGroupedKernel<Index2D, ArrayView<float>, ArrayView<float>, int, int, int>(SpatialKernels.AffineGridForward);
        _affineForward(stream, new Index2D((int)P, N), theta, grid, H, W, alignCorners ? 1 : 0);
    }

    /// <summary>affine_grid backward: grad_grid [N, H, W, 2] → grad_theta [N, 2, 3] (one group per image, fixed reduction order).</summary>
    public void AffineGridBackward(AcceleratorStream stream, int N, int H, int W, bool alignCorners, ArrayView<float> gradGrid, ArrayView<float> gradTheta)
    {
        if (N == 0) return;
        CheckIntRange((long)H * W, "H·W");
        _affineBackward ??= _acc.LoadKernel<ArrayView<float>, ArrayView<float>, int, int, int>(SpatialKernels.AffineGridBackward);
        _affineBackward(stream, new KernelConfig(N, SpatialKernels.RedGroup), gradGrid, gradTheta, H, W, alignCorners ? 1 : 0);
    }

    /// <summary>
    /// grid_sample forward. Exactly one of <paramref name="grid"/> [N, Hout, Wout, 2] and <paramref name="theta"/> [N, 2, 3] is a
    /// non-empty view (the other <see cref="ArrayView{T}.Empty"/>); with theta the points are affine_grid(theta), computed in registers.
    /// </summary>
    public void GridSample(AcceleratorStream stream, in GridSampleShape s, ArrayView<float> input, ArrayView<float> grid, ArrayView<float> theta, ArrayView<float> output)
    {
        long P = s.OutPoints;
        if (s.N == 0 || s.C == 0 || P == 0) return;
        CheckShape(s);
        _forward ??= _acc.LoadAutoGroupedKernel<Index2D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SpatialParams>(SpatialKernels.Forward);
        _forward(stream, new Index2D((int)P, s.N), input, grid, theta, output, Params(s, theta.Length > 0));
    }

    /// <summary>
    /// Channel block (group size) and point chunking of the deterministic scatter: a function of the shape and
    /// <see cref="ScatterGroups"/> only, so results repeat bit for bit. Chunks add parallelism when N·⌈C/cb⌉ is small, bounded by
    /// the partial copies' memory (≤ 256 MiB) and by 256 points per chunk.
    /// </summary>
    internal (int Cb, int Chunks, int ChunkPoints) ScatterConfig(in GridSampleShape s)
    {
        int cb = 1;
        while (cb < s.C && cb < SpatialKernels.ChannelBlock) cb *= 2;
        long groups = (long)s.N * ((s.C + cb - 1) / cb);
        long target = ScatterGroups;
        long perCopy = (long)s.N * s.C * s.H * s.W;
        long chunks = groups >= target ? 1 : (target + groups - 1) / groups;
        chunks = Math.Min(chunks, Math.Max(1, (s.OutPoints + 255) / 256));
        chunks = Math.Min(chunks, Math.Max(1, (256L << 20) / 4 / Math.Max(1, perCopy)));
        if (chunks > 1 && perCopy * chunks > int.MaxValue) chunks = 1;
        long chunkPoints = (s.OutPoints + chunks - 1) / chunks;
        chunks = (s.OutPoints + chunkPoints - 1) / chunkPoints;
        return (cb, (int)chunks, (int)chunkPoints);
    }

    /// <summary>
    /// grid_sample backward: grad_input [N, C, H, W] and grad_grid [N, Hout, Wout, 2]; fused (<paramref name="theta"/> non-empty,
    /// <paramref name="grid"/> and <paramref name="gradGrid"/> empty): grad_theta [N, 2, 3] instead, through a scratch grid
    /// gradient. Deterministic unless <paramref name="atomic"/> (then grad_input is scattered with float atomic adds).
    /// </summary>
    public void GridSampleBackward(AcceleratorStream stream, in GridSampleShape s, ArrayView<float> input, ArrayView<float> grid, ArrayView<float> theta,
        ArrayView<float> gradOut, ArrayView<float> gradInput, ArrayView<float> gradGrid, ArrayView<float> gradTheta, bool atomic = false)
    {
        long P = s.OutPoints;
        long len = (long)s.N * s.C * s.H * s.W;
        bool fused = theta.Length > 0;
        if (len > 0) gradInput.MemSetToZero(stream);
        if (s.N == 0) return;
        if (P == 0)
        {
            if (fused) gradTheta.MemSetToZero(stream);
            else if (gradGrid.Length > 0) gradGrid.MemSetToZero(stream);
            return;
        }
        CheckShape(s);
        var sp = Params(s, fused);
        var gridGrad = fused ? _scratch.Get("spatial.grad_grid", s.N * P * 2, stream) : gradGrid;
        _backwardGrid ??= _acc.LoadAutoGroupedKernel<Index2D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SpatialParams>(SpatialKernels.BackwardGrid);
        _backwardGrid(stream, new Index2D((int)P, s.N), input, grid, theta, gradOut, gridGrad, sp);
        if (s.C > 0 && len > 0 && atomic)
        {
            _backwardInputAtomic ??= _acc.LoadAutoGroupedKernel(AtomicScatter(gpu: _acc.AcceleratorType != AcceleratorType.CPU)
                .CreateDelegate<Action<Index2D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SpatialParams>>());
            _backwardInputAtomic(stream, new Index2D((int)P, s.N), grid, theta, gradOut, gradInput, sp);
        }
        else if (s.C > 0 && len > 0)
        {
            CheckIntRange(len, "N·C·H·W");
            var (cb, chunks, chunkPoints) = ScatterConfig(s);
            var dst = gradInput;
            if (chunks > 1)
            {
                dst = _scratch.Get("spatial.partial", len * chunks, stream);
                dst.MemSetToZero(stream);
            }
            sp.ChunkPoints = chunkPoints;
            sp.ChunkStride = chunks > 1 ? len : 0;
            int nCb = (s.C + cb - 1) / cb;
            _backwardInput ??= _acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, SpatialParams>(SpatialKernels.BackwardInput);
            _backwardInput(stream, new KernelConfig(new Index2D(nCb * s.N, chunks), new Index2D(cb, 1)), grid, theta, gradOut, dst, sp);
            if (chunks > 1)
            {
                _sumPartials ??= _acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, int, int>(SpatialKernels.SumPartials);
                _sumPartials(stream, new Index1D((int)len), dst, gradInput, chunks, (int)len);
            }
        }
        if (fused) AffineGridBackward(stream, s.N, s.Hout, s.Wout, s.AlignCorners, gridGrad, gradTheta);
    }

    /// <summary>Frees the scratch buffers (the accelerator stays the caller's).</summary>
    public void Dispose() => _scratch.Dispose();
}
