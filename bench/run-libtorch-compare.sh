#!/usr/bin/env bash
# The CPU backend against LibTorch 2.10 (TorchSharp 0.107.0) in one process: builds bench/GpuAttention.Bench.Torch
# (restoring ~600 MB of LibTorch natives into the NuGet cache on first use; the project is not in GpuAttention.sln),
# runs the interleaved comparison, then the machine-limit probe (fractions of the FMA peak and copy bandwidth), and
# writes both to one Markdown file, and its chart (speed-up per workload, ScottPlot) beside it as OUT.png.
#   bash bench/run-libtorch-compare.sh [OUT.md] [--reps N] [--only TEXT] [--no-limits]
# Re-chart an existing results file without running anything:
#   dotnet bench/GpuAttention.Bench.Torch/bin/Release/net10.0/linux-x64/GpuAttention.Bench.Torch.dll chart IN.md [OUT.png]
# Needs: .NET 10 SDK, python3 (tools/relax_glibcxx.py runs at build time). Run it on a quiet machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/bench/results/compare-libtorch.md}"
[[ $# -gt 0 ]] && shift
proj="$root/bench/GpuAttention.Bench.Torch"
dotnet build "$proj" -c Release -nologo -v q 1>&2
dll="$proj/bin/Release/net10.0/linux-x64/GpuAttention.Bench.Torch.dll"
# LibTorch's OpenMP workers would otherwise spin after each call and take the cores from the other side.
export OMP_WAIT_POLICY=passive
# Steady state from the first timed call: without this, a workload's first calls can run our code at tier 0 (tiered
# compilation promotes a method after ~30 calls, in the background), which made the first decode and grid_sample rows of
# a run 3-5x slower than the same code a few rows later. Every method is compiled fully optimised at first use instead.
export DOTNET_TieredCompilation=0
dotnet "$dll" compare --out "$out" "$@"
echo "wrote $out" 1>&2
