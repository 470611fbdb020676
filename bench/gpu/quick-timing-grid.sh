#!/usr/bin/env bash
# grid_sample timings on a GPU: ours (ilgpu:cuda and cuda, `run --repeat 20`; backward deterministic and --atomic) beside
# PyTorch's F.grid_sample in float32, bilinear zeros, on the same inputs (torch_peer.py time: CUDA events, median of 20
# after 5 warm-ups). The grid is uniform in [-1.1, 1.1] (scattered reads, the worst case), not torch_peer.py's affine grid.
#   OUT=DIR bash bench/gpu/quick-timing-grid.sh   (SHAPES="N C H Ho; ..." to change the shapes)
set -u
. "$(dirname "$0")/common.sh" out/gpu-timing
T="$OUT/timings-grid.txt"; : >"$T"
IFS=';' read -ra shapes <<<"${SHAPES:-16 16 128 64; 512 16 128 64}"
for shape in "${shapes[@]}"; do
  set -- $shape; N=$1; C=$2; H=$3; Ho=$4
  D=/tmp/g-$N; rm -rf $D $D.o; mkdir -p $D $D.o
  ${PYTHON:-python3} - "$D" $N $C $H $Ho <<'PY'
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
  for op in grid-sample grid-sample-backward; do   # PyTorch: forward, then forward+backward
    echo "$op N$N C$C $H²→$Ho² torch: $($PEER time $D --op $op --device ${TORCH_DEVICE:-cuda} 2>&1 | tail -1)" | tee -a "$T"
  done
done
