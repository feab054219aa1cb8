"""How many operations one training step and one decode step dispatch: the count that sets an eager step's time
when the host, not the card, is the bottleneck (bench/README.md, GPU).

The count depends on the layers, not their width, so the model keeps each shape's layer count and
heads but narrow matrices, and this runs on a CPU in seconds. Counted: every ATen operator the
dispatcher runs (each one or more kernel launches on a GPU), for

- one tuneloom training step as the recipe runs it on a GPU (16 examples in one flat row, LoRA,
  flash-attention's varlen op — here on the CPU kernel of `bench.cpu_varlen`, one operator either way —
  forward + loss + backward + AdamW step), with its fused LoRA layers (`train/lora.py`) and with peft's own;
- one baseline step (Trainer + peft's recipe: 16 padded rows, the model's own loss);
- one decode step of `model.generate` at batch 1 (the per-token cost measured on the H200);
- the operators a batch-1 decoding loop dispatches per token *outside* the model's forward — what is
  left on the host once the forward is one CUDA-graph replay: `model.generate`, tuneloom's default
  path (transformers' `generate` with tuneloom's stopping criteria) and `tuneloom generate --compile`'s
  own loop (`generate/compiled.py`; here eager, the count outside the forward is the same).

On a CPU, peft's `nn.Dropout` is four operators forward (on a GPU, one: `native_dropout`), so its
count here is 3 per LoRA layer above a GPU's; the fused layers call `native_dropout` on both.

Both training steps run with `use_cache=False`, as the Trainer sets it: otherwise every layer would also
copy its keys and values into a KV cache that no training step reads.

Beside each count, the operators among them that make the host wait for the device
(`waits_for_device`): on a GPU each stops the host until the card has caught up.

    python -m bench.step_ops
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench.common import print_table, write_result
from bench.random_models import SHAPES

NARROW = {"intermediate_size": 512, "vocab_size": 2048}  # and 16 dimensions per head


WAITING = {"aten.nonzero", "aten.is_nonzero", "aten.item", "aten._local_scalar_dense", "aten.masked_select"}


def waits_for_device(func: Any, args: Any) -> bool:
    """Whether an operator makes the host wait for the device: its output's size or value is data (a
    boolean index, `nonzero`, `bool(tensor)`, `.item()`). On a GPU the host then stops until every
    kernel queued before it has run, and cannot prepare the next work while the card does this one."""
    name = str(func.overloadpacket)
    if name == "aten.index":
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None)
    return name in WAITING


class CountOps(TorchDispatchMode):
    """Counts each ATen operator call (views included: on a GPU they cost host time, no kernel); those
    dispatched while `inside` is above 0 (a model's forward, see `count_forwards`) apart; and those that
    make the host wait for the device (`waits_for_device`), by name."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.inside = 0
        self.outside_ops = 0
        self.waits: list[str] = []
        self.outside_waits = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops[str(func.overloadpacket)] += 1
        self.outside_ops += not self.inside
        if waits_for_device(func, args):
            self.waits.append(str(func.overloadpacket))
            self.outside_waits += not self.inside
        return func(*args, **(kwargs or {}))


def count_forwards(model: Any, counter: CountOps) -> list[Any]:
    """Hooks that mark `model`'s forward as inside for `counter`; remove them after."""
    return [
        model.register_forward_pre_hook(lambda *_: setattr(counter, "inside", counter.inside + 1)),
        model.register_forward_hook(lambda *_: setattr(counter, "inside", counter.inside - 1)),
    ]


def loop_ops_per_token(tokens: int = 16) -> dict[str, dict[str, float]]:
    """Operators (and host waits) per generated token outside the forward, for each batch-1 decoding loop:
    two calls of different lengths on one prompt, the difference over the difference in tokens (prefill
    cancels). The token's own read is no operator: a loop that waits only for it counts 0."""
    import os
    from unittest import mock

    from bench.common import model_settings
    from bench.generate import one_at_a_time, prompts
    from tuneloom.generate.generator import generate
    from tuneloom.generate.loading import load_for_inference
    from tuneloom.generate.params import InferenceParams

    # The count outside the forward does not depend on the layers: the tiny shape, for this load only.
    with mock.patch.dict(os.environ, {"BENCH_TINY": "1"}):
        loaded = load_for_inference("smollm2-135m-instruct-lora", model_settings("llama-1.1b-random"))
    text = prompts(1)[0]

    def tuneloom(n: int) -> int:
        return generate(loaded, [text], InferenceParams(max_tokens=n, stop=()))[0].tokens

    def compiled(n: int) -> int:
        loaded.compiled_decode = True
        try:
            return tuneloom(n)
        finally:
            loaded.compiled_decode = False

    loops = {
        "model.generate": lambda n: one_at_a_time(loaded, [text], n, min_new_tokens=n),
        "tuneloom generate": tuneloom,
        "tuneloom generate --compile loop": compiled,
    }
    figures = {}
    for name, decode in loops.items():
        counts = []
        for n in (4, 4 + tokens):
            with CountOps() as counter:
                hooks = count_forwards(loaded.model, counter)
                made = decode(n)
            for hook in hooks:
                hook.remove()
            counts.append((counter.outside_ops, counter.outside_waits, made))
        (ops_before, waits_before, short), (ops_after, waits_after, long) = counts
        figures[name] = {
            "operators": (ops_after - ops_before) / (long - short),
            "host_waits": (waits_after - waits_before) / (long - short),
        }
    return figures


def model(name: str) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = {**SHAPES[name], **NARROW}
    heads = config["num_attention_heads"]
    config["hidden_size"] = 16 * heads
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(**config))
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    return get_peft_model(base, lora)


def lengths(n: int, seed: int = 0) -> list[int]:
    """bench.train's length spread: lognormal, median ≈ 140 tokens."""
    rng = random.Random(seed)
    return [min(1000, max(16, int(rng.lognormvariate(math.log(140), 0.7)))) for _ in range(n)]


def tuneloom_batch(sizes: list[int], vocab: int) -> dict[str, torch.Tensor]:
    """One flat row with the examples' offsets: what the recipe trains on a GPU (`PackedCollator(flat=True)`)."""
    from tuneloom.train.packing import PackedCollator

    features = [
        {"input_ids": [1 + i % (vocab - 1) for i in range(n)], "labels": [-100] * (n // 2) + [5] * (n - n // 2)}
        for n in sizes
    ]
    return PackedCollator(0, flat=True)(features)


def baseline_batch(sizes: list[int], vocab: int) -> dict[str, torch.Tensor]:
    width = max(sizes)
    ids = torch.zeros(len(sizes), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for r, n in enumerate(sizes):
        ids[r, :n] = torch.arange(1, n + 1) % (vocab - 1) + 1
        mask[r, :n] = 1
        labels[r, n // 2 : n] = 5
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def training_step_ops(name: str, packed: bool, fused: bool = False) -> tuple[int, list[str]]:
    from bench.cpu_varlen import register_cpu_varlen
    from tuneloom.train.attention import use_flash_varlen
    from tuneloom.train.lora import fuse_lora_layers
    from tuneloom.train.packing import packed_causal_lm_loss

    peft_model = model(name)
    if fused:
        fuse_lora_layers(peft_model)
    peft_model.train()
    peft_model.config.use_cache = False  # as the Trainer sets it (`TrainingArguments.use_cache`)
    if packed:  # as the recipe on a GPU: flash-attention's varlen kernel (here its op, on a CPU kernel)
        register_cpu_varlen()
        use_flash_varlen(peft_model)
    vocab = peft_model.config.vocab_size
    sizes = lengths(16)
    batch = tuneloom_batch(sizes, vocab) if packed else baseline_batch(sizes, vocab)
    trained = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=2e-4, fused=True)  # the Trainer's default (adamw_torch_fused)

    def step() -> None:
        if packed:
            labels = batch["labels"]
            outputs = peft_model(**{k: v for k, v in batch.items() if k != "labels"})
            loss = packed_causal_lm_loss(outputs, labels)
        else:
            loss = peft_model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # optimizer state made; the counted step is a steady one
    with CountOps() as counter:
        step()
    return sum(counter.ops.values()), counter.waits


@torch.inference_mode()
def decode_step_ops(name: str) -> int:
    from transformers import DynamicCache

    peft_model = model(name).merge_and_unload()
    peft_model.eval()
    ids = torch.arange(1, 101)[None]
    cache = DynamicCache(config=peft_model.config)
    out = peft_model(input_ids=ids, cache=cache, use_cache=True)
    token = out.logits[:, -1:].argmax(-1)
    with CountOps() as counter:
        peft_model(input_ids=token, cache=cache, use_cache=True)
    return sum(counter.ops.values())


def main() -> None:
    figures: dict[str, Any] = {}
    for name in SHAPES:
        tuneloom_ops, tuneloom_waits = training_step_ops(name, packed=True, fused=True)
        peft_layers_ops, _ = training_step_ops(name, packed=True)
        baseline_ops, baseline_waits = training_step_ops(name, packed=False)
        figures[name] = {
            "layers": SHAPES[name]["num_hidden_layers"],
            "tuneloom_training_step": tuneloom_ops,
            "tuneloom_training_step_peft_layers": peft_layers_ops,
            "baseline_training_step": baseline_ops,
            "tuneloom_training_step_host_waits": tuneloom_waits,
            "baseline_training_step_host_waits": baseline_waits,
            "decode_step_forward": decode_step_ops(name),
        }
    rows = [
        [
            n,
            str(f["layers"]),
            f"{f['baseline_training_step']} ({len(f['baseline_training_step_host_waits'])} waits)",
            f"{f['tuneloom_training_step']} ({len(f['tuneloom_training_step_host_waits'])} waits)",
            str(f["tuneloom_training_step_peft_layers"]),
            str(f["decode_step_forward"]),
        ]
        for n, f in figures.items()
    ]
    figures["decode_loop_per_token_outside_forward"] = loop_ops_per_token()
    print_table(
        "ATen operators dispatched per step (and those that make the host wait for the device)",
        [
            "shape",
            "layers",
            "baseline train step",
            "tuneloom train step (flat row, varlen op)",
            "same, peft's LoRA layers",
            "decode step (forward)",
        ],
        rows,
    )
    print_table(
        "ATen operators per generated token outside the model's forward (batch 1)",
        ["loop", "operators", "host waits"],
        [
            [name, f"{f['operators']:.0f}", f"{f['host_waits']:.0f}"]
            for name, f in figures["decode_loop_per_token_outside_forward"].items()
        ],
    )
    from bench.common import RESULTS_DIR

    write_result(
        RESULTS_DIR / "step-ops.json",
        benchmark="step-ops",
        figures=figures,
        libraries=("torch", "transformers", "peft"),
    )


if __name__ == "__main__":
    main()
