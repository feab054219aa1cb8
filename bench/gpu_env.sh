# Sourced by bench/gpu.sh and bench/gpu_fsdp.sh: the carried wheels and the environment every step
# runs in. Expects PY (the Python to use), SCRATCH (a scratch folder) and INSTALL_WHEELS (1 on the
# device machine, 0 for a CPU dry run, which uses the checkout's own virtualenv).
SITE=$SCRATCH/site
if [ "$INSTALL_WHEELS" = 1 ]; then
  for wheel in .gpucarry/*.whl; do  # one at a time: a wheel that does not fit this Python leaves the others in
    [ -e "$wheel" ] || { echo "WARNING: no .gpucarry/*.whl (run bench/gpu_prepare.sh, carry .gpucarry)"; break; }
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$wheel" \
      || echo "WARNING: $wheel did not install; the machine's own package is used"
  done
fi
# Steps may start new Python processes (accelerate's ranks): they find tuneloom and the carried
# wheels through PYTHONPATH.
export PYTHONPATH="$SITE:$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export TUNELOOM_CACHE=$SCRATCH/cache BENCH_MODELS=$SCRATCH/models BENCH_RESULTS=$OUT
