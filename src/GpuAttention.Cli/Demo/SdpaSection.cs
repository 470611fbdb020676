using GpuAttention.Cli.Imaging;
using GpuAttention.Reference;

namespace GpuAttention.Cli;

/// <summary>
/// SAGAN-style self-attention over the pixels of the (downscaled) image. Queries and keys are hand-made
/// projections of colour and position, chosen so that <c>q_i·k_j = −|Δc|²/2σc² − |Δp|²/2σp² + Σ_ω cos(ω·Δp) + const_i</c>:
/// each pixel attends to nearby pixels of similar colour (a bilateral filter written as attention), and the values are
/// the pixel colours, so the attention output is the image smoothed within colour regions. Writes, for a few query
/// pixels, the attention weights <c>p_j = exp(q_i·k_j·scale − lse_i)</c> (recomputed on the host from q, k and the
/// kernel's lse) as heat maps over the image, and an overview strip.
/// </summary>
internal sealed class SdpaSection : IDemoSection
{
    private const float SigmaColor = 0.15f;   // colour distance (RGB in [0,1]) at which a weight drops to e^-1/2
    private const float SigmaPos = 0.08f;     // position distance, in units of the image's longer side
    private const float FourierWeight = 0.7f; // γ: each Fourier pair adds γ²·cos(ω·Δ)
    private static readonly float[] Frequencies = [MathF.PI, 2 * MathF.PI];
    internal const int E = 16;                 // 3 colour + 2 position + 8 Fourier + 1 bias, padded with zeros to 16
    private static readonly Color[] MarkerColors =
        [Color.FromHex("#00e5ff"), Color.FromHex("#76ff03"), Color.FromHex("#ff4081"), Color.FromHex("#ffffff")];

    public string Name => "sdpa";

    public void Run(DemoContext ctx)
    {
        var full = ctx.Input;
        double f = Math.Min(1.0, Math.Sqrt((double)ctx.Options.Pixels / full.PixelCount));
        int w = Math.Max(1, (int)Math.Round(full.Width * f)), h = Math.Max(1, (int)Math.Round(full.Height * f));
        var small = full.Resize(w, h, ResizeMode.Box);
        int n = w * h;
        var (q, k) = Features(small);
        var v = new float[n * 3];
        for (int i = 0; i < n; i++)
            for (int c = 0; c < 3; c++) v[i * 3 + c] = small.Data[c * n + i];

        // Device run, timed.
        ctx.ReportStatus($"sdpa: {n} pixels, uploading");
        var dev = ctx.Device;
        const float scale = 1f;
        var options = new SdpaOptions(IsCausal: false, Scale: scale);
        using var tq = dev.Upload(q, 1, 1, n, E);
        using var tk = dev.Upload(k, 1, 1, n, E);
        using var tv = dev.Upload(v, 1, 1, n, 3);
        using var tout = dev.Allocate(1, 1, n, 3);
        using var tlse = dev.Allocate(1, 1, n);
        ctx.ReportStatus($"sdpa: timing {ctx.Options.Repeat} runs on {dev.Spec}");
        double ms = ctx.TimeMedian(() => dev.Sdpa(tq, tk, tv, tout, tlse, null, options));
        var outp = dev.Download(tout);
        var lse = dev.Download(tlse);

        // Verification against the double-precision reference.
        ctx.ReportStatus("sdpa: double-precision reference");
        var (refOut, refLse) = ReferenceOps.SdpaForward(q, k, v, 1, 1, 1, n, n, E, 3, scale, false, null, null);
        var (eo, ro) = DemoContext.Compare(outp, refOut);
        var (el, rl) = DemoContext.Compare(lse, refLse);
        double flops = 2.0 * n * n * (E + 3);
        ctx.Rows.Add(new DemoRow("sdpa forward (out, lse)", $"q,k [1,1,{n},{E}] v [1,1,{n},3]", ms, flops / (ms * 1e6),
            Math.Max(eo, el), Math.Max(ro, rl), !dev.SupportsOp(OpKind.Sdpa)));

        // Pictures.
        ctx.ReportStatus("sdpa: drawing attention maps");
        var queries = PickQueries(small, SelfWeights(q, k, lse, n, scale), 4);
        double maxRowSumError = 0;
        var display = full.ResizeLongSide(Math.Min(640, Math.Max(full.Width, full.Height)));
        var dimmed = Dim(display.ToGray());
        var panels = new List<Image>();
        const int panelSide = 320;
        panels.Add(full.ResizeLongSide(panelSide));
        var outImage = FromPixels(outp, w, h);
        panels.Add(outImage.ResizeLongSide(panelSide, ResizeMode.Nearest));
        ctx.Save("sdpa_input_small.png", small.ResizeLongSide(Math.Max(w, h) * Math.Max(1, panelSide / Math.Max(w, h)), ResizeMode.Nearest),
            $"the {w}×{h} image the attention runs on ({n} pixels = queries = keys)");
        ctx.Save("sdpa_output.png", outImage.ResizeLongSide(Math.Max(w, h) * Math.Max(1, panelSide / Math.Max(w, h)), ResizeMode.Nearest),
            "attention output: every pixel replaced by the attention-weighted mean colour");
        for (int t = 0; t < queries.Count; t++)
        {
            int qi = queries[t];
            var weights = AttentionRow(q, k, lse[qi], qi, n, scale, out double sum);
            maxRowSumError = Math.Max(maxRowSumError, Math.Abs(sum - 1));
            var map = new Image(w, h, 1, weights);
            var color = MarkerColors[t % MarkerColors.Length];
            var big = HeatOverlay(dimmed, map);
            (int qx, int qy) = (qi % w, qi / w);
            int mx = (int)((qx + 0.5) * big.Width / w), my = (int)((qy + 0.5) * big.Height / h);
            big.DrawCross(mx, my, Math.Max(6, big.Width / 40), color, thickness: 3);
            ctx.Save($"sdpa_attention_q{t + 1}.png", big,
                $"attention weights of query pixel ({qx},{qy}) over all pixels (max weight {weights.Max():0.0e+00}), marked with a cross");
            var panel = big.ResizeLongSide(panelSide, ResizeMode.Box);
            panel.DrawCross((int)((qx + 0.5) * panel.Width / w), (int)((qy + 0.5) * panel.Height / h), 6, color, thickness: 2);
            panel.DrawRectangle(0, 0, panel.Width, panel.Height, color, 3);
            panels.Add(panel);
        }
        ctx.Save("sdpa_overview.png", ImageOps.Concat(panels, 8, new Color(0.12f, 0.12f, 0.12f)),
            "input | attention output | attention maps of the marked query pixels");
        ctx.Notes.Add($"sdpa: bilateral self-attention over {w}×{h} pixels (σ colour {SigmaColor}, σ position {SigmaPos} of the longer side, scale {scale}); " +
                      $"host-recomputed attention rows sum to 1 within {maxRowSumError:0.0e+00}");
    }

    /// <summary>q_i = [c̃, p̃, F(p), 1, 0, 0], k_j = [c̃, p̃, F(p), −(|c̃|²+|p̃|²)/2, 0, 0] with c̃ = (c − ½)/σc, p̃ = (p − centre)/σp.</summary>
    internal static (float[] Q, float[] K) Features(Image img)
    {
        int w = img.Width, h = img.Height, n = w * h;
        float side = Math.Max(w, h);
        var q = new float[n * E];
        var k = new float[n * E];
        Span<float> feat = stackalloc float[E];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                int i = y * w + x;
                feat.Clear();
                int d = 0;
                float norm2 = 0;
                for (int c = 0; c < 3; c++) { float u = (img.Data[c * n + i] - 0.5f) / SigmaColor; feat[d++] = u; norm2 += u * u; }
                float px = (x + 0.5f - w / 2f) / side, py = (y + 0.5f - h / 2f) / side;
                foreach (var p in (ReadOnlySpan<float>)[px, py]) { float u = p / SigmaPos; feat[d++] = u; norm2 += u * u; }
                foreach (var om in Frequencies)
                    foreach (var p in (ReadOnlySpan<float>)[px, py])
                    {
                        feat[d++] = FourierWeight * MathF.Cos(om * p);
                        feat[d++] = FourierWeight * MathF.Sin(om * p);
                    }
                feat.CopyTo(q.AsSpan(i * E, E));
                feat.CopyTo(k.AsSpan(i * E, E));
                q[i * E + d] = 1f;
                k[i * E + d] = -0.5f * norm2;
            }
        return (q, k);
    }

    /// <summary>Softmax weights of query row <paramref name="i"/>: p_j = exp(q_i·k_j·scale − lse_i), in double.</summary>
    private static float[] AttentionRow(float[] q, float[] k, float lse, int i, int n, float scale, out double sum)
    {
        var p = new float[n];
        sum = 0;
        for (int j = 0; j < n; j++)
        {
            double d = 0;
            for (int e = 0; e < E; e++) d += (double)q[i * E + e] * k[j * E + e];
            double pj = Math.Exp(d * scale - lse);
            p[j] = (float)pj;
            sum += pj;
        }
        return p;
    }

    /// <summary>p_ii for every pixel: how much a pixel attends to itself (high for isolated colours, whose maps say little).</summary>
    private static double[] SelfWeights(float[] q, float[] k, float[] lse, int n, float scale)
    {
        var self = new double[n];
        for (int i = 0; i < n; i++)
        {
            double d = 0;
            for (int e = 0; e < E; e++) d += (double)q[i * E + e] * k[i * E + e];
            self[i] = Math.Exp(d * scale - lse[i]);
        }
        return self;
    }

    /// <summary>
    /// One query per main colour: pixels are binned by colour (3 levels per channel), and for each of the
    /// <paramref name="count"/> most populous bins the query is its pixel, away from the border, that attends most
    /// broadly (lowest self-weight), so each map shows how attention spreads over a region of one colour.
    /// </summary>
    private static List<int> PickQueries(Image img, double[] selfWeight, int count)
    {
        int w = img.Width, h = img.Height, n = w * h;
        int mx = w / 8, my = h / 8;
        var bins = new Dictionary<int, List<int>>();
        for (int i = 0; i < n; i++)
        {
            int x = i % w, y = i / w;
            if (x < mx || x >= w - mx || y < my || y >= h - my) continue;
            int key = 0;
            for (int c = 0; c < 3; c++) key = key * 3 + Math.Clamp((int)(img.Data[c * n + i] * 3), 0, 2);
            if (!bins.TryGetValue(key, out var list)) bins[key] = list = [];
            list.Add(i);
        }
        var chosen = bins.Values.OrderByDescending(l => l.Count).ThenBy(l => l[0]).Take(count)
            .Select(l => l.MinBy(i => selfWeight[i])).ToList();
        if (chosen.Count == 0) chosen.Add(h / 2 * w + w / 2);
        return chosen;
    }

    private static Image FromPixels(float[] pixelsRgb, int w, int h)
    {
        int n = w * h;
        var img = new Image(w, h, 3);
        for (int i = 0; i < n; i++)
            for (int c = 0; c < 3; c++) img.Data[c * n + i] = pixelsRgb[i * 3 + c];
        return img;
    }

    private static Image Dim(Image gray)
    {
        var d = gray.Clone();
        for (int i = 0; i < d.Data.Length; i++) d.Data[i] = 0.15f + 0.55f * d.Data[i];
        return d;
    }

    /// <summary>Heat map (inferno, normalised to the row's maximum) blended over the background with opacity rising with the weight.</summary>
    private static Image HeatOverlay(Image background, Image map)
    {
        float max = map.Data.Max();
        var norm = map.Clone();
        for (int i = 0; i < norm.Data.Length; i++) norm.Data[i] = max > 0 ? norm.Data[i] / max : 0;
        var up = norm.Resize(background.Width, background.Height, ResizeMode.Bilinear);
        var heat = Colormap.Inferno.Apply(up, 0, 1);
        var alpha = up.Clone();
        for (int i = 0; i < alpha.Data.Length; i++) alpha.Data[i] = MathF.Sqrt(Math.Clamp(alpha.Data[i], 0, 1));
        return ImageOps.Blend(background, heat, 0.9f, alpha);
    }
}
