#!/usr/bin/env python3
"""Comparison run: every case on each GpuAttention backend (through the CLI's --repeat, which times the op on the
device, synchronised, without copies or compilation) beside PyTorch on the same inputs, in the same run.

    /usr/bin/python3 bench/compare.py [--backends cpu,opencl] [--threads 2] [--repeat 5] [--only sdpa,...] [--out bench/results/NAME.md]

Families (--only): sdpa (forward), sdpa-train (forward + backward: the CLI's `run sdpa` + `run sdpa-backward`),
glimpse, grid-sample (forward, and forward + backward), sdpa-sweep (L = S = 128 ... 8192: time ∝ L², memory ∝ L;
the peak RSS of the process that ran the op is reported beside the time — the CLI process for GpuAttention, a fresh
Python process running the peer once for PyTorch, both including their runtime's baseline).
A case whose CLI side is two ops sums the two medians.

PyTorch 1.13 (Debian python3-torch, OpenBLAS) has no fused CPU SDPA: its peer is what a user writes,
softmax(q kᵀ·scale [+ mask]) v, and autograd for backward. FLOPs: SDPA forward 2·B·H·L·S·(E+Ev) (causal not
discounted); backward counted as 2.5× forward.

grid_sample is reported in GB/s of compulsory traffic (float32, 4 bytes an element; input [N,C,H,W], grid
[N,Ho,Wo,2], out/grad_out [N,C,Ho,Wo]), each tensor counted once per op that must touch it:
    forward  = 4·(N·C·H·W  [input read] + N·Ho·Wo·2  [grid read] + N·C·Ho·Wo  [out written])
    backward = 4·(N·C·H·W  [input read] + N·Ho·Wo·2  [grid read] + N·C·Ho·Wo  [grad_out read]
                  + N·C·H·W  [grad_input written] + N·Ho·Wo·2  [grad_grid written])
and the fwd+bwd case (the CLI's `run grid-sample` + `run grid-sample-backward`) moves forward + backward
(the same counts as bench/GpuAttention.Bench SpatialBench).
"""
import argparse, json, math, os, platform, subprocess, sys, tempfile, time
import importlib.util
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

def sdpa_train_case(B, H, L, S, E, causal):
    """Forward + backward. CLI: `run sdpa` then `run sdpa-backward` on its out/lse; peer: autograd."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.uniform(-1, 1, (B, H, n, E)).astype(np.float32) for n in (L, S, S))
    go = rng.uniform(-1, 1, (B, H, L, E)).astype(np.float32)
    with torch.no_grad():
        o64 = torch_sdpa(*(torch.from_numpy(x).double() for x in (q, k, v)), causal)
        s = (torch.from_numpy(q).double() @ torch.from_numpy(k).double().transpose(-2, -1)) / math.sqrt(E)
        if causal: s = s.masked_fill(torch.ones(L, S, dtype=torch.bool).triu(1), float("-inf"))
        lse = torch.logsumexp(s, -1)
    def peer():
        tq, tk, tv = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
        torch_sdpa(tq, tk, tv, causal).backward(torch.from_numpy(go))
    return dict(name=f"sdpa fwd+bwd B{B} H{H} L{L} S{S} E{E}{' causal' if causal else ''}", op=["sdpa", "sdpa-backward"],
                opts=["--causal"] if causal else [],
                inputs=dict(q=q, k=k, v=v, out=o64.float().numpy(), lse=lse.float().numpy(), grad_out=go),
                work=3.5 * 2.0 * B * H * L * S * (E + E), unit="GFLOP/s", peer=peer)

def _peer_module(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "bench/peers", name + ".py"))
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m

def glimpse_case(N, C, size, g):
    gl = _peer_module("glimpse_torch")
    rng = np.random.default_rng(0)
    img = rng.uniform(-1, 1, (N, C, size, size)).astype(np.float32)
    p = np.zeros((N, 6), np.float32)
    for n in range(N):   # glimpses inside the image: centre, stride and sigma of a zoom between 0.5× and 1×
        for ax in range(2):
            d = rng.uniform(0.5, 1.0) * size / g
            p[n, 3 * ax:3 * ax + 3] = (rng.uniform(0, size - d * g), d * rng.uniform(0.5, 1.0), d)
    ti, tp = torch.from_numpy(img), torch.from_numpy(p)
    def peer():
        with torch.no_grad(): gl.gaussian_glimpse(ti, tp, g, g)
    # MB/s of compulsory traffic: the image read once and the glimpse written once.
    return dict(name=f"glimpse N{N} C{C} {size}²→{g}²", op="glimpse", opts=["--size", f"{g},{g}"],
                inputs=dict(image=img, params=p), work=4e3 * (img.size + N * C * g * g), unit="MB/s", peer=peer)

def grid_sample_case(N, C, size, out, backward):
    import torch.nn.functional as F
    rng = np.random.default_rng(0)
    inp = rng.uniform(-1, 1, (N, C, size, size)).astype(np.float32)
    theta = np.tile(np.array([[0.8, -0.3, 0.1], [0.3, 0.8, -0.05]], np.float32), (N, 1, 1))
    theta += rng.uniform(-0.05, 0.05, theta.shape).astype(np.float32)
    grid = F.affine_grid(torch.from_numpy(theta), (N, C, out, out), align_corners=False).numpy()
    go = rng.uniform(-1, 1, (N, C, out, out)).astype(np.float32)
    def peer():
        ti = torch.from_numpy(inp).requires_grad_(backward); tg = torch.from_numpy(grid).requires_grad_(backward)
        if backward:
            F.grid_sample(ti, tg, mode="bilinear", padding_mode="zeros", align_corners=False).backward(torch.from_numpy(go))
        else:
            with torch.no_grad(): F.grid_sample(ti, tg, mode="bilinear", padding_mode="zeros", align_corners=False)
    return dict(name=f"grid_sample{' fwd+bwd' if backward else ''} N{N} C{C} {size}²→{out}² bilinear",
                op=["grid-sample", "grid-sample-backward"] if backward else "grid-sample",
                opts=["--mode", "bilinear", "--padding", "zeros"], inputs=dict(input=inp, grid=grid, grad_out=go),
                work=grid_sample_bytes(N, C, size, size, out, out, backward), unit="GB/s", peer=peer)

def grid_sample_bytes(N, C, H, W, Ho, Wo, backward):
    """Compulsory bytes of grid_sample forward, or of forward + backward (see the module docstring)."""
    image, points, outputs = N * C * H * W, N * Ho * Wo * 2, N * C * Ho * Wo
    forward = 4.0 * (image + points + outputs)
    return forward + 4.0 * (image + points + outputs + image + points) if backward else forward

def sdpa_sweep():
    cases = []
    for L in (128, 256, 512, 1024, 2048, 4096, 8192):
        c = sdpa_case(1, 8, L, L, 64, False); c["memory"] = True; cases.append(c)
    return cases

CASES = {
    "sdpa": lambda: [sdpa_case(1, 8, 1024, 1024, 64, False), sdpa_case(1, 8, 1024, 1024, 64, True)],
    "sdpa-train": lambda: [sdpa_train_case(1, 8, 1024, 1024, 64, False), sdpa_train_case(1, 8, 1024, 1024, 64, True)],
    "glimpse": lambda: [glimpse_case(16, 16, 128, 32)],
    "grid-sample": lambda: [grid_sample_case(16, 16, 128, 64, False), grid_sample_case(16, 16, 128, 64, True)],
    "sdpa-sweep": sdpa_sweep,
}

def run_measured(cmd):
    """Runs cmd; returns (returncode, stdout, stderr, peak RSS in MiB of that process).

    The peak RSS comes from GNU time (/usr/bin/time -f %M), not from this process's wait4: a child forked from this
    (large) Python process starts with its parent's RSS high-water mark, which survives exec."""
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe, tempfile.NamedTemporaryFile("r") as ft:
        rc = subprocess.call(["/usr/bin/time", "-f", "%M", "-o", ft.name] + cmd, stdout=fo, stderr=fe)
        fo.seek(0); fe.seek(0)
        kib = ft.read().strip().splitlines()
        return rc, fo.read().decode(), fe.read().decode(), (int(kib[-1]) / 1024.0 if kib and kib[-1].isdigit() else float("nan"))

def run_cli(case, backend, warmup, repeat):
    """Times every CLI op of the case (a list of ops is timed op by op and the medians summed)."""
    ops = case["op"] if isinstance(case["op"], list) else [case["op"]]
    total, res, rss = 0.0, None, 0.0
    with tempfile.TemporaryDirectory() as d:
        for n, a in case["inputs"].items(): np.save(os.path.join(d, n + ".npy"), a)
        for op in ops:
            cmd = ["dotnet", CLI, "run", op, "--backend", backend, "--in", d, "--out", os.path.join(d, "o"),
                   "--warmup", str(warmup), "--repeat", str(repeat)] + case["opts"]
            os.makedirs(os.path.join(d, "o"), exist_ok=True)
            rc, out, err, mib = run_measured(cmd)
            if rc != 0: return None, err.strip()
            res = json.loads(out.strip().splitlines()[-1])
            total += res["median_ms"]; rss = max(rss, mib)
    res["median_ms"] = total; res["peak_rss_mib"] = rss
    return res, None

def peer_rss(family, index, threads):
    """Peak RSS (MiB) of a fresh Python process that builds the case and runs its peer once."""
    code = (f"import sys, torch; sys.path.insert(0, {os.path.join(ROOT, 'bench')!r}); import compare; "
            f"torch.set_num_threads({threads}); c = compare.CASES[{family!r}]()[{index}]; c['peer']()")
    rc, _, err, mib = run_measured([sys.executable, "-c", code])
    return mib if rc == 0 else float("nan")

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
    blas = os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3")   # Debian's alternatives: netlib or OpenBLAS
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
    lines = [f"# Comparison run — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"machine: {cpu}, {os.cpu_count()} cores, load average before the run {os.getloadavg()[0]:.2f}; "
             f"peer: torch {torch.__version__} ({a.threads} threads, BLAS {blas}); median of {a.repeat} after {a.warmup} warm-up", "",
             "| case | backend | device | median ms | rate | vs torch |", "|---|---|---|---|---|---|"]
    for fam in a.only.split(","):
        for idx, case in enumerate(CASES[fam]()):
            t_peer = timeit(case["peer"], a.warmup, a.repeat)
            rate = lambda ms: case["work"] / ms / 1e6
            mem = case.get("memory", False)
            rss = lambda mib: f"; peak RSS {mib:.0f} MiB" if mem else ""
            lines.append(f"| {case['name']} | torch | {a.threads} threads{rss(peer_rss(fam, idx, a.threads)) if mem else ''} "
                         f"| {t_peer:.2f} | {rate(t_peer):.2f} {case['unit']} | 1.00× |")
            for be in a.backends.split(","):
                res, err = run_cli(case, be, a.warmup, a.repeat)
                if res is None:
                    lines.append(f"| {case['name']} | {be} | — | — | — | failed: {err} |"); continue
                ms = res["median_ms"]
                lines.append(f"| {case['name']} | {be} | {res['device']}{rss(res['peak_rss_mib'])} | {ms:.2f} | {rate(ms):.2f} {case['unit']} | {t_peer / ms:.2f}× |")
            print(lines[-1 - len(a.backends.split(","))], *lines[-len(a.backends.split(",")):], sep="\n", flush=True)
    text = "\n".join(lines) + "\n"
    if a.out:
        with open(a.out, "w") as f: f.write(text)
    print(text)

if __name__ == "__main__":
    main()
