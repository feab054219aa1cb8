#!/usr/bin/env bash
# Follow-up to bench/gpu.sh on the device machine: where a training step's time goes (bench/gpu_profile.py),
# what tuneloom's own run gains with torch_compile (bench.train --compile), why batched decode steps are
# slower (bench.decode_batches), and batch 64.
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
  echo "== llama-1.1b-random"
  timeout --kill-after=5 "${PROFILE_LIMIT_S:-170}" $PY -m bench.gpu_profile --model llama-1.1b-random \
    --skip trainer --out "$OUT/profile-llama-1.1b-random.json"
  echo "== exit $?"
  echo "== llama-1.1b-random: baseline vs tuneloom vs tuneloom with trainer_config.torch_compile"
  timeout --kill-after=5 175 $PY -m bench.train --model llama-1.1b-random --examples 768 --batch 16 --compile \
    --limit-s 160 --out "$OUT/train-llama-1.1b-random-compile.json"  # a slow compile still leaves the figures
  echo "== exit $?"
  echo "== llama-1.1b-random: decode step at batch 1, 8, 32 (16 vs 78 ms per step at 1 and 32 on an H200)"
  timeout --kill-after=5 50 $PY -m bench.decode_batches --model llama-1.1b-random \
    --out "$OUT/decode-batches-llama-1.1b-random.json"
  echo "== llama-1.1b-random, batch 64 (the baseline ran out of memory there on an H200)"
  timeout --kill-after=5 110 $PY -m bench.train --model llama-1.1b-random --examples 1536 --batch 64 \
    --out "$OUT/train-llama-1.1b-random-batch64.json"
} 2>&1 | grep --line-buffered -v "Loading weights\|Writing model shards" | tee "$OUT/gpu-profile-log.txt"
