# Sourced by the bench/gpu scripts: the repository root as the working directory, the published CLI ($B), the kernel
# cache, an NVRTC (the system's if the loader finds one, else beside CUDA or the one pip installs with PyTorch, passed
# as GPUATTENTION_NVRTC), and $OUT (the caller's default unless OUT is set). The PyTorch peer is torch_peer.py ($PEER).
#   . "$(dirname "$0")/common.sh" DEFAULT_OUT
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${OUT:-$PWD/${1:-out/gpu}}; mkdir -p "$OUT"
B=${GPUATTENTION_BIN:-$PWD/publish/linux-x64/gpuattention}
PEER="${PYTHON:-python3} $PWD/bench/gpu/torch_peer.py"
export GPUATTENTION_CACHE_DIR=${GPUATTENTION_CACHE_DIR:-/tmp/gpuattention-cache}
if [ -z "${GPUATTENTION_NVRTC:-}" ] && ! ldconfig -p 2>/dev/null | grep -q 'libnvrtc\.so'; then
  for cand in /usr/local/cuda/lib64/libnvrtc.so* \
              $(python3 -c 'import nvidia.cuda_nvrtc, os; print(os.path.dirname(nvidia.cuda_nvrtc.__file__) + "/lib")' 2>/dev/null)/libnvrtc.so*; do
    if [ -f "$cand" ]; then export GPUATTENTION_NVRTC="$cand"; break; fi
  done
fi
