using GpuAttention.Backends;

namespace GpuAttention;

/// <summary>Tensors a <see cref="MultiHeadAttention.Forward"/> call keeps for its backward, and its output. Dispose when done.</summary>
public sealed class MhaForwardResult : IDisposable
{
    internal Tensor Query = null!, Key = null!, Value = null!;
    internal Tensor Q = null!, K = null!, V = null!, O = null!, Lse = null!;
    internal Tensor? Mask;
    internal SdpaOptions Options;
    internal int B, L, S;
    internal MultiHeadAttention Layer = null!;

    /// <summary>The layer's output [B, L, E].</summary>
    public Tensor Output { get; internal set; } = null!;

    public void Dispose() { Output?.Dispose(); Q?.Dispose(); K?.Dispose(); V?.Dispose(); O?.Dispose(); Lse?.Dispose(); }
}

/// <summary>Gradients of <see cref="MultiHeadAttention.Backward"/>, one per input and parameter (biases null without bias). Dispose when done.</summary>
public sealed class MhaGradients : IDisposable
{
    public Tensor Query { get; internal set; } = null!;
    public Tensor Key { get; internal set; } = null!;
    public Tensor Value { get; internal set; } = null!;
    /// <summary>Gradients of the parameters, in the order of <see cref="MultiHeadAttention.Parameters"/>.</summary>
    public IReadOnlyList<(string Name, Tensor Gradient)> Parameters { get; internal set; } = [];

    public void Dispose()
    {
        Query?.Dispose(); Key?.Dispose(); Value?.Dispose();
        foreach (var (_, g) in Parameters) g.Dispose();
    }
}

/// <summary>
/// Multi-head attention layer with the semantics of PyTorch's <c>nn.MultiheadAttention(embed_dim, num_heads, bias, kdim, vdim,
/// batch_first=True)</c> called with <c>need_weights=False</c> (Vaswani et al. 2017, §3.2.2):
/// <c>out = concat_h(sdpa(query·Wq_hᵀ + bq_h, key·Wk_hᵀ + bk_h, value·Wv_hᵀ + bv_h)) · Woᵀ + bo</c>.
/// PyTorch's fused <c>in_proj_weight</c> is the row concatenation [Wq; Wk; Wv] of <see cref="QWeight"/>, <see cref="KWeight"/>,
/// <see cref="VWeight"/> (and <c>in_proj_bias</c> = [bq; bk; bv]); <c>out_proj</c> is <see cref="OutWeight"/>, <see cref="OutBias"/>.
/// Built from the tiled batched GEMM (projections, written straight into the [B, H, L, E/H] head layout through strides; biases as
/// rank-1 GEMM updates) and the fused SDPA forward and backward. No dropout, no key_padding_mask (pass an attention mask instead).
/// </summary>
public sealed class MultiHeadAttention : IDisposable
{
    private Tensor? _ones;
    private bool _disposed;

    /// <summary>The device holding the parameters; inputs must live there too.</summary>
    public Device Device { get; }
    public int EmbedDim { get; }
    public int NumHeads { get; }
    public int HeadDim => EmbedDim / NumHeads;
    public int KeyDim { get; }
    public int ValueDim { get; }
    /// <summary>Wq [E, E].</summary>
    public Tensor QWeight { get; }
    /// <summary>Wk [E, kdim].</summary>
    public Tensor KWeight { get; }
    /// <summary>Wv [E, vdim].</summary>
    public Tensor VWeight { get; }
    /// <summary>Wo [E, E].</summary>
    public Tensor OutWeight { get; }
    public Tensor? QBias { get; }
    public Tensor? KBias { get; }
    public Tensor? VBias { get; }
    public Tensor? OutBias { get; }

    /// <summary>Every parameter by PyTorch-like name: q_proj_weight, k_proj_weight, v_proj_weight, out_proj.weight, then the biases.</summary>
    public IReadOnlyList<(string Name, Tensor Tensor)> Parameters { get; }

    /// <summary>Creates the layer with PyTorch's initialisation: Xavier-uniform projection weights, out_proj uniform(±1/√E), zero biases.</summary>
    /// <exception cref="ArgumentOutOfRangeException">embedDim or numHeads not positive, embedDim % numHeads ≠ 0, kdim or vdim not positive.</exception>
    public MultiHeadAttention(Device device, int embedDim, int numHeads, bool bias = true, int? kdim = null, int? vdim = null, int seed = 0)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (embedDim <= 0) throw new ArgumentOutOfRangeException(nameof(embedDim), embedDim, "embedDim: expected a positive number");
        if (numHeads <= 0 || embedDim % numHeads != 0)
            throw new ArgumentOutOfRangeException(nameof(numHeads), numHeads, $"numHeads: expected a positive divisor of embedDim = {embedDim}");
        if (kdim is <= 0) throw new ArgumentOutOfRangeException(nameof(kdim), kdim, "kdim: expected a positive number");
        if (vdim is <= 0) throw new ArgumentOutOfRangeException(nameof(vdim), vdim, "vdim: expected a positive number");
        Device = device; EmbedDim = embedDim; NumHeads = numHeads; KeyDim = kdim ?? embedDim; ValueDim = vdim ?? embedDim;
        var rng = new Random(seed);
        float[] U(int n, double bound) { var a = new float[n]; for (int i = 0; i < n; i++) a[i] = (float)((rng.NextDouble() * 2 - 1) * bound); return a; }
        double Xavier(int fanOut, int fanIn) => Math.Sqrt(6.0 / (fanIn + fanOut));
        QWeight = device.Upload(U(embedDim * embedDim, Xavier(embedDim, embedDim)), embedDim, embedDim);
        KWeight = device.Upload(U(embedDim * KeyDim, Xavier(embedDim, KeyDim)), embedDim, KeyDim);
        VWeight = device.Upload(U(embedDim * ValueDim, Xavier(embedDim, ValueDim)), embedDim, ValueDim);
        OutWeight = device.Upload(U(embedDim * embedDim, 1 / Math.Sqrt(embedDim)), embedDim, embedDim);
        var ps = new List<(string, Tensor)> { ("q_proj_weight", QWeight), ("k_proj_weight", KWeight), ("v_proj_weight", VWeight), ("out_proj.weight", OutWeight) };
        if (bias)
        {
            QBias = device.Upload(new float[embedDim], embedDim); KBias = device.Upload(new float[embedDim], embedDim);
            VBias = device.Upload(new float[embedDim], embedDim); OutBias = device.Upload(new float[embedDim], embedDim);
            ps.AddRange([("q_proj_bias", QBias), ("k_proj_bias", KBias), ("v_proj_bias", VBias), ("out_proj.bias", OutBias)]);
        }
        Parameters = ps;
    }

    private Tensor Ones(long n)
    {
        if (_ones is null || _ones.Length < n)
        {
            _ones?.Dispose();
            _ones = Device.Allocate(checked((int)Math.Max(n, 1)));
            Device.Fill(_ones, 1f);
        }
        return _ones;
    }

    private void G(int batch, int m, int n, int k, bool ta, bool tb, float beta,
        Tensor a, long offA, long strideA, int lda, Tensor b, long offB, long strideB, int ldb, Tensor c, long offC, long strideC, int ldc) =>
        Device.GemmInternal(new GemmArgs(batch, m, n, k, ta, tb, 1f, beta, null!, offA, strideA, lda, null!, offB, strideB, ldb, null!, offC, strideC, ldc), a, b, c);

    /// <summary>
    /// Forward pass. query [B, L, E], key [B, S, kdim], value [B, S, vdim]; mask (optional, additive float, see
    /// <see cref="Device.Sdpa(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor?, SdpaOptions)"/>) broadcastable to [B, H, L, S];
    /// isCausal as PyTorch's is_causal. Returns the output [B, L, E] with what the backward needs.
    /// </summary>
    /// <exception cref="TensorShapeException">A tensor has the wrong shape; the message names it.</exception>
    /// <exception cref="ObjectDisposedException">The layer was disposed.</exception>
    public MhaForwardResult Forward(Tensor query, Tensor key, Tensor value, Tensor? mask = null, bool isCausal = false)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Device.CheckOwned(query, "query"); Device.CheckOwned(key, "key"); Device.CheckOwned(value, "value");
        if (mask is not null) Device.CheckOwned(mask, "mask");   // before anything is allocated or run (its shape: by the SDPA)
        if (query.Rank != 3 || query.Dim(2) != EmbedDim) throw new TensorShapeException("query", $"[B, L, E] with E = {EmbedDim}", query.ToString());
        int B = query.Dim(0), L = query.Dim(1);
        if (key.Rank != 3 || key.Dim(0) != B || key.Dim(2) != KeyDim) throw new TensorShapeException("key", $"[B, S, kdim] with B = {B}, kdim = {KeyDim}", key.ToString());
        int S = key.Dim(1);
        if (value.Rank != 3 || value.Dim(0) != B || value.Dim(1) != S || value.Dim(2) != ValueDim)
            throw new TensorShapeException("value", $"[B, S, vdim] = [{B}, {S}, {ValueDim}]", value.ToString());
        int H = NumHeads, hd = HeadDim;
        var r = new MhaForwardResult { Layer = this, Query = query, Key = key, Value = value, Mask = mask, Options = new SdpaOptions(isCausal), B = B, L = L, S = S };
        try
        {
            r.Q = Project(query, QWeight, QBias, B, L, EmbedDim);
            r.K = Project(key, KWeight, KBias, B, S, KeyDim);
            r.V = Project(value, VWeight, VBias, B, S, ValueDim);
            (r.O, r.Lse) = Device.Sdpa(r.Q, r.K, r.V, mask, r.Options);
            r.Output = Device.Allocate(B, L, EmbedDim);
            if (L > 0)
            {
                for (int b = 0; b < B; b++)
                    for (int h = 0; h < H; h++)   // out[b] = Σ_h O[b,h] · Wo[:, h·hd : (h+1)·hd]ᵀ
                        G(1, L, EmbedDim, hd, false, true, h == 0 ? 0f : 1f, r.O, ((long)b * H + h) * L * hd, 0, hd, OutWeight, (long)h * hd, 0, EmbedDim,
                            r.Output, (long)b * L * EmbedDim, 0, EmbedDim);
                if (OutBias is not null)
                    G(1, B * L, EmbedDim, 1, false, false, 1f, Ones((long)B * L), 0, 0, 1, OutBias, 0, 0, EmbedDim, r.Output, 0, 0, EmbedDim);
            }
            return r;
        }
        catch { r.Dispose(); throw; }
    }

    /// <summary>x [B, n, din] · Wᵀ + bias into heads [B, H, n, hd].</summary>
    private Tensor Project(Tensor x, Tensor w, Tensor? bias, int B, int n, int din)
    {
        int H = NumHeads, hd = HeadDim;
        var p = Device.Allocate(B, H, n, hd);
        try
        {
            if (n == 0) return p;
            for (int b = 0; b < B; b++)
            {
                G(H, n, hd, din, false, true, 0f, x, (long)b * n * din, 0, din, w, 0, (long)hd * din, din, p, (long)b * H * n * hd, (long)n * hd, hd);
                if (bias is not null)
                    G(H, n, hd, 1, false, false, 1f, Ones(n), 0, 0, 1, bias, 0, hd, hd, p, (long)b * H * n * hd, (long)n * hd, hd);
            }
            return p;
        }
        catch { p.Dispose(); throw; }
    }

    /// <summary>
    /// Backward pass: given dLoss/dOutput [B, L, E] for the result of <see cref="Forward"/>, returns the gradients with respect to
    /// query, key, value (separately; add them yourself when one tensor was passed as several inputs) and every parameter.
    /// </summary>
    /// <exception cref="TensorShapeException">gradOutput is not [B, L, E].</exception>
    /// <exception cref="ObjectDisposedException">The layer was disposed.</exception>
    /// <exception cref="ArgumentException"><paramref name="f"/> came from another layer, or it (or the query, key, value or mask
    /// tensors it refers to) was disposed.</exception>
    public MhaGradients Backward(MhaForwardResult f, Tensor gradOutput)
    {
        ArgumentNullException.ThrowIfNull(f);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!ReferenceEquals(f.Layer, this))
            throw new ArgumentException("f: the forward result of another MultiHeadAttention layer; pass the result of this layer's Forward", nameof(f));
        foreach (var (t, name) in new[] { (f.Output, "its output"), (f.Q, "its saved projections"), (f.K, "its saved projections"), (f.V, "its saved projections"),
                     (f.O, "its saved attention output"), (f.Lse, "its saved log-sum-exp"), (f.Query, "the query tensor"), (f.Key, "the key tensor"),
                     (f.Value, "the value tensor"), (f.Mask, "the mask tensor") })
            if (t is not null && t.IsDisposed)
                throw new ArgumentException($"f: the forward result can no longer be used: {name} was disposed", nameof(f));
        Device.CheckOwned(gradOutput, "grad_output");
        int B = f.B, L = f.L, S = f.S, H = NumHeads, hd = HeadDim, E = EmbedDim;
        Validation.Shape(gradOutput, "grad_output", [B, L, E], "[B, L, E]");
        var g = new MhaGradients();
        var pg = new List<(string, Tensor)>();
        Tensor? dO = null, dQ = null, dK = null, dV = null;
        try
        {
            var dWo = Device.Allocate(E, E); pg.Add(("out_proj.weight", dWo));
            dO = Device.Allocate(B, H, L, hd);
            Device.Fill(dWo, 0f);
            for (int b = 0; b < B && L > 0; b++)
            {
                // dO[b,h] = dOut[b] · Wo[:, h·hd : (h+1)·hd];  dWo[:, h·hd : (h+1)·hd] += dOut[b]ᵀ · O[b,h]
                G(H, L, hd, E, false, false, 0f, gradOutput, (long)b * L * E, 0, E, OutWeight, 0, hd, E, dO, (long)b * H * L * hd, (long)L * hd, hd);
                G(H, E, hd, L, true, false, 1f, gradOutput, (long)b * L * E, 0, E, f.O, (long)b * H * L * hd, (long)L * hd, hd, dWo, 0, hd, E);
            }
            (dQ, dK, dV) = Device.SdpaBackward(f.Q, f.K, f.V, f.O, f.Lse, dO, f.Mask, f.Options);
            var (dx, dWq, dbq) = InputGrads(dQ, f.Query, QWeight, QBias is not null, B, L, E);
            var (dk, dWk, dbk) = InputGrads(dK, f.Key, KWeight, KBias is not null, B, S, KeyDim);
            var (dv, dWv, dbv) = InputGrads(dV, f.Value, VWeight, VBias is not null, B, S, ValueDim);
            g.Query = dx; g.Key = dk; g.Value = dv;
            pg.InsertRange(0, [("q_proj_weight", dWq), ("k_proj_weight", dWk), ("v_proj_weight", dWv)]);
            if (OutBias is not null)
            {
                var dbo = Device.Allocate(E); pg.AddRange([("q_proj_bias", dbq!), ("k_proj_bias", dbk!), ("v_proj_bias", dbv!), ("out_proj.bias", dbo)]);
                if (B * L == 0) Device.Fill(dbo, 0f);
                else G(1, 1, E, B * L, false, false, 0f, Ones((long)B * L), 0, 0, B * L, gradOutput, 0, 0, E, dbo, 0, 0, E);
            }
            g.Parameters = pg;
            return g;
        }
        catch
        {
            g.Dispose();
            foreach (var (_, t) in pg) t.Dispose();
            throw;
        }
        finally { dO?.Dispose(); dQ?.Dispose(); dK?.Dispose(); dV?.Dispose(); }
    }

    /// <summary>For a projection P = x·Wᵀ + bias into heads: dx [B, n, din], dW [E, din], dbias [E] from dP [B, H, n, hd].</summary>
    private (Tensor Dx, Tensor DW, Tensor? DBias) InputGrads(Tensor dp, Tensor x, Tensor w, bool hasBias, int B, int n, int din)
    {
        int H = NumHeads, hd = HeadDim, E = EmbedDim;
        Tensor? dx = null, dw = null, db = null;
        try
        {
            dx = Device.Allocate(B, n, din); dw = Device.Allocate(E, din);
            if (hasBias) db = Device.Allocate(E);
            if (n == 0 || B == 0) { Device.Fill(dx, 0f); Device.Fill(dw, 0f); if (db is not null) Device.Fill(db, 0f); return (dx, dw, db); }
            for (int b = 0; b < B; b++)
            {
                float beta = b == 0 ? 0f : 1f;
                // dW[h·hd + c, :] += Σ_i dP[b,h,i,c] x[b,i,:]
                G(H, hd, din, n, true, false, beta, dp, (long)b * H * n * hd, (long)n * hd, hd, x, (long)b * n * din, 0, din, dw, 0, (long)hd * din, din);
                if (db is not null)
                    G(H, 1, hd, n, false, false, beta, Ones(n), 0, 0, n, dp, (long)b * H * n * hd, (long)n * hd, hd, db, 0, hd, hd);
                for (int h = 0; h < H; h++)   // dx[b] = Σ_h dP[b,h] · W[h·hd : (h+1)·hd, :]
                    G(1, n, din, hd, false, false, h == 0 ? 0f : 1f, dp, ((long)b * H + h) * n * hd, 0, hd, w, (long)h * hd * din, 0, din,
                        dx, (long)b * n * din, 0, din);
            }
            return (dx, dw, db);
        }
        catch { dx?.Dispose(); dw?.Dispose(); db?.Dispose(); throw; }
    }

    /// <summary>Releases the parameters (double dispose is safe); afterwards <see cref="Forward"/> and <see cref="Backward"/> throw
    /// <see cref="ObjectDisposedException"/>.</summary>
    public void Dispose()
    {
        _disposed = true;
        foreach (var (_, t) in Parameters) t.Dispose();
        _ones?.Dispose();
    }
}
