using GpuAttention.IO;

namespace GpuAttention.Cli.Ops;

/// <summary>`run sdpa`: reads q, k, v, [mask]; writes out, lse.</summary>
internal sealed class SdpaOp : ICliOp
{
    public string Name => "sdpa";

    public PreparedRun Prepare(Device device, InputSet inputs, RunOptions o)
    {
        var q = inputs.Float("q", "[B, Hq, L, E]");
        var k = inputs.Float("k", "[B, Hkv, S, E]");
        var v = inputs.Float("v", "[B, Hkv, S, Ev]");
        var mask = inputs.Optional("mask", "[L, S] or [B|1, Hq|1, L, S], bool or float32");
        var opts = new SdpaOptions(o.Causal, o.Scale);
        // Validate every shape on the host before anything is allocated on the device.
        var shape = Device.ResolveSdpaShape(q.Shape, k.Shape, v.Shape, mask?.Shape, opts);
        var owned = new List<IDisposable>();
        try
        {
            var tq = device.Upload(q.Floats!, q.Shape); owned.Add(tq);
            var tk = device.Upload(k.Floats!, k.Shape); owned.Add(tk);
            var tv = device.Upload(v.Floats!, v.Shape); owned.Add(tv);
            Tensor? tm = null;
            if (mask is not null) { tm = mask.DType == NpyDType.Bool ? device.UploadMask(mask.Bools!, mask.Shape) : device.Upload(mask.Floats!, mask.Shape); owned.Add(tm); }
            var to = device.Allocate(shape.B, shape.Hq, shape.L, shape.Ev); owned.Add(to);
            var tl = device.Allocate(shape.B, shape.Hq, shape.L); owned.Add(tl);
            return new PreparedRun(
                () => device.Sdpa(tq, tk, tv, to, tl, tm, opts),
                () => [OpHelpers.Out(device, to, "out"), OpHelpers.Out(device, tl, "lse")],
                owned);
        }
        catch
        {
            foreach (var d in owned) d.Dispose();
            throw;
        }
    }
}
