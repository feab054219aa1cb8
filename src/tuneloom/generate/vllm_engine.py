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
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tuneloom.errors import ConflictError, SettingsError
from tuneloom.generate.detokenize import DecodedText
from tuneloom.generate.generator import finish_generation, prompt_text
from tuneloom.generate.logprobs import Reported, added_tokens, scored_tokens, token_logprob
from tuneloom.generate.params import InferenceParams
from tuneloom.generate.results import Generation, Prompt, TokenLogprob
from tuneloom.generate.stops import VisibleText, stop_strings
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
        "logprobs_mode": "processed_logprobs",  # a generated token's: of the distribution drawn from, as transformers
    }
    if plan.quantization:
        kwargs["quantization"] = plan.quantization
    if plan.adapter_dir is not None:
        kwargs.update(
            enable_lora=True, max_loras=config.max_loras, max_lora_rank=engine_rank(config, plan.adapter_rank)
        )
    return kwargs


def sampling_kwargs(
    params: InferenceParams,
    eos_token_id: int | None,
    *,
    logprobs: int | None = None,
    prompt_logprobs: int | None = None,
) -> dict[str, Any]:
    """tuneloom's inference parameters as `SamplingParams` fields, with transformers' meaning kept.

    Greedy (temperature 0, or do_sample false) is vLLM's temperature 0; sampling knobs apply only
    when sampling, as in `generate`. A seed is vLLM's per-request `seed` (a generator of the request's
    own, as in the transformers batch). Stop strings are `###` plus the request's; the version's EOS
    token ends generation even when it is not the base model's. The repetition controls are vLLM's own,
    with the same meaning, greedy or not (`penalty_kwargs`); an unset `repetition_penalty` is vLLM's
    default, 1.0: its engine reads no generation-config defaults. `logprobs` and `prompt_logprobs` are
    vLLM's own (each generated token's, and each prompt token's from the model's raw distribution, with that
    many alternatives); max_tokens 0 (the prompt alone) asks vLLM for one token, which `generation_of` drops,
    as vLLM's own server does for echo with max_tokens 0.
    """
    if params.num_beams > 1:
        raise SettingsError(
            "inference parameter 'num_beams' must be 1 on the vLLM backend (it does not run beam search in "
            "generation requests); use the transformers backend for beam search",
            key="num_beams",
        )
    kwargs: dict[str, Any] = {"max_tokens": max(params.max_tokens, 1), "stop": stop_strings(params), "n": 1}
    kwargs.update(penalty_kwargs(params))
    asked = {"logprobs": logprobs, "prompt_logprobs": prompt_logprobs}
    kwargs.update({name: n for name, n in asked.items() if n is not None})
    if params.sampling and params.temperature > 0:  # sampling at temperature 0 is greedy on transformers too
        kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
        if params.seed is not None:
            kwargs["seed"] = params.seed
    else:
        kwargs.update(temperature=0.0, top_p=1.0, top_k=0)
    if eos_token_id is not None:
        kwargs["stop_token_ids"] = [eos_token_id]
    return kwargs


def penalty_kwargs(params: InferenceParams) -> dict[str, float]:
    """The repetition controls that change anything, under vLLM's names (the same as tuneloom's)."""
    given = {
        "repetition_penalty": params.repetition_penalty,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
    }
    neutral = {"repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
    return {name: value for name, value in given.items() if value is not None and value != neutral[name]}


def sampling_params(params: InferenceParams, eos_token_id: int | None, *, stream: bool, **logprobs: int | None) -> Any:
    """A `vllm.SamplingParams`: text deltas when streaming, only the final output otherwise (`logprobs`: the
    `logprobs` and `prompt_logprobs` of `sampling_kwargs`)."""
    import vllm
    from vllm.sampling_params import RequestOutputKind

    kind = RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY
    return vllm.SamplingParams(**sampling_kwargs(params, eos_token_id, **logprobs), output_kind=kind)


def generation_of(
    final: Any,
    prompt: Prompt,
    params: InferenceParams,
    tokenizer: Any,
    logprobs: int | None,
    prompt_logprobs: int | None,
) -> Generation:
    """A finished vLLM `RequestOutput` as the transformers path's `Generation` (text cut and trimmed alike), with
    its tokens' log-probabilities where asked for: vLLM's, each generated token's with its `logprobs` best
    alternatives (EOS, which ends the text, has none, as on transformers) and the prompt's tokens'."""
    completion, text = final.outputs[0], prompt_text(tokenizer, prompt)
    if params.max_tokens == 0:  # the prompt alone: the one token vLLM had to generate is not part of the answer
        generation = finish_generation(text, "", 0, False, params)
        ids, entries = [], []
    else:
        ended = completion.finish_reason == "stop"  # EOS, a stop string or the stop token
        generation = finish_generation(text, completion.text, len(completion.token_ids), ended, params)
        ids, entries = list(completion.token_ids), list(completion.logprobs or [])
    scored = None if prompt_logprobs is None else _scored(tokenizer, final, prompt, prompt_logprobs)
    generated = None if logprobs is None else _generated(tokenizer, ids, entries, logprobs)
    return replace(generation, logprobs=generated, prompt_logprobs=scored)


def _scored(tokenizer: Any, final: Any, prompt: Prompt, n: int) -> tuple[TokenLogprob, ...]:
    """The prompt's tokens as vLLM read them, with its `prompt_logprobs` (None for the first)."""
    ids = list(final.prompt_token_ids)
    entries = list(final.prompt_logprobs)
    reported = [_reported(e, t, n) if e else None for t, e in zip(ids, entries, strict=True)]
    return scored_tokens(tokenizer, ids, reported, added_tokens(tokenizer, prompt, ids))


def _generated(tokenizer: Any, ids: list[int], entries: list[Any], n: int) -> tuple[TokenLogprob, ...]:
    """The generated tokens up to EOS with their log-probabilities, each at its offset in the completion as the
    transformers path reports it (`VisibleText.offset` of the text of the tokens before it)."""
    tokens, decoded, shown = [], DecodedText(tokenizer), VisibleText([])
    for token, entry in zip(ids, entries, strict=True):
        if token == tokenizer.eos_token_id:
            break
        tokens.append(token_logprob(tokenizer, token, _reported(entry, token, n), shown.offset()))
        unchanged = decoded.add(token)
        shown.update(decoded.text, unchanged)
    return tuple(tokens)


def _reported(entry: dict[int, Any], token: int, n: int) -> Reported:
    """vLLM's `{token id: Logprob(logprob, rank)}` at one place (the token, and the best `n` by rank) as tuneloom's;
    a token its top-k / top-p dropped (-inf) is no alternative."""
    ranked = sorted((e.rank, t, e.logprob) for t, e in entry.items() if e.rank is not None and e.logprob > -math.inf)
    return entry[token].logprob, [(t, logprob) for rank, t, logprob in ranked if rank <= n]


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
