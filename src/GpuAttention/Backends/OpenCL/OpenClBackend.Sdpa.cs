using GpuAttention.Backends.OpenCL.Native;

namespace GpuAttention.Backends.OpenCL;

internal sealed unsafe partial class OpenClBackend
{
    /// <summary>Forces the SDPA tile sizes (tests use small tiles to exercise many tiles and tails on small shapes).</summary>
    internal (int BlockM, int BlockN)? SdpaTileOverride { get; set; }

    /// <summary>Tile sizes and the -D defines of kernels/sdpa.cl for head dims (e, ev) on this device.</summary>
    internal (int BlockM, int BlockN, string Defines) SdpaConfig(int e, int ev)
    {
        if (SdpaTileOverride is { } t)
            return (t.BlockM, t.BlockN, $"-DHEAD_DIM={e} -DHEAD_DIM_V={ev} -DBLOCK_M={t.BlockM} -DBLOCK_N={t.BlockN}");
        int blockM = 32;
        while (blockM > 1 && blockM > MaxWorkGroupSize) blockM /= 2;
        int blockN = e + ev <= 128 ? 64 : e + ev <= 256 ? 32 : e + ev <= 512 ? 16 : 8;
        long localBudget = Math.Min(LocalMemBytes > 0 ? LocalMemBytes : 32 * 1024, 32 * 1024);
        while (blockN > 1 && (long)blockN * (e + ev) * sizeof(float) > localBudget) blockN /= 2;
        return (blockM, blockN, $"-DHEAD_DIM={e} -DHEAD_DIM_V={ev} -DBLOCK_M={blockM} -DBLOCK_N={blockN}");
    }

    /// <summary>Enqueues the fused SDPA forward kernel (does not wait).</summary>
    public void SdpaForward(in SdpaForwardArgs a)
    {
        var s = a.Shape;
        if (s.B == 0 || s.Hq == 0 || s.L == 0) return;
        if (s.E == 0 || s.Ev == 0)
            throw new NotSupportedException($"opencl: sdpa with an empty head dimension (E = {s.E}, Ev = {s.Ev}) is not supported");
        if ((long)s.B * s.Hq > int.MaxValue) throw new NotSupportedException("opencl: sdpa: B * Hq exceeds 2^31 - 1");

        var (blockM, _, defines) = SdpaConfig(s.E, s.Ev);
        var k = Programs.Kernel("sdpa.cl", defines, "sdpa_forward");
        OpenClBuffer q = B(a.Q), kk = B(a.K), v = B(a.V), o = B(a.Out), lse = B(a.Lse);
        OpenClBuffer? mask = a.Mask is null ? null : B(a.Mask);

        uint n = 0;
        Arg(k, n++, q.Mem);
        Arg(k, n++, kk.Mem);
        Arg(k, n++, v.Mem);
        Arg(k, n++, mask?.Mem ?? Dummy);
        Arg(k, n++, o.Mem);
        Arg(k, n++, lse.Mem);
        Arg(k, n++, s.Hq);
        Arg(k, n++, s.Hkv);
        Arg(k, n++, s.L);
        Arg(k, n++, s.S);
        Arg(k, n++, s.Scale);
        Arg(k, n++, s.Causal ? 1 : 0);
        Arg(k, n++, mask is null ? 0 : 1);
        Arg(k, n++, s.MaskStrideB);
        Arg(k, n++, s.MaskStrideH);
        Arg(k, n++, s.MaskStrideL);
        Arg(k, n++, s.MaskStrideS);

        long groupsM = (s.L + blockM - 1) / blockM;
        Launch(k, "sdpa_forward", [groupsM * blockM, (long)s.B * s.Hq], [blockM, 1]);
        GC.KeepAlive(q); GC.KeepAlive(kk); GC.KeepAlive(v); GC.KeepAlive(mask); GC.KeepAlive(o); GC.KeepAlive(lse);
    }
}
