using GpuAttention.Cli.Imaging;
using GpuAttention.Reference;

namespace GpuAttention.Cli;

/// <summary>
/// A training-style step on the pixel self-attention of <see cref="SdpaSection"/> (on a smaller copy of the image):
/// forward, the loss <c>L = mean((out − image)²)</c> (the attention should reproduce the image it smooths), the fused
/// backward <see cref="Device.SdpaBackward(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor?, SdpaOptions)"/> timed and
/// checked against <see cref="ReferenceOps.SdpaBackward(float[], float[], float[], float[], int, int, int, int, int, int, int, float, bool, float[], int[])"/>,
/// then a few Adam steps on the query features with the loss falling (the queries learn to attend more sharply).
/// </summary>
internal sealed class SdpaTrainingSection : IDemoSection
{
    private const int E = SdpaSection.E;
    private const int MaxPixels = 512;
    private const int Steps = 10;
    private const double LearningRate = 0.08;

    public string Name => "sdpa training";

    public void Run(DemoContext ctx)
    {
        var full = ctx.Input;
        int target = Math.Clamp(ctx.Options.Pixels / 4, 16, MaxPixels);
        int steps = ctx.LearningSteps(Steps);
        double f = Math.Min(1.0, Math.Sqrt((double)target / full.PixelCount));
        int w = Math.Max(1, (int)Math.Round(full.Width * f)), h = Math.Max(1, (int)Math.Round(full.Height * f));
        var small = full.Resize(w, h, ResizeMode.Box);
        int n = w * h;
        var (q, k) = SdpaSection.Features(small);
        var v = new float[n * 3];
        for (int i = 0; i < n; i++)
            for (int c = 0; c < 3; c++) v[i * 3 + c] = small.Data[c * n + i];

        var dev = ctx.Device;
        const float scale = 1f;
        var options = new SdpaOptions(IsCausal: false, Scale: scale);
        using var tq = dev.Upload(q, 1, 1, n, E);
        using var tk = dev.Upload(k, 1, 1, n, E);
        using var tv = dev.Upload(v, 1, 1, n, 3);
        using var tout = dev.Allocate(1, 1, n, 3);
        using var tlse = dev.Allocate(1, 1, n);
        dev.Fill(tout, float.NaN); dev.Fill(tlse, float.NaN);
        dev.Sdpa(tq, tk, tv, tout, tlse, null, options);
        var out0 = dev.Download(tout);
        var (loss0, grad0) = LossAndGrad(out0, v);
        using var tgo = dev.Upload(grad0, 1, 1, n, 3);

        // Backward, timed on preallocated (poisoned) outputs.
        ctx.ReportStatus($"sdpa training: timing the backward over {n} pixels on {dev.Spec}");
        using var tdq = dev.Allocate(1, 1, n, E);
        using var tdk = dev.Allocate(1, 1, n, E);
        using var tdv = dev.Allocate(1, 1, n, 3);
        foreach (var t in (Tensor[])[tdq, tdk, tdv]) dev.Fill(t, float.NaN);
        double ms = ctx.TimeMedian(() => dev.SdpaBackward(tq, tk, tv, tout, tlse, tgo, tdq, tdk, tdv, null, options));
        var dq = dev.Download(tdq); var dk = dev.Download(tdk); var dv = dev.Download(tdv);

        ctx.ReportStatus("sdpa training: double-precision reference backward");
        var (rq, rk, rv) = ReferenceOps.SdpaBackward(q, k, v, grad0, 1, 1, 1, n, n, E, 3, scale, false, null, null);
        var (eq, relq) = DemoContext.Compare(dq, rq);
        var (ek, relk) = DemoContext.Compare(dk, rk);
        var (ev, relv) = DemoContext.Compare(dv, rv);
        double fwdFlops = 2.0 * n * n * (E + 3);
        ctx.Rows.Add(new DemoRow("sdpa backward (dq, dk, dv)", $"q,k [1,1,{n},{E}] v [1,1,{n},3]", ms, 2.5 * fwdFlops / (ms * 1e6),
            Math.Max(eq, Math.Max(ek, ev)), Math.Max(relq, Math.Max(relk, relv)), !dev.SupportsOp(OpKind.SdpaBackward)));

        // A few Adam steps on the query features (keys and values fixed), forward + allocating backward each.
        ctx.ReportStatus("sdpa training: gradient descent on the queries");
        var qp = q.Select(x => (double)x).ToArray();
        var adam = new Adam(Enumerable.Repeat(LearningRate, qp.Length).ToArray());
        var losses = new List<double> { loss0 };
        var qf = new float[qp.Length];
        var gradQ = new double[qp.Length];
        float[] outNow = out0, grad = grad0;
        for (int step = 0; step < steps; step++)
        {
            using (var go = dev.Upload(grad, 1, 1, n, 3))
            {
                var (gq, gk, gv) = dev.SdpaBackward(tq, tk, tv, tout, tlse, go, null, options);
                using (gq) using (gk) using (gv)
                {
                    var g = dev.Download(gq);
                    for (int i = 0; i < g.Length; i++) gradQ[i] = g[i];
                }
            }
            adam.Step(qp, gradQ);
            for (int i = 0; i < qp.Length; i++) qf[i] = (float)qp[i];
            dev.Upload(tq, qf);
            dev.Sdpa(tq, tk, tv, tout, tlse, null, options);
            outNow = dev.Download(tout);
            double loss;
            (loss, grad) = LossAndGrad(outNow, v);
            losses.Add(loss);
        }

        // Picture: target | before | after | loss curve.
        const int panelSide = 240;
        int up = Math.Max(1, panelSide / Math.Max(w, h));
        Image Panel(float[] pixels) => FromPixels(pixels, w, h).Resize(w * up, h * up, ResizeMode.Nearest);
        var plot = DemoDrawing.Plot(losses, 2 * w * up / 2 + 80, h * up, Color.FromHex("#ffab40"));
        ctx.Save("sdpa_training.png", ImageOps.Concat([
                DemoDrawing.Framed(Panel(v), Color.FromHex("#00e5ff")),
                DemoDrawing.Framed(Panel(out0), Color.FromHex("#ff4081")),
                DemoDrawing.Framed(Panel(outNow), Color.FromHex("#76ff03")),
                plot], 8, DemoDrawing.Background),
            $"target (the {w}×{h} image, cyan frame) | attention output before (pink) | after {steps} Adam steps on the queries (green) | loss per step");
        bool falling = losses[^1] < losses[0];
        ctx.Notes.Add($"sdpa training: loss mean((out − image)²) over {n} pixels {losses[0]:0.00000} → {losses[^1]:0.00000} after {steps} Adam steps " +
                      $"(lr {LearningRate}) on q{(falling ? "" : " — did NOT fall")}; backward FLOPs counted as 2.5× the forward's 2·L·S·(E+Ev)");
    }

    /// <summary>L = mean((out − target)²) and dL/dout = 2(out − target)/len.</summary>
    private static (double Loss, float[] Grad) LossAndGrad(float[] outp, float[] target)
    {
        double loss = 0;
        var g = new float[outp.Length];
        for (int i = 0; i < outp.Length; i++)
        {
            double d = outp[i] - target[i];
            loss += d * d;
            g[i] = (float)(2 * d / outp.Length);
        }
        return (loss / outp.Length, g);
    }

    private static Image FromPixels(float[] pixelsRgb, int w, int h)
    {
        int n = w * h;
        var img = new Image(w, h, 3);
        for (int i = 0; i < n; i++)
            for (int c = 0; c < 3; c++) img.Data[c * n + i] = Math.Clamp(pixelsRgb[i * 3 + c], 0f, 1f);
        return img;
    }
}
