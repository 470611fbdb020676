#!/usr/bin/env bash
# SDPA timings on a GPU, ours (ilgpu:cuda and the NVRTC cuda path, `run --repeat 20`) beside PyTorch's
# F.scaled_dot_product_attention in float32 on the same inputs (torch_peer.py: write-inputs, time; CUDA events, median of
# 20 after 5 warm-ups). OUT=DIR bash bench/gpu/quick-timing.sh   (SHAPES="B H L E causal; ..." to change the shapes)
set -u
. "$(dirname "$0")/common.sh" out/gpu-timing
T="$OUT/timings.txt"; : >"$T"
IFS=';' read -ra shapes <<<"${SHAPES:-4 16 4096 64 0; 4 16 4096 64 1; 4 16 4096 128 0}"
for shape in "${shapes[@]}"; do
  set -- $shape; Bn=$1; H=$2; L=$3; E=$4; C=$5
  D=/tmp/in-$Bn-$H-$L-$E; rm -rf $D $D.o; mkdir -p $D $D.o
  $PEER write-inputs $D --op sdpa-backward --B $Bn --H $H --L $L --S $L --E $E
  caus=(); [ $C = 1 ] && caus=(--causal)
  for be in ilgpu:cuda cuda; do
    j=$(timeout 60 "$B" run sdpa --backend $be --in $D --out $D.o "${caus[@]}" --repeat 20 2>&1 | tail -1)
    echo "sdpa fwd B$Bn H$H L=S=$L E$E causal=$C $be: $j" | tee -a "$T"
    cp $D/*.npy $D.o/ 2>/dev/null
    j=$(timeout 60 "$B" run sdpa-backward --backend $be --in $D.o --out $D.o "${caus[@]}" --repeat 20 2>&1 | tail -1)
    echo "sdpa bwd B$Bn H$H L=S=$L E$E causal=$C $be: $j" | tee -a "$T"
  done
  for op in sdpa sdpa-backward; do   # PyTorch: forward, then forward+backward
    echo "$op B$Bn H$H L=S=$L E$E causal=$C torch: $($PEER time $D --op $op "${caus[@]}" --device ${TORCH_DEVICE:-cuda} 2>&1 | tail -1)" | tee -a "$T"
  done
done
