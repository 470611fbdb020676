#!/usr/bin/env bash
# What a session with a GPU runs there, in one call, from the repository root (UNRUN so far: written without a GPU).
#
#   bash bench/gpu/run-on-gpu.sh            # logs under $OUT (default ./out/gpu)
#
# Needs the self-contained CLI in publish/linux-x64 (build it beforehand on a machine with the .NET SDK:
#   dotnet publish src/GpuAttention.Cli -c Release -r linux-x64 --self-contained -p:PublishTrimmed=true -o publish/linux-x64
# and carry that folder), the NVIDIA driver (libcuda.so.1), and an NVRTC: the system's, /usr/local/cuda's, or the one
# pip installs beside PyTorch (nvidia-cuda-nvrtc-cu12), found below and passed as GPUATTENTION_NVRTC.
# Steps: devices; verify --backend cuda; compute-sanitizer memcheck and racecheck over verify; SDPA forward timings
# (B4 H16 L=S=4096, E 64 and 128, causal and not) with --repeat beside PyTorch's float32 SDPA, plus an accuracy check
# of our output against PyTorch in float64. Every step writes its log under $OUT; the last lines of summary.txt say
# what passed.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/out/gpu}
mkdir -p "$OUT"
BIN=${GPUATTENTION_BIN:-$PWD/publish/linux-x64/gpuattention}
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }

if [ ! -x "$BIN" ]; then
  note "FAIL: $BIN not found (publish the CLI first, see the header of this script)"
  exit 1
fi
export GPUATTENTION_CACHE_DIR=${GPUATTENTION_CACHE_DIR:-/tmp/gpuattention-cache}

# --- NVRTC: keep the system's if the loader finds one, else look beside CUDA and PyTorch ---
if [ -z "${GPUATTENTION_NVRTC:-}" ] && ! ldconfig -p 2>/dev/null | grep -q 'libnvrtc\.so'; then
  for cand in /usr/local/cuda/lib64/libnvrtc.so* \
              $(python3 -c 'import nvidia.cuda_nvrtc, os; print(os.path.dirname(nvidia.cuda_nvrtc.__file__) + "/lib")' 2>/dev/null)/libnvrtc.so*; do
    if [ -f "$cand" ]; then export GPUATTENTION_NVRTC="$cand"; break; fi
  done
fi
note "nvrtc: ${GPUATTENTION_NVRTC:-(system loader)}"

nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
"$BIN" devices >"$OUT/devices.txt" 2>&1
note "devices: $(grep '^cuda' "$OUT/devices.txt" | head -3 | tr '\n' ' ')"

# --- correctness on the GPU ---
timeout 300 "$BIN" verify --backend cuda --seed 1 >"$OUT/verify.txt" 2>&1
note "verify: rc=$? $(tail -1 "$OUT/verify.txt")"

SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ -n "$SAN" ]; then
  for tool in memcheck racecheck; do
    timeout 400 "$SAN" --tool "$tool" --error-exitcode 9 "$BIN" verify --backend cuda --seed 2 >"$OUT/$tool.txt" 2>&1
    note "$tool: rc=$? (0 = clean, 9 = errors found) $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/$tool.txt" | tail -1)"
  done
else
  note "compute-sanitizer: not found (memcheck/racecheck skipped)"
fi

# --- timings beside PyTorch ---
HAVE_TORCH=0
python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null && HAVE_TORCH=1
[ "$HAVE_TORCH" = 1 ] || note "torch: not importable with CUDA here; PyTorch timings and comparisons skipped"
WORK=$(mktemp -d /tmp/gpuattention-bench.XXXX)
: >"$OUT/timings.jsonl"
for E in 64 128; do
  IN="$WORK/in-E$E"; mkdir -p "$IN"
  if ! python3 bench/gpu/torch_peer.py write-inputs "$IN" --B 4 --H 16 --L 4096 --S 4096 --E "$E" 2>>"$OUT/errors.txt"; then
    note "inputs E$E: could not be written (python3 with torch needed)"; continue
  fi
  for causal in "" "--causal"; do
    tag="B4 H16 L4096 S4096 E$E${causal:+ causal}"
    RES="$WORK/out-E$E$causal"; mkdir -p "$RES"
    line=$(timeout 300 "$BIN" run sdpa --backend cuda --in "$IN" --out "$RES" --warmup 3 --repeat 20 $causal 2>>"$OUT/errors.txt" | tail -1)
    echo "{\"case\": \"$tag\", \"ours\": ${line:-null}}" >>"$OUT/timings.jsonl"
    if [ "$HAVE_TORCH" = 1 ]; then
      peer=$(timeout 300 python3 bench/gpu/torch_peer.py time "$IN" $causal 2>>"$OUT/errors.txt" | tail -1)
      cmp=$(timeout 300 python3 bench/gpu/torch_peer.py compare "$IN" "$RES" $causal 2>>"$OUT/errors.txt" | tail -1)
      echo "{\"case\": \"$tag\", \"torch\": ${peer:-null}, \"accuracy\": ${cmp:-null}}" >>"$OUT/timings.jsonl"
    fi
    note "sdpa $tag: ours ${line:-failed}${peer:+ | torch $peer}${cmp:+ | $cmp}"
    unset peer cmp
  done
done
rm -rf "$WORK"
note "done; logs in $OUT"
