"""vLLM decode vs `model.generate` on one model, and tuneloom's vLLM backend on a LoRA version of it.

Needs vLLM and a CUDA GPU (`bench/gpu.sh` runs it only where `import vllm` works). Same prompts,
greedy, the same max new tokens, one process, one after the other:
- `baseline`: `model.generate`, one request at a time (batch 1), over `--one-at-a-time` prompts;
- `vllm_single`: `vllm.LLM.generate`, one prompt per call (batch-1 decode), same prompts;
- `vllm_concurrent`: `vllm.LLM.generate` with all `--requests` prompts at once;
- `backend_concurrent`: tuneloom's server backend (`VllmInference`), `--requests` predictions in
  flight together on a random-weight LoRA adapter of the model (one engine, the adapter per
  request) — the path `tuneloom serve --backend vllm` takes; `backend_ttft_s`: its first streamed piece.
Each vLLM engine gets a third of the GPU's memory, so the plain engine and the backend's fit together.

    python -m bench.vllm_decode --model llama-1.1b-random --requests 32 --one-at-a-time 8 --max-tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    MODEL_TEMPLATES,
    RESULTS_DIR,
    device_name,
    device_tag,
    model_settings,
    print_table,
    write_result,
)
from bench.generate import bandwidth_floor, one_at_a_time, prompts, timed

GPU_SHARE = 0.3
LABELS = {
    "baseline": "model.generate, one at a time (batch 1)",
    "vllm_single": "vLLM, one prompt per call (batch 1)",
    "vllm_concurrent": "vLLM, {requests} prompts at once",
    "backend_concurrent": "tuneloom vLLM backend, {requests} LoRA predictions in flight",
}


def vllm_runs(model_dir: str, texts: list[str], single: list[str], max_tokens: int) -> dict[str, Any]:
    """Batch-1 and all-at-once decode on a plain vLLM engine (no LoRA), after a warm-up call."""
    import vllm

    llm = vllm.LLM(model=model_dir, dtype="bfloat16", gpu_memory_utilization=GPU_SHARE, seed=0)
    greedy = vllm.SamplingParams(max_tokens=max_tokens, temperature=0.0)

    def run(batch: list[str]) -> int:
        outputs = llm.generate(batch, greedy, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outputs)

    run(texts[:2])
    return {
        "vllm_single": timed(lambda: sum(run([t]) for t in single)),
        "vllm_concurrent": timed(lambda: run(texts)),
    }


def base_dir(model: str, settings: dict[str, Any]) -> str:
    """The folder (or Hub id) of the base model, as tuneloom resolves it for training and serving."""
    from tuneloom.templates import resolve_settings
    from tuneloom.templates.sources import resolve_model_dir

    name = resolve_settings(MODEL_TEMPLATES[model], settings).model_config["pretrained_model_name_or_path"]
    return resolve_model_dir(str(name))


def write_lora_version(loaded: Any, model: str, out: Path) -> Path:
    """A model version folder as training leaves it: a random LoRA adapter (r=16, q/v) on the model."""
    from peft import LoraConfig, get_peft_model

    from tuneloom.generate.loading import UNTRAINED_FORMAT
    from tuneloom.model_version import finalize
    from tuneloom.templates import resolve_settings

    staging = out.with_name(out.name + ".staging")
    peft_model = get_peft_model(
        loaded.model, LoraConfig(r=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft_model.save_pretrained(staging / "adapter")
    loaded.tokenizer.save_pretrained(staging / "tokenizer")
    settings = resolve_settings(MODEL_TEMPLATES[model], model_settings(model)).to_dict()
    manifest = {"template": MODEL_TEMPLATES[model], "weights": "adapter", "settings": settings}
    return finalize(staging, out, {**manifest, "prompt_format": UNTRAINED_FORMAT.to_dict()}).path


async def backend_runs(version: Path, texts: list[str], max_tokens: int) -> dict[str, Any]:
    """`requests` predictions in flight on the server's vLLM backend, then one stream's time to first piece."""
    from tuneloom.generate.params import InferenceParams
    from tuneloom.generate.vllm_engine import EngineConfig
    from tuneloom.server.vllm_inference import VllmInference

    service = VllmInference(EngineConfig(gpu_memory_utilization=GPU_SHARE))
    params = InferenceParams(max_tokens=max_tokens)
    await service.predict("bench", version, texts[:2], InferenceParams(max_tokens=4))  # starts the engine
    started = time.perf_counter()
    results = await asyncio.gather(*(service.predict("bench", version, [t], params) for t in texts))
    elapsed = time.perf_counter() - started
    tokens = sum(r[0].generation.tokens for r in results)
    started = time.perf_counter()
    stream = await service.stream("bench", version, texts[0], params)
    async for _ in stream:
        break
    ttft = time.perf_counter() - started
    stream.cancel()
    return {
        "backend_concurrent": {"seconds": elapsed, "new_tokens": tokens, "tokens_per_s": tokens / elapsed},
        "backend_ttft_s": ttft,
        "backend_sample": results[0][0].generation.text[:80],
    }


def table_rows(figures: dict[str, Any]) -> list[list[str]]:
    base = figures["baseline"]["tokens_per_s"]
    floor = figures["bandwidth"]["floor_tokens_per_s"]
    rows = []
    for key, label in LABELS.items():
        run = figures.get(key)
        if run is None:
            continue
        of_floor = f"{run['tokens_per_s'] / floor:.1%}" if floor and key in ("baseline", "vllm_single") else ""
        ratio = f"{run['tokens_per_s'] / base:.2f}×"
        rows.append([label.format(**figures), f"{run['tokens_per_s']:.1f}", str(run["new_tokens"]), ratio, of_floor])
    rows.append(
        ["tuneloom vLLM backend, time to first piece", f"{figures['backend_ttft_s'] * 1000:.0f} ms", "", "", ""]
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODEL_TEMPLATES), default="llama-1.1b-random")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--one-at-a-time", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import torch

    from tuneloom.generate.loading import load_for_inference

    settings = model_settings(args.model)
    loaded = load_for_inference(MODEL_TEMPLATES[args.model], settings)
    texts = prompts(args.requests)
    single = texts[: args.one_at_a_time]
    one_at_a_time(loaded, texts[:1], 4)  # warm-up
    figures: dict[str, Any] = {"model": args.model, "requests": args.requests, "max_tokens": args.max_tokens}
    figures["baseline"] = timed(lambda: one_at_a_time(loaded, single, args.max_tokens))
    figures["bandwidth"] = bandwidth_floor(loaded.model)
    model_dir = base_dir(args.model, settings)
    with tempfile.TemporaryDirectory() as scratch:
        version = write_lora_version(loaded, args.model, Path(scratch) / "version")
        loaded.model = None  # the vLLM engines get its GPU memory
        gc.collect()
        torch.cuda.empty_cache()
        figures.update(vllm_runs(str(model_dir), texts, single, args.max_tokens))
        figures.update(asyncio.run(backend_runs(version, texts, args.max_tokens)))
    print_table(
        f"vLLM decode, {args.model}, ≤{args.max_tokens} new tokens, greedy ({device_name()})",
        ["run", "output tokens/s", "new tokens", "× model.generate", "of floor"],
        table_rows(figures),
    )
    out = args.out or RESULTS_DIR / f"vllm-{args.model}-{device_tag()}.json"
    write_result(
        out,
        benchmark="vllm_decode",
        figures=figures,
        device=device_name(),
        libraries=("tuneloom", "torch", "transformers", "vllm"),
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
