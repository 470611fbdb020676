namespace GpuAttention.Backends.Kernels.Tuning;

/// <summary>
/// One tuning knob of an op family: a <c>-D</c> define of its kernel file (<paramref name="IsDefine"/>) or a host-side launch
/// parameter such as a work-group size, with the candidate values the tuner tries.
/// </summary>
internal sealed record TuningKnob(string Name, int[] Values, bool IsDefine = true);

/// <summary>
/// The declared parameter space of one op family (CLBlast style): its knobs with candidate values, the built-in default for a
/// device (what the host code chose before tuning existed), and the validity constraints a candidate must meet on a device
/// (work-group size, local memory, divisibility); both may depend on the key (e.g. SDPA's head dims). A parameter set is a knob name → value map over every knob.
/// <para>
/// <b>Registering a family</b> takes a few lines: declare a static <see cref="TuningSpace"/> beside the family's
/// define-choosing code in <c>KernelBackend.&lt;Family&gt;.cs</c> (knobs = its <c>#ifndef</c> defines, <see cref="DefaultOf"/> = the
/// current choice, <see cref="InvalidOf"/> = its limits), make that code take its values from
/// <see cref="KernelBackend.Tuned"/>(space, key) instead of the fixed choice, add the space to <see cref="TuningSpaces.All"/>, and add
/// a <c>TuningWorkload</c> (GpuAttention.Tools) (representative shape, reference check, work per run) to <c>Tuning/TuningWorkloads.cs</c>.
/// Results are stored per <em>key</em>: a family whose best tiles depend on a shape class (SDPA: the head dim) tunes one workload
/// per key ("E64", "E128", ...) and passes the key of the call's shape to <see cref="KernelBackend.Tuned"/>; the others use
/// <see cref="AnyKey"/>.
/// </para>
/// <para>
/// gemm, grid-sample and glimpse are registered with <see cref="AnyKey"/>; the kernels of sdpa.cl would be, keyed by head dims, in <c>KernelBackend.Sdpa.cs</c>:
/// <code>
/// internal static TuningSpace SdpaTuning { get; } = new()
/// {
///     Family = "sdpa", Files = ["sdpa.cl"],
///     Knobs = [new("BLOCK_M", [16, 32, 64]), new("BLOCK_N", [16, 32, 64, 128])],
///     // key "E{e}_{ev}": the head dims, which the tiles' local memory and the built-in choice depend on
///     DefaultOf = (d, key) => { var (e, ev) = ParseKey(key); var (m, n, _) = SdpaConfig(e, ev, d); return TuningParams.Of(("BLOCK_M", m), ("BLOCK_N", n)); },
///     InvalidOf = (p, d, key) => p["BLOCK_M"] > d.MaxWorkGroupSize ? "work-group too large" : /* K/V tile bytes for the key's head dims vs d.LocalMemBytes */ null,
/// };
/// // in SdpaConfig(e, ev): var p = Tuned(SdpaTuning, $"E{e}_{ev}"); BLOCK_M / BLOCK_N from p (SdpaShippedConfigs stays on the defaults)
/// </code>
/// and in <c>TuningWorkloads</c> one workload per key, e.g. <c>new(KernelBackend.SdpaTuning, "E64_64", "B1 H8 L=S=1024 E64", 4.0 * 8 * 1024 * 1024 * 64,
/// "GFLOP/s", prepare, check)</c> with a check against <c>ReferenceOps.SdpaForward</c> / <c>SdpaBackward</c> on odd L, S. The
/// `tune --op` words come from <see cref="Family"/>; the cache, the CLI, the validation and the tests need no change.
/// </para>
/// </summary>
internal sealed class TuningSpace
{
    /// <summary>The key of a result that applies to every shape of its family.</summary>
    public const string AnyKey = "*";

    /// <summary>Family name, as `gpuattention tune --op` spells it (e.g. "gemm", "grid-sample", "glimpse").</summary>
    public required string Family { get; init; }
    /// <summary>Kernel files whose source a result depends on: a cached result is stale when their text changed.</summary>
    public required string[] Files { get; init; }
    public required TuningKnob[] Knobs { get; init; }
    /// <summary>The built-in choice on a device for a key (used when nothing valid is cached).</summary>
    public required Func<KernelDeviceLimits, string, TuningParams> DefaultOf { get; init; }
    /// <summary>Why a complete parameter set cannot run on a device for a key (work-group size, local memory, ...), or null when it can.</summary>
    public required Func<TuningParams, KernelDeviceLimits, string, string?> InvalidOf { get; init; }

    /// <summary>The built-in choice on <paramref name="d"/> for shapes of <paramref name="key"/>.</summary>
    public TuningParams Default(KernelDeviceLimits d, string key = AnyKey) => DefaultOf(d, key);

    /// <summary>
    /// Why <paramref name="p"/> is not a valid point of this space on <paramref name="d"/>, or null: every knob present with one
    /// of its declared values, no unknown knob, and <see cref="InvalidOf"/> satisfied. Only declared values can appear, so every
    /// configuration a cached winner can produce is one the tuner compiled and checked on this device.
    /// </summary>
    public string? Validate(TuningParams p, KernelDeviceLimits d, string key = AnyKey)
    {
        foreach (var k in Knobs)
        {
            if (!p.TryGet(k.Name, out int v)) return $"knob {k.Name} missing";
            if (Array.IndexOf(k.Values, v) < 0) return $"{k.Name}={v} is not one of the candidates {string.Join(",", k.Values)}";
        }
        foreach (var name in p.Names)
            if (!Knobs.Any(k => k.Name == name)) return $"unknown knob {name}";
        return InvalidOf(p, d, key);
    }

    /// <summary>Every point of the space (the Cartesian product of the knobs' values), valid or not, in declaration order.</summary>
    public IEnumerable<TuningParams> AllPoints()
    {
        IEnumerable<TuningParams> acc = [TuningParams.Empty];
        foreach (var k in Knobs)
        {
            var knob = k;
            acc = acc.SelectMany(p => knob.Values.Select(v => p.With(knob.Name, v)));
        }
        return acc;
    }

    /// <summary>
    /// The order the tuner tries candidates in: the default first, then its neighbours (one knob changed), then the rest in a
    /// fixed pseudo-random order (seeded, so runs repeat), valid points only. A time budget cuts this list short.
    /// </summary>
    public List<TuningParams> CandidateOrder(KernelDeviceLimits d, out int invalid, string key = AnyKey)
    {
        var def = Default(d, key);
        var all = AllPoints().ToList();
        var valid = all.Where(p => Validate(p, d, key) is null).ToList();
        invalid = all.Count - valid.Count;
        var rng = new Random(12345);
        var rest = valid.Where(p => !p.Equals(def)).Select(p => (p, n: Knobs.Count(k => p[k.Name] != def[k.Name]), r: rng.Next()))
            .OrderBy(t => t.n == 1 ? 0 : 1).ThenBy(t => t.r).Select(t => t.p);
        var order = new List<TuningParams>();
        if (Validate(def, d, key) is null) order.Add(def);
        order.AddRange(rest);
        return order;
    }

    /// <summary>The <c>-D</c> defines of the define knobs of <paramref name="p"/> (host-side knobs are left out), e.g. "-DTM=32 -DTN=32".</summary>
    public string Defines(TuningParams p) => string.Join(" ", Knobs.Where(k => k.IsDefine).Select(k => $"-D{k.Name}={p[k.Name]}"));
}

/// <summary>An immutable knob name → value map (ordinal names, insertion order kept for printing).</summary>
internal sealed class TuningParams : IEquatable<TuningParams>
{
    private readonly KeyValuePair<string, int>[] _items;
    private TuningParams(KeyValuePair<string, int>[] items) => _items = items;

    public static TuningParams Empty { get; } = new([]);

    public static TuningParams Of(params (string Name, int Value)[] items)
    {
        var p = Empty;
        foreach (var (n, v) in items) p = p.With(n, v);
        return p;
    }

    public IEnumerable<string> Names => _items.Select(i => i.Key);
    public IReadOnlyList<KeyValuePair<string, int>> Items => _items;

    public bool TryGet(string name, out int value)
    {
        foreach (var i in _items)
            if (i.Key == name) { value = i.Value; return true; }
        value = 0;
        return false;
    }

    public int this[string name] => TryGet(name, out int v) ? v : throw new KeyNotFoundException($"tuning knob {name}");

    /// <summary>A copy with <paramref name="name"/> set to <paramref name="value"/>.</summary>
    public TuningParams With(string name, int value)
    {
        int i = Array.FindIndex(_items, x => x.Key == name);
        var copy = i < 0 ? [.. _items, new(name, value)] : (KeyValuePair<string, int>[])_items.Clone();
        if (i >= 0) copy[i] = new(name, value);
        return new TuningParams(copy);
    }

    public bool Equals(TuningParams? other) =>
        other is not null && other._items.Length == _items.Length && _items.All(i => other.TryGet(i.Key, out int v) && v == i.Value);
    public override bool Equals(object? obj) => Equals(obj as TuningParams);
    public override int GetHashCode() => _items.OrderBy(i => i.Key, StringComparer.Ordinal).Aggregate(17, (h, i) => HashCode.Combine(h, i.Key, i.Value));

    /// <summary>"TM=32 TN=32 TK=16".</summary>
    public override string ToString() => string.Join(" ", _items.Select(i => $"{i.Key}={i.Value}"));
}

/// <summary>Every registered tuning space, by family name.</summary>
internal static class TuningSpaces
{
    public static IReadOnlyList<TuningSpace> All { get; } =
    [
        KernelBackend.GemmTuning,
        KernelBackend.SpatialTuning,
        KernelBackend.GlimpseTuning,
    ];

    public static TuningSpace? Find(string family) => All.FirstOrDefault(s => s.Family == family);
}
