#!/usr/bin/env bash
# A short GPU check for a session with little device time (one call, ~8 minutes at most): devices, then `verify` (every op,
# forward and backward, against the double reference) on the ILGPU CUDA kernels and on the NVRTC-compiled OpenCL C kernels,
# then the demo on ilgpu:cuda (its table has per-op times). Needs publish/linux-x64 (see run-on-gpu.sh's header).
#   OUT=DIR bash bench/gpu/quick-gpu.sh
set -u
. "$(dirname "$0")/common.sh" out/gpu-quick
S="$OUT/summary.txt"; : >"$S"
note() { echo "$*" | tee -a "$S"; }
note "date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?'); nvrtc: ${GPUATTENTION_NVRTC:-(system loader)}"
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1; note "gpu: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null)"
nproc >>"$OUT/nvidia-smi.txt"
"$B" devices >"$OUT/devices.txt" 2>&1; note "devices rc=$?"
SECONDS=0
timeout 200 "$B" verify --backend ilgpu:cuda >"$OUT/verify-ilgpu-cuda.txt" 2>&1; note "verify ilgpu:cuda rc=$? $(tail -1 "$OUT/verify-ilgpu-cuda.txt") (${SECONDS} s)"
SECONDS=0
timeout 150 "$B" verify --backend cuda >"$OUT/verify-cuda.txt" 2>&1; note "verify cuda rc=$? $(tail -1 "$OUT/verify-cuda.txt") (${SECONDS} s)"
SECONDS=0
timeout 100 "$B" demo --backend ilgpu:cuda --repeat 20 --out "$OUT/demo-ilgpu-cuda" >"$OUT/demo-ilgpu-cuda.txt" 2>&1; note "demo ilgpu:cuda rc=$? (${SECONDS} s)"
rm -rf "$OUT/demo-ilgpu-cuda"
note "done"
