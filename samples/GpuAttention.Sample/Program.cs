using GpuAttention;

// Inputs: batch 2, 4 query heads sharing 2 key/value heads (grouped-query attention), 5 queries, 7 keys, head size 8.
int B = 2, Hq = 4, Hkv = 2, L = 5, S = 7, E = 8, Ev = 8;
var rng = new Random(42);
float[] RandomData(int n) => Enumerable.Range(0, n).Select(_ => rng.NextSingle() * 2 - 1).ToArray();
float[] qData = RandomData(B * Hq * L * E), kData = RandomData(B * Hkv * S * E), vData = RandomData(B * Hkv * S * Ev);
float[] gradOutData = RandomData(B * Hq * L * Ev);         // dLoss/dout, from whatever follows the attention
bool[] allowed = new bool[L * S];                           // mask [L, S]: true = query i may attend key j
for (int i = 0; i < L; i++)
    for (int j = 0; j < S; j++) allowed[i * S + j] = j != 3;

using var device = Device.Open(args.Length > 0 ? args[0] : "auto");   // "cpu", "opencl", "opencl:1", "cuda", "cuda:0", "ilgpu:cuda", "auto"
using var q = device.Upload(qData, B, Hq, L, E);            // float32, row-major
using var k = device.Upload(kData, B, Hkv, S, E);           // Hq % Hkv == 0 (GQA)
using var v = device.Upload(vData, B, Hkv, S, Ev);
using var mask = device.UploadMask(allowed, L, S);          // bool: true = may attend; or a float additive mask
var opts = new SdpaOptions(IsCausal: true);                 // Scale: null = 1/√E

// Forward: o [B, Hq, L, Ev], lse [B, Hq, L] (the allocating overload `var (o, lse) = device.Sdpa(q, k, v, mask, opts)`
// returns new tensors the caller disposes).
using var o = device.Allocate(B, Hq, L, Ev);
using var lse = device.Allocate(B, Hq, L);
device.Sdpa(q, k, v, o, lse, mask, opts);

// Backward: gradients with respect to q, k, v.
using var gradOut = device.Upload(gradOutData, B, Hq, L, Ev);
using var dq = device.Allocate(B, Hq, L, E);
using var dk = device.Allocate(B, Hkv, S, E);
using var dv = device.Allocate(B, Hkv, S, Ev);
device.SdpaBackward(q, k, v, o, lse, gradOut, dq, dk, dv, mask, opts);

float[] result = device.Download(o);                        // waits for the queued work
float[] gradQ = device.Download(dq);
Console.WriteLine($"{device.Name}: out[0, 0, 0, :4] = {string.Join(", ", result[..4])}; grad_q[0, 0, 0, 0] = {gradQ[0]}");

// Self-attention: one tensor as q, k and v.
using var x = device.Upload(qData, B, Hq, L, E);
using var selfOut = device.Allocate(B, Hq, L, E);
using var selfLse = device.Allocate(B, Hq, L);
device.Sdpa(x, x, x, selfOut, selfLse);
Console.WriteLine($"self-attention: lse[0, 0, 0] = {device.Download(selfLse)[0]}");
