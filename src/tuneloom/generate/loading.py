"""Load a model version (or a bare template, for before/after comparisons) ready for inference."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tuneloom.errors import SettingsError
from tuneloom.generate.prefixes import PromptPrefixes
from tuneloom.model_version import ModelVersion, open_version, partial_dir
from tuneloom.templates import get_template, resolve_settings
from tuneloom.templates.loading import load_model, load_tokenizer, pick_device
from tuneloom.templates.prompting import PROMPT_SLOT, PromptFormat

if TYPE_CHECKING:
    from tuneloom.generate.compiled import StaticDecoder

# transformers' loading is not thread-safe: a model being built on the meta device while another thread
# loads leaves one of them with weights never filled ("Cannot copy out of meta tensor"). A server loads
# in request threads (two versions asked for at once, an export beside a generation), so one at a time.
_LOADING = threading.Lock()

INPUT_MAJOR_ENV = "TUNELOOM_INPUT_MAJOR_WEIGHTS"  # "0": CPU weights kept as stored (the benchmarks' plain baseline)

# How a bare text is framed for a template that was never trained here.
UNTRAINED_FORMAT = PromptFormat(template=f"### Human: {PROMPT_SLOT} ### Assistant:", response_header="Assistant")


@dataclass
class InferenceModel:
    name: str
    model: Any
    tokenizer: Any
    prompt_format: PromptFormat
    compiled_decode: bool = False  # one-input calls decode through a compiled step (generate/compiled.py)
    decoders: dict[int, StaticDecoder] = field(default_factory=dict, repr=False)  # one per cache length
    prefixes: PromptPrefixes = field(default_factory=PromptPrefixes, repr=False)  # shared prompt starts' caches


def load_for_inference(
    target: str | Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    label: str | None = None,
    as_stored: bool = False,
) -> InferenceModel:
    """`target` is a model-version directory or a template id (the untrained base model).

    `overrides` are settings merged over a template's defaults, e.g. another base model folder;
    `label` is how errors name a version (default: its path); `as_stored` keeps the weights in the
    memory layout they were stored in (`_input_major_linears`): what writing them out needs, and what a
    plain transformers baseline runs on.
    """
    path = Path(target)
    if path.is_dir():
        return load_version(open_version(path, label=label), as_stored=as_stored)
    try:
        template = get_template(str(target))
    except SettingsError:
        if _names_a_path(path):
            open_version(path, label=label)  # raises, naming the path (and an interrupted run's checkpoint)
        raise
    settings = resolve_settings(template, overrides or {})
    with _LOADING:
        tokenizer = load_tokenizer(settings.model_config, settings.tokenizer_config)
        model = load_model(settings.model_config, settings.quantization_config)
        return InferenceModel(template.id, _ready(model, tokenizer, as_stored), tokenizer, UNTRAINED_FORMAT)


def _names_a_path(path: Path) -> bool:
    """`runs/tickets`, an existing file, or a run interrupted before its version was written: not a template id.

    Such a target gets the model-version message ("does not exist", "--resume"), not a list of templates.
    """
    return len(path.parts) > 1 or path.exists() or partial_dir(path).is_dir()


def version_tokenizer(path: Path) -> Any:
    """A stored version's tokenizer, padding with EOS where it names no pad token (as in training)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_version(version: ModelVersion, *, as_stored: bool = False) -> InferenceModel:
    """A version already opened (its checksums verified), ready to generate: not verified a second time."""
    with _LOADING:
        return _loaded(version, as_stored)


def _loaded(version: ModelVersion, as_stored: bool) -> InferenceModel:
    path = version.path
    settings = version.settings
    tokenizer = version_tokenizer(path)
    if version.is_adapter:
        from peft import PeftModel

        base = load_model(settings["model_config"], settings["quantization_config"])
        model = PeftModel.from_pretrained(base, version.weights_dir)
        if not settings["quantization_config"]:
            model = model.merge_and_unload()  # one matmul per layer again: inference at base-model speed
    else:
        model = load_model(settings["model_config"], settings["quantization_config"], source=str(version.weights_dir))
    prompt_format = PromptFormat.from_dict(version.prompt_format)
    return InferenceModel(str(path), _ready(model, tokenizer, as_stored), tokenizer, prompt_format)


def _ready(model: Any, tokenizer: Any, as_stored: bool) -> Any:
    model.eval()
    # Any padding or truncation a tokenizer.json switches on is switched off by the first plain call:
    # make it here, before request threads share the tokenizer (that switch is a write to shared state).
    tokenizer("", add_special_tokens=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    device = pick_device()
    if getattr(model, "device", device) != device and not getattr(model, "is_quantized", False):
        model.to(device)
    if device.type == "cpu" and not as_stored and os.environ.get(INPUT_MAJOR_ENV) != "0":
        _input_major_linears(model)
    return model


def _input_major_linears(model: Any) -> None:
    """Store each linear layer's weight transposed in memory: the same `[out, in]` tensor, its strides swapped.

    `F.linear` then hands the CPU's BLAS a weight laid out the way it reads it when it multiplies.
    SmolLM2-135M's batch-1 decode step takes 34 ms instead of 40 on two AMD EPYC cores, with the
    same logits (bench/README.md, *Generation*). Float32 weights only: in bfloat16 the same projection
    is 2.2× slower transposed (4.1 ms against 1.9). Not on a GPU, where it was not measured, and not for
    exports: `save_pretrained` needs contiguous tensors. A weight shared with the input embeddings
    (tied) changes layout with it, and a lookup then reads a strided row: a few rows a token.
    """
    for module in model.modules():
        if type(module) is torch.nn.Linear and module.weight.dtype == torch.float32:
            module.weight.data = module.weight.data.t().contiguous().t()
