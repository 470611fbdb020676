#!/usr/bin/env bash
# grid_sample timings on a GPU: ours (ilgpu:cuda and cuda, `run --repeat`; backward deterministic and --atomic) beside
# PyTorch's F.grid_sample in float32, bilinear zeros. OUT=DIR bash bench/gpu/quick-timing-grid.sh
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/out/gpu-timing}; mkdir -p "$OUT"
B=$PWD/publish/linux-x64/gpuattention
export GPUATTENTION_CACHE_DIR=/tmp/gpuattention-cache
T="$OUT/timings-grid.txt"; : >"$T"
for shape in "16 16 128 64" "512 16 128 64"; do
  set -- $shape; N=$1; C=$2; H=$3; Ho=$4
  D=/tmp/g-$N; rm -rf $D $D.o; mkdir -p $D $D.o
  python3 - "$D" $N $C $H $Ho <<'PY'
import sys, numpy as np
d, n, c, h, ho = sys.argv[1], *map(int, sys.argv[2:])
r = np.random.default_rng(1)
np.save(f"{d}/input.npy", r.standard_normal((n, c, h, h), dtype=np.float32))
np.save(f"{d}/grid.npy", r.uniform(-1.1, 1.1, (n, ho, ho, 2)).astype(np.float32))
np.save(f"{d}/grad_out.npy", r.standard_normal((n, c, ho, ho), dtype=np.float32))
PY
  for be in ilgpu:cuda cuda; do
    j=$(timeout 60 "$B" run grid-sample --backend $be --in $D --out $D.o --repeat 20 2>&1 | tail -1)
    echo "grid_sample fwd N$N C$C $H²→$Ho² $be: $j" | tee -a "$T"
    for at in "" "--atomic"; do
      j=$(timeout 60 "$B" run grid-sample-backward --backend $be --in $D --out $D.o $at --repeat 20 2>&1 | tail -1)
      echo "grid_sample bwd$at N$N C$C $H²→$Ho² $be: $j" | tee -a "$T"
    done
  done
  python3 - $N $C $H $Ho <<'PY' | tee -a "$T"
import sys, torch, torch.nn.functional as F
n, c, h, ho = map(int, sys.argv[1:])
x = torch.randn(n, c, h, h, device="cuda", requires_grad=True)
g = (torch.rand(n, ho, ho, 2, device="cuda") * 2.2 - 1.1).requires_grad_(True)
go = torch.randn(n, c, ho, ho, device="cuda")
def tm(f, k=20):
    for _ in range(3): f()
    torch.cuda.synchronize(); ts = []
    for _ in range(k):
        s, t = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); f(); t.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(t))
    ts.sort(); return ts[len(ts)//2]
fw = tm(lambda: F.grid_sample(x, g, mode="bilinear", padding_mode="zeros", align_corners=False))
def fb():
    o = F.grid_sample(x, g, mode="bilinear", padding_mode="zeros", align_corners=False); o.backward(go)
print(f"grid_sample N{n} C{c} {h}²→{ho}² torch {torch.__version__} fp32: fwd {fw:.4f} ms, fwd+bwd {tm(fb):.4f} ms (median of 20)")
PY
done
