using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>
/// The validation audit at the API boundary, table-driven: every public op that takes caller-provided tensors (every
/// <c>Device</c> op and the multi-head attention layer) with each class of bad input — a tensor of another device, a
/// disposed tensor, the wrong rank, the wrong shape, an output that is one of the inputs — must throw the documented
/// exception type, name the tensor (and, for shapes, the expected and the actual shape), and write nothing: outputs
/// poisoned with NaN beforehand keep their poison, and inputs keep their values.
/// </summary>
[TestFixtureSource(typeof(TestUtil), nameof(TestUtil.Backends))]
public class ValidationAuditTests(string backend)
{
    private Device _d = null!, _other = null!;

    [OneTimeSetUp] public void Open() { _d = TestUtil.OpenOrIgnore(backend); _other = Device.Open(backend); }
    [OneTimeTearDown] public void Close() { _d?.Dispose(); _other?.Dispose(); }

    /// <summary>One op: its tensors by the names it documents (valid shapes), which of them it writes, and the call.</summary>
    public sealed record Op(string Name, (string Name, int[] Shape)[] Tensors, string[] Outputs, Action<Device, Func<string, Tensor>> Call)
    {
        public override string ToString() => Name;
    }

    private static readonly GridSampleOptions Gs = new();

    // Shapes chosen so that several inputs and outputs share a shape (the aliasing cases need them).
    public static IEnumerable<Op> Ops()
    {
        int[] qkv = [1, 2, 3, 4];
        yield return new("sdpa", [("q", qkv), ("k", qkv), ("v", qkv), ("mask", [3, 3]), ("out", qkv), ("lse", [1, 2, 3])], ["out", "lse"],
            (d, t) => d.Sdpa(t("q"), t("k"), t("v"), t("out"), t("lse"), t("mask")));
        yield return new("sdpa_backward",
            [("q", qkv), ("k", qkv), ("v", qkv), ("mask", [3, 3]), ("out", qkv), ("lse", [1, 2, 3]), ("grad_out", qkv),
             ("grad_q", qkv), ("grad_k", qkv), ("grad_v", qkv)], ["grad_q", "grad_k", "grad_v"],
            (d, t) => d.SdpaBackward(t("q"), t("k"), t("v"), t("out"), t("lse"), t("grad_out"), t("grad_q"), t("grad_k"), t("grad_v"), t("mask")));
        yield return new("gemm", [("a", [3, 3]), ("b", [3, 3]), ("c", [3, 3])], ["c"], (d, t) => d.Gemm(t("a"), t("b"), t("c"), beta: 1f));
        yield return new("glimpse", [("image", [2, 1, 4, 5]), ("params", [2, 6]), ("out", [2, 1, 4, 5])], ["out"],
            (d, t) => d.Glimpse(t("image"), t("params"), t("out")));
        yield return new("glimpse_backward",
            [("image", [2, 1, 4, 5]), ("params", [2, 6]), ("grad_out", [2, 1, 4, 5]), ("grad_image", [2, 1, 4, 5]), ("grad_params", [2, 6])],
            ["grad_image", "grad_params"], (d, t) => d.GlimpseBackward(t("image"), t("params"), t("grad_out"), t("grad_image"), t("grad_params")));
        yield return new("draw_params", [("draw", [2, 5]), ("params", [2, 6]), ("gamma", [2])], ["params", "gamma"],
            (d, t) => d.DrawParams(t("draw"), 4, 5, 3, 2, t("params"), t("gamma")));
        yield return new("draw_read", [("image", [2, 1, 4, 5]), ("draw", [2, 5]), ("out", [2, 1, 4, 5])], ["out"],
            (d, t) => d.DrawRead(t("image"), t("draw"), t("out")));
        yield return new("draw_read_backward",
            [("image", [2, 1, 4, 5]), ("draw", [2, 5]), ("grad_out", [2, 1, 4, 5]), ("grad_image", [2, 1, 4, 5]), ("grad_draw", [2, 5])],
            ["grad_image", "grad_draw"], (d, t) => d.DrawReadBackward(t("image"), t("draw"), t("grad_out"), t("grad_image"), t("grad_draw")));
        yield return new("affine_grid", [("theta", [2, 2, 3]), ("grid", [2, 3, 4, 2])], ["grid"], (d, t) => d.AffineGrid(t("theta"), t("grid")));
        yield return new("affine_grid_backward", [("grad_grid", [2, 3, 4, 2]), ("grad_theta", [2, 2, 3])], ["grad_theta"],
            (d, t) => d.AffineGridBackward(t("grad_grid"), t("grad_theta")));
        yield return new("grid_sample", [("input", [2, 2, 3, 4]), ("grid", [2, 3, 4, 2]), ("out", [2, 2, 3, 4])], ["out"],
            (d, t) => d.GridSample(t("input"), t("grid"), t("out"), Gs));
        yield return new("grid_sample_backward",
            [("input", [2, 2, 3, 4]), ("grid", [2, 3, 4, 2]), ("grad_out", [2, 2, 3, 4]), ("grad_input", [2, 2, 3, 4]), ("grad_grid", [2, 3, 4, 2])],
            ["grad_input", "grad_grid"], (d, t) => d.GridSampleBackward(t("input"), t("grid"), t("grad_out"), t("grad_input"), t("grad_grid"), Gs));
        yield return new("spatial_transform", [("input", [2, 2, 3, 4]), ("theta", [2, 2, 3]), ("out", [2, 2, 3, 4])], ["out"],
            (d, t) => d.SpatialTransform(t("input"), t("theta"), t("out"), Gs));
        yield return new("spatial_transform_backward",
            [("input", [2, 2, 3, 4]), ("theta", [2, 2, 3]), ("grad_out", [2, 2, 3, 4]), ("grad_input", [2, 2, 3, 4]), ("grad_theta", [2, 2, 3])],
            ["grad_input", "grad_theta"], (d, t) => d.SpatialTransformBackward(t("input"), t("theta"), t("grad_out"), t("grad_input"), t("grad_theta"), Gs));
    }

    /// <summary>The multi-head attention layer's inputs (its parameters are its own; it returns new tensors).</summary>
    private static Op Mha() => new("mha_forward", [("query", [2, 3, 4]), ("key", [2, 3, 4]), ("value", [2, 3, 4]), ("mask", [3, 3])], [],
        (d, t) => { using var m = new MultiHeadAttention(d, 4, 2); m.Forward(t("query"), t("key"), t("value"), t("mask")).Dispose(); });

    public static IEnumerable<TestCaseData> OpTensorCases() =>
        from op in Ops().Append(Mha()) from t in op.Tensors select new TestCaseData(op, t.Name).SetArgDisplayNames(op.Name, t.Name);

    public static IEnumerable<TestCaseData> OpCases() => Ops().Select(op => new TestCaseData(op).SetArgDisplayNames(op.Name));

    /// <summary>Uploads every tensor of the op (outputs poisoned with NaN, inputs with values), replaces one, calls the op, checks
    /// that nothing was written, and returns what it threw.</summary>
    private Exception Run(Op op, string replaced, Func<int[], Tensor> replacement, Type expected)
    {
        var tensors = new Dictionary<string, Tensor>();
        var values = new Dictionary<string, float[]>();
        var rng = new Random(op.Name.Length);
        try
        {
            foreach (var (name, shape) in op.Tensors)
            {
                long n = shape.Aggregate(1L, (a, x) => a * x);
                var data = op.Outputs.Contains(name) ? Enumerable.Repeat(float.NaN, (int)n).ToArray() : TestUtil.Random(rng, n);
                values[name] = data;
                tensors[name] = _d.Upload(data, shape);
            }
            var swap = replacement(op.Tensors.First(t => t.Name == replaced).Shape);
            Tensor T(string name) => name == replaced ? swap : tensors[name];
            var e = Assert.Throws(Is.InstanceOf(expected), () => op.Call(_d, T))!;
            foreach (var (name, t) in tensors)
            {
                if (t.IsDisposed) continue;
                var now = _d.Download(t);
                if (op.Outputs.Contains(name)) Assert.That(now.All(float.IsNaN), $"{op.Name}: output {name} was written although the call was rejected");
                else Assert.That(now, Is.EqualTo(values[name]), $"{op.Name}: input {name} changed");
            }
            if (!swap.IsDisposed && !tensors.ContainsValue(swap)) swap.Dispose();
            return e;
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    [TestCaseSource(nameof(OpTensorCases))]
    public void TensorOfAnotherDeviceIsRejected(Op op, string name)
    {
        var e = Run(op, name, shape => _other.Upload(new float[shape.Aggregate(1, (a, x) => a * x)], shape), typeof(ArgumentException));
        Assert.That(e.Message, Does.StartWith(name + ": tensor belongs to another Device"));
    }

    [TestCaseSource(nameof(OpTensorCases))]
    public void DisposedTensorIsRejected(Op op, string name)
    {
        var e = Run(op, name, shape => { var t = _d.Allocate(shape); t.Dispose(); return t; }, typeof(ObjectDisposedException));
        Assert.That(e.Message, Does.Contain(name + ": tensor was disposed"));
    }

    [TestCaseSource(nameof(OpTensorCases))]
    public void WrongRankIsRejected(Op op, string name)
    {
        var e = (TensorShapeException)Run(op, name, shape => _d.Allocate([1, 1, 1, .. shape]), typeof(TensorShapeException));
        Assert.That(e.TensorName, Is.EqualTo(name));
        Assert.That(e.Message, Does.StartWith(name + ": expected ").And.Contain("got " + e.Actual));
        Assert.That(e.Actual, Is.EqualTo(TensorShapeException.Format([1, 1, 1, .. op.Tensors.First(t => t.Name == name).Shape])));
    }

    [TestCaseSource(nameof(OpTensorCases))]
    public void WrongShapeIsRejected(Op op, string name)
    {
        int[]? bad = null;
        var e = (TensorShapeException)Run(op, name, shape => _d.Allocate(bad = [shape[0] + 1, .. shape[1..]]), typeof(TensorShapeException));
        // the op may detect the mismatch at the tensor it compares with (e.g. k against q): the one it names must be one of its
        // tensors, with its actual shape and the expected one in the message
        var named = op.Tensors.Where(t => t.Name == e.TensorName).Select(t => t.Name == name ? bad! : t.Shape).SingleOrDefault();
        Assert.That(named, Is.Not.Null, $"{e.TensorName} is not a tensor of {op.Name}");
        Assert.That(e.Actual, Is.EqualTo(TensorShapeException.Format(named!)));
        Assert.That(e.Message, Does.StartWith(e.TensorName + ": expected " + e.Expected).And.Contain("got " + e.Actual));
        Assert.That(e.Expected, Does.Match(@"\[|rank|size|element"));
    }

    /// <summary>Every output passed as every other tensor of the op: rejected before anything runs; where the shapes agree (so
    /// only the aliasing is wrong) with the aliasing message. Outputs are never allowed to alias (no op is documented in place).</summary>
    [TestCaseSource(nameof(OpCases))]
    public void OutputAliasingAnotherTensorIsRejected(Op op)
    {
        int sameShape = 0;
        foreach (var output in op.Outputs)
        {
            var shape = op.Tensors.First(t => t.Name == output).Shape;
            foreach (var (other, otherShape) in op.Tensors)
            {
                if (other == output) continue;
                var tensors = new Dictionary<string, Tensor>();
                var rng = new Random(7);
                try
                {
                    foreach (var (name, s) in op.Tensors) tensors[name] = _d.Upload(TestUtil.Random(rng, s.Aggregate(1L, (a, x) => a * x)), s);
                    var before = _d.Download(tensors[other]);
                    var e = Assert.Throws(Is.InstanceOf<ArgumentException>(), () => op.Call(_d, n => n == output ? tensors[other] : tensors[n]),
                        $"{op.Name}: {output} = {other}")!;
                    if (otherShape.SequenceEqual(shape))
                    {
                        Assert.That(e.GetType(), Is.EqualTo(typeof(ArgumentException)), $"{op.Name}: {output} = {other}: {e.Message}");
                        Assert.That(e.Message, Does.Contain("must not be the same tensor as").And.Contain(output).And.Contain(other));
                        sameShape++;
                    }
                    Assert.That(_d.Download(tensors[other]), Is.EqualTo(before), $"{op.Name}: {other} changed");
                }
                finally { foreach (var t in tensors.Values) t.Dispose(); }
            }
        }
        if (op.Tensors.Any(t => op.Outputs.Contains(t.Name) && op.Tensors.Any(u => u.Name != t.Name && u.Shape.SequenceEqual(t.Shape))))
            Assert.That(sameShape, Is.GreaterThan(0));
    }

    [Test]
    public void ParameterRangesAreChecked()
    {
        using var q = _d.Allocate(1, 1, 3, 4);
        using var a = _d.Allocate(3, 3);
        using var img = _d.Allocate(1, 1, 4, 4);
        using var p = _d.Allocate(1, 6);
        using var theta = _d.Allocate(1, 2, 3);
        using var grid = _d.Allocate(1, 2, 2, 2);
        using var c = _d.Allocate(3, 3);
        using var go = _d.Allocate(1, 1, 2, 2);
        void Throws<TE>(TestDelegate call, string name) where TE : ArgumentException =>
            Assert.That(Assert.Throws<TE>(call)!.Message, Does.Contain(name), name);
        foreach (var bad in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity })
        {
            Throws<ArgumentOutOfRangeException>(() => _d.Sdpa(q, q, q, null, new SdpaOptions(Scale: bad)), "scale");
            Throws<ArgumentOutOfRangeException>(() => _d.Gemm(a, a, alpha: bad), "alpha");
            Throws<ArgumentOutOfRangeException>(() => _d.Gemm(a, a, c, beta: bad), "beta");
        }
        Throws<ArgumentOutOfRangeException>(() => _d.Glimpse(img, p, -1, 2), "size");
        Throws<ArgumentOutOfRangeException>(() => _d.AffineGrid(theta, 2, -3), "size");
        Throws<ArgumentOutOfRangeException>(() => _d.SpatialTransform(img, theta, -1, 1), "size");
        Throws<ArgumentException>(() => _d.GridSample(img, grid, new GridSampleOptions((GridSampleMode)7)), "mode");
        Throws<ArgumentException>(() => _d.GridSample(img, grid, new GridSampleOptions(Padding: (GridSamplePadding)9)), "padding");
        Throws<ArgumentException>(() => _d.GridSampleBackward(img, grid, go, new GridSampleOptions(Backward: (GridSampleBackwardMode)5)), "backward");
        Throws<ArgumentOutOfRangeException>(() => _d.Allocate(-1, 2), "negative");
    }
}
