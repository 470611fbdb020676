using GpuAttention.Reference;
using NUnit.Framework;

namespace GpuAttention.Tests;

/// <summary>The MultiHeadAttention layer on every backend: forward and backward against the double reference, finite differences, a toy training run.</summary>
[TestFixtureSource(typeof(TestUtil), nameof(TestUtil.Backends))]
public class MultiHeadAttentionTests(string backend)
{
    private Device _device = null!;

    [OneTimeSetUp] public void Open() => _device = TestUtil.OpenOrIgnore(backend);
    [OneTimeTearDown] public void Close() => _device?.Dispose();

    /// <summary>ILGPU's CPU simulator costs tens of milliseconds per kernel launch on this 2-core machine (every group's threads
    /// are host threads meeting at barriers): the finite-difference and training tests run the layer hundreds of times (about four
    /// minutes each there), so on ilgpu:cpu they are skipped. They test the layer's host logic, which is the same on every backend;
    /// the ILGPU kernels under the layer are checked against the reference by <see cref="ForwardAndBackwardMatchReference"/>.</summary>
    private void SkipOnSimulator()
    {
        TestUtil.SkipHeavyOnSimulator(backend, "ForwardAndBackwardMatchReference (the layer's kernels; these tests run the layer hundreds of times)");
    }

    private static double[] D(float[] a) => a.Select(x => (double)x).ToArray();

    /// <summary>Gives every parameter (biases too) random values so that nothing is trivially zero; returns the double copy.</summary>
    private ReferenceOps.MhaParams Randomise(MultiHeadAttention m, Random rng)
    {
        var vals = new Dictionary<string, double[]>();
        foreach (var (name, t) in m.Parameters)
        {
            var a = TestUtil.Random(rng, t.Length, 0.5f);
            _device.Upload(t, a);
            vals[name] = D(a);
        }
        double[]? V(string n) => vals.GetValueOrDefault(n);
        return new(m.EmbedDim, m.NumHeads, m.KeyDim, m.ValueDim, V("q_proj_weight")!, V("k_proj_weight")!, V("v_proj_weight")!, V("out_proj.weight")!,
            V("q_proj_bias"), V("k_proj_bias"), V("v_proj_bias"), V("out_proj.bias"));
    }

    [TestCase(true, false, false)]
    [TestCase(false, true, false)]
    [TestCase(true, true, true)]
    public void ForwardAndBackwardMatchReference(bool bias, bool causal, bool masked)
    {
        int B = 2, L = 5, S = 7, E = 12, H = 3, kd = 5, vd = 9;
        var rng = new Random(bias ? 1 : 2);
        using var m = new MultiHeadAttention(_device, E, H, bias, kd, vd);
        var p = Randomise(m, rng);
        var x = TestUtil.Random(rng, B * L * E); var kx = TestUtil.Random(rng, B * S * kd); var vx = TestUtil.Random(rng, B * S * vd);
        var g = TestUtil.Random(rng, B * L * E);
        float[]? mask = null;
        if (masked) { mask = new float[L * S]; for (int i = 0; i < mask.Length; i++) mask[i] = rng.NextDouble() < 0.2 ? float.NegativeInfinity : (float)rng.NextDouble(); }
        using var tx = _device.Upload(x, B, L, E); using var tk = _device.Upload(kx, B, S, kd); using var tv = _device.Upload(vx, B, S, vd);
        using var tg = _device.Upload(g, B, L, E);
        using var tm = mask is null ? null : _device.Upload(mask, L, S);
        using var f = m.Forward(tx, tk, tv, tm, causal);
        var refOut = ReferenceOps.MhaForward(p, D(x), D(kx), D(vx), B, L, S, causal, mask, masked ? [L, S] : null);
        TestUtil.AssertClose(_device.Download(f.Output), refOut, 1e-5, "output");

        using var grads = m.Backward(f, tg);
        var r = ReferenceOps.MhaBackward(p, D(x), D(kx), D(vx), D(g), B, L, S, causal, mask, masked ? [L, S] : null);
        TestUtil.AssertClose(_device.Download(grads.Query), r.Query, 1e-4, "grad query");
        TestUtil.AssertClose(_device.Download(grads.Key), r.Key, 1e-4, "grad key");
        TestUtil.AssertClose(_device.Download(grads.Value), r.Value, 1e-4, "grad value");
        var expected = new Dictionary<string, double[]?>
        {
            ["q_proj_weight"] = r.Wq, ["k_proj_weight"] = r.Wk, ["v_proj_weight"] = r.Wv, ["out_proj.weight"] = r.Wo,
            ["q_proj_bias"] = r.Bq, ["k_proj_bias"] = r.Bk, ["v_proj_bias"] = r.Bv, ["out_proj.bias"] = r.Bo,
        };
        Assert.That(grads.Parameters.Select(t => t.Name), Is.EqualTo(m.Parameters.Select(t => t.Name)));
        foreach (var (name, t) in grads.Parameters)
        {
            if (name == "k_proj_bias")   // softmax ignores a shift shared by a whole row of scores: this gradient is exactly 0
            {
                Assert.That(expected[name]!.Max(Math.Abs), Is.LessThan(1e-12), "reference grad k_proj_bias = 0");
                Assert.That(_device.Download(t).Max(MathF.Abs), Is.LessThan(1e-5), "grad k_proj_bias ~ 0");
                continue;
            }
            TestUtil.AssertClose(_device.Download(t), expected[name]!, 1e-4, "grad " + name);
        }
    }

    [Test]
    public void FloatLayerMatchesFiniteDifferences()
    {
        SkipOnSimulator();
        int B = 1, L = 4, S = 5, E = 6, H = 2, kd = 3, vd = 4;
        var rng = new Random(4);
        using var m = new MultiHeadAttention(_device, E, H, true, kd, vd);
        Randomise(m, rng);
        var x = TestUtil.Random(rng, B * L * E); var kx = TestUtil.Random(rng, B * S * kd); var vx = TestUtil.Random(rng, B * S * vd);
        var g = TestUtil.Random(rng, B * L * E);
        using var tx = _device.Upload(x, B, L, E); using var tk = _device.Upload(kx, B, S, kd); using var tv = _device.Upload(vx, B, S, vd);
        using var tg = _device.Upload(g, B, L, E);
        using var f0 = m.Forward(tx, tk, tv, null, true);
        using var grads = m.Backward(f0, tg);
        double Loss()
        {
            using var f = m.Forward(tx, tk, tv, null, true);
            var y = _device.Download(f.Output);
            double s = 0;
            for (int i = 0; i < y.Length; i++) s += (double)y[i] * g[i];
            return s;
        }
        var checks = new List<(string, Tensor, Tensor)> { ("query", tx, grads.Query), ("key", tk, grads.Key), ("value", tv, grads.Value) };
        for (int i = 0; i < m.Parameters.Count; i++) checks.Add((m.Parameters[i].Name, m.Parameters[i].Tensor, grads.Parameters[i].Gradient));
        const float h = 1e-2f;
        foreach (var (name, t, gt) in checks)
        {
            var host = _device.Download(t);
            var analytic = _device.Download(gt);
            int n = Math.Min(host.Length, 8);                   // the first few elements of every tensor
            var numeric = new double[n];
            for (int i = 0; i < n; i++)
            {
                float x0 = host[i];
                host[i] = x0 + h; _device.Upload(t, host); double up = Loss();
                host[i] = x0 - h; _device.Upload(t, host); double down = Loss();
                host[i] = x0; _device.Upload(t, host);
                numeric[i] = (up - down) / (2 * h);
            }
            if (name == "k_proj_bias")   // analytically 0 (see above): compare absolutely
                Assert.That(numeric.Max(Math.Abs) + analytic.Max(MathF.Abs), Is.LessThan(1e-3), "grad k_proj_bias ~ 0");
            else
                TestUtil.AssertClose(analytic.AsSpan(0, n), numeric, 5e-3, $"grad {name} vs finite differences");
        }
    }

    [Test]
    public void ToyTaskTrainsAndLossFalls()
    {
        SkipOnSimulator();
        // Student learns to imitate a fixed teacher layer on causal self-attention, plain SGD on the host.
        int B = 4, L = 6, E = 8, H = 2;
        var rng = new Random(8);
        using var teacher = new MultiHeadAttention(_device, E, H, seed: 1);
        Randomise(teacher, rng);
        using var student = new MultiHeadAttention(_device, E, H, seed: 2);
        var x = TestUtil.Random(rng, B * L * E);
        using var tx = _device.Upload(x, B, L, E);
        float[] target;
        using (var ft = teacher.Forward(tx, tx, tx, null, true)) target = _device.Download(ft.Output);

        var losses = new List<double>();
        const float lr = 0.5f;
        for (int step = 0; step < 40; step++)
        {
            using var f = student.Forward(tx, tx, tx, null, true);
            var y = _device.Download(f.Output);
            double loss = 0;
            var dy = new float[y.Length];
            for (int i = 0; i < y.Length; i++) { double d = y[i] - target[i]; loss += d * d / y.Length; dy[i] = (float)(2 * d / y.Length); }
            losses.Add(loss);
            using var tdy = _device.Upload(dy, B, L, E);
            using var grads = student.Backward(f, tdy);
            for (int i = 0; i < student.Parameters.Count; i++)
            {
                var w = _device.Download(student.Parameters[i].Tensor);
                var gw = _device.Download(grads.Parameters[i].Gradient);
                for (int j = 0; j < w.Length; j++) w[j] -= lr * gw[j];
                _device.Upload(student.Parameters[i].Tensor, w);
            }
        }
        Assert.That(losses.All(double.IsFinite), Is.True);
        Assert.That(losses[^1], Is.LessThan(0.5 * losses[0]), $"loss {losses[0]:G4} -> {losses[^1]:G4}");
    }

    [Test]
    public void RejectsBadShapes()
    {
        using var m = new MultiHeadAttention(_device, 8, 2, kdim: 3);
        using var x = _device.Allocate(2, 4, 8);
        using var k = _device.Allocate(2, 5, 4);
        using var v = _device.Allocate(2, 5, 8);
        var e = Assert.Throws<TensorShapeException>(() => m.Forward(x, k, v))!;
        Assert.That(e.TensorName, Is.EqualTo("key"));
        Assert.Throws<ArgumentOutOfRangeException>(() => new MultiHeadAttention(_device, 8, 3));
    }

    [Test]
    public void DisposedLayersAndForeignOrDisposedForwardResultsAreRejected()
    {
        var m = new MultiHeadAttention(_device, 8, 2, seed: 1);
        using var other = new MultiHeadAttention(_device, 8, 2, seed: 2);
        using var x = _device.Upload(new float[2 * 3 * 8], 2, 3, 8);
        using var g = _device.Upload(new float[2 * 3 * 8], 2, 3, 8);
        using (var f = m.Forward(x, x, x))
        {
            var e = Assert.Throws<ArgumentException>(() => other.Backward(f, g))!;
            Assert.That(e.ParamName, Is.EqualTo("f"));
            Assert.That(e.Message, Does.Contain("another MultiHeadAttention layer"));
            using var gr = m.Backward(f, g);   // its own layer: fine
        }
        var gone = m.Forward(x, x, x);
        gone.Dispose();
        Assert.That(Assert.Throws<ArgumentException>(() => m.Backward(gone, g))!.Message, Does.Contain("disposed"));
        using (var x2 = _device.Upload(new float[2 * 3 * 8], 2, 3, 8))
        {
            var f2 = m.Forward(x2, x2, x2);
            x2.Dispose();
            Assert.That(Assert.Throws<ArgumentException>(() => m.Backward(f2, g))!.Message, Does.Contain("the query tensor was disposed"));
            f2.Dispose();
        }
        var f3 = m.Forward(x, x, x);
        m.Dispose(); m.Dispose();
        Assert.Throws<ObjectDisposedException>(() => m.Forward(x, x, x));
        Assert.Throws<ObjectDisposedException>(() => m.Backward(f3, g));
        f3.Dispose(); f3.Dispose();
    }
}

/// <summary>The double MHA backward reference checked by central finite differences of the double forward.</summary>
public class MhaReferenceTests
{
    [TestCase(false)]
    [TestCase(true)]
    public void ReferenceMatchesFiniteDifferences(bool causal)
    {
        int B = 2, L = 3, S = 4, E = 4, H = 2, kd = 3, vd = 5;
        var rng = new Random(causal ? 5 : 6);
        double[] R(int n) { var a = new double[n]; for (int i = 0; i < n; i++) a[i] = rng.NextDouble() - 0.5; return a; }
        var p = new ReferenceOps.MhaParams(E, H, kd, vd, R(E * E), R(E * kd), R(E * vd), R(E * E), R(E), R(E), R(E), R(E));
        var x = R(B * L * E); var k = R(B * S * kd); var v = R(B * S * vd); var g = R(B * L * E);
        var mask = new float[L * S]; mask[1] = float.NegativeInfinity; mask[5] = 0.3f;
        var r = ReferenceOps.MhaBackward(p, x, k, v, g, B, L, S, causal, mask, [L, S]);
        double Loss()
        {
            var y = ReferenceOps.MhaForward(p, x, k, v, B, L, S, causal, mask, [L, S]);
            double s = 0;
            for (int i = 0; i < y.Length; i++) s += y[i] * g[i];
            return s;
        }
        foreach (var (arr, grad, name) in new[] { (x, r.Query, "query"), (k, r.Key, "key"), (v, r.Value, "value"), (p.Wq, r.Wq, "Wq"), (p.Wk, r.Wk, "Wk"),
                     (p.Wv, r.Wv, "Wv"), (p.Wo, r.Wo, "Wo"), (p.Bq!, r.Bq!, "bq"), (p.Bk!, r.Bk!, "bk"), (p.Bv!, r.Bv!, "bv"), (p.Bo!, r.Bo!, "bo") })
        {
            double num = 0, den = 0;
            for (int i = 0; i < arr.Length; i++)
            {
                double a0 = arr[i];
                arr[i] = a0 + 1e-6; double up = Loss();
                arr[i] = a0 - 1e-6; double down = Loss();
                arr[i] = a0;
                double fd = (up - down) / 2e-6;
                num += (fd - grad[i]) * (fd - grad[i]);
                den += fd * fd;
            }
            if (name == "bk") Assert.That(Math.Sqrt(num), Is.LessThan(1e-8), "grad bk = 0 (softmax shift invariance)");
            else Assert.That(Math.Sqrt(num / den), Is.LessThan(1e-7), $"grad {name} vs finite differences");
        }
    }
}
