#!/usr/bin/env python3
"""PyTorch peer for the SDPA benchmarks: the same shapes, timed the same way (median of N runs).

PyTorch 1.13 (Debian python3-torch, OpenBLAS) has no fused CPU SDPA, so the peer is what a user would
write: softmax(q kᵀ · scale [+ causal mask]) v, forward, and forward+backward through autograd.
Prints one JSON line per case: {"op", "peer", "shape", "median_ms", "min_ms", "gflops"}.
"""
import argparse, json, math, time
import torch

def sdpa(q, k, v, causal):
    s = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        L, S = s.shape[-2:]
        s = s.masked_fill(torch.ones(L, S, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, dim=-1) @ v

def timeit(fn, warmup, repeat):
    for _ in range(warmup): fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    return ts[len(ts) // 2], ts[0]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shape", default="1,8,1024,1024,64", help="B,H,L,S,E")
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--backward", action="store_true", help="time forward+backward")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=10)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    B, H, L, S, E = map(int, a.shape.split(","))
    g = torch.Generator().manual_seed(0)
    q = torch.rand(B, H, L, E, generator=g) * 2 - 1
    k = torch.rand(B, H, S, E, generator=g) * 2 - 1
    v = torch.rand(B, H, S, E, generator=g) * 2 - 1
    flops = 2.0 * B * H * L * S * (E + E)
    if a.backward:
        q.requires_grad_(); k.requires_grad_(); v.requires_grad_()
        do = torch.rand(B, H, L, E, generator=g)
        def fn():
            o = sdpa(q, k, v, a.causal)
            torch.autograd.grad(o, (q, k, v), do)
        flops *= 3.5   # forward + backward counted as 2.5x forward
        op = "sdpa+backward"
    else:
        def fn():
            with torch.no_grad(): sdpa(q, k, v, a.causal)
        op = "sdpa"
    med, mn = timeit(fn, a.warmup, a.repeat)
    print(json.dumps({"op": op + (" causal" if a.causal else ""), "peer": f"torch {torch.__version__} ({a.threads} threads)",
                      "shape": a.shape, "median_ms": round(med, 3), "min_ms": round(mn, 3), "gflops": round(flops / med / 1e6, 2)}))

if __name__ == "__main__":
    main()
