namespace GpuAttention.Cli.Ops;

/// <summary>`run glimpse --size h,w`: reads image [N,C,H,W], params [N,6]; writes out [N,C,h,w].</summary>
internal sealed class GlimpseOp : ICliOp
{
    public string Name => "glimpse";

    public PreparedRun Prepare(Device device, InputSet inputs, RunOptions o)
    {
        if (o.Size is null) throw new UsageException("glimpse: --size h,w (the glimpse size) is required");
        var image = inputs.Float("image", "[N, C, H, W]");
        var p = inputs.Float("params", "[N, 6]");
        var s = Device.ResolveGlimpseShape(image.Shape, p.Shape, o.Size[0], o.Size[1]);   // host-side, before allocating
        var owned = new List<IDisposable>();
        try
        {
            var ti = device.Upload(image.Floats!, image.Shape); owned.Add(ti);
            var tp = device.Upload(p.Floats!, p.Shape); owned.Add(tp);
            var to = device.Allocate(s.N, s.C, s.Gh, s.Gw); owned.Add(to);
            return new PreparedRun(() => device.Glimpse(ti, tp, to), () => [OpHelpers.Out(device, to, "out")], owned);
        }
        catch
        {
            foreach (var d in owned) d.Dispose();
            throw;
        }
    }
}

/// <summary>`run glimpse-backward`: reads image [N,C,H,W], params [N,6], grad_out [N,C,h,w]; writes grad_image, grad_params.</summary>
internal sealed class GlimpseBackwardOp : ICliOp
{
    public string Name => "glimpse-backward";

    public PreparedRun Prepare(Device device, InputSet inputs, RunOptions o)
    {
        var image = inputs.Float("image", "[N, C, H, W]");
        var p = inputs.Float("params", "[N, 6]");
        var g = inputs.Float("grad_out", "[N, C, h, w]");
        if (g.Shape.Length != 4) throw new TensorShapeException("grad_out", "rank 4 [N, C, h, w]", g.ShapeText);
        var s = Device.ResolveGlimpseShape(image.Shape, p.Shape, g.Shape[2], g.Shape[3]);
        if (g.Shape[0] != s.N || g.Shape[1] != s.C || o.Size is not null && (o.Size[0] != s.Gh || o.Size[1] != s.Gw))
            throw new TensorShapeException("grad_out", $"[N, C, h, w] = [{s.N}, {s.C}, {o.Size?[0].ToString() ?? "h"}, {o.Size?[1].ToString() ?? "w"}]", g.ShapeText);
        var owned = new List<IDisposable>();
        try
        {
            var ti = device.Upload(image.Floats!, image.Shape); owned.Add(ti);
            var tp = device.Upload(p.Floats!, p.Shape); owned.Add(tp);
            var tg = device.Upload(g.Floats!, g.Shape); owned.Add(tg);
            var gi = device.Allocate(s.N, s.C, s.H, s.W); owned.Add(gi);
            var gp = device.Allocate(s.N, 6); owned.Add(gp);
            return new PreparedRun(() => device.GlimpseBackward(ti, tp, tg, gi, gp),
                () => [OpHelpers.Out(device, gi, "grad_image"), OpHelpers.Out(device, gp, "grad_params")], owned);
        }
        catch
        {
            foreach (var d in owned) d.Dispose();
            throw;
        }
    }
}
