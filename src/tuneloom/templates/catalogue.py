"""The template catalogue: which base model a model version starts from, and its default settings.

A template is plain data. Its five settings dictionaries have the same names and meaning as in the
hosted product (each is passed as keyword arguments to the class it feeds); users override any key.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from tuneloom.errors import SettingsError

SETTING_NAMES = ("model_config", "quantization_config", "peft_config", "tokenizer_config", "trainer_config")

# Model names tuneloom can provide without the Hugging Face Hub (see tuneloom.templates.sources).
TINY_RANDOM = "tuneloom/tiny-random"
SMOLLM2_135M = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class Template:
    id: str
    description: str
    parameters: str  # human-readable size of the base model, e.g. "135M"
    defaults: dict[str, dict[str, Any]]
    aliases: tuple[str, ...] = ()
    requires_gpu: bool = False
    offline: bool = False  # base weights obtainable without the Hub
    tags: tuple[str, ...] = field(default=())

    @property
    def base_model(self) -> str:
        return str(self.defaults["model_config"]["pretrained_model_name_or_path"])

    def default_settings(self) -> dict[str, dict[str, Any]]:
        """A deep copy, so callers can merge into it freely."""
        return copy.deepcopy(self.defaults)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "description": self.description,
            "parameters": self.parameters,
            "base_model": self.base_model,
            "aliases": list(self.aliases),
            "requires_gpu": self.requires_gpu,
            "offline": self.offline,
            "task": "text-to-text",
        }


def _lora(r: int, alpha: int, targets: list[str], dropout: float = 0.05) -> dict[str, Any]:
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": targets,
    }


def _trainer(epochs: float, lr: float, batch: int, **extra: Any) -> dict[str, Any]:
    return {
        "num_train_epochs": epochs,
        "learning_rate": lr,
        "per_device_train_batch_size": batch,
        "per_device_eval_batch_size": batch,
        "warmup_steps": 0,
        "lr_scheduler_type": "linear",
        "weight_decay": 0.0,
        "logging_steps": 1,
        "seed": 42,
        **extra,
    }


def _settings(
    model: str,
    *,
    max_length: int,
    peft: dict[str, Any],
    trainer: dict[str, Any],
    dtype: str = "auto",
    quantization: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    return {
        "model_config": {"pretrained_model_name_or_path": model, "torch_dtype": dtype},
        "quantization_config": quantization or {},
        "peft_config": peft,
        "tokenizer_config": {"model_max_length": max_length},
        "trainer_config": trainer,
    }


_LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
_GPTQ = {"bits": 4, "use_exllama": False}


def _gptq_template(
    id: str, alias: str, model: str, description: str, parameters: str, *, batch: int = 4, **extra: Any
) -> Template:
    """The hosted product's GPTQ-LoRA recipe: 4-bit weights, fp16 compute, LoRA r16 (GPU only)."""
    targets = extra.pop("targets", ["q_proj", "v_proj"])
    return Template(
        id=id,
        description=description,
        parameters=parameters,
        aliases=(alias,),
        requires_gpu=True,
        defaults=_settings(
            model,
            max_length=extra.pop("max_length", 1024),
            dtype="float16",
            quantization=dict(_GPTQ),
            peft=_lora(16, 16, targets, dropout=extra.pop("dropout", 0.1)),
            trainer=_trainer(1, 2e-4, batch),
        ),
        **extra,
    )


TEMPLATES: tuple[Template, ...] = (
    Template(
        id="smollm2-135m-instruct-lora",
        description="SmolLM2-135M-Instruct with LoRA: the offline default, trains on a laptop CPU in minutes.",
        parameters="135M",
        defaults=_settings(
            SMOLLM2_135M,
            max_length=512,
            dtype="float32",
            peft=_lora(16, 32, _LLAMA_TARGETS),
            trainer=_trainer(3, 1e-3, 8),
        ),
        offline=True,
        tags=("recommended-cpu",),
    ),
    Template(
        id="tiny-random",
        description="A few-hundred-thousand-parameter Llama-shaped model with random weights, for tests.",
        parameters="0.4M",
        defaults=_settings(
            TINY_RANDOM,
            max_length=256,
            dtype="float32",
            peft=_lora(8, 16, _LLAMA_TARGETS, dropout=0.0),
            trainer=_trainer(1, 1e-2, 8),
        ),
        offline=True,
        tags=("testing",),
    ),
    Template(
        id="gpt-neo-125m-lora",
        description="EleutherAI GPT-Neo 125M with LoRA.",
        parameters="125M",
        aliases=("HF_GPTNeo_125m_lora",),
        defaults=_settings(
            "EleutherAI/gpt-neo-125m",
            max_length=512,
            peft=_lora(16, 32, ["q_proj", "v_proj"]),
            trainer=_trainer(3, 2e-4, 8),
        ),
    ),
    Template(
        id="gpt-neo-2.7b-lora",
        description="EleutherAI GPT-Neo 2.7B with LoRA.",
        parameters="2.7B",
        aliases=("HF_GPTNeo_2p7b_lora",),
        defaults=_settings(
            "EleutherAI/gpt-neo-2.7B",
            max_length=512,
            peft=_lora(16, 32, ["q_proj", "v_proj"]),
            trainer=_trainer(2, 2e-4, 4),
        ),
    ),
    _gptq_template(
        "llama-2-7b-chat-gptq-lora",
        "HF_Llama_2_7b_chat_GPTQ_lora",
        "TheBloke/Llama-2-7B-Chat-GPTQ",
        "Llama-2 7B chat, 4-bit GPTQ weights, LoRA adapters in 16-bit (GPU only).",
        "7B",
    ),
    _gptq_template(
        "llama-2-13b-chat-gptq-lora",
        "HF_Llama_2_13b_chat_GPTQ_lora",
        "TheBloke/Llama-2-13B-chat-GPTQ",
        "Llama-2 13B chat, 4-bit GPTQ weights, LoRA adapters in 16-bit (GPU only).",
        "13B",
        batch=2,
    ),
    _gptq_template(
        "mistral-7b-instruct-gptq-lora",
        "HF_Mistral_7b_instruct_GPTQ_lora",
        "TheBloke/Mistral-7B-Instruct-v0.2-GPTQ",
        "Mistral 7B Instruct v0.2, 4-bit GPTQ weights, LoRA adapters (GPU only).",
        "7B",
    ),
    Template(
        id="mistral-7b-lora",
        description="Mistral 7B Instruct v0.2 in bf16 with LoRA (a GPU with ≥ 24 GB recommended).",
        parameters="7B",
        aliases=("HF_Mistral_7b_lora",),
        defaults=_settings(
            "mistralai/Mistral-7B-Instruct-v0.2",
            max_length=1024,
            dtype="bfloat16",
            peft=_lora(16, 32, _LLAMA_TARGETS),
            trainer=_trainer(1, 1e-4, 4),
        ),
    ),
    _gptq_template(
        "llama-3.1-8b-instruct-gptq-lora",
        "HF_Llama_3_1_8b_instruct_GPTQ_lora",
        "hugging-quants/Meta-Llama-3.1-8B-Instruct-GPTQ-INT4",
        "Llama-3.1 8B Instruct, 4-bit GPTQ weights, LoRA adapters (GPU only; recommended on GPU).",
        "8B",
        max_length=2048,
        dropout=0.05,
        targets=_LLAMA_TARGETS,
        tags=("recommended-gpu",),
    ),
    Template(
        id="advanced",
        description="Any causal language model named in model_config (a Hub id or a local directory).",
        parameters="any",
        aliases=("HuggingFace_AdvancedConfig",),
        defaults=_settings(
            "facebook/opt-125m",
            max_length=512,
            peft=_lora(16, 32, ["q_proj", "v_proj"]),
            trainer=_trainer(3, 2e-4, 8),
        ),
    ),
)

_BY_NAME: dict[str, Template] = {}
for _t in TEMPLATES:
    for _name in (_t.id, *_t.aliases):
        _BY_NAME[_name.lower()] = _t

DEFAULT_TEMPLATE = "smollm2-135m-instruct-lora"


def get_template(template_id: str) -> Template:
    """Look a template up by id or by the hosted product's alias (case-insensitive)."""
    try:
        return _BY_NAME[template_id.strip().lower()]
    except KeyError:
        import difflib

        known = [t.id for t in TEMPLATES]
        near = difflib.get_close_matches(template_id.lower(), list(_BY_NAME), n=1, cutoff=0.4)
        hint = f" Did you mean '{_BY_NAME[near[0]].id}'?" if near else ""
        raise SettingsError(
            f"Unknown template '{template_id}'.{hint} Known templates: {', '.join(known)}.", key="template"
        ) from None
