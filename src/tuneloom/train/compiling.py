"""`torch_compile: true`, done regionally: each repeated transformer block is compiled, not the model.

On a GPU an eager training step is bound by the host issuing thousands of small operators one at a
time (about 30 µs each on an H200 machine; bench/README.md), so a compiled step, a few fused kernels
per block, is where the speed is. The Trainer's own `torch_compile` wraps the whole model: its
compile time grows with the depth, and a packed row's boolean `logits_to_keep` index splits the
graph. Compiling the block class instead (PyTorch's "regional compilation" recipe) traces one layer
once and every other layer reuses that code, with shapes dynamic from the start because packed
batches change length every step. The embedding, the last norm, the vocabulary projection and the
loss stay eager: a handful of operators.
"""

from __future__ import annotations

from typing import Any

import torch

COMPILE_KEYS = ("torch_compile", "torch_compile_backend", "torch_compile_mode")  # trainer_config keys tuneloom owns


def wants_compile(trainer_config: dict[str, Any]) -> bool:
    """As `TrainingArguments` reads them: naming a backend or a mode also turns compiling on."""
    return bool(trainer_config.get("torch_compile")) or any(
        trainer_config.get(key) is not None for key in COMPILE_KEYS[1:]
    )


def compile_blocks(model: torch.nn.Module, trainer_config: dict[str, Any]) -> str:
    """Compile `model`'s repeated blocks in place (their weights and state-dict names unchanged).

    The blocks are the classes the model names in `_no_split_modules` (the unit transformers keeps
    whole on one device); a model naming none is compiled whole. Returns what was compiled, for the log.
    """
    options = {
        "backend": trainer_config.get("torch_compile_backend") or "inductor",
        "mode": trainer_config.get("torch_compile_mode"),
        "dynamic": True,
    }
    unwrap = getattr(model, "get_base_model", None)  # a peft model: the transformers model inside
    base = unwrap() if callable(unwrap) else model
    block_names = set(getattr(base, "_no_split_modules", None) or ())
    blocks = [module for module in model.modules() if type(module).__name__ in block_names]
    for block in blocks:
        block.compile(**options)
    model.register_forward_pre_hook(_offsets_are_dynamic, with_kwargs=True)
    if not blocks:
        model.compile(**options)
        return "the whole model"
    return f"{len(blocks)} {type(blocks[0]).__name__} blocks"


def _offsets_are_dynamic(module: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
    """The varlen kernel's example offsets change length with every batch: say so before the blocks see them.

    Marked on the tensors the model is called with (already on the device), or the first compile
    would fix their length and the second batch would compile every block again.
    """
    for key in ("cu_seq_lens_q", "cu_seq_lens_k"):
        if isinstance(kwargs.get(key), torch.Tensor):
            torch._dynamo.maybe_mark_dynamic(kwargs[key], 0)
