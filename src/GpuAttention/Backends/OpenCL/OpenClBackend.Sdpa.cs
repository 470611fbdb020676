using GpuAttention.Backends.OpenCL.Native;

namespace GpuAttention.Backends.OpenCL;

internal sealed unsafe partial class OpenClBackend
{
    /// <summary>Forces the SDPA tile sizes (tests use small tiles to exercise many tiles and tails on small shapes).</summary>
    internal (int BlockM, int BlockN)? SdpaTileOverride { get; set; }

    /// <summary>L == 1 calls with at least this many keys take the split-key decoding kernels.</summary>
    internal int SdpaDecodeMinKeys { get; set; } = 256;

    /// <summary>Keys per work-group of the decoding kernels (DEC_CHUNK).</summary>
    internal int SdpaDecodeChunk { get; set; } = 128;

    private ClMem? _partAcc, _partMl;
    private long _partAccBytes, _partMlBytes;

    /// <summary>A device scratch buffer of at least <paramref name="bytes"/>, kept and reused across calls (the queue is in order).</summary>
    /// <remarks>Growing waits for the queue before releasing the old buffer: the spec defers the free until enqueued kernels
    /// are done, but not every implementation does (oclgrind reported reads of freed, reallocated scratch without the wait).</remarks>
    private ClMem Scratch(ref ClMem? mem, ref long capacity, long bytes)
    {
        if (mem is null || capacity < bytes)
        {
            if (mem is not null) Synchronize();
            mem?.Dispose();
            mem = null;
            mem = CreateMem(Math.Max(bytes, sizeof(float)));
            capacity = bytes;
        }
        return mem;
    }

    /// <summary>Split-key decoding (L == 1): partial softmax per chunk of keys, then a combine per (b, h).</summary>
    private void SdpaDecode(in SdpaForwardArgs a, int keys)
    {
        var s = a.Shape;
        int chunk = SdpaDecodeChunk;
        int wg = (int)Math.Min(64, MaxWorkGroupSize);
        int nsplit = (keys + chunk - 1) / chunk;
        long rows = (long)s.B * s.Hq;
        string defines = $"-DHEAD_DIM={s.E} -DHEAD_DIM_V={s.Ev} -DDEC_CHUNK={chunk} -DDEC_WG={wg}";
        var kp = Programs.Kernel("sdpa.cl", defines, "sdpa_decode_partial");
        var kc = Programs.Kernel("sdpa.cl", defines, "sdpa_decode_combine");
        long accFloats = rows * nsplit * s.Ev;
        long mlFloats = rows * nsplit * 2;
        var partAcc = Scratch(ref _partAcc, ref _partAccBytes, accFloats * sizeof(float));
        var partMl = Scratch(ref _partMl, ref _partMlBytes, mlFloats * sizeof(float));
        OpenClBuffer q = B(a.Q), kk = B(a.K), v = B(a.V), o = B(a.Out), lse = B(a.Lse);
        OpenClBuffer? mask = a.Mask is null ? null : B(a.Mask);

        uint n = 0;
        Arg(kp, n++, q.Mem);
        Arg(kp, n++, kk.Mem);
        Arg(kp, n++, v.Mem);
        Arg(kp, n++, mask?.Mem ?? Dummy);
        Arg(kp, n++, partAcc);
        Arg(kp, n++, partMl);
        Arg(kp, n++, s.Hq);
        Arg(kp, n++, s.Hkv);
        Arg(kp, n++, s.S);
        Arg(kp, n++, s.Scale);
        Arg(kp, n++, s.Causal ? 1 : 0);
        Arg(kp, n++, mask is null ? 0 : 1);
        Arg(kp, n++, s.MaskStrideB);
        Arg(kp, n++, s.MaskStrideH);
        Arg(kp, n++, s.MaskStrideS);
        Arg(kp, n++, nsplit);
        Launch(kp, "sdpa_decode_partial", [(long)nsplit * wg, rows], [wg, 1]);

        n = 0;
        Arg(kc, n++, partAcc);
        Arg(kc, n++, partMl);
        Arg(kc, n++, o.Mem);
        Arg(kc, n++, lse.Mem);
        Arg(kc, n++, nsplit);
        Launch(kc, "sdpa_decode_combine", [rows * wg], [wg]);
        GC.KeepAlive(q); GC.KeepAlive(kk); GC.KeepAlive(v); GC.KeepAlive(mask); GC.KeepAlive(o); GC.KeepAlive(lse);
    }

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

        int keys = s.Causal ? Math.Min(s.S, 1) : s.S;
        if (s.L == 1 && keys >= SdpaDecodeMinKeys && keys > 0) { SdpaDecode(a, keys); return; }

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
