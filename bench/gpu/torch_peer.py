#!/usr/bin/env python3
"""PyTorch peer for the GpuAttention CUDA timings (bench/gpu/run-on-gpu.sh).

  torch_peer.py write-inputs DIR --B 4 --H 16 --L 4096 --S 4096 --E 64 [--seed 0]
      writes DIR/q.npy, k.npy, v.npy (float32, uniform in [-1, 1)) for `gpuattention run sdpa` (needs torch, not numpy).
  torch_peer.py time DIR [--causal] [--warmup 5] [--repeat 20]
      times torch.nn.functional.scaled_dot_product_attention in float32 on the same inputs with CUDA events and
      prints one JSON line with the fields of `gpuattention run --repeat` (backend "torch").
  torch_peer.py compare DIR OUTDIR [--causal]
      compares OUTDIR/out.npy (written by gpuattention) with PyTorch's float32 output: prints one JSON line with the
      relative L2 error.
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
    import torch
    g = torch.Generator().manual_seed(a.seed)
    for name, shape in (("q", (a.B, a.H, a.L, a.E)), ("k", (a.B, a.H, a.S, a.E)), ("v", (a.B, a.H, a.S, a.E))):
        save_npy(f"{a.dir}/{name}.npy", torch.rand(shape, generator=g) * 2 - 1)


def load(dir_):
    return [load_npy(f"{dir_}/{n}.npy").cuda() for n in ("q", "k", "v")]


def time_sdpa(a):
    import torch
    import torch.nn.functional as F
    torch.backends.cuda.matmul.allow_tf32 = False   # float32 math, as ours
    torch.backends.cudnn.allow_tf32 = False
    q, k, v = load(a.dir)
    with torch.no_grad():
        for _ in range(a.warmup):
            F.scaled_dot_product_attention(q, k, v, is_causal=a.causal)
        torch.cuda.synchronize()
        times = []
        for _ in range(a.repeat):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            F.scaled_dot_product_attention(q, k, v, is_causal=a.causal)
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e))
    print(json.dumps({"op": "sdpa", "backend": "torch", "device": torch.cuda.get_device_name(),
                      "median_ms": round(statistics.median(times), 4), "min_ms": round(min(times), 4),
                      "repeats": a.repeat, "torch": torch.__version__, "shape": list(q.shape), "causal": a.causal}))


def compare(a):
    import torch
    import torch.nn.functional as F
    torch.backends.cuda.matmul.allow_tf32 = False
    q, k, v = load(a.dir)
    with torch.no_grad():
        ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=a.causal)
    ours = load_npy(f"{a.outdir}/out.npy").cuda().double()
    rel = (torch.linalg.vector_norm(ours - ref) / torch.linalg.vector_norm(ref)).item()
    print(json.dumps({"op": "sdpa", "compare": "gpuattention vs torch float64", "rel_error": rel, "causal": a.causal,
                      "ok": rel <= 1e-5}))
    return 0 if rel <= 1e-5 else 1


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write-inputs")
    w.add_argument("dir")
    for n, d in (("--B", 4), ("--H", 16), ("--L", 4096), ("--S", 4096), ("--E", 64), ("--seed", 0)):
        w.add_argument(n, type=int, default=d)
    t = sub.add_parser("time")
    t.add_argument("dir")
    t.add_argument("--causal", action="store_true")
    t.add_argument("--warmup", type=int, default=5)
    t.add_argument("--repeat", type=int, default=20)
    c = sub.add_parser("compare")
    c.add_argument("dir")
    c.add_argument("outdir")
    c.add_argument("--causal", action="store_true")
    a = p.parse_args()
    if a.cmd == "write-inputs":
        write_inputs(a)
        return 0
    if a.cmd == "time":
        time_sdpa(a)
        return 0
    return compare(a)


if __name__ == "__main__":
    sys.exit(main())
