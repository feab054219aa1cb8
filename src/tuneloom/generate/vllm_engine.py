"""vLLM as the generation engine: what to load for a model version, and tuneloom's parameters in vLLM's terms.

A LoRA model version is served on its base model: one vLLM engine per base (loaded once), the
version's adapter named per request by a `LoRARequest`. A full fine-tune is its own model, so its
own engine. Prompts are rendered exactly as the transformers path renders them (the version's
stored prompt format), and the same stop rules apply: `###`, the request's stop strings, and the
EOS token of the version's own tokenizer.

vLLM is an optional extra (`pip install 'tuneloom[vllm]'`, pinned to `VLLM_REQUIREMENT`, the latest
release when this was written) that needs an NVIDIA GPU, so it is imported only inside the functions
that build its objects. The calls follow vLLM's v1 engine API as read from its source and docs
(`AsyncEngineArgs`, `AsyncLLMEngine.from_engine_args` = `AsyncLLM`, `generate(prompt, params,
request_id, lora_request=…)`, `SamplingParams` with `output_kind`, `LoRARequest`, the allowed
`max_lora_rank` values); this repository's tests check them against a stand-in module only — the
real engine runs in `bench/gpu.sh` on a machine that has vLLM, and has not run yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloom.errors import ConflictError, SettingsError
from tuneloom.generate.generator import stop_strings
from tuneloom.generate.params import InferenceParams
from tuneloom.model_version import open_version
from tuneloom.templates.prompting import PromptFormat

VLLM_REQUIREMENT = "vllm==0.33.0"
INSTALL_HINT = "pip install 'tuneloom[vllm]'"
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM accepts for max_lora_rank
DEFAULT_LORA_RANK = 64  # an engine holds adapters up to this rank (more if the first adapter needs it)


@dataclass(frozen=True)
class EngineConfig:
    """Engine-wide settings; one engine occupies `gpu_memory_utilization` of the GPU (weights + KV cache)."""

    gpu_memory_utilization: float = 0.85
    max_loras: int = 8  # adapters resident on the GPU at once (vLLM swaps others in from CPU memory)
    max_lora_rank: int = DEFAULT_LORA_RANK


@dataclass(frozen=True)
class ServingPlan:
    """How one model version is served: which engine (model + tokenizer) and which adapter on it."""

    engine_key: str  # versions with equal keys share one engine
    model: str  # what vLLM loads: a local folder or a Hub id
    tokenizer: str
    dtype: str
    quantization: str | None
    adapter_dir: Path | None  # None: a full fine-tune, the engine's own weights
    adapter_rank: int | None
    prompt_format: PromptFormat
    tokenizer_key: str = ""  # equal for versions whose tokenizer files are identical (one loaded copy serves all)


def plan_version(path: Path, *, label: str | None = None) -> ServingPlan:
    """Read (and verify) a model-version directory and decide how vLLM serves it; `label` names it in errors."""
    from tuneloom.templates.sources import resolve_model_dir

    version = open_version(path, label=label)
    settings = version.settings
    model_config = settings["model_config"]
    dtype = str(model_config.get("torch_dtype") or "auto").removeprefix("torch.")
    quantization = "bitsandbytes" if _is_bitsandbytes(settings.get("quantization_config") or {}) else None
    prompt_format = PromptFormat.from_dict(version.prompt_format)
    files = version.manifest.get("files", {})
    checksums = sorted((n, h) for n, h in files.items() if n.startswith("tokenizer/"))
    tokenizer_key = json.dumps(checksums) if checksums else str(path / "tokenizer")
    if not version.is_adapter:
        weights = str(version.weights_dir)
        tokenizer = str(path / "tokenizer")
        return ServingPlan(weights, weights, tokenizer, dtype, quantization, None, None, prompt_format, tokenizer_key)
    base = resolve_model_dir(str(model_config["pretrained_model_name_or_path"]))
    rank = adapter_rank(version.weights_dir)
    key = f"{base}|{dtype}|{quantization or ''}"
    return ServingPlan(key, base, base, dtype, quantization, version.weights_dir, rank, prompt_format, tokenizer_key)


def adapter_rank(adapter_dir: Path) -> int:
    """The LoRA rank `r` from peft's adapter_config.json (rank_pattern entries count too)."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    ranks = [int(config.get("r", 8)), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    return max(ranks)


def engine_rank(config: EngineConfig, first_adapter_rank: int | None) -> int:
    """The max_lora_rank to start an engine with: the configured one, raised to fit its first adapter."""
    wanted = max(config.max_lora_rank, first_adapter_rank or 0)
    fitting = [r for r in LORA_RANKS if r >= wanted]
    if not fitting:
        raise SettingsError(
            f"LoRA rank {wanted} is above vLLM's largest max_lora_rank ({LORA_RANKS[-1]})", key="peft_config.r"
        )
    return fitting[0]


def check_adapter_fits(plan: ServingPlan, rank_limit: int) -> None:
    """An adapter above the running engine's max_lora_rank cannot be loaded on it: say so, with the fix."""
    if plan.adapter_rank is not None and plan.adapter_rank > rank_limit:
        raise ConflictError(
            f"this model version's LoRA rank is {plan.adapter_rank}, above the max_lora_rank {rank_limit} the vLLM "
            f"engine for base '{plan.model}' was started with; restart the server so that this version is the first "
            "served on that base, or serve it with --backend transformers"
        )


def engine_kwargs(plan: ServingPlan, config: EngineConfig) -> dict[str, Any]:
    """`AsyncEngineArgs` for the engine a plan needs (LoRA enabled exactly for adapter versions)."""
    kwargs: dict[str, Any] = {
        "model": plan.model,
        "tokenizer": plan.tokenizer,
        "dtype": plan.dtype,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "trust_remote_code": False,
    }
    if plan.quantization:
        kwargs["quantization"] = plan.quantization
    if plan.adapter_dir is not None:
        kwargs.update(
            enable_lora=True, max_loras=config.max_loras, max_lora_rank=engine_rank(config, plan.adapter_rank)
        )
    return kwargs


def sampling_kwargs(params: InferenceParams, eos_token_id: int | None) -> dict[str, Any]:
    """tuneloom's inference parameters as `SamplingParams` fields, with transformers' meaning kept.

    Greedy (temperature 0, or do_sample false) is vLLM's temperature 0; sampling knobs apply only
    when sampling, as in `generate`. A seed is vLLM's per-request `seed` (a generator of the request's
    own, as in the transformers batch). Stop strings are `###` plus the request's; the version's EOS
    token ends generation even when it is not the base model's.
    """
    if params.num_beams > 1:
        raise SettingsError(
            "inference parameter 'num_beams' must be 1 on the vLLM backend (it does not run beam search in "
            "generation requests); use the transformers backend for beam search",
            key="num_beams",
        )
    kwargs: dict[str, Any] = {"max_tokens": params.max_tokens, "stop": stop_strings(params), "n": 1}
    if params.sampling and params.temperature > 0:  # sampling at temperature 0 is greedy on transformers too
        kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
        if params.seed is not None:
            kwargs["seed"] = params.seed
    else:
        kwargs.update(temperature=0.0, top_p=1.0, top_k=0)
    if eos_token_id is not None:
        kwargs["stop_token_ids"] = [eos_token_id]
    return kwargs


def sampling_params(params: InferenceParams, eos_token_id: int | None, *, stream: bool) -> Any:
    """A `vllm.SamplingParams`: text deltas when streaming, only the final output otherwise."""
    import vllm
    from vllm.sampling_params import RequestOutputKind

    kind = RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY
    return vllm.SamplingParams(**sampling_kwargs(params, eos_token_id), output_kind=kind)


def lora_request(name: str, int_id: int, adapter_dir: Path) -> Any:
    from vllm.lora.request import LoRARequest

    return LoRARequest(lora_name=name, lora_int_id=int_id, lora_path=str(adapter_dir))


def request_errors() -> tuple[type[BaseException], ...]:
    """What vLLM raises for a request it refuses (too long a prompt…): ValueError, or from 0.27 VLLMClientError."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:
        return (ValueError,)
    return (ValueError, VLLMClientError)


def start_engine(kwargs: dict[str, Any]) -> Any:
    """Build an `AsyncLLMEngine` (blocking, minutes for a large model: call it from a worker thread)."""
    import vllm

    return vllm.AsyncLLMEngine.from_engine_args(vllm.AsyncEngineArgs(**kwargs))


def _is_bitsandbytes(quantization_config: dict[str, Any]) -> bool:
    return bool(quantization_config.get("load_in_4bit") or quantization_config.get("load_in_8bit"))
