using GpuAttention.IO;

namespace GpuAttention.Cli.Ops;

/// <summary>Shared helpers of the spatial-transformer commands.</summary>
internal static class SpatialCli
{
    public static GridSampleOptions Options(RunOptions o) => GridSampleOptions.Parse(o.Mode, o.Padding, o.AlignCorners) with
    {
        Backward = o.Atomic ? GridSampleBackwardMode.Atomic : GridSampleBackwardMode.Deterministic,
    };

    /// <summary>Uploads the given arrays and allocates the outputs; disposes everything on failure.</summary>
    public static PreparedRun Prepare(Device device, (NpyArray Array, int[] Shape)[] uploads, int[][] outputs, string[] outputNames,
        Action<Tensor[], Tensor[]> run)
    {
        var owned = new List<IDisposable>();
        try
        {
            var ins = new Tensor[uploads.Length];
            for (int i = 0; i < uploads.Length; i++) { ins[i] = device.Upload(uploads[i].Array.Floats!, uploads[i].Shape); owned.Add(ins[i]); }
            var outs = new Tensor[outputs.Length];
            for (int i = 0; i < outputs.Length; i++) { outs[i] = device.Allocate(outputs[i]); owned.Add(outs[i]); }
            return new PreparedRun(() => run(ins, outs),
                () => outs.Select((t, i) => OpHelpers.Out(device, t, outputNames[i])).ToList(), owned);
        }
        catch
        {
            foreach (var d in owned) d.Dispose();
            throw;
        }
    }
}

/// <summary>`run affine-grid`: reads theta [N, 2, 3]; writes grid [N, H, W, 2] for --size H,W (required).</summary>
internal sealed class AffineGridOp : ICliOp
{
    public string Name => "affine-grid";

    public PreparedRun Prepare(Device device, InputSet inputs, RunOptions o)
    {
        if (o.Size is null) throw new UsageException("affine-grid: --size H,W (the grid's height and width) is required");
        var theta = inputs.Float("theta", "[N, 2, 3]");
        int n = Device.ResolveAffineGrid(theta.Shape, o.Size[0], o.Size[1]);
        bool align = o.AlignCorners;
        return SpatialCli.Prepare(device, [(theta, theta.Shape)], [[n, o.Size[0], o.Size[1], 2]], ["grid"],
            (i, r) => device.AffineGrid(i[0], r[0], align));
    }
}

/// <summary>`run affine-grid-backward`: reads grad_grid [N, H, W, 2] (H, W must equal --size when given); writes grad_theta [N, 2, 3].</summary>
internal sealed class AffineGridBackwardOp : ICliOp
{
    public string Name => "affine-grid-backward";

    public PreparedRun Prepare(Device device, InputSet inputs, RunOptions o)
    {
        var gg = inputs.Float("grad_grid", o.Size is null ? "[N, H, W, 2]" : $"[N, {o.Size[0]}, {o.Size[1]}, 2]");
        var (n, _, _) = Device.ResolveAffineGridBackward(gg.Shape, o.Size);
        bool align = o.AlignCorners;
        return SpatialCli.Prepare(device, [(gg, gg.Shape)], [[n, 2, 3]], ["grad_theta"],
            (i, r) => device.AffineGridBackward(i[0], r[0], align));
    }
}

/// <summary>`run grid-sample`: reads input [N, C, H, W], grid [N, Hout, Wout, 2]; writes out [N, C, Hout, Wout].</summary>
internal sealed class GridSampleOp : ICliOp
{
    public string Name => "grid-sample";

    public PreparedRun Prepare(Device device, InputSet inputs, RunOptions o)
    {
        var input = inputs.Float("input", "[N, C, H, W]");
        var grid = inputs.Float("grid", "[N, Hout, Wout, 2]");
        var opts = SpatialCli.Options(o);
        var s = Device.ResolveGridSample(input.Shape, grid.Shape, opts);
        return SpatialCli.Prepare(device, [(input, input.Shape), (grid, grid.Shape)], [[s.N, s.C, s.Hout, s.Wout]], ["out"],
            (i, r) => device.GridSample(i[0], i[1], r[0], opts));
    }
}

/// <summary>`run grid-sample-backward`: reads input, grid, grad_out [N, C, Hout, Wout]; writes grad_input, grad_grid.</summary>
internal sealed class GridSampleBackwardOp : ICliOp
{
    public string Name => "grid-sample-backward";

    public PreparedRun Prepare(Device device, InputSet inputs, RunOptions o)
    {
        var input = inputs.Float("input", "[N, C, H, W]");
        var grid = inputs.Float("grid", "[N, Hout, Wout, 2]");
        var opts = SpatialCli.Options(o);
        var s = Device.ResolveGridSample(input.Shape, grid.Shape, opts);
        var gout = inputs.Float("grad_out", $"[N, C, Hout, Wout] = [{s.N}, {s.C}, {s.Hout}, {s.Wout}]");
        if (!gout.Shape.SequenceEqual(new[] { s.N, s.C, s.Hout, s.Wout }))
            throw new TensorShapeException("grad_out", $"[N, C, Hout, Wout] = [{s.N}, {s.C}, {s.Hout}, {s.Wout}]", gout.ShapeText);
        return SpatialCli.Prepare(device, [(input, input.Shape), (grid, grid.Shape), (gout, gout.Shape)],
            [[s.N, s.C, s.H, s.W], [s.N, s.Hout, s.Wout, 2]], ["grad_input", "grad_grid"],
            (i, r) => device.GridSampleBackward(i[0], i[1], i[2], r[0], r[1], opts));
    }
}
