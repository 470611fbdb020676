using GpuAttention.IO;

namespace GpuAttention.Cli.Ops;

/// <summary>`run sdpa-backward`: reads q, k, v, [mask], out, lse, grad_out; writes grad_q, grad_k, grad_v.</summary>
internal sealed class SdpaBackwardOp : ICliOp
{
    public string Name => "sdpa-backward";

    public PreparedRun Prepare(Device device, InputSet inputs, RunOptions o)
    {
        var q = inputs.Float("q", "[B, Hq, L, E]");
        var k = inputs.Float("k", "[B, Hkv, S, E]");
        var v = inputs.Float("v", "[B, Hkv, S, Ev]");
        var mask = inputs.Optional("mask", "[L, S] or [B|1, Hq|1, L, S], bool or float32");
        var opts = new SdpaOptions(o.Causal, o.Scale);
        // Validate every shape on the host before anything is allocated on the device.
        var shape = Device.ResolveSdpaShape(q.Shape, k.Shape, v.Shape, mask?.Shape, opts);
        var output = inputs.Float("out", $"[B, Hq, L, Ev] = [{shape.B}, {shape.Hq}, {shape.L}, {shape.Ev}]");
        var lse = inputs.Float("lse", $"[B, Hq, L] = [{shape.B}, {shape.Hq}, {shape.L}]");
        var gradOut = inputs.Float("grad_out", $"[B, Hq, L, Ev] = [{shape.B}, {shape.Hq}, {shape.L}, {shape.Ev}]");
        Device.CheckSdpaBackwardInputs(shape, output.Shape, lse.Shape, gradOut.Shape);
        var owned = new List<IDisposable>();
        try
        {
            Tensor Up(NpyArray a) { var t = device.Upload(a.Floats!, a.Shape); owned.Add(t); return t; }
            var tq = Up(q); var tk = Up(k); var tv = Up(v);
            Tensor? tm = null;
            if (mask is not null) { tm = mask.DType == NpyDType.Bool ? device.UploadMask(mask.Bools!, mask.Shape) : device.Upload(mask.Floats!, mask.Shape); owned.Add(tm); }
            var to = Up(output); var tl = Up(lse); var tg = Up(gradOut);
            var dq = device.Allocate(shape.B, shape.Hq, shape.L, shape.E); owned.Add(dq);
            var dk = device.Allocate(shape.B, shape.Hkv, shape.S, shape.E); owned.Add(dk);
            var dv = device.Allocate(shape.B, shape.Hkv, shape.S, shape.Ev); owned.Add(dv);
            return new PreparedRun(
                () => device.SdpaBackward(tq, tk, tv, to, tl, tg, dq, dk, dv, tm, opts),
                () => [OpHelpers.Out(device, dq, "grad_q"), OpHelpers.Out(device, dk, "grad_k"), OpHelpers.Out(device, dv, "grad_v")],
                owned);
        }
        catch
        {
            foreach (var d in owned) d.Dispose();
            throw;
        }
    }
}
