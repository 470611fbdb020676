#!/usr/bin/env bash
# What a session with a GPU runs there, in one call, from the repository root (UNRUN on a GPU so far: written without one).
#
#   bash bench/gpu/run-on-gpu.sh             # logs under $OUT (default ./out/gpu)
#   bash bench/gpu/run-on-gpu.sh --dry-run   # no GPU: tiny shapes, `--backend cpu`, PyTorch on the CPU (checks the plumbing)
#
# Needs the self-contained CLI in publish/linux-x64 (build it beforehand on a machine with the .NET SDK:
#   dotnet publish src/GpuAttention.Cli -c Release -r linux-x64 --self-contained -p:PublishTrimmed=true -o publish/linux-x64
# and carry that folder; the dry run falls back to `dotnet src/GpuAttention.Cli/bin/Release/net10.0/gpuattention.dll`),
# the NVIDIA driver (libcuda.so.1), and an NVRTC: the system's, /usr/local/cuda's, or the one pip installs beside PyTorch
# (nvidia-cuda-nvrtc-cu12), found below and passed as GPUATTENTION_NVRTC. $PYTHON (default python3) must import torch.
# Steps: devices; verify --backend cuda (every op family, forward and backward); compute-sanitizer memcheck and racecheck
# over verify; timings with --repeat beside PyTorch (torch_peer.py), each followed by an accuracy check of our outputs
# against PyTorch in float64:
#   sdpa forward and sdpa-backward at B4 H16 L=S=4096, E 64 and 128, causal and not (torch: F.scaled_dot_product_attention
#     float32 forward, and forward+backward; ours: fwd and bwd timed apart, fwd+bwd = their sum);
#   grid-sample(-backward) bilinear zeros N16 C16 128² -> 64², and N512 (a batch that fills the GPU);
#   glimpse(-backward) N1024 C3 128² -> 32² (torch: the two filterbanks and two batched matmuls).
# Every step writes its log under $OUT; the last lines of summary.txt say what passed; timings.jsonl has one line per run.
set -u
cd "$(dirname "$0")/../.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-$PWD/out/gpu$([ $DRY = 1 ] && echo -dry)}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
BACKEND=cuda; TDEV=cuda
[ $DRY = 1 ] && { BACKEND=cpu; TDEV=cpu; }
BIN=${GPUATTENTION_BIN:-$PWD/publish/linux-x64/gpuattention}
CLI=("$BIN")
if [ ! -x "$BIN" ] && [ $DRY = 1 ] && [ -f src/GpuAttention.Cli/bin/Release/net10.0/gpuattention.dll ]; then
  CLI=(dotnet src/GpuAttention.Cli/bin/Release/net10.0/gpuattention.dll)
fi
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }

if [ "${CLI[0]}" = "$BIN" ] && [ ! -x "$BIN" ]; then
  note "FAIL: $BIN not found (publish the CLI first, see the header of this script)"
  exit 1
fi
export GPUATTENTION_CACHE_DIR=${GPUATTENTION_CACHE_DIR:-/tmp/gpuattention-cache}

# --- NVRTC, from common.sh (its other settings leave this script's OUT, CLI and cache dir as set above) ---
. bench/gpu/common.sh
note "nvrtc: ${GPUATTENTION_NVRTC:-(system loader)}"

nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
"${CLI[@]}" devices >"$OUT/devices.txt" 2>&1
note "devices: $(grep '^cuda' "$OUT/devices.txt" | head -3 | tr '\n' ' ')"

# --- correctness on the GPU ---
if [ $DRY = 1 ]; then VERIFY_ONLY=(--only sdpa,grid-sample,glimpse); else VERIFY_ONLY=(); fi
timeout 300 "${CLI[@]}" verify --backend "$BACKEND" --seed 1 "${VERIFY_ONLY[@]}" >"$OUT/verify.txt" 2>&1
note "verify: rc=$? $(tail -1 "$OUT/verify.txt")"

SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ $DRY = 1 ]; then
  note "compute-sanitizer: skipped in the dry run"
elif [ -n "$SAN" ]; then
  for tool in memcheck racecheck; do
    timeout 400 "$SAN" --tool "$tool" --error-exitcode 9 "${CLI[@]}" verify --backend cuda --seed 2 >"$OUT/$tool.txt" 2>&1
    note "$tool: rc=$? (0 = clean, 9 = errors found) $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/$tool.txt" | tail -1)"
  done
else
  note "compute-sanitizer: not found (memcheck/racecheck skipped)"
fi

# --- timings beside PyTorch ---
HAVE_TORCH=0
if [ $DRY = 1 ]; then "$PY" -c "import torch" 2>/dev/null && HAVE_TORCH=1
else "$PY" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null && HAVE_TORCH=1; fi
if [ "$HAVE_TORCH" = 0 ]; then note "torch: not importable ($TDEV) with $PY: inputs cannot be written, timings skipped"; note "done; logs in $OUT"; exit 0; fi
WORK=$(mktemp -d /tmp/gpuattention-bench.XXXX)
: >"$OUT/timings.jsonl"
if [ $DRY = 1 ]; then REPEAT=(--warmup 1 --repeat 3); else REPEAT=(--warmup 3 --repeat 20); fi

# bench TAG OP IN [cli options]: ours with --repeat, torch's time, and the float64 comparison of our outputs
bench() {
  local tag=$1 op=$2 in=$3; shift 3
  local res="$WORK/res-$op-$RANDOM" ours peer cmp flags=()
  mkdir -p "$res"
  for f in "$@"; do case $f in --causal|--align-corners) flags+=("$f");; esac; done
  ours=$(timeout 300 "${CLI[@]}" run "$op" --backend "$BACKEND" --in "$in" --out "$res" "${REPEAT[@]}" "$@" 2>>"$OUT/errors.txt" | tail -1)
  peer=$(timeout 300 "$PY" bench/gpu/torch_peer.py time "$in" --op "$op" --device "$TDEV" "${REPEAT[@]}" "${flags[@]}" 2>>"$OUT/errors.txt" | tail -1)
  cmp=$(timeout 600 "$PY" bench/gpu/torch_peer.py compare "$in" "$res" --op "$op" --device "$TDEV" "${flags[@]}" 2>>"$OUT/errors.txt" | tail -1)
  echo "{\"case\": \"$tag\", \"op\": \"$op\", \"ours\": ${ours:-null}, \"torch\": ${peer:-null}, \"accuracy\": ${cmp:-null}}" >>"$OUT/timings.jsonl"
  note "$op $tag: ours ${ours:-failed} | torch ${peer:-failed} | ${cmp:-no comparison}"
  LAST_RES=$res
}

# SDPA: B4 H16 L=S=4096 (dry run: B1 H2 L=S=96)
if [ $DRY = 1 ]; then SD=(--B 1 --H 2 --L 96 --S 96); SDT="B1 H2 L96 S96"; else SD=(--B 4 --H 16 --L 4096 --S 4096); SDT="B4 H16 L4096 S4096"; fi
for E in 64 128; do
  IN="$WORK/sdpa-E$E"
  if ! "$PY" bench/gpu/torch_peer.py write-inputs "$IN" --op sdpa-backward "${SD[@]}" --E "$E" 2>>"$OUT/errors.txt"; then
    note "inputs sdpa E$E: could not be written"; continue
  fi
  for causal in "" "--causal"; do
    tag="$SDT E$E${causal:+ causal}"
    bench "$tag" sdpa "$IN" $causal
    cp "$LAST_RES/out.npy" "$LAST_RES/lse.npy" "$IN/" 2>>"$OUT/errors.txt"   # the backward's out and lse: our forward's
    bench "$tag" sdpa-backward "$IN" $causal
  done
done

# grid_sample bilinear zeros: N16 C16 128² -> 64², and a batch that fills the GPU
if [ $DRY = 1 ]; then GS=("2 3 20 10"); else GS=("16 16 128 64" "512 16 128 64"); fi
for g in "${GS[@]}"; do
  read -r N C HI HO <<<"$g"
  IN="$WORK/grid-N$N"
  "$PY" bench/gpu/torch_peer.py write-inputs "$IN" --op grid-sample --N "$N" --C "$C" --Hin "$HI" --Win "$HI" --Hout "$HO" --Wout "$HO" 2>>"$OUT/errors.txt" \
    || { note "inputs grid-sample N$N: could not be written"; continue; }
  bench "N$N C$C ${HI}x$HI -> ${HO}x$HO bilinear zeros" grid-sample "$IN" --mode bilinear --padding zeros
  bench "N$N C$C ${HI}x$HI -> ${HO}x$HO bilinear zeros" grid-sample-backward "$IN" --mode bilinear --padding zeros
done

# glimpse: N1024 C3 128² -> 32² (torch: two batched matmuls)
if [ $DRY = 1 ]; then GL=(3 2 30 7); else GL=(1024 3 128 32); fi
IN="$WORK/glimpse"
if "$PY" bench/gpu/torch_peer.py write-inputs "$IN" --op glimpse --N "${GL[0]}" --C "${GL[1]}" --Hin "${GL[2]}" --Win "${GL[2]}" --Hout "${GL[3]}" --Wout "${GL[3]}" 2>>"$OUT/errors.txt"; then
  tag="N${GL[0]} C${GL[1]} ${GL[2]}x${GL[2]} -> ${GL[3]}x${GL[3]}"
  bench "$tag" glimpse "$IN" --size "${GL[3]},${GL[3]}"
  bench "$tag" glimpse-backward "$IN"
else
  note "inputs glimpse: could not be written"
fi
rm -rf "$WORK"
note "done; logs in $OUT"
