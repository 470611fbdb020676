#!/usr/bin/env python3
"""PyTorch peer for the spatial-transformer ops (not used by the test suite).

  check [CLI_DLL] [BACKENDS]   cross-check `gpuattention run affine-grid[-backward]` and `grid-sample[-backward]`
                               against PyTorch float64 autograd for every mode x padding x align_corners, on
                               random grids reaching outside [-1, 1] (npy files in and out)
  bench                        time PyTorch's grid_sample forward+backward at N16 C16 128x128 -> 64x64 bilinear,
                               float32, 2 threads (the README's peer)
"""
import json, os, subprocess, sys, tempfile, time
import numpy as np
import torch
import torch.nn.functional as F

def rel(a, r):
    a = np.asarray(a, np.float64); r = np.asarray(r, np.float64)
    return float(np.linalg.norm(a - r) / max(np.linalg.norm(r), 1e-300))

def cli(dll, *args):
    p = subprocess.run(["dotnet", dll, *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"gpuattention {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout

def check(dll, backends):
    rng = np.random.default_rng(2024)
    worst = {}
    # the second shape takes the CPU backend's channel-last path (C >= 8 and points * 16 >= 2 * H * W)
    for N, C, H, W, Ho, Wo in [(2, 5, 11, 13, 7, 9), (2, 19, 11, 13, 17, 19)]:
      for backend in backends:
            for mode in ["bilinear", "nearest"]:
                for pad in ["zeros", "border", "reflection"]:
                    for align in [False, True]:
                        d = tempfile.mkdtemp(); o = tempfile.mkdtemp()
                        inp = rng.uniform(-1, 1, (N, C, H, W)).astype(np.float32)
                        grid = rng.uniform(-1.7, 1.7, (N, Ho, Wo, 2)).astype(np.float32)
                        gout = rng.uniform(-1, 1, (N, C, Ho, Wo)).astype(np.float32)
                        for k, v in dict(input=inp, grid=grid, grad_out=gout).items(): np.save(os.path.join(d, k + ".npy"), v)
                        extra = ["--mode", mode, "--padding", pad] + (["--align-corners"] if align else [])
                        cli(dll, "run", "grid-sample", "--backend", backend, "--in", d, "--out", o, *extra)
                        cli(dll, "run", "grid-sample-backward", "--backend", backend, "--in", d, "--out", o, *extra)
                        ti = torch.tensor(inp, dtype=torch.float64, requires_grad=True)
                        tg = torch.tensor(grid, dtype=torch.float64, requires_grad=True)
                        out = F.grid_sample(ti, tg, mode=mode, padding_mode=pad, align_corners=align)
                        out.backward(torch.tensor(gout, dtype=torch.float64))
                        e = (rel(np.load(os.path.join(o, "out.npy")), out.detach().numpy()),
                             rel(np.load(os.path.join(o, "grad_input.npy")), ti.grad.numpy()),
                             rel(np.load(os.path.join(o, "grad_grid.npy")), tg.grad.numpy()) if mode == "bilinear" else
                             float(np.abs(np.load(os.path.join(o, "grad_grid.npy"))).max()))
                        print(f"{backend:7} C{C:<3} grid-sample {mode:8} {pad:10} align={int(align)}  out {e[0]:.2e}  grad_input {e[1]:.2e}  grad_grid {e[2]:.2e}")
                        worst[backend] = max(worst.get(backend, (0, 0, 0)), e)
                for align in [False, True]:
                    d = tempfile.mkdtemp(); o = tempfile.mkdtemp()
                    theta = rng.uniform(-1.5, 1.5, (3, 2, 3)).astype(np.float32)
                    gg = rng.uniform(-1, 1, (3, 6, 10, 2)).astype(np.float32)
                    np.save(os.path.join(d, "theta.npy"), theta); np.save(os.path.join(d, "grad_grid.npy"), gg)
                    extra = ["--size", "6,10"] + (["--align-corners"] if align else [])
                    cli(dll, "run", "affine-grid", "--backend", backend, "--in", d, "--out", o, *extra)
                    cli(dll, "run", "affine-grid-backward", "--backend", backend, "--in", d, "--out", o, *extra)
                    tt = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
                    g = F.affine_grid(tt, (3, 1, 6, 10), align_corners=align)
                    g.backward(torch.tensor(gg, dtype=torch.float64))
                    print(f"{backend:7} affine-grid align={int(align)}  grid {rel(np.load(os.path.join(o, 'grid.npy')), g.detach().numpy()):.2e}"
                          f"  grad_theta {rel(np.load(os.path.join(o, 'grad_theta.npy')), tt.grad.numpy()):.2e}")
    print("worst (out, grad_input, grad_grid):", json.dumps(worst))

def bench(reps=20):
    torch.set_num_threads(2)
    N, C, H, W, Ho, Wo = 16, 16, 128, 128, 64, 64
    g = torch.Generator().manual_seed(0)
    inp = (torch.rand(N, C, H, W, generator=g) * 2 - 1).requires_grad_(True)
    grid = (torch.rand(N, Ho, Wo, 2, generator=g) * 2.2 - 1.1).requires_grad_(True)
    gout = torch.rand(N, C, Ho, Wo, generator=g)
    def fwd(): return F.grid_sample(inp, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    def bwd(out): return torch.autograd.grad(out, (inp, grid), gout)
    for _ in range(3): bwd(fwd())
    tf, tb = [], []
    for _ in range(reps):
        t0 = time.perf_counter(); out = fwd(); t1 = time.perf_counter(); bwd(out); t2 = time.perf_counter()
        tf.append(t1 - t0); tb.append(t2 - t1)
    fb = 4.0 * (N * C * H * W + N * Ho * Wo * 2 + N * C * Ho * Wo)
    bb = 4.0 * (2 * N * C * H * W + 2 * N * Ho * Wo * 2 + N * C * Ho * Wo)
    mf, mb = float(np.median(tf)), float(np.median(tb))
    print(json.dumps({"peer": f"torch {torch.__version__} (2 threads)", "shape": "N16 C16 128x128 -> 64x64 bilinear zeros",
                      "forward_ms": round(mf * 1e3, 3), "backward_ms": round(mb * 1e3, 3), "fwd_bwd_ms": round((mf + mb) * 1e3, 3),
                      "forward_GBps": round(fb / mf / 1e9, 2), "backward_GBps": round(bb / mb / 1e9, 2)}))

if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "check"
    if cmd == "check":
        here = os.path.dirname(os.path.abspath(__file__))
        dll = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "../../src/GpuAttention.Cli/bin/Debug/net10.0/gpuattention.dll")
        check(dll, (sys.argv[3] if len(sys.argv) > 3 else "cpu,opencl").split(","))
    elif cmd == "bench":
        bench()
    else:
        sys.exit(__doc__)
