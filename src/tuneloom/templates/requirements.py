"""What a training run needs from the machine that trains it, derived from its template and settings.

Used for placement: a queued run is claimed only by a worker that can run it, instead of failing on
the first worker that happens to be free. Three things are derived:

* `cuda`: the run cannot train without an NVIDIA GPU — the template is marked GPU-only, or a
  setting needs one (GPTQ or bitsandbytes quantization, flash attention, tf32, bf16 without
  use_cpu: the same rules `require_supported_hardware` enforces where the run trains).
* `gpus`: how many GPUs the run takes on a worker that has any — one per process on the machine
  (`distributed.num_processes` over `num_machines`), the rule `train.launch.check_this_machine`
  enforces where the run trains. On a worker without GPUs the processes share its CPUs instead.
* `memory_mb`: a lower bound per GPU (or per machine without one). The base model's weights
  (parameters × bytes per parameter, from the template's parameter count, the quantization bits or
  `torch_dtype`; `auto` counts as 16 bits, what nearly every published checkpoint stores). A full
  fine-tune (no PEFT) adds the gradients (one more copy) and, with an Adam-family optimizer, its two
  moments (two more; one byte per parameter each for the 8-bit variants). FSDP and ZeRO-3 shard all
  of it over the run's processes, ZeRO-2 the gradients and moments. Activations and the adapter come
  on top, so a worker with less cannot run the job, and one with more may still run out. It is only
  known when the run uses its template's own base model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tuneloom.errors import SettingsError
from tuneloom.templates.catalogue import get_template
from tuneloom.templates.settings import GPU_ONLY_RULES, TrainingSettings
from tuneloom.templates.settings_distributed import processes_per_machine

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMB])\s*$", re.IGNORECASE)
_SCALE = {"K": 1e3, "M": 1e6, "B": 1e9}
_DTYPE_BYTES = {"float32": 4.0, "float": 4.0, "float16": 2.0, "half": 2.0, "bfloat16": 2.0, "auto": 2.0}


@dataclass(frozen=True)
class Requirement:
    cuda: bool = False
    cuda_why: str | None = None  # what needs the GPU: a settings key ('quantization_config') or the template
    memory_mb: int | None = None  # a lower bound per GPU (see the module's docstring); None when unknown
    memory_what: str = "the weights"  # what the bound counts, for the waiting message
    gpus: int = 1  # GPUs it takes on a worker with GPUs (one per process); a CPU worker runs it without


def job_requirement(template_id: str, settings: Mapping[str, Any]) -> Requirement:
    """The requirement of a run of `template_id` with stored (validated) `settings`."""
    parsed = TrainingSettings.from_dict(settings)
    why = next((problem[1] for rule in GPU_ONLY_RULES if (problem := rule(parsed))), None)
    gpus = processes_per_machine(parsed.distributed)
    try:
        template = get_template(template_id)
    except SettingsError:  # not in this catalogue (a stored run's template since renamed): the settings decide
        return Requirement(cuda=why is not None, cuda_why=why, gpus=gpus)
    if why is None and template.requires_gpu:
        why = f"template {template.id}"
    params = parameter_count(template.parameters)
    same_model = parsed.model_config.get("pretrained_model_name_or_path") == template.base_model
    if params is None or not same_model:
        return Requirement(cuda=why is not None, cuda_why=why, gpus=gpus)
    memory, what = _training_memory(parsed, params)
    megabytes = math.ceil(memory / 2**20)
    return Requirement(cuda=why is not None, cuda_why=why, memory_mb=megabytes, memory_what=what, gpus=gpus)


def _training_memory(settings: TrainingSettings, params: float) -> tuple[float, str]:
    """Bytes one process needs at least, and what they hold."""
    weight_bytes = _bytes_per_parameter(settings)
    weights = params * weight_bytes
    if settings.peft_config:  # the adapter's gradients and optimizer state are a rounding error
        return weights, "the weights"
    optim = str(settings.trainer_config.get("optim", "adamw_torch"))
    state = params * weight_bytes  # the gradients
    what = "the weights and gradients"
    if "adam" in optim:
        state += 2 * params * (1.0 if "8bit" in optim else weight_bytes)
        what = "the weights, gradients and optimizer state"
    strategy = str(settings.distributed.get("strategy", "ddp"))
    processes = max(1, int(settings.distributed.get("num_processes", 1)))
    if strategy in ("fsdp", "deepspeed_zero3"):
        return (weights + state) / processes, f"{what} (sharded over {processes} processes)"
    if strategy == "deepspeed_zero2":
        return weights + state / processes, f"{what} (all but the weights sharded over {processes} processes)"
    return weights + state, what


def parameter_count(text: str) -> float | None:
    """'135M' → 1.35e8, '7B' → 7e9; None for anything else ('any')."""
    match = _SIZE.match(text)
    return float(match.group(1)) * _SCALE[match.group(2).upper()] if match else None


def _bytes_per_parameter(settings: TrainingSettings) -> float:
    quant = settings.quantization_config
    if quant.get("load_in_4bit"):
        return 0.5
    if quant.get("load_in_8bit"):
        return 1.0
    if isinstance(quant.get("bits"), int | float) and quant["bits"] > 0:
        return float(quant["bits"]) / 8
    dtype = str(settings.model_config.get("torch_dtype", "auto")).removeprefix("torch.")
    return _DTYPE_BYTES.get(dtype, 4.0)
