#!/usr/bin/env bash
# Issue 7 on one GPU: the Llama-1.1B shape (random weights, bf16) trained through tuneloom's FSDP path —
# `tuneloom train --strategy fsdp --num-processes 1`, i.e. accelerate launch + FSDP2, the full state dict
# consolidated into a normal model-version directory — and its tokens/s. No multi-GPU machine is lent, so
# the multi-GPU commands are documented in the README ("Scaling out"), and this runs what one GPU allows.
#
#   bash bench/gpu_prepare.sh        # here, once: wheels the device lacks -> .gpucarry/ (git-ignored)
#   device tool: run(command="bash bench/gpu_fsdp.sh", carry=[".gpucarry"], timeout_s=420)
#   bash bench/gpu_fsdp.sh --dry-run # here, on the CPU: tiny shape, two processes over gloo, DDP (FSDP needs GPUs)
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
if [ "${1:-}" = "--dry-run" ]; then
  PY=${PYTHON:-.venv/bin/python}
  export BENCH_TINY=1
  ARGS=(--examples 16 --batch 4 --processes 2 --strategy ddp)
  SCRATCH=$(mktemp -d)
else
  PY=${PYTHON:-python3}
  ARGS=(--examples 512 --batch 8 --processes 1)
  SCRATCH=/tmp/tuneloom-gpu
fi

INSTALL_WHEELS=$([ -z "${BENCH_TINY:-}" ] && echo 1 || echo 0)
. bench/gpu_env.sh

{
  echo "== bench/gpu_fsdp.sh ${1:-} $(date -u +%FT%TZ)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'accelerate', accelerate.__version__, 'cuda', torch.cuda.is_available())"
  timeout --kill-after=10 "${FSDP_LIMIT_S:-380}" $PY -m bench.fsdp "${ARGS[@]}"
  echo "== exit $?; result JSON in \$OUT (copy it to bench/results/ to keep it)"
} 2>&1 | tee "$OUT/gpu-fsdp-log.txt"
