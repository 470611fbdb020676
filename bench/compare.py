#!/usr/bin/env python3
"""Comparison run: every case on each GpuAttention backend (through the CLI's --repeat, which times the op on the
device, synchronised, without copies or compilation) beside PyTorch on the same inputs, in the same run.

    /usr/bin/python3 bench/compare.py [--backends cpu,opencl] [--threads 2] [--repeat 5] [--only sdpa] [--out bench/results/NAME.md]

PyTorch 1.13 (Debian python3-torch, OpenBLAS) has no fused CPU SDPA: its peer is what a user writes,
softmax(q kᵀ·scale [+ mask]) v, and autograd for backward. FLOPs: SDPA forward 2·B·H·L·S·(E+Ev) (causal not
discounted); backward counted as 2.5× forward.
"""
import argparse, json, math, os, platform, subprocess, sys, tempfile, time
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "src/GpuAttention.Cli/bin/Release/net10.0/gpuattention.dll")

def timeit(fn, warmup, repeat):
    for _ in range(warmup): fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    return ts[len(ts) // 2]

def torch_sdpa(q, k, v, causal):
    s = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        L, S = s.shape[-2:]
        s = s.masked_fill(torch.ones(L, S, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, dim=-1) @ v

# Each case: name, CLI op, CLI options, inputs (name -> array), FLOPs (or bytes), and a PyTorch closure.
def sdpa_case(B, H, L, S, E, causal):
    rng = np.random.default_rng(0)
    q, k, v = (rng.uniform(-1, 1, (B, H, n, E)).astype(np.float32) for n in (L, S, S))
    tq, tk, tv = map(torch.from_numpy, (q, k, v))
    def peer():
        with torch.no_grad(): torch_sdpa(tq, tk, tv, causal)
    return dict(name=f"sdpa B{B} H{H} L{L} S{S} E{E}{' causal' if causal else ''}", op="sdpa",
                opts=["--causal"] if causal else [], inputs=dict(q=q, k=k, v=v),
                work=2.0 * B * H * L * S * (E + E), unit="GFLOP/s", peer=peer)

CASES = {
    "sdpa": lambda: [sdpa_case(1, 8, 1024, 1024, 64, False), sdpa_case(1, 8, 1024, 1024, 64, True)],
}

def run_cli(case, backend, warmup, repeat):
    with tempfile.TemporaryDirectory() as d:
        for n, a in case["inputs"].items(): np.save(os.path.join(d, n + ".npy"), a)
        cmd = ["dotnet", CLI, "run", case["op"], "--backend", backend, "--in", d, "--out", d,
               "--warmup", str(warmup), "--repeat", str(repeat)] + case["opts"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0: return None, r.stderr.strip()
        return json.loads(r.stdout.strip().splitlines()[-1]), None

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="cpu,opencl")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", default=",".join(CASES))
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if not os.path.exists(CLI):
        subprocess.run(["dotnet", "build", os.path.join(ROOT, "src/GpuAttention.Cli"), "-c", "Release"], check=True, capture_output=True)
    lines = [f"# Comparison run — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
             f"peer: torch {torch.__version__} ({a.threads} threads); median of {a.repeat} after {a.warmup} warm-up", "",
             "| case | backend | device | median ms | rate | vs torch |", "|---|---|---|---|---|---|"]
    for fam in a.only.split(","):
        for case in CASES[fam]():
            t_peer = timeit(case["peer"], a.warmup, a.repeat)
            rate = lambda ms: case["work"] / ms / 1e6
            lines.append(f"| {case['name']} | torch | {a.threads} threads | {t_peer:.2f} | {rate(t_peer):.2f} {case['unit']} | 1.00× |")
            for be in a.backends.split(","):
                res, err = run_cli(case, be, a.warmup, a.repeat)
                if res is None:
                    lines.append(f"| {case['name']} | {be} | — | — | — | failed: {err} |"); continue
                ms = res["median_ms"]
                lines.append(f"| {case['name']} | {be} | {res['device']} | {ms:.2f} | {rate(ms):.2f} {case['unit']} | {t_peer / ms:.2f}× |")
            print(lines[-1 - len(a.backends.split(","))], *lines[-len(a.backends.split(",")):], sep="\n", flush=True)
    text = "\n".join(lines) + "\n"
    if a.out:
        with open(a.out, "w") as f: f.write(text)
    print(text)

if __name__ == "__main__":
    main()
