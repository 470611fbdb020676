#!/usr/bin/env python3
"""PyTorch peer and float64 cross-check for the separable Gaussian glimpse.

Kosiorek's gaussian_glimpse ("Attention in Neural Networks and How to Use It", 2017) written the PyTorch way:
two normalised Gaussian masks and two batched matmuls, gradients by autograd.

  glimpse_torch.py crosscheck --cli PATH/gpuattention.dll [--backend cpu|opencl] [--seed S]
      draws shapes and parameters at random, runs `gpuattention run glimpse` / `glimpse-backward` on .npy files
      and compares with float64 autograd (relative L2 error; contract: 1e-5 forward, 1e-4 backward).
  glimpse_torch.py bench [--n 16 --c 16 --size 128 --glimpse 32 --threads 2 --repeat 20]
      times float32 forward and forward+backward (autograd) on the CPU; prints one JSON line per measurement.
  Debian's python3-torch links the reference BLAS (libblas.so.3 -> netlib); to time it on OpenBLAS without changing the
  system, extract libopenblas0-pthread (apt-get download, dpkg-deb -x) and run with
  LD_LIBRARY_PATH=<extracted>/usr/lib/x86_64-linux-gnu/openblas-pthread OPENBLAS_NUM_THREADS=2.
  --flush-denormal 1 sets torch.set_flush_denormal(True): at sigma ~2 the masks hold denormal floats, which are slow on x86
  (GpuAttention stores filter weights < 1e-15 as 0 for the same reason).
Only the user runs this script; the test suite needs no Python.
"""
import argparse, json, os, subprocess, sys, tempfile, time
import numpy as np
import torch


def gaussian_mask(u, s, d, R, C):
    """u, s, d: [N]; R glimpse size, C image size. Returns [N, C, R]: mask[n, c, r] (Kosiorek's gaussian_mask)."""
    r = torch.arange(R, dtype=u.dtype).view(1, 1, R)
    c = torch.arange(C, dtype=u.dtype).view(1, C, 1)
    centres = u.view(-1, 1, 1) + r * d.view(-1, 1, 1)
    mask = torch.exp(-0.5 * ((c - centres) / s.view(-1, 1, 1)) ** 2)
    return mask / (mask.sum(1, keepdim=True) + 1e-8)


def gaussian_glimpse(img, params, h, w):
    """img [N, C, H, W], params [N, 6] = (uy, sy, dy, ux, sx, dx) -> [N, C, h, w] = Ay^T img Ax."""
    N, C, H, W = img.shape
    uy, sy, dy, ux, sx, dx = params.unbind(1)
    ay = gaussian_mask(uy, sy, dy, h, H)          # [N, H, h]
    ax = gaussian_mask(ux, sx, dx, w, W)          # [N, W, w]
    t = torch.matmul(ay.transpose(1, 2).unsqueeze(1), img)   # [N, C, h, W]
    return torch.matmul(t, ax.unsqueeze(1))                   # [N, C, h, w]


def rel(a, r):
    a = np.asarray(a, np.float64); r = np.asarray(r, np.float64)
    return float(np.linalg.norm(a - r) / max(np.linalg.norm(r), 1e-300))


def crosscheck(args):
    rng = np.random.default_rng(args.seed)
    worst = {"out": 0.0, "grad_image": 0.0, "grad_params": 0.0}
    for trial in range(args.trials):
        N, C = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        H, W = int(rng.integers(5, 60)), int(rng.integers(5, 60))
        h, w = int(rng.integers(1, H + 1)), int(rng.integers(1, W + 1))
        img = rng.uniform(-1, 1, (N, C, H, W)).astype(np.float32)
        p = np.zeros((N, 6), np.float32)
        for n in range(N):
            for ax, (size, m) in enumerate(((H, h), (W, w))):
                p[n, 3 * ax] = rng.uniform(-0.2 * size, 0.8 * size)
                p[n, 3 * ax + 1] = np.exp(rng.uniform(np.log(0.3), np.log(50)))
                p[n, 3 * ax + 2] = rng.uniform(-1, 1.5) * size / max(m, 1)
        g = rng.uniform(-1, 1, (N, C, h, w)).astype(np.float32)
        with tempfile.TemporaryDirectory() as d:
            din, dout = os.path.join(d, "in"), os.path.join(d, "out")
            os.makedirs(din)
            np.save(os.path.join(din, "image.npy"), img); np.save(os.path.join(din, "params.npy"), p); np.save(os.path.join(din, "grad_out.npy"), g)
            for op in ("glimpse", "glimpse-backward"):
                cmd = ["dotnet", args.cli, "run", op, "--backend", args.backend, "--in", din, "--out", dout, "--size", f"{h},{w}"]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    sys.exit(f"{' '.join(cmd)} failed: {res.stderr}")
            out = np.load(os.path.join(dout, "out.npy")); gi = np.load(os.path.join(dout, "grad_image.npy")); gp = np.load(os.path.join(dout, "grad_params.npy"))
        ti = torch.tensor(img, dtype=torch.float64, requires_grad=True)
        tp = torch.tensor(p, dtype=torch.float64, requires_grad=True)
        o = gaussian_glimpse(ti, tp, h, w)
        o.backward(torch.tensor(g, dtype=torch.float64))
        e = {"out": rel(out, o.detach().numpy()), "grad_image": rel(gi, ti.grad.numpy()), "grad_params": rel(gp, tp.grad.numpy())}
        for k in e: worst[k] = max(worst[k], e[k])
        print(json.dumps({"trial": trial, "backend": args.backend, "shape": [N, C, H, W, h, w], **{k: float(f"{v:.3e}") for k, v in e.items()}}))
    ok = worst["out"] <= 1e-5 and worst["grad_image"] <= 1e-4 and worst["grad_params"] <= 1e-4
    print(json.dumps({"backend": args.backend, "trials": args.trials, "worst": {k: float(f"{v:.3e}") for k, v in worst.items()}, "pass": ok}))
    return 0 if ok else 1


def bench(args):
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(bool(args.flush_denormal))
    N, C, S, G = args.n, args.c, args.size, args.glimpse
    g = torch.Generator().manual_seed(0)
    img = torch.rand(N, C, S, S, generator=g) * 2 - 1
    p = torch.tensor([[S * 0.2, 2.0, S * 0.6 / G, S * 0.25, 2.5, S * 0.55 / G]] * N, dtype=torch.float32)
    flops_fwd = 2.0 * N * C * min(G * S * (S + G), S * G * (S + G))
    flops_bwd = 2.0 * N * C * (3.0 * S * S * G + 2.0 * G * G * S)

    def timeit(fn):
        for _ in range(3): fn()
        ts = []
        for _ in range(args.repeat):
            t0 = time.perf_counter(); fn(); ts.append((time.perf_counter() - t0) * 1e3)
        ts.sort()
        return ts[len(ts) // 2], ts[0]

    def fwd():
        with torch.no_grad():
            gaussian_glimpse(img, p, G, G)
    ti = img.clone().requires_grad_(True); tp = p.clone().requires_grad_(True)
    go = torch.ones(N, C, G, G)

    def bwd():
        ti.grad = None; tp.grad = None
        gaussian_glimpse(ti, tp, G, G).backward(go)
    for name, fn, fl in (("forward", fwd, flops_fwd), ("forward+backward", bwd, flops_fwd + flops_bwd)):
        med, mn = timeit(fn)
        print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "threads": args.threads, "flush_denormal": bool(args.flush_denormal), "what": name,
                          "shape": f"N{N} C{C} {S}x{S}->{G}x{G}", "median_ms": round(med, 4), "min_ms": round(mn, 4),
                          "gflops": round(fl / med / 1e6, 2)}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("crosscheck"); c.add_argument("--cli", required=True); c.add_argument("--backend", default="cpu")
    c.add_argument("--seed", type=int, default=12345); c.add_argument("--trials", type=int, default=6)
    b = sub.add_parser("bench")
    for k, v in (("n", 16), ("c", 16), ("size", 128), ("glimpse", 32), ("threads", 2), ("repeat", 20), ("flush_denormal", 0)):
        b.add_argument("--" + k, type=int, default=v)
    a = ap.parse_args()
    sys.exit(crosscheck(a) if a.cmd == "crosscheck" else bench(a))


if __name__ == "__main__":
    main()
