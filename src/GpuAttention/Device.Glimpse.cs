using GpuAttention.Backends;

namespace GpuAttention;

public sealed partial class Device
{
    /// <summary>
    /// Separable Gaussian glimpse (DRAW, Gregor et al. 2015, arXiv:1502.04623; Kosiorek's <c>gaussian_glimpse</c>,
    /// "Attention in Neural Networks and How to Use It", 2017), forward: for each image n two filterbanks
    /// <c>Ay[c, r] = exp(−½((c − (uy + r·dy))/sy)²) / (Σ_c exp(…) + 1e-8)</c> over the H rows (r &lt; h) and likewise Ax over the
    /// W columns (r &lt; w), then <c>out[n, ch] = Ayᵀ · image[n, ch] · Ax</c>. All channels of an image share its filterbanks;
    /// the filterbanks are built on the device and the cheaper multiplication order is chosen per shape.
    /// </summary>
    /// <param name="image">[N, C, H, W].</param>
    /// <param name="parameters">[N, 6] = (uy, sy, dy, ux, sx, dx) in pixels: u is the centre of the first Gaussian (row / column 0
    /// of the glimpse), s its standard deviation, d the stride between centres; pixel c sits at coordinate c (0-based).
    /// s = 0 gives NaN (as in PyTorch); centres far outside the image give all-zero filter columns (the 1e-8 guards the division).</param>
    /// <param name="output">Written: [N, C, h, w]; its last two dims choose the glimpse size.</param>
    /// <exception cref="TensorShapeException">A tensor has the wrong rank or shape; the message names it.</exception>
    /// <exception cref="ArgumentException">Tensors of another device, or the output aliasing an input.</exception>
    public void Glimpse(Tensor image, Tensor parameters, Tensor output)
    {
        CheckOwned(image, "image"); CheckOwned(parameters, "params"); CheckOwned(output, "out");
        Validation.Rank(output, "out", 4, "rank 4 [N, C, h, w]");
        var s = ResolveGlimpseShape(image.Shape, parameters.Shape, output.Dim(2), output.Dim(3));
        Validation.Shape(output, "out", [s.N, s.C, s.Gh, s.Gw], "[N, C, h, w]");
        Validation.NoAlias([(image, "image"), (parameters, "params")], [(output, "out")]);
        Run(OpKind.Glimpse, [image, parameters], [output], (s, output, image, parameters), static (be, m, x) =>
        {
            if (x.output.Length == 0) return;
            if (x.s.H == 0 || x.s.W == 0) { be.Fill(m[x.output]!, 0f); return; }
            ((IGlimpseBackend)be).GlimpseForward(new GlimpseForwardArgs(x.s, m[x.image]!, m[x.parameters]!, null, m[x.output]!));
        });
    }

    /// <summary>Allocating form of <see cref="Glimpse(Tensor, Tensor, Tensor)"/>: returns a new [N, C, <paramref name="height"/>, <paramref name="width"/>] glimpse.</summary>
    public Tensor Glimpse(Tensor image, Tensor parameters, int height, int width)
    {
        CheckOwned(image, "image"); CheckOwned(parameters, "params");
        var s = ResolveGlimpseShape(image.Shape, parameters.Shape, height, width);
        var o = Allocate(s.N, s.C, s.Gh, s.Gw);
        try { Glimpse(image, parameters, o); }
        catch { o.Dispose(); throw; }
        return o;
    }

    /// <summary>
    /// Backward of <see cref="Glimpse(Tensor, Tensor, Tensor)"/>. With G = grad_out[n, ch]:
    /// <c>grad_image[n, ch] = Ay · G · Axᵀ</c>; <c>dAy = Σ_ch image·Ax·Gᵀ</c>, <c>dAx = Σ_ch imageᵀ·Ay·G</c>; then through the
    /// normalisation A = e / Z (Z = Σ_c e + 1e-8) per filter column r: <c>(∂L/∂e)·e = A ∘ (dA − Σ_c dA∘A)</c>, and with
    /// t = (c − μ_r)/s, e = exp(−t²/2): <c>∂L/∂μ_r = Σ_c (∂L/∂e)·e·t/s</c>, <c>∂L/∂s = Σ_r Σ_c (∂L/∂e)·e·t²/s</c>,
    /// <c>∂L/∂u = Σ_r ∂L/∂μ_r</c>, <c>∂L/∂d = Σ_r r·∂L/∂μ_r</c> (checked against finite differences in the tests).
    /// Deterministic: no atomics, fixed reduction order.
    /// </summary>
    /// <param name="image">[N, C, H, W], as in the forward.</param>
    /// <param name="parameters">[N, 6], as in the forward.</param>
    /// <param name="gradOut">[N, C, h, w].</param>
    /// <param name="gradImage">Written: [N, C, H, W].</param>
    /// <param name="gradParams">Written: [N, 6], gradients with respect to (uy, sy, dy, ux, sx, dx), summed over channels.</param>
    /// <exception cref="TensorShapeException">A tensor has the wrong rank or shape; the message names it.</exception>
    /// <exception cref="ArgumentException">Tensors of another device, or an output aliasing an input or the other output.</exception>
    public void GlimpseBackward(Tensor image, Tensor parameters, Tensor gradOut, Tensor gradImage, Tensor gradParams)
    {
        CheckOwned(image, "image"); CheckOwned(parameters, "params"); CheckOwned(gradOut, "grad_out");
        CheckOwned(gradImage, "grad_image"); CheckOwned(gradParams, "grad_params");
        Validation.Rank(gradOut, "grad_out", 4, "rank 4 [N, C, h, w]");
        var s = ResolveGlimpseShape(image.Shape, parameters.Shape, gradOut.Dim(2), gradOut.Dim(3));
        Validation.Shape(gradOut, "grad_out", [s.N, s.C, s.Gh, s.Gw], "[N, C, h, w]");
        Validation.Shape(gradImage, "grad_image", [s.N, s.C, s.H, s.W], "[N, C, H, W]");
        Validation.Shape(gradParams, "grad_params", [s.N, 6], "[N, 6]");
        Validation.NoAlias([(image, "image"), (parameters, "params"), (gradOut, "grad_out")], [(gradImage, "grad_image"), (gradParams, "grad_params")]);
        Run(OpKind.GlimpseBackward, [image, parameters, gradOut], [gradImage, gradParams], (s, gradParams, gradImage, image, parameters, gradOut), static (be, m, x) =>
        {
            if (x.s.N == 0) return;
            if (x.s.C == 0 || x.s.H == 0 || x.s.W == 0 || x.s.Gh == 0 || x.s.Gw == 0)
            {
                be.Fill(m[x.gradParams]!, 0f);
                if (x.gradImage.Length > 0) be.Fill(m[x.gradImage]!, 0f);
                return;
            }
            ((IGlimpseBackend)be).GlimpseBackward(new GlimpseBackwardArgs(x.s, m[x.image]!, m[x.parameters]!, null, m[x.gradOut]!, m[x.gradImage]!, m[x.gradParams]!, null));
        });
    }

    /// <summary>Allocating form of <see cref="GlimpseBackward(Tensor, Tensor, Tensor, Tensor, Tensor)"/>: returns new (grad_image [N,C,H,W], grad_params [N,6]).</summary>
    public (Tensor GradImage, Tensor GradParams) GlimpseBackward(Tensor image, Tensor parameters, Tensor gradOut)
    {
        CheckOwned(image, "image"); CheckOwned(parameters, "params"); CheckOwned(gradOut, "grad_out");
        Validation.Rank(gradOut, "grad_out", 4, "rank 4 [N, C, h, w]");
        var s = ResolveGlimpseShape(image.Shape, parameters.Shape, gradOut.Dim(2), gradOut.Dim(3));
        var gi = Allocate(s.N, s.C, s.H, s.W);
        var gp = Allocate(s.N, 6);
        try { GlimpseBackward(image, parameters, gradOut, gi, gp); }
        catch { gi.Dispose(); gp.Dispose(); throw; }
        return (gi, gp);
    }

    /// <summary>
    /// DRAW's read parametrisation (Gregor et al. 2015, §3.2) mapped onto the glimpse: <paramref name="draw"/> [N, 5] holds the
    /// linear layer's (g̃X, g̃Y, log σ², log δ̃, log γ). With the paper's 1-based pixels and filters, gX = (W+1)/2·(g̃X+1),
    /// gY = (H+1)/2·(g̃Y+1), μX_i = gX + (i − w/2 − 0.5)·δX, σ² = exp(log σ²), γ = exp(log γ), and
    /// δX = (max(H,W) − 1)/(w − 1)·exp(log δ̃) (δY with h; a 1-wide axis uses 1 for w − 1). Writes the equivalent 0-based glimpse
    /// params [N, 6] = (gY − 1 − (h−1)/2·δY, σ, δY, gX − 1 − (w−1)/2·δX, σ, δX) and γ [N].
    /// </summary>
    /// <param name="draw">[N, 5].</param>
    /// <param name="imageHeight">H.</param> <param name="imageWidth">W.</param>
    /// <param name="height">Glimpse height h.</param> <param name="width">Glimpse width w.</param>
    /// <param name="parameters">Written: [N, 6].</param> <param name="gamma">Written: [N].</param>
    public void DrawParams(Tensor draw, int imageHeight, int imageWidth, int height, int width, Tensor parameters, Tensor gamma)
    {
        CheckOwned(draw, "draw"); CheckOwned(parameters, "params"); CheckOwned(gamma, "gamma");
        var s = ResolveDrawShape(draw.Shape, 1, imageHeight, imageWidth, height, width);
        Validation.Shape(parameters, "params", [s.N, 6], "[N, 6]");
        Validation.Shape(gamma, "gamma", [s.N], "[N]");
        Validation.NoAlias([(draw, "draw")], [(parameters, "params"), (gamma, "gamma")]);
        Run(OpKind.Glimpse, [draw], [parameters, gamma], (s, draw, parameters, gamma), static (be, m, x) =>
        {
            if (x.s.N > 0) ((IGlimpseBackend)be).DrawParams(new DrawParamsArgs(x.s, m[x.draw]!, m[x.parameters]!, m[x.gamma]!));
        });
    }

    /// <summary>
    /// DRAW read (Gregor et al. 2015, eq. 27, one image): <c>out[n, ch] = γ · F_Y · image[n, ch] · F_Xᵀ</c> where the filterbanks
    /// come from <see cref="DrawParams"/>; runs on the glimpse kernels with γ folded into the products.
    /// </summary>
    /// <param name="image">[N, C, H, W].</param>
    /// <param name="draw">[N, 5] = (g̃X, g̃Y, log σ², log δ̃, log γ).</param>
    /// <param name="output">Written: [N, C, h, w].</param>
    public void DrawRead(Tensor image, Tensor draw, Tensor output)
    {
        CheckOwned(image, "image"); CheckOwned(draw, "draw"); CheckOwned(output, "out");
        Validation.Rank(image, "image", 4, "rank 4 [N, C, H, W]");
        Validation.Rank(output, "out", 4, "rank 4 [N, C, h, w]");
        var s = ResolveDrawShape(draw.Shape, image.Dim(1), image.Dim(2), image.Dim(3), output.Dim(2), output.Dim(3));
        Validation.Shape(image, "image", [s.N, s.C, s.H, s.W], "[N, C, H, W]");
        Validation.Shape(output, "out", [s.N, s.C, s.Gh, s.Gw], "[N, C, h, w]");
        Validation.NoAlias([(image, "image"), (draw, "draw")], [(output, "out")]);
        Run(OpKind.Glimpse, [image, draw], [output], (s, output, image, draw), static (be, m, x) =>
        {
            if (x.output.Length == 0) return;
            if (x.s.H == 0 || x.s.W == 0) { be.Fill(m[x.output]!, 0f); return; }
            var g = (IGlimpseBackend)be;
            using var p = be.Allocate((long)x.s.N * 6);
            using var gamma = be.Allocate(x.s.N);
            g.DrawParams(new DrawParamsArgs(x.s, m[x.draw]!, p, gamma));
            g.GlimpseForward(new GlimpseForwardArgs(x.s, m[x.image]!, p, gamma, m[x.output]!));
            be.Synchronize();   // the scratch p, gamma are released next; queued kernels must not outlive them
        });
    }

    /// <summary>
    /// Backward of <see cref="DrawRead"/>: grad_image [N, C, H, W] and grad_draw [N, 5], through the glimpse (as in
    /// <see cref="GlimpseBackward(Tensor, Tensor, Tensor, Tensor, Tensor)"/>, with γ·grad_out) and the DRAW mapping;
    /// ∂L/∂log γ = Σ grad_out ∘ out.
    /// </summary>
    public void DrawReadBackward(Tensor image, Tensor draw, Tensor gradOut, Tensor gradImage, Tensor gradDraw)
    {
        CheckOwned(image, "image"); CheckOwned(draw, "draw"); CheckOwned(gradOut, "grad_out");
        CheckOwned(gradImage, "grad_image"); CheckOwned(gradDraw, "grad_draw");
        Validation.Rank(image, "image", 4, "rank 4 [N, C, H, W]");
        Validation.Rank(gradOut, "grad_out", 4, "rank 4 [N, C, h, w]");
        var s = ResolveDrawShape(draw.Shape, image.Dim(1), image.Dim(2), image.Dim(3), gradOut.Dim(2), gradOut.Dim(3));
        Validation.Shape(image, "image", [s.N, s.C, s.H, s.W], "[N, C, H, W]");
        Validation.Shape(gradOut, "grad_out", [s.N, s.C, s.Gh, s.Gw], "[N, C, h, w]");
        Validation.Shape(gradImage, "grad_image", [s.N, s.C, s.H, s.W], "[N, C, H, W]");
        Validation.Shape(gradDraw, "grad_draw", [s.N, 5], "[N, 5]");
        Validation.NoAlias([(image, "image"), (draw, "draw"), (gradOut, "grad_out")], [(gradImage, "grad_image"), (gradDraw, "grad_draw")]);
        Run(OpKind.GlimpseBackward, [image, draw, gradOut], [gradImage, gradDraw], (s, draw, image, gradOut, gradImage, gradDraw), static (be, m, x) =>
        {
            if (x.s.N == 0) return;
            var g = (IGlimpseBackend)be;
            using var p = be.Allocate((long)x.s.N * 6);
            using var gamma = be.Allocate(x.s.N);
            using var gp = be.Allocate((long)x.s.N * 6);
            using var glg = be.Allocate(x.s.N);
            if (x.s.C == 0 || x.s.H == 0 || x.s.W == 0 || x.s.Gh == 0 || x.s.Gw == 0)
            {
                be.Fill(gp, 0f); be.Fill(glg, 0f);
                if (x.gradImage.Length > 0) be.Fill(m[x.gradImage]!, 0f);
            }
            else
            {
                g.DrawParams(new DrawParamsArgs(x.s, m[x.draw]!, p, gamma));
                g.GlimpseBackward(new GlimpseBackwardArgs(x.s, m[x.image]!, p, gamma, m[x.gradOut]!, m[x.gradImage]!, gp, glg));
            }
            g.DrawParamsBackward(new DrawParamsBackwardArgs(x.s, m[x.draw]!, gp, glg, m[x.gradDraw]!));
            be.Synchronize();   // the scratch buffers are released next
        });
    }

    /// <summary>Checks image [N, C, H, W] and params [N, 6] and the glimpse size (host-side too: the CLI calls it before allocating).</summary>
    internal static GlimpseShape ResolveGlimpseShape(ReadOnlySpan<int> image, ReadOnlySpan<int> parameters, int height, int width)
    {
        string F(ReadOnlySpan<int> s) => TensorShapeException.Format(s);
        if (image.Length != 4) throw new TensorShapeException("image", "rank 4 [N, C, H, W]", F(image));
        int N = image[0];
        if (parameters.Length != 2 || parameters[0] != N || parameters[1] != 6)
            throw new TensorShapeException("params", $"[N, 6] = [{N}, 6] (uy, sy, dy, ux, sx, dx)", F(parameters));
        if (height < 0 || width < 0) throw new ArgumentOutOfRangeException("size", $"size: expected a glimpse size h, w ≥ 0, got {height}, {width}");
        return new GlimpseShape(N, image[1], image[2], image[3], height, width);
    }

    internal static GlimpseShape ResolveDrawShape(ReadOnlySpan<int> draw, int C, int H, int W, int height, int width)
    {
        if (draw.Length != 2 || draw[1] != 5)
            throw new TensorShapeException("draw", "[N, 5] (g̃X, g̃Y, log σ², log δ̃, log γ)", TensorShapeException.Format(draw));
        if (C < 0 || H < 0 || W < 0 || height < 0 || width < 0)
            throw new ArgumentOutOfRangeException("size", $"size: expected sizes ≥ 0, got image {H}×{W}, glimpse {height}×{width}");
        return new GlimpseShape(draw[0], C, H, W, height, width);
    }
}
