#!/usr/bin/env bash
# Runs the GPU probe: passes with a skip line where there is no GPU, and
# checks the kernel, cuBLAS and NCCL abort/re-init where there is one.
set -euo pipefail
out=$(common/cuda/tg-gpu-probe)
echo "$out"
grep -qE 'gpu-probe: (skip|all checks passed)' <<<"$out"
