using GpuAttention.Backends.Kernels.Tuning;

namespace GpuAttention.Backends.Kernels;

/// <summary>Which kernels of an op family a kernel backend runs: the GPU-style ones (one row or point per work-item, tiles in
/// local memory) or the CPU-device ones (a block of rows or points per work-item, loops the device compiler vectorises).</summary>
internal enum KernelVariant
{
    /// <summary>By device type: <see cref="Cpu"/> on OpenCL devices that are not GPUs, else <see cref="Gpu"/>.</summary>
    Auto,
    /// <summary>The GPU-style kernels (e.g. kernels/sdpa.cl, grid_sample_forward).</summary>
    Gpu,
    /// <summary>The CPU-device kernels (OpenCL only; e.g. kernels/sdpa_cpu.cl, grid_sample_forward_blocked).</summary>
    Cpu,
}

/// <summary>
/// Host side of kernels/sdpa_cpu.cl, the SDPA forward and backward for CPU OpenCL devices such as PoCL (one work-item per
/// work-group owning a block of rows, explicit 16-wide vectors; see the file's header). Chosen by <see cref="SdpaUsesCpuKernels"/>.
/// </summary>
internal abstract partial class KernelBackend
{
    /// <summary>Environment variable that forces the SDPA variant (<c>cpu</c>, <c>gpu</c> or <c>auto</c>), e.g. to run the
    /// CPU-device kernels under oclgrind, which reports itself as a GPU.</summary>
    internal const string SdpaVariantEnv = "GPUATTENTION_SDPA_VARIANT";

    /// <summary>The SDPA kernels this backend runs (tests set it; the default comes from <see cref="SdpaVariantEnv"/>).</summary>
    internal KernelVariant SdpaVariant { get; set; } = ParseVariant(Environment.GetEnvironmentVariable(SdpaVariantEnv));

    /// <summary>Parses a variant name (<c>cpu</c>, <c>gpu</c>, <c>auto</c> or empty, any case); <paramref name="env"/> names the
    /// variable in the error.</summary>
    internal static KernelVariant ParseVariant(string? s, string env = SdpaVariantEnv) => s?.Trim().ToLowerInvariant() switch
    {
        null or "" or "auto" => KernelVariant.Auto,
        "cpu" => KernelVariant.Cpu,
        "gpu" => KernelVariant.Gpu,
        _ => throw new ArgumentException($"{env}={s}: expected cpu, gpu or auto"),
    };

    /// <summary>Whether <paramref name="v"/> means the CPU-device kernels on this backend: OpenCL only; Auto: a device that is not a GPU.</summary>
    private bool UsesCpuKernels(KernelVariant v) => Kind == BackendKind.OpenCL && v switch
    {
        KernelVariant.Cpu => true,
        KernelVariant.Gpu => false,
        _ => !IsGpu,
    };

    /// <summary>True when SDPA runs the kernels of sdpa_cpu.cl: OpenCL only, on a device that is not a GPU or when forced.</summary>
    internal bool SdpaUsesCpuKernels => UsesCpuKernels(SdpaVariant);

    /// <summary>Forces CPU_QB / CPU_KB of sdpa_cpu.cl (tests use other blocks to exercise the row tails).</summary>
    internal (int Qb, int Kb)? SdpaCpuBlockOverride { get; set; }

    private const int CpuVec = 16;

    /// <summary>
    /// Tuning space of kernels/sdpa_cpu.cl (the PoCL kernels): CPU_QB query rows per work-item of the forward and dQ, CPU_KB keys
    /// per work-item of dK/dV. Results are keyed by the head dims ("E64_64"), which size the per-work-item accumulators. The
    /// default, measured on PoCL 3.1 on a 2-core AVX-512 Xeon at E = 64 (noisy machine): 16 keys per dK/dV work-item beat 8; 8
    /// and 16 query rows were within the noise. GPUs run sdpa.cl / sdpa_backward.cl (<see cref="TuningSpace.NotUsedOn"/>).
    /// </summary>
    internal static TuningSpace SdpaCpuTuning { get; } = new()
    {
        Family = "sdpa",
        Files = ["sdpa_cpu.cl", "sdpa_backward.cl"],
        Knobs = [new("CPU_QB", [4, 8, 16]), new("CPU_KB", [8, 16, 32])],
        DefaultOf = (_, _) => TuningParams.Of(("CPU_QB", 8), ("CPU_KB", 16)),
        InvalidOf = (_, _, _) => null,
        NotUsedOn = d => d.IsGpu ? "GPUs run sdpa.cl / sdpa_backward.cl, whose tiles are not tunable yet; sdpa_cpu.cl is for CPU OpenCL devices" : null,
    };

    /// <summary>The tuning key of head dims (e, ev), e.g. "E64_64".</summary>
    internal static string SdpaTuningKey(int e, int ev) => $"E{e}_{ev}";

    /// <summary>The rows per work-item (CPU_QB for the forward and dQ, CPU_KB for dK/dV) and the -D defines of sdpa_cpu.cl for head
    /// dims (e, ev): a test override, else the tuned winner for the head dims if cached, else the default of <see cref="SdpaCpuTuning"/>.</summary>
    internal (int Qb, int Kb, string Defines) SdpaCpuConfig(int e, int ev)
    {
        if (SdpaCpuBlockOverride is { } o) return (o.Qb, o.Kb, SdpaCpuDefines(e, ev, o.Qb, o.Kb));
        var p = Tuned(SdpaCpuTuning, SdpaTuningKey(e, ev));
        return (p["CPU_QB"], p["CPU_KB"], SdpaCpuDefines(e, ev, p["CPU_QB"], p["CPU_KB"]));
    }

    internal static (int Qb, int Kb, string Defines) SdpaCpuConfig(int e, int ev, KernelDeviceLimits d)
    {
        var p = SdpaCpuTuning.Default(d, SdpaTuningKey(e, ev));
        return (p["CPU_QB"], p["CPU_KB"], SdpaCpuDefines(e, ev, p["CPU_QB"], p["CPU_KB"]));
    }

    private static string SdpaCpuDefines(int e, int ev, int qb, int kb) => $"-DHEAD_DIM={e} -DHEAD_DIM_V={ev} -DCPU_QB={qb} -DCPU_KB={kb}";

    /// <summary>The sdpa_cpu.cl configurations (OpenCL devices that are not GPUs only; the file does not compile as CUDA).</summary>
    private static IEnumerable<KernelConfig> SdpaCpuShippedConfigs(KernelDeviceLimits d) =>
        d.IsGpu ? [] : SdpaShippedHeadDims.Select(h => new KernelConfig("sdpa_cpu.cl", SdpaCpuConfig(h.E, h.Ev, d).Defines,
            ["sdpa_cpu_pack_t", "sdpa_cpu_pack_pad", "sdpa_cpu_forward", "sdpa_cpu_bwd_dkdv", "sdpa_cpu_bwd_dq"]));

    private static int PadTo(int n, int m) => (n + m - 1) / m * m;

    /// <summary>[heads, r, c] → [heads, c, RoundUp(r, 16)] (zero-padded) in scratch <paramref name="role"/>.</summary>
    private IDeviceBuffer PackTransposed(string defines, string role, IDeviceBuffer src, long heads, int r, int c)
    {
        int rp = PadTo(r, CpuVec);
        var dst = Scratch(role, heads * c * rp);
        Launch("sdpa_cpu.cl", defines, "sdpa_cpu_pack_t", [rp / CpuVec, heads], [1, 1], [KernelArg.Of(src), KernelArg.Of(dst), r, c, rp]);
        return dst;
    }

    /// <summary>[heads, r, c] with c padded to a multiple of 16 (zeros) in scratch <paramref name="role"/>, or <paramref name="src"/> itself when c is one.</summary>
    private IDeviceBuffer PackPadded(string defines, string role, IDeviceBuffer src, long heads, int r, int c)
    {
        int cp = PadTo(c, CpuVec);
        if (cp == c) return src;
        var dst = Scratch(role, heads * r * cp);
        Launch("sdpa_cpu.cl", defines, "sdpa_cpu_pack_pad", [r, heads], [1, 1], [KernelArg.Of(src), KernelArg.Of(dst), r, c, cp]);
        return dst;
    }

    /// <summary>The forward through sdpa_cpu.cl (L ≥ 1, S ≥ 0).</summary>
    private void SdpaForwardCpu(in SdpaForwardArgs a)
    {
        var s = a.Shape;
        var (qb, _, defines) = SdpaCpuConfig(s.E, s.Ev);
        long kvHeads = (long)s.B * s.Hkv;
        int sp = PadTo(s.S, CpuVec);
        IDeviceBuffer kt = a.K, vp = a.V;
        if (s.S > 0)
        {
            kt = PackTransposed(defines, "sdpa_cpu.kt", a.K, kvHeads, s.S, s.E);
            vp = PackPadded(defines, "sdpa_cpu.vp", a.V, kvHeads, s.S, s.Ev);
        }
        Launch("sdpa_cpu.cl", defines, "sdpa_cpu_forward", [(s.L + qb - 1) / qb, (long)s.B * s.Hq], [1, 1],
        [
            KernelArg.Of(a.Q), KernelArg.Of(kt), KernelArg.Of(vp), KernelArg.Of(a.Mask), KernelArg.Of(a.Out), KernelArg.Of(a.Lse),
            s.Hq, s.Hkv, s.L, s.S, sp, s.Scale, s.Causal, a.Mask is not null,
            s.MaskStrideB, s.MaskStrideH, s.MaskStrideL, s.MaskStrideS,
        ]);
    }

    /// <summary>The backward through sdpa_cpu.cl (L, S ≥ 1): D from sdpa_backward.cl's preprocess, the operands packed, then dK/dV and dQ.</summary>
    private void SdpaBackwardCpu(in SdpaBackwardArgs a, IDeviceBuffer dsum)
    {
        var s = a.Shape;
        var (qb, kb, defines) = SdpaCpuConfig(s.E, s.Ev);
        long qHeads = (long)s.B * s.Hq, kvHeads = (long)s.B * s.Hkv;
        int lp = PadTo(s.L, CpuVec), sp = PadTo(s.S, CpuVec);
        KernelArg[] tail =
        [
            s.Hq, s.Hkv, s.L, s.S, 0, s.Scale, s.Causal, a.Mask is not null,
            s.MaskStrideB, s.MaskStrideH, s.MaskStrideL, s.MaskStrideS,
        ];

        var qt = PackTransposed(defines, "sdpa_cpu.qt", a.Q, qHeads, s.L, s.E);
        var qp = PackPadded(defines, "sdpa_cpu.qp", a.Q, qHeads, s.L, s.E);
        var dot = PackTransposed(defines, "sdpa_cpu.dot", a.GradOut, qHeads, s.L, s.Ev);
        var dop = PackPadded(defines, "sdpa_cpu.dop", a.GradOut, qHeads, s.L, s.Ev);
        tail[4] = lp;
        Launch("sdpa_cpu.cl", defines, "sdpa_cpu_bwd_dkdv", [(s.S + kb - 1) / kb, kvHeads], [1, 1],
        [
            KernelArg.Of(qt), KernelArg.Of(qp), KernelArg.Of(a.K), KernelArg.Of(a.V), KernelArg.Of(a.Mask), KernelArg.Of(a.Lse),
            KernelArg.Of(dsum), KernelArg.Of(dot), KernelArg.Of(dop), KernelArg.Of(a.GradK), KernelArg.Of(a.GradV), .. tail,
        ]);

        var kt = PackTransposed(defines, "sdpa_cpu.kt", a.K, kvHeads, s.S, s.E);
        var vt = PackTransposed(defines, "sdpa_cpu.vt", a.V, kvHeads, s.S, s.Ev);
        var kp = PackPadded(defines, "sdpa_cpu.kp", a.K, kvHeads, s.S, s.E);
        tail[4] = sp;
        Launch("sdpa_cpu.cl", defines, "sdpa_cpu_bwd_dq", [(s.L + qb - 1) / qb, qHeads], [1, 1],
        [
            KernelArg.Of(a.Q), KernelArg.Of(kt), KernelArg.Of(vt), KernelArg.Of(kp), KernelArg.Of(a.Mask), KernelArg.Of(a.Lse),
            KernelArg.Of(dsum), KernelArg.Of(a.GradOut), KernelArg.Of(a.GradQ), .. tail,
        ]);
    }
}
