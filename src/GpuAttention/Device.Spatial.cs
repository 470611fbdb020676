using GpuAttention.Backends;

namespace GpuAttention;

// Spatial transformer (Jaderberg et al. 2015, "Spatial Transformer Networks", arXiv:1506.02025):
// affine_grid and grid_sample with the semantics of PyTorch's torch.nn.functional.affine_grid / grid_sample
// (https://pytorch.org/docs/stable/generated/torch.nn.functional.grid_sample.html), and the fused
// transform-and-sample entry point that never writes the grid to memory.
public sealed partial class Device
{
    /// <summary>
    /// affine_grid forward (PyTorch <c>F.affine_grid(theta, (N, C, H, W), align_corners)</c>):
    /// <c>grid[n, h, w] = theta[n] · (x_w, y_h, 1)</c> with x_w = 2w/(W−1) − 1 when <paramref name="alignCorners"/>, else (2w+1)/W − 1
    /// (0 for a size of 1), and y_h likewise over H. Units: normalised coordinates, −1 … 1 spans the image.
    /// </summary>
    /// <param name="theta">Affine matrices [N, 2, 3].</param>
    /// <param name="grid">Written: [N, H, W, 2] holding (x, y); its H and W give the output size.</param>
    /// <param name="alignCorners">PyTorch's align_corners.</param>
    /// <exception cref="TensorShapeException">theta or grid has the wrong shape; the message names it.</exception>
    /// <exception cref="ArgumentException">Tensors of another device, or grid being theta.</exception>
    public void AffineGrid(Tensor theta, Tensor grid, bool alignCorners = false)
    {
        CheckOwned(theta, "theta"); CheckOwned(grid, "grid");
        Validation.Rank(grid, "grid", 4, "rank 4 [N, H, W, 2]");
        int n = theta.Rank > 0 ? theta.Dim(0) : 0;
        ResolveAffineGrid(theta.ShapeArray, grid.Dim(1), grid.Dim(2));
        Validation.Shape(grid, "grid", [n, grid.Dim(1), grid.Dim(2), 2], "[N, H, W, 2]");
        Validation.NoAlias([(theta, "theta")], [(grid, "grid")]);
        Run(OpKind.AffineGrid, [theta], [grid], (n, grid, alignCorners, theta), static (be, m, x) =>
            ((ISpatialBackend)be).AffineGrid(new AffineGridArgs(x.n, x.grid.Dim(1), x.grid.Dim(2), x.alignCorners, m[x.theta]!, m[x.grid]!)));
    }

    /// <summary>Allocating form of <see cref="AffineGrid(Tensor, Tensor, bool)"/>: returns a new grid [N, height, width, 2].</summary>
    public Tensor AffineGrid(Tensor theta, int height, int width, bool alignCorners = false)
    {
        CheckOwned(theta, "theta");
        int n = ResolveAffineGrid(theta.ShapeArray, height, width);
        var g = Allocate(n, height, width, 2);
        try { AffineGrid(theta, g, alignCorners); }
        catch { g.Dispose(); throw; }
        return g;
    }

    /// <summary>
    /// affine_grid backward: <c>grad_theta[n, i, :] = Σ_{h,w} grad_grid[n, h, w, i] · (x_w, y_h, 1)</c>.
    /// The sum over h, w is a fixed-order reduction: bit-for-bit repeatable.
    /// </summary>
    /// <param name="gradGrid">Gradient of the loss with respect to the grid, [N, H, W, 2].</param>
    /// <param name="gradTheta">Written: [N, 2, 3].</param>
    /// <param name="alignCorners">As in the forward call.</param>
    public void AffineGridBackward(Tensor gradGrid, Tensor gradTheta, bool alignCorners = false)
    {
        CheckOwned(gradGrid, "grad_grid"); CheckOwned(gradTheta, "grad_theta");
        var (n, h, w) = ResolveAffineGridBackward(gradGrid.ShapeArray, null);
        Validation.Shape(gradTheta, "grad_theta", [n, 2, 3], "[N, 2, 3]");
        Validation.NoAlias([(gradGrid, "grad_grid")], [(gradTheta, "grad_theta")]);
        Run(OpKind.AffineGridBackward, [gradGrid], [gradTheta], (n, h, w, alignCorners, gradGrid, gradTheta), static (be, m, x) =>
            ((ISpatialBackend)be).AffineGridBackward(new AffineGridBackwardArgs(x.n, x.h, x.w, x.alignCorners, m[x.gradGrid]!, m[x.gradTheta]!)));
    }

    /// <summary>Allocating form of <see cref="AffineGridBackward(Tensor, Tensor, bool)"/>: returns grad_theta [N, 2, 3].</summary>
    public Tensor AffineGridBackward(Tensor gradGrid, bool alignCorners = false)
    {
        CheckOwned(gradGrid, "grad_grid");
        var (n, _, _) = ResolveAffineGridBackward(gradGrid.ShapeArray, null);
        var t = Allocate(n, 2, 3);
        try { AffineGridBackward(gradGrid, t, alignCorners); }
        catch { t.Dispose(); throw; }
        return t;
    }

    /// <summary>
    /// grid_sample forward (PyTorch <c>F.grid_sample(input, grid, mode, padding_mode, align_corners)</c>, 4-D case):
    /// <c>out[n, c, i, j]</c> = input[n, c] interpolated at grid[n, i, j] = (x, y), x across W and y across H.
    /// A coordinate is unnormalised to pixels by ((x+1)/2)(W−1) with align_corners, else ((x+1)W−1)/2, then mapped
    /// by the padding (border: clamp; reflection: reflect, then clamp); a pixel outside the image reads 0.
    /// NaN or infinite grid values behave as in PyTorch 1.13 (CPU): border and reflection map them to pixel 0
    /// (reflection maps ±∞ there too, border clamps ±∞ to the edge); with zeros padding, bilinear gives NaN in every
    /// channel of that point and nearest gives 0.
    /// </summary>
    /// <param name="input">Image [N, C, H, W], H, W ≥ 1.</param>
    /// <param name="grid">Sampling points [N, Hout, Wout, 2] holding (x, y); values outside [−1, 1] are allowed.</param>
    /// <param name="output">Written: [N, C, Hout, Wout].</param>
    /// <param name="options">Mode, padding and align_corners (default bilinear, zeros, false).</param>
    /// <exception cref="TensorShapeException">A tensor has the wrong rank or shape; the message names it.</exception>
    /// <exception cref="ArgumentException">Tensors of another device, outputs aliasing inputs, unknown enum values.</exception>
    public void GridSample(Tensor input, Tensor grid, Tensor output, GridSampleOptions options = default)
    {
        CheckOwned(input, "input"); CheckOwned(grid, "grid"); CheckOwned(output, "out");
        var s = ResolveGridSample(input.ShapeArray, grid.ShapeArray, options);
        Validation.Shape(output, "out", [s.N, s.C, s.Hout, s.Wout], "[N, C, Hout, Wout]");
        Validation.NoAlias([(input, "input"), (grid, "grid")], [(output, "out")]);
        Run(OpKind.GridSample, [input, grid], [output], (s, input, grid, output), static (be, m, x) =>
            ((ISpatialBackend)be).GridSample(new GridSampleArgs(x.s, m[x.input]!, m[x.grid], null, m[x.output]!)));
    }

    /// <summary>Allocating form of <see cref="GridSample(Tensor, Tensor, Tensor, GridSampleOptions)"/>: returns out [N, C, Hout, Wout].</summary>
    public Tensor GridSample(Tensor input, Tensor grid, GridSampleOptions options = default)
    {
        CheckOwned(input, "input"); CheckOwned(grid, "grid");
        var s = ResolveGridSample(input.ShapeArray, grid.ShapeArray, options);
        var o = Allocate(s.N, s.C, s.Hout, s.Wout);
        try { GridSample(input, grid, o, options); }
        catch { o.Dispose(); throw; }
        return o;
    }

    /// <summary>
    /// grid_sample backward: from grad_out [N, C, Hout, Wout] the gradients grad_input [N, C, H, W] and
    /// grad_grid [N, Hout, Wout, 2] (zero for nearest; zero where border/reflection clamps a coordinate, as in PyTorch).
    /// <para>By default deterministic, bit-for-bit repeatable: no floating-point atomics. grad_input is a scatter; each CPU task
    /// owns the grad_input slices of a block of channels of one image and walks the output points in order, and the
    /// kernel backends accumulate per (image, channel block, chunk of output points) into private partial copies
    /// that a second pass sums in chunk order (the chunking depends only on the shapes).</para>
    /// <para>With <see cref="GridSampleOptions.Backward"/> = <see cref="GridSampleBackwardMode.Atomic"/> (explicit opt-in) the
    /// OpenCL and CUDA backends scatter grad_input with float atomic adds instead: nondeterministic summation order (grad_input
    /// may change in the last bits from run to run), usually faster on GPUs. grad_grid stays deterministic. The CPU backend
    /// accepts the option and runs its deterministic path.</para>
    /// </summary>
    /// <param name="input">The forward input [N, C, H, W].</param>
    /// <param name="grid">The forward grid [N, Hout, Wout, 2].</param>
    /// <param name="gradOut">Gradient of the loss with respect to out, [N, C, Hout, Wout].</param>
    /// <param name="gradInput">Written: [N, C, H, W].</param>
    /// <param name="gradGrid">Written: [N, Hout, Wout, 2].</param>
    /// <param name="options">As in the forward call.</param>
    public void GridSampleBackward(Tensor input, Tensor grid, Tensor gradOut, Tensor gradInput, Tensor gradGrid, GridSampleOptions options = default)
    {
        CheckOwned(input, "input"); CheckOwned(grid, "grid"); CheckOwned(gradOut, "grad_out");
        CheckOwned(gradInput, "grad_input"); CheckOwned(gradGrid, "grad_grid");
        var s = ResolveGridSample(input.ShapeArray, grid.ShapeArray, options);
        Validation.Shape(gradOut, "grad_out", [s.N, s.C, s.Hout, s.Wout], "[N, C, Hout, Wout]");
        Validation.Shape(gradInput, "grad_input", [s.N, s.C, s.H, s.W], "[N, C, H, W]");
        Validation.Shape(gradGrid, "grad_grid", [s.N, s.Hout, s.Wout, 2], "[N, Hout, Wout, 2]");
        Validation.NoAlias([(input, "input"), (grid, "grid"), (gradOut, "grad_out")], [(gradInput, "grad_input"), (gradGrid, "grad_grid")]);
        Run(OpKind.GridSampleBackward, [input, grid, gradOut], [gradInput, gradGrid], (s, input, grid, gradOut, gradInput, gradGrid, options), static (be, m, x) =>
            ((ISpatialBackend)be).GridSampleBackward(new GridSampleBackwardArgs(x.s, m[x.input]!, m[x.grid], null, m[x.gradOut]!, m[x.gradInput]!, m[x.gradGrid], null,
                x.options.Backward == GridSampleBackwardMode.Atomic)));
    }

    /// <summary>Allocating form of <see cref="GridSampleBackward(Tensor, Tensor, Tensor, Tensor, Tensor, GridSampleOptions)"/>.</summary>
    public (Tensor GradInput, Tensor GradGrid) GridSampleBackward(Tensor input, Tensor grid, Tensor gradOut, GridSampleOptions options = default)
    {
        CheckOwned(input, "input"); CheckOwned(grid, "grid");
        var s = ResolveGridSample(input.ShapeArray, grid.ShapeArray, options);
        var gi = Allocate(s.N, s.C, s.H, s.W);
        var gg = Allocate(s.N, s.Hout, s.Wout, 2);
        try { GridSampleBackward(input, grid, gradOut, gi, gg, options); }
        catch { gi.Dispose(); gg.Dispose(); throw; }
        return (gi, gg);
    }

    /// <summary>
    /// The spatial transformer as users call it, fused: <c>out = grid_sample(input, affine_grid(theta, (Hout, Wout)))</c>
    /// with the sampling points computed from theta inside the sampling kernel, so the grid never goes through memory.
    /// Same semantics (and NaN behaviour) as the two ops in sequence.
    /// </summary>
    /// <param name="input">Image [N, C, H, W].</param>
    /// <param name="theta">Affine matrices [N, 2, 3] mapping output (x, y, 1) to input (x, y).</param>
    /// <param name="output">Written: [N, C, Hout, Wout]; its Hout, Wout give the crop size.</param>
    /// <param name="options">Mode, padding and align_corners (used by both the grid and the sampling).</param>
    public void SpatialTransform(Tensor input, Tensor theta, Tensor output, GridSampleOptions options = default)
    {
        CheckOwned(input, "input"); CheckOwned(theta, "theta"); CheckOwned(output, "out");
        Validation.Rank(output, "out", 4, "rank 4 [N, C, Hout, Wout]");
        var s = ResolveSpatialTransform(input.ShapeArray, theta.ShapeArray, output.Dim(2), output.Dim(3), options);
        Validation.Shape(output, "out", [s.N, s.C, s.Hout, s.Wout], "[N, C, Hout, Wout]");
        Validation.NoAlias([(input, "input"), (theta, "theta")], [(output, "out")]);
        Run(OpKind.GridSample, [input, theta], [output], (s, input, theta, output), static (be, m, x) =>
            ((ISpatialBackend)be).GridSample(new GridSampleArgs(x.s, m[x.input]!, null, m[x.theta], m[x.output]!)));
    }

    /// <summary>Allocating form of <see cref="SpatialTransform(Tensor, Tensor, Tensor, GridSampleOptions)"/>: returns crops [N, C, height, width].</summary>
    public Tensor SpatialTransform(Tensor input, Tensor theta, int height, int width, GridSampleOptions options = default)
    {
        CheckOwned(input, "input"); CheckOwned(theta, "theta");
        var s = ResolveSpatialTransform(input.ShapeArray, theta.ShapeArray, height, width, options);
        var o = Allocate(s.N, s.C, s.Hout, s.Wout);
        try { SpatialTransform(input, theta, o, options); }
        catch { o.Dispose(); throw; }
        return o;
    }

    /// <summary>
    /// Backward of <see cref="SpatialTransform(Tensor, Tensor, Tensor, GridSampleOptions)"/>: grad_input [N, C, H, W] and
    /// grad_theta [N, 2, 3] (the chain rule through the grid, reduced over output points in a fixed order:
    /// bit-for-bit repeatable). The grid gradient lives only in scratch memory. grad_input is deterministic too unless
    /// <see cref="GridSampleOptions.Backward"/> is <see cref="GridSampleBackwardMode.Atomic"/>: then, on OpenCL and CUDA, a float
    /// atomic scatter (nondeterministic summation order, usually faster on GPUs); the CPU backend runs its deterministic path.
    /// </summary>
    public void SpatialTransformBackward(Tensor input, Tensor theta, Tensor gradOut, Tensor gradInput, Tensor gradTheta, GridSampleOptions options = default)
    {
        CheckOwned(input, "input"); CheckOwned(theta, "theta"); CheckOwned(gradOut, "grad_out");
        CheckOwned(gradInput, "grad_input"); CheckOwned(gradTheta, "grad_theta");
        Validation.Rank(gradOut, "grad_out", 4, "rank 4 [N, C, Hout, Wout]");
        var s = ResolveSpatialTransform(input.ShapeArray, theta.ShapeArray, gradOut.Dim(2), gradOut.Dim(3), options);
        Validation.Shape(gradOut, "grad_out", [s.N, s.C, s.Hout, s.Wout], "[N, C, Hout, Wout]");
        Validation.Shape(gradInput, "grad_input", [s.N, s.C, s.H, s.W], "[N, C, H, W]");
        Validation.Shape(gradTheta, "grad_theta", [s.N, 2, 3], "[N, 2, 3]");
        Validation.NoAlias([(input, "input"), (theta, "theta"), (gradOut, "grad_out")], [(gradInput, "grad_input"), (gradTheta, "grad_theta")]);
        Run(OpKind.GridSampleBackward, [input, theta, gradOut], [gradInput, gradTheta], (s, input, theta, gradOut, gradInput, gradTheta, options), static (be, m, x) =>
            ((ISpatialBackend)be).GridSampleBackward(new GridSampleBackwardArgs(x.s, m[x.input]!, null, m[x.theta], m[x.gradOut]!, m[x.gradInput]!, null, m[x.gradTheta],
                x.options.Backward == GridSampleBackwardMode.Atomic)));
    }

    /// <summary>Allocating form of <see cref="SpatialTransformBackward(Tensor, Tensor, Tensor, Tensor, Tensor, GridSampleOptions)"/>.</summary>
    public (Tensor GradInput, Tensor GradTheta) SpatialTransformBackward(Tensor input, Tensor theta, Tensor gradOut, GridSampleOptions options = default)
    {
        CheckOwned(input, "input"); CheckOwned(theta, "theta"); CheckOwned(gradOut, "grad_out");
        Validation.Rank(gradOut, "grad_out", 4, "rank 4 [N, C, Hout, Wout]");
        var s = ResolveSpatialTransform(input.ShapeArray, theta.ShapeArray, gradOut.Dim(2), gradOut.Dim(3), options);
        var gi = Allocate(s.N, s.C, s.H, s.W);
        var gt = Allocate(s.N, 2, 3);
        try { SpatialTransformBackward(input, theta, gradOut, gi, gt, options); }
        catch { gi.Dispose(); gt.Dispose(); throw; }
        return (gi, gt);
    }

    // ---- host-side shape checks (also used by the CLI before it allocates) ----

    /// <summary>Checks theta [N, 2, 3] and the output size; returns N.</summary>
    internal static int ResolveAffineGrid(int[] theta, int height, int width)
    {
        if (theta.Length != 3 || theta[1] != 2 || theta[2] != 3)
            throw new TensorShapeException("theta", "[N, 2, 3]", TensorShapeException.Format(theta));
        if (height < 0 || width < 0)
            throw new ArgumentOutOfRangeException(nameof(height), $"size: expected H, W ≥ 0, got {height}, {width}");
        return theta[0];
    }

    /// <summary>Checks grad_grid [N, H, W, 2] (and, when given, that H, W equal <paramref name="size"/>); returns (N, H, W).</summary>
    internal static (int N, int H, int W) ResolveAffineGridBackward(int[] gradGrid, int[]? size)
    {
        string expected = size is null ? "[N, H, W, 2]" : $"[N, H, W, 2] with H, W = {size[0]}, {size[1]} (--size)";
        if (gradGrid.Length != 4 || gradGrid[3] != 2 || size is not null && (gradGrid[1] != size[0] || gradGrid[2] != size[1]))
            throw new TensorShapeException("grad_grid", expected, TensorShapeException.Format(gradGrid));
        return (gradGrid[0], gradGrid[1], gradGrid[2]);
    }

    internal static void CheckOptions(GridSampleOptions o)
    {
        if (!Enum.IsDefined(o.Mode)) throw new ArgumentException($"mode: expected bilinear or nearest, got {(int)o.Mode}", "options");
        if (!Enum.IsDefined(o.Padding)) throw new ArgumentException($"padding: expected zeros, border or reflection, got {(int)o.Padding}", "options");
        if (!Enum.IsDefined(o.Backward)) throw new ArgumentException($"backward: expected deterministic or atomic, got {(int)o.Backward}", "options");
    }

    /// <summary>Checks input [N, C, H, W] (H, W ≥ 1) and grid [N, Hout, Wout, 2].</summary>
    internal static GridSampleShape ResolveGridSample(int[] input, int[] grid, GridSampleOptions o)
    {
        CheckOptions(o);
        string F(int[] s) => TensorShapeException.Format(s);
        if (input.Length != 4) throw new TensorShapeException("input", "rank 4 [N, C, H, W]", F(input));
        if (input[2] < 1 || input[3] < 1) throw new TensorShapeException("input", "[N, C, H, W] with H, W ≥ 1", F(input));
        if (grid.Length != 4 || grid[0] != input[0] || grid[3] != 2)
            throw new TensorShapeException("grid", $"[N, Hout, Wout, 2] with N = {input[0]}", F(grid));
        return new GridSampleShape(input[0], input[1], input[2], input[3], grid[1], grid[2], o.Mode, o.Padding, o.AlignCorners);
    }

    /// <summary>Checks input [N, C, H, W] (H, W ≥ 1), theta [N, 2, 3] and the crop size.</summary>
    internal static GridSampleShape ResolveSpatialTransform(int[] input, int[] theta, int height, int width, GridSampleOptions o)
    {
        CheckOptions(o);
        string F(int[] s) => TensorShapeException.Format(s);
        if (input.Length != 4) throw new TensorShapeException("input", "rank 4 [N, C, H, W]", F(input));
        if (input[2] < 1 || input[3] < 1) throw new TensorShapeException("input", "[N, C, H, W] with H, W ≥ 1", F(input));
        if (theta.Length != 3 || theta[0] != input[0] || theta[1] != 2 || theta[2] != 3)
            throw new TensorShapeException("theta", $"[N, 2, 3] with N = {input[0]}", F(theta));
        if (height < 0 || width < 0)
            throw new ArgumentOutOfRangeException(nameof(height), $"size: expected H, W ≥ 0, got {height}, {width}");
        return new GridSampleShape(input[0], input[1], input[2], input[3], height, width, o.Mode, o.Padding, o.AlignCorners);
    }
}
