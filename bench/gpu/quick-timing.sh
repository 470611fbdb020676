#!/usr/bin/env bash
# SDPA timings on a GPU, ours (ilgpu:cuda and the NVRTC cuda path, `run --repeat`) beside PyTorch's
# F.scaled_dot_product_attention in float32, same shapes. OUT=DIR bash bench/gpu/quick-timing.sh
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/out/gpu-timing}; mkdir -p "$OUT"
B=$PWD/publish/linux-x64/gpuattention
export GPUATTENTION_CACHE_DIR=/tmp/gpuattention-cache
T="$OUT/timings.txt"; : >"$T"
for shape in "4 16 4096 64 0" "4 16 4096 64 1" "4 16 4096 128 0"; do
  set -- $shape; Bn=$1; H=$2; L=$3; E=$4; C=$5
  D=/tmp/in-$Bn-$H-$L-$E; rm -rf $D $D.o; mkdir -p $D $D.o
  python3 - "$D" $Bn $H $L $E <<'PY'
import sys, numpy as np
d, b, h, l, e = sys.argv[1], *map(int, sys.argv[2:])
r = np.random.default_rng(1)
for n in "qkv": np.save(f"{d}/{n}.npy", r.standard_normal((b, h, l, e), dtype=np.float32))
np.save(f"{d}/grad_out.npy", r.standard_normal((b, h, l, e), dtype=np.float32))
PY
  caus=(); [ $C = 1 ] && caus=(--causal)
  for be in ilgpu:cuda cuda; do
    j=$(timeout 60 "$B" run sdpa --backend $be --in $D --out $D.o "${caus[@]}" --repeat 20 2>&1 | tail -1)
    echo "sdpa fwd B$Bn H$H L=S=$L E$E causal=$C $be: $j" | tee -a "$T"
    cp $D/*.npy $D.o/ 2>/dev/null
    j=$(timeout 60 "$B" run sdpa-backward --backend $be --in $D.o --out $D.o "${caus[@]}" --repeat 20 2>&1 | tail -1)
    echo "sdpa bwd B$Bn H$H L=S=$L E$E causal=$C $be: $j" | tee -a "$T"
  done
  python3 - $Bn $H $L $E $C <<'PY' | tee -a "$T"
import sys, torch, torch.nn.functional as F
b, h, l, e, c = map(int, sys.argv[1:])
q, k, v = (torch.randn(b, h, l, e, device="cuda", dtype=torch.float32, requires_grad=True) for _ in range(3))
g = torch.randn(b, h, l, e, device="cuda")
def tm(f, n=20):
    for _ in range(3): f()
    torch.cuda.synchronize(); ts = []
    for _ in range(n):
        s, t = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); f(); t.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(t))
    ts.sort(); return ts[len(ts)//2]
fw = tm(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=bool(c)))
def fb():
    o = F.scaled_dot_product_attention(q, k, v, is_causal=bool(c)); o.backward(g)
fwbw = tm(fb)
print(f"sdpa B{b} H{h} L=S={l} E{e} causal={c} torch {torch.__version__} fp32: fwd {fw:.3f} ms, fwd+bwd {fwbw:.3f} ms (median of 20)")
PY
done
