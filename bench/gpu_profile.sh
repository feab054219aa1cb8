#!/usr/bin/env bash
# Follow-up to bench/gpu.sh on the device machine: where a training step's time goes (bench/gpu_profile.py).
#   bash bench/gpu_prepare.sh   # here, once
#   device tool: run(command="bash bench/gpu_profile.sh", carry=[".gpucarry"], timeout_s=560)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
PY=${PYTHON:-python3}
SCRATCH=/tmp/tuneloom-gpu
INSTALL_WHEELS=1
. bench/gpu_env.sh
{
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,utilization.gpu --format=csv
  echo "== smollm2-135m-random"
  timeout --kill-after=10 90 $PY -m bench.gpu_profile --model smollm2-135m-random --skip compile,trainer \
    --out "$OUT/profile-smollm2-135m-random.json"
  echo "== llama-1.1b-random"
  timeout --kill-after=10 "${PROFILE_LIMIT_S:-300}" $PY -m bench.gpu_profile --model llama-1.1b-random \
    --out "$OUT/profile-llama-1.1b-random.json"
  echo "== exit $?"
  echo "== llama-1.1b-random, batch 64 (the baseline ran out of memory there on an H200)"
  timeout --kill-after=10 150 $PY -m bench.train --model llama-1.1b-random --examples 1536 --batch 64 \
    --out "$OUT/train-llama-1.1b-random-batch64.json"
} 2>&1 | grep --line-buffered -v "Loading weights\|Writing model shards" | tee "$OUT/gpu-profile-log.txt"
