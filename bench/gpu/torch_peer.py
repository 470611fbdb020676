#!/usr/bin/env python3
"""PyTorch peer for the GpuAttention CUDA timings (bench/gpu/run-on-gpu.sh).

  torch_peer.py write-inputs DIR --op OP [shape options] [--seed 0]
      writes the .npy inputs of `gpuattention run OP` (float32; needs torch, not numpy):
        sdpa, sdpa-backward   q, k, v (uniform in [-1, 1)) and grad_out [B,H,L,E]   (--B --H --L --S --E)
        grid-sample(-backward) input [N,C,Hin,Win], grid [N,Hout,Wout,2] (a random affine grid reaching past [-1, 1]),
                               grad_out [N,C,Hout,Wout]                               (--N --C --Hin --Win --Hout --Wout)
        glimpse(-backward)     image [N,C,Hin,Win], params [N,6] (centres over the image, sigma 0.6-3 px), grad_out [N,C,h,w]
                                                                                     (--N --C --Hin --Win --Hout --Wout)
  torch_peer.py time DIR --op OP [--causal] [--align-corners] [--warmup 5] [--repeat 20] [--device cuda|cpu]
      times PyTorch on the same inputs and prints one JSON line with the fields of `gpuattention run --repeat` (backend
      "torch"). OP sdpa: F.scaled_dot_product_attention float32 forward; sdpa-backward: forward + backward (autograd);
      grid-sample: F.grid_sample bilinear zeros forward; grid-sample-backward: forward + backward to input and grid;
      glimpse: the two filterbanks and two batched matmuls Ay^T . image . Ax; glimpse-backward: that forward + backward.
      CUDA events on cuda, perf_counter on cpu (--device cpu is the dry run that checks this script without a GPU).
  torch_peer.py compare DIR OUTDIR --op OP [--causal] [--align-corners] [--device cuda|cpu]
      compares the outputs gpuattention wrote to OUTDIR with PyTorch's in float64: prints one JSON line with the relative
      L2 error of each output and exits 1 when one exceeds the bound (1e-5 forward, 1e-4 backward).
"""
import argparse
import ast
import ctypes
import json
import statistics
import struct
import sys

# .npy (format 1.0, little-endian float32, C order) is read and written here directly, so numpy is not needed.


def save_npy(path, t):
    import torch
    t = t.detach().to("cpu", torch.float32).contiguous()
    shape = tuple(t.shape)
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % (repr(shape) if len(shape) != 1 else "(%d,)" % shape[0])
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * pad + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1"))
        f.write(ctypes.string_at(t.data_ptr(), t.numel() * 4))


def load_npy(path):
    import torch
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x93NUMPY":
        raise ValueError(f"{path}: not a .npy file")
    major = data[6]
    if major == 1:
        hlen, start = struct.unpack("<H", data[8:10])[0], 10
    else:
        hlen, start = struct.unpack("<I", data[8:12])[0], 12
    header = ast.literal_eval(data[start:start + hlen].decode("latin1"))
    if header["descr"] != "<f4" or header["fortran_order"]:
        raise ValueError(f"{path}: expected C-order <f4, got {header}")
    body = bytearray(data[start + hlen:])
    return torch.frombuffer(body, dtype=torch.float32).reshape(header["shape"])


def write_inputs(a):
    import os
    import torch
    os.makedirs(a.dir, exist_ok=True)
    g = torch.Generator().manual_seed(a.seed)

    def u(*shape, scale=1.0):
        return (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * scale

    if a.op in ("sdpa", "sdpa-backward"):
        tensors = {"q": u(a.B, a.H, a.L, a.E), "k": u(a.B, a.H, a.S, a.E), "v": u(a.B, a.H, a.S, a.E),
                   "grad_out": u(a.B, a.H, a.L, a.E)}
    elif a.op in ("grid-sample", "grid-sample-backward"):
        import torch.nn.functional as F
        theta = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64) * 1.2 + u(a.N, 2, 3, scale=0.3)
        grid = F.affine_grid(theta, (a.N, a.C, a.Hout, a.Wout), align_corners=a.align_corners)
        tensors = {"input": u(a.N, a.C, a.Hin, a.Win), "grid": grid, "grad_out": u(a.N, a.C, a.Hout, a.Wout)}
    else:
        p = torch.empty(a.N, 6, dtype=torch.float64)
        for axis, (size, m) in enumerate(((a.Hin, a.Hout), (a.Win, a.Wout))):
            p[:, axis * 3] = torch.rand(a.N, generator=g, dtype=torch.float64) * 0.3 * size          # first centre
            p[:, axis * 3 + 1] = 0.6 + 2.4 * torch.rand(a.N, generator=g, dtype=torch.float64)      # sigma
            p[:, axis * 3 + 2] = (0.4 + 0.6 * torch.rand(a.N, generator=g, dtype=torch.float64)) * size / max(m, 2)  # stride
        tensors = {"image": u(a.N, a.C, a.Hin, a.Win), "params": p, "grad_out": u(a.N, a.C, a.Hout, a.Wout)}
    for name, t in tensors.items():
        save_npy(f"{a.dir}/{name}.npy", t)


INPUTS = {"sdpa": ("q", "k", "v"), "grid-sample": ("input", "grid"), "glimpse": ("image", "params")}
OUTPUTS = {"sdpa": ("out",), "sdpa-backward": ("grad_q", "grad_k", "grad_v"), "grid-sample": ("out",),
           "grid-sample-backward": ("grad_input", "grad_grid"), "glimpse": ("out",), "glimpse-backward": ("grad_image", "grad_params")}


def family(op):
    return op.replace("-backward", "")


def load(dir_, op, device, dtype=None):
    import torch
    ts = [load_npy(f"{dir_}/{n}.npy").to(device) for n in INPUTS[family(op)] + ("grad_out",)]
    return [t.to(dtype) for t in ts] if dtype is not None else ts


def glimpse_filterbank(size, m, u, s, d):
    """A[n, c, r] = exp(-((c - (u + r d)) / s)^2 / 2) / (sum_c exp(...) + 1e-8), c < size, r < m (CONTRACT.md)."""
    import torch
    c = torch.arange(size, device=u.device, dtype=u.dtype).view(1, size, 1)
    r = torch.arange(m, device=u.device, dtype=u.dtype).view(1, 1, m)
    mu = u.view(-1, 1, 1) + r * d.view(-1, 1, 1)
    e = torch.exp(-0.5 * ((c - mu) / s.view(-1, 1, 1)) ** 2)
    return e / (e.sum(dim=1, keepdim=True) + 1e-8)


def forward(op, inputs, a, out_size):
    """PyTorch's version of the op's forward on the given tensors."""
    import torch
    import torch.nn.functional as F
    f = family(op)
    if f == "sdpa":
        q, k, v = inputs
        if hasattr(F, "scaled_dot_product_attention") and q.dtype != torch.float64:
            return F.scaled_dot_product_attention(q, k, v, is_causal=a.causal)
        # float64 reference (and torch < 2.0, which has no F.scaled_dot_product_attention): the math, L x S scores
        s = torch.matmul(q, k.transpose(-1, -2)) / q.shape[-1] ** 0.5
        if a.causal:
            L, S = s.shape[-2:]
            s = s.masked_fill(torch.ones(L, S, dtype=torch.bool, device=s.device).triu(1), float("-inf"))
        return torch.matmul(torch.softmax(s, dim=-1), v)
    if f == "grid-sample":
        x, grid = inputs
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=a.align_corners)
    image, p = inputs
    h, w = out_size
    ay = glimpse_filterbank(image.shape[2], h, p[:, 0], p[:, 1], p[:, 2])      # [N, H, h]
    ax = glimpse_filterbank(image.shape[3], w, p[:, 3], p[:, 4], p[:, 5])      # [N, W, w]
    return torch.matmul(torch.matmul(ay.transpose(1, 2).unsqueeze(1), image), ax.unsqueeze(1))   # two batched matmuls


def run_once(op, inputs, grad_out, a):
    """The forward, and for a -backward op the backward too; returns the outputs gpuattention writes."""
    import torch
    backward = op.endswith("-backward")
    ins = [t.detach().requires_grad_(backward) for t in inputs]
    with torch.set_grad_enabled(backward):
        out = forward(op, ins, a, tuple(grad_out.shape[-2:]))
        if not backward:
            return (out,)
        return tuple(torch.autograd.grad(out, ins, grad_out))


def time_op(a):
    import time
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False   # float32 math, as ours
    torch.backends.cudnn.allow_tf32 = False
    *inputs, grad_out = load(a.dir, a.op, a.device)
    cuda = a.device.startswith("cuda")
    for _ in range(a.warmup):
        run_once(a.op, inputs, grad_out, a)
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(a.repeat):
        if cuda:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            run_once(a.op, inputs, grad_out, a)
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e))
        else:
            t0 = time.perf_counter()
            run_once(a.op, inputs, grad_out, a)
            times.append((time.perf_counter() - t0) * 1e3)
    import torch.nn.functional as F
    what = {"sdpa": "F.scaled_dot_product_attention" if hasattr(F, "scaled_dot_product_attention") else "softmax(q k^T) v (torch < 2.0)", "grid-sample": "F.grid_sample bilinear zeros",
            "glimpse": "filterbanks + 2 batched matmuls"}[family(a.op)] + (" fwd+bwd" if a.op.endswith("-backward") else " fwd")
    print(json.dumps({"op": a.op, "backend": "torch", "device": torch.cuda.get_device_name() if cuda else "cpu",
                      "median_ms": round(statistics.median(times), 4), "min_ms": round(min(times), 4), "repeats": a.repeat,
                      "torch": torch.__version__, "what": what, "shapes": [list(t.shape) for t in inputs],
                      "causal": a.causal, "align_corners": a.align_corners}))


def compare(a):
    import torch
    *inputs, grad_out = load(a.dir, a.op, a.device, torch.float64)
    refs = run_once(a.op, inputs, grad_out, a)
    bound = 1e-4 if a.op.endswith("-backward") else 1e-5
    errors = {}
    for name, ref in zip(OUTPUTS[a.op], refs):
        ours = load_npy(f"{a.outdir}/{name}.npy").to(a.device).double()
        den = torch.linalg.vector_norm(ref).item()
        num = torch.linalg.vector_norm(ours - ref).item()
        errors[name] = num / den if den > 0 else num
    ok = all(e <= bound for e in errors.values())
    print(json.dumps({"op": a.op, "compare": "gpuattention vs torch float64", "rel_error": errors, "bound": bound,
                      "causal": a.causal, "ok": ok}))
    return 0 if ok else 1


def main():
    ops = sorted(OUTPUTS)
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write-inputs")
    w.add_argument("dir")
    w.add_argument("--op", choices=ops, default="sdpa")
    w.add_argument("--align-corners", action="store_true")
    for n, d in (("--B", 4), ("--H", 16), ("--L", 4096), ("--S", 4096), ("--E", 64), ("--seed", 0),
                 ("--N", 16), ("--C", 16), ("--Hin", 128), ("--Win", 128), ("--Hout", 64), ("--Wout", 64)):
        w.add_argument(n, type=int, default=d)
    for name in ("time", "compare"):
        t = sub.add_parser(name)
        t.add_argument("dir")
        if name == "compare":
            t.add_argument("outdir")
        t.add_argument("--op", choices=ops, default="sdpa")
        t.add_argument("--causal", action="store_true")
        t.add_argument("--align-corners", action="store_true")
        t.add_argument("--device", default="cuda")
        t.add_argument("--warmup", type=int, default=5)
        t.add_argument("--repeat", type=int, default=20)
    a = p.parse_args()
    if a.cmd == "write-inputs":
        write_inputs(a)
        return 0
    if a.cmd == "time":
        time_op(a)
        return 0
    return compare(a)


if __name__ == "__main__":
    sys.exit(main())
