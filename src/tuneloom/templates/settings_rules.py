"""The rules the five training-settings dictionaries must follow, as tables.

Everything here is data: which keys are refused and why, which numbers must stay in which range,
which spellings are accepted. The engine that applies these tables is `settings_fields`; the public
API is `settings`. Keys are addressed by dotted path (`trainer_config.learning_rate`).

tuneloom's own keys (not fields of the Hugging Face classes; the training code pops them before it
calls those classes, using the constants below):

| setting          | key              | type            | default | meaning                               |
|------------------|------------------|-----------------|---------|---------------------------------------|
| trainer_config   | train_on_prompt  | bool            | false   | also put the loss on prompt tokens    |
| trainer_config   | packing          | bool            | true    | padding-free packed batches           |
| trainer_config   | eval_fraction    | 0 ≤ x < 0.5     | 0.1     | held-out share without a validation file |
| tokenizer_config | response_headers | list of strings | (below) | sections whose content is the completion |

`response_headers` defaults to `tuneloom.data.sections.RESPONSE_HEADERS` (assistant, response,
output, answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tuneloom.data.sections import RESPONSE_HEADERS

TRAINER_EXTENSIONS: dict[str, Any] = {"train_on_prompt": False, "packing": True, "eval_fraction": 0.1}
TOKENIZER_EXTENSIONS: dict[str, Any] = {"response_headers": list(RESPONSE_HEADERS)}
EXTENSIONS: dict[str, dict[str, Any]] = {
    "trainer_config": TRAINER_EXTENSIONS,
    "tokenizer_config": TOKENIZER_EXTENSIONS,
}

# A setting given as an empty object means "none" only where "none" is a meaningful choice: no
# adapter (full fine-tuning) or no quantization. Elsewhere `{}` merges nothing, like any dict.
CLEARED_BY_EMPTY = frozenset({"peft_config", "quantization_config"})


# JSON's value kinds, by Python type (bool before int matters only for isinstance; this is exact).
JSON_KINDS: dict[type, str] = {
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    list: "list",
    dict: "dict",
    type(None): "null",
}


def kind_of(value: Any) -> str:
    return JSON_KINDS.get(type(value), "other")


@dataclass(frozen=True)
class Field:
    """What JSON a key accepts: kinds among bool/int/float/str/list/dict/null/any."""

    kinds: frozenset[str]
    choices: tuple[str, ...] = ()  # accepted strings (matched case-insensitively); empty = any
    items: frozenset[str] = frozenset()  # kinds of list items, when known


def field(*kinds: str, choices: Sequence[str] = (), items: Sequence[str] = ()) -> Field:
    return Field(frozenset(kinds), tuple(choices), frozenset(items))


BOOL, INT, FLOAT, STR, DICT = field("bool"), field("int"), field("float"), field("str"), field("dict")
STR_LIST = field("list", items=("str",))


@dataclass(frozen=True)
class Range:
    """A closed or open numeric interval, plus isolated values (max_steps = -1 means "no limit")."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    also: tuple[float, ...] = ()

    def contains(self, x: float) -> bool:
        if x in self.also:
            return True
        above = self.lo is None or (x > self.lo if self.lo_open else x >= self.lo)
        below = self.hi is None or (x < self.hi if self.hi_open else x <= self.hi)
        return above and below

    def describe(self) -> str:
        if self.lo is not None and self.hi is not None and not (self.lo_open or self.hi_open):
            text = f"between {_num(self.lo)} and {_num(self.hi)}"
            return f"{' or '.join(_num(v) for v in self.also)} or {text}" if self.also else text
        parts = []
        if self.lo is not None:
            parts.append(f"{'greater than' if self.lo_open else 'at least'} {_num(self.lo)}")
        if self.hi is not None:
            parts.append(f"{'less than' if self.hi_open else 'at most'} {_num(self.hi)}")
        text = " and ".join(parts)
        return f"{' or '.join(_num(v) for v in self.also)} or {text}" if self.also else text


def _num(x: float) -> str:
    return f"{x:,.0f}".replace(",", "_") if float(x).is_integer() and abs(x) >= 10_000 else f"{x:g}"


ESCAPE = "would let a settings dict escape the platform"
_CODE = f"it runs code that comes with the model, which {ESCAPE}"
_PATH = f"it names a file or directory on the server, which {ESCAPE}; tuneloom decides where files go"
_CREDENTIAL = f"credentials come from the server's environment; a token in settings {ESCAPE}"
_HUB = f"it uploads to the Hugging Face Hub, which {ESCAPE}"
_SERVER = f"it reaches into the server process (its code or environment), which {ESCAPE}"
_NETWORK = f"it routes downloads through another host, which {ESCAPE}"
_DISTRIBUTED = (
    f"tuneloom trains in one process; distributed-launch settings open network connections or read "
    f"config files, which {ESCAPE}"
)
REMOTE_LOGGING = f"it sends training logs to an outside service, which {ESCAPE} unless the server allows it"

# Refused in every setting, by exact name or by prefix.
REFUSED_KEYS: dict[str, str] = {
    "trust_remote_code": _CODE,
    "code_revision": _CODE,
    "token": _CREDENTIAL,
    "use_auth_token": _CREDENTIAL,
    "hf_token": _CREDENTIAL,
    "push_to_hub": _HUB,
    "output_dir": _PATH,
    "logging_dir": _PATH,
    "cache_dir": _PATH,
    "offload_folder": _PATH,
    "resume_from_checkpoint": _PATH,
    "gguf_file": _PATH,
    "subfolder": _PATH,
    "vocab_file": _PATH,
    "merges_file": _PATH,
    "tokenizer_file": _PATH,
    "callbacks": _SERVER,
    "env": _SERVER,
    "environment": _SERVER,
    "proxies": _NETWORK,
    "mirror": _NETWORK,
    "deepspeed": _DISTRIBUTED,
    "fsdp": _DISTRIBUTED,
    "fsdp_config": _DISTRIBUTED,
    "parallelism_config": _DISTRIBUTED,
    "local_rank": _DISTRIBUTED,
}
REFUSED_PREFIXES: dict[str, str] = {"hub_": _HUB, "ddp_": _DISTRIBUTED}
# Any other key whose name says it holds a file or directory, at any depth (corda_config.cache_file…);
# where the base model comes from is the one path a user chooses, and its value is checked on its own.
PATH_SUFFIXES: dict[str, str] = {suffix: _PATH for suffix in ("_dir", "_path", "_file", "_folder", "_filename")}
PATH_KEYS_ALLOWED = frozenset({"pretrained_model_name_or_path"})
# Refused unless `allow_remote_loggers`.
REMOTE_LOGGER_PREFIXES = ("trackio_",)
LOCAL_LOGGERS = ("none", "tensorboard")

# Refused only inside one setting.
REFUSED_IN: dict[str, dict[str, str]] = {
    "model_config": {
        "quantization_config": "quantization belongs in the quantization_config setting, where it is validated",
    },
    "peft_config": {
        "base_model_name_or_path": "tuneloom fills it in from model_config",
        "peft_version": "tuneloom fills it in from the installed peft",
        "auto_mapping": _CODE,
        "megatron_core": f"it names a Python module to import, which {ESCAPE}",
        "megatron_config": _DISTRIBUTED,
    },
    "quantization_config": {
        "tokenizer": f"it loads a tokenizer to quantize with, which {ESCAPE}; tuneloom only loads "
        "already-quantized weights",
    },
}

ALIASES: dict[str, dict[str, str]] = {
    "model_config": {"pretrained_model_name": "pretrained_model_name_or_path", "dtype": "torch_dtype"},
    "trainer_config": {"evaluation_strategy": "eval_strategy"},
}

# TrainingArguments fields transformers 5 removed, which older configs (the hosted product's) still
# carry: say what to use instead. A value in RETIRED_NOOPS is what transformers 5 always does, so
# that key is accepted and dropped rather than failing a copied config.
RETIRED: dict[str, str] = {
    "trainer_config.save_safetensors": "transformers 5 always saves safetensors; remove it",
    "trainer_config.warmup_ratio": "use warmup_steps with a value below 1 (a share of all steps)",
    "trainer_config.no_cuda": "use use_cpu instead",
    "trainer_config.overwrite_output_dir": "remove it; tuneloom manages output directories",
    "trainer_config.group_by_length": "remove it; tuneloom packs examples (the packing setting)",
    "trainer_config.use_mps_device": "remove it; the device is picked automatically",
    "trainer_config.fp16_backend": "remove it; fp16 alone selects mixed precision",
}
RETIRED_NOOPS: dict[str, Any] = {"trainer_config.save_safetensors": True}

ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flex_attention")
GPU_ONLY_ATTENTION = ("flash_attention_2",)

# The model and tokenizer kwargs are open-ended (`**kwargs` reach the model config), so only these
# are accepted; everything else is an unknown key.
MODEL_FIELDS: dict[str, Field] = {
    "pretrained_model_name_or_path": STR,
    "torch_dtype": STR,
    "revision": STR,
    "attn_implementation": field("str", choices=ATTN_IMPLEMENTATIONS),
    "low_cpu_mem_usage": BOOL,
    "use_cache": BOOL,
    "rope_scaling": DICT,
    "device_map": field("str", "int", "dict"),
    "local_files_only": BOOL,
    "use_safetensors": BOOL,
    "variant": STR,
    "attention_dropout": FLOAT,
    "hidden_dropout": FLOAT,
}
REQUIRED: dict[str, tuple[str, ...]] = {"model_config": ("pretrained_model_name_or_path",)}
TOKENIZER_FIELDS: dict[str, Field] = {
    "model_max_length": INT,
    "padding_side": field("str", choices=("left", "right")),
    "truncation_side": field("str", choices=("left", "right")),
    "use_fast": BOOL,
    "add_bos_token": BOOL,
    "add_eos_token": BOOL,
    **{f"{name}_token": STR for name in ("pad", "eos", "bos", "unk", "sep", "cls", "mask")},
    "additional_special_tokens": STR_LIST,
    "revision": STR,
    "legacy": BOOL,
    "clean_up_tokenization_spaces": BOOL,
    "chat_template": STR,
    "local_files_only": BOOL,
    "response_headers": field("str", "list", items=("str",)),
}
TRAINER_EXTENSION_FIELDS: dict[str, Field] = {
    "train_on_prompt": BOOL,
    "packing": BOOL,
    "eval_fraction": FLOAT,
}
# Keys older GPTQ configs carry (the hosted product's templates use `use_exllama`); GPTQConfig takes
# them through **kwargs.
GPTQ_LEGACY_FIELDS: dict[str, Field] = {
    "use_exllama": BOOL,
    "disable_exllama": BOOL,
    "exllama_config": DICT,
    "use_cuda_fp16": BOOL,
    "checkpoint_format": STR,
}
BNB_FIELDS: dict[str, Field] = {
    "bnb_4bit_compute_dtype": STR,
    "bnb_4bit_quant_type": field("str", choices=("fp4", "nf4")),
    "bnb_4bit_quant_storage": field("str", choices=("float16", "float32", "int8", "uint8", "float64", "bfloat16")),
    "llm_int8_skip_modules": STR_LIST,
    "llm_int8_threshold": FLOAT,
}
QUANT_METHODS = ("gptq", "bitsandbytes")
QUANT_METHOD_KEYS = {"bits": "gptq", "load_in_4bit": "bitsandbytes", "load_in_8bit": "bitsandbytes"}

# Keys the TrainingArguments constructor would read as a file path when given a string.
DICT_ONLY: tuple[str, ...] = ("accelerator_config", "lr_scheduler_kwargs", "activation_checkpointing_kwargs")
DICT_ONLY += ("gradient_checkpointing_kwargs",)

CHOICES: dict[str, tuple[str, ...]] = {
    "trainer_config.torch_compile_backend": ("inductor", "eager", "aot_eager", "cudagraphs"),
    "trainer_config.torch_compile_mode": (
        "default",
        "reduce-overhead",
        "max-autotune",
        "max-autotune-no-cudagraphs",
    ),
    "trainer_config.log_level": ("debug", "info", "warning", "error", "critical", "passive"),
    "trainer_config.log_level_replica": ("debug", "info", "warning", "error", "critical", "passive"),
    "trainer_config.dataloader_multiprocessing_context": ("fork", "spawn", "forkserver"),
    "peft_config.peft_type": ("LORA",),
    "peft_config.task_type": ("CAUSAL_LM",),
    "quantization_config.quant_method": QUANT_METHODS,
}
# Said after a refused choice, where the list of choices alone would not explain it.
CHOICE_NOTES: dict[str, str] = {
    "peft_config.peft_type": "only LoRA adapters are supported for now; set peft_config to {} for full fine-tuning",
    "peft_config.task_type": "tuneloom fine-tunes causal language models",
}

_POSITIVE = Range(0, None, lo_open=True)
_UNIT = Range(0, 1, hi_open=True)  # a probability or a fraction
_SEED = Range(0, 2**32 - 1)
RANGES: dict[str, Range] = {
    "invalid_data_tolerance_percent": Range(0, 100),
    "trainer_config.num_train_epochs": Range(0, 100, lo_open=True),
    "trainer_config.max_steps": Range(1, 1_000_000, also=(-1,)),
    "trainer_config.per_device_train_batch_size": Range(1, 1024),
    "trainer_config.per_device_eval_batch_size": Range(1, 1024),
    "trainer_config.gradient_accumulation_steps": Range(1, 1024),
    "trainer_config.eval_accumulation_steps": Range(1, 1024),
    "trainer_config.learning_rate": Range(0, 1, lo_open=True, hi_open=True),
    "trainer_config.weight_decay": Range(0, 1),
    "trainer_config.adam_beta1": _UNIT,
    "trainer_config.adam_beta2": _UNIT,
    "trainer_config.adam_epsilon": Range(0, 1, lo_open=True, hi_open=True),
    "trainer_config.max_grad_norm": Range(0, None),
    "trainer_config.label_smoothing_factor": _UNIT,
    "trainer_config.neftune_noise_alpha": Range(0, None),
    "trainer_config.logging_steps": Range(0, 1_000_000, lo_open=True),
    "trainer_config.eval_steps": Range(0, 1_000_000, lo_open=True),
    "trainer_config.save_steps": Range(0, 1_000_000, lo_open=True),
    "trainer_config.warmup_steps": Range(0, 1_000_000),
    "trainer_config.eval_delay": Range(0, None),
    "trainer_config.save_total_limit": Range(1, 20),  # checkpoints kept on disk; tuneloom's default is 2
    "trainer_config.torch_empty_cache_steps": Range(1, None),
    "trainer_config.dataloader_num_workers": Range(0, 8),
    "trainer_config.dataloader_prefetch_factor": Range(1, 16),
    "trainer_config.seed": _SEED,
    "trainer_config.data_seed": _SEED,
    "trainer_config.eval_fraction": Range(0, 0.5, hi_open=True),
    "tokenizer_config.model_max_length": Range(8, 32768),
    "peft_config.r": Range(1, 1024),
    "peft_config.lora_alpha": _POSITIVE,
    "peft_config.lora_dropout": _UNIT,
    "model_config.attention_dropout": _UNIT,
    "model_config.hidden_dropout": _UNIT,
    "quantization_config.llm_int8_threshold": _POSITIVE,
    "quantization_config.max_input_length": Range(1, 32768),  # sizes exllama's buffers
    "quantization_config.model_seqlen": Range(1, 32768),
}
# Numbers inside objects, by dotted path (`*` = every key of that object), with the kind they must be.
# rank_pattern/alpha_pattern set r and lora_alpha per module, so they get r's and lora_alpha's bounds.
NESTED: dict[str, tuple[Field, Range]] = {
    "peft_config.rank_pattern.*": (INT, RANGES["peft_config.r"]),
    "peft_config.alpha_pattern.*": (FLOAT, _POSITIVE),
    "peft_config.loftq_config.loftq_iter": (INT, Range(1, 100)),
    "peft_config.loftq_config.loftq_bits": (INT, Range(2, 8)),
    "peft_config.monteclora_config.num_samples": (INT, Range(1, 64)),
    "peft_config.monteclora_config.buffer_size": (INT, Range(1, 100_000)),
    "peft_config.velora_config.num_groups": (INT, Range(1, 1024)),
    "peft_config.arrow_config.top_k": (INT, Range(1, 64)),
    "peft_config.use_bdlora.nblocks": (INT, Range(1, 1024)),
}
MAX_LAYER_REPLICATION = 1024  # layers a LoRA layer_replication may build, in total
MAX_PISSA_NITER = 100  # subspace iterations of init_lora_weights="pissa_niter_N" (the PiSSA paper uses 4-16)
MAX_SPECIAL_TOKENS = 1024  # additional_special_tokens; each is a new embedding row

# Float fields meaning "N steps" when ≥ 1 and "this share of all steps" when < 1.
STEP_FIELDS = ("logging_steps", "eval_steps", "save_steps", "warmup_steps")

DTYPES: dict[str, str] = {
    spelling: canonical
    for canonical, spellings in {
        "float32": ("float32", "fp32", "float", "torch.float32", "torch.float"),
        "bfloat16": ("bfloat16", "bf16", "torch.bfloat16"),
        "float16": ("float16", "fp16", "half", "torch.float16", "torch.half"),
        "auto": ("auto",),
    }.items()
    for spelling in spellings
}
