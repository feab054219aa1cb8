"""Turn validated settings into a tokenizer and a model, the one place `from_pretrained` is called."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from tuneloom.errors import SettingsError
from tuneloom.templates.settings_rules import TOKENIZER_EXTENSIONS
from tuneloom.templates.sources import resolve_model_dir, resolve_tokenizer_dir

# peft's PeftModel reads `model.is_gradient_checkpointing`, which transformers 5 deprecated with a FutureWarning
# about peft's code, not ours. Each training run is a fresh process (the worker's children do not inherit the
# CLI's quieting), so every run printed it into the server's log. Only that one warning is ignored.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def cpu_computes_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX-512 BF16 or AMX). Where it does, they
    run several times float32's rate (this project's AMD EPYC: 827 vs 197 GFLOP/s for [2048, 576] × [576,
    1536]); where it does not, bfloat16 is converted back and forth and slower than float32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so looked up with care
    return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)


def cpu_precision_hint(trainer_config: dict[str, Any], *, cuda_available: bool) -> str | None:
    """A line for a float32 run on a CPU that computes in bfloat16: how to train faster. Not the default,
    since it changes the numbers a run gives (its mean loss by under 1% in `bench.train`) and would make
    the same settings train differently on another CPU."""
    chosen = any(trainer_config.get(key) for key in ("bf16", "fp16"))
    if cuda_available or chosen or not cpu_computes_bf16():
        return None
    return (
        'This CPU computes bfloat16 in hardware: trainer_config {"bf16": true, "use_cpu": true} would train in '
        "mixed precision, about 1.6x faster (mean loss within 1% of float32's in bench/README.md)"
    )


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """`auto` means bf16 on a GPU that has it and float32 on the CPU: loaded in bfloat16, a model would also
    generate in it, and most CPUs compute bfloat16 slower than float32 (`cpu_precision_hint` for training)."""
    if name in _DTYPES:
        return _DTYPES[str(name)]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_tokenizer(model_config: dict[str, Any], tokenizer_config: dict[str, Any]) -> Any:
    from transformers import AutoTokenizer

    kwargs = {k: v for k, v in tokenizer_config.items() if k not in TOKENIZER_EXTENSIONS}  # tuneloom's own keys
    source = resolve_tokenizer_dir(model_config["pretrained_model_name_or_path"])
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    _refuse_new_tokens(source, kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


_TOKEN_KEYS = ("additional_special_tokens", *(f"{n}_token" for n in ("pad", "eos", "bos", "unk", "sep", "cls", "mask")))


def _refuse_new_tokens(source: Any, kwargs: dict[str, Any]) -> None:
    """A token the vocabulary lacks gets an id past the model's embedding rows: training would crash on it.

    tuneloom does not grow the embeddings (a LoRA version could not carry the new rows), so the
    special-token settings may only name tokens the tokenizer already has.
    """
    from transformers import AutoTokenizer

    named = {key: [v] if isinstance(v, str) else list(v) for key, v in kwargs.items() if key in _TOKEN_KEYS and v}
    if not named:
        return
    plain = AutoTokenizer.from_pretrained(source, **{k: v for k, v in kwargs.items() if k not in _TOKEN_KEYS})
    vocabulary = plain.get_vocab()
    for key, tokens in named.items():
        new = [token for token in tokens if token not in vocabulary]
        if new:
            raise SettingsError(
                f"tokenizer_config.{key} names {new[0]!r}, which is not in the model's vocabulary: the model has "
                "no embedding for it and tuneloom does not add one. Use a token the tokenizer already has "
                f"(e.g. its eos token {plain.eos_token!r}).",
                key=f"tokenizer_config.{key}",
            )


def load_model(
    model_config: dict[str, Any],
    quantization_config: dict[str, Any] | None = None,
    *,
    device: torch.device | None = None,
    source: str | None = None,
) -> Any:
    """Load the base causal LM; `source` overrides where the weights are read from (e.g. a full fine-tune)."""
    from transformers import AutoModelForCausalLM

    device = device or pick_device()
    kwargs = dict(model_config)
    name = kwargs.pop("pretrained_model_name_or_path")
    dtype = resolve_dtype(kwargs.pop("torch_dtype", None), device)
    if quantization_config:
        kwargs["quantization_config"] = build_quantization_config(quantization_config)
        kwargs.setdefault("device_map", "auto")
    model: Any = AutoModelForCausalLM.from_pretrained(source or resolve_model_dir(name), dtype=dtype, **kwargs)
    if not quantization_config:
        model.to(device)
    return model


def build_quantization_config(settings: dict[str, Any]) -> Any:
    from transformers import BitsAndBytesConfig, GPTQConfig

    if "bits" in settings:
        return GPTQConfig(**settings)
    return BitsAndBytesConfig(**settings)


def apply_peft(model: Any, peft_config: dict[str, Any]) -> Any:
    """Wrap the model with LoRA adapters; an empty peft_config means full fine-tuning."""
    if not peft_config:
        return model
    from peft import LoraConfig, get_peft_model

    config = {k: v for k, v in peft_config.items() if k != "peft_type"}
    if getattr(model, "is_quantized", False):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    return get_peft_model(model, LoraConfig(**config))
