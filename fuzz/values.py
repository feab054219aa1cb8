"""JSON-like values drawn from fuzzer bytes, biased towards the edges validation must get right.

Random bytes almost never spell `per_device_train_batch_size`, so keys come from the real classes'
field lists (plus refused and made-up ones) and numbers from each range's edges, letting the
coverage feedback spend its time on the validation logic rather than on the JSON syntax.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import atheris

INTS = (-(2**63), -2, -1, 0, 1, 2, 7, 8, 16, 100, 101, 1024, 1025, 4096, 4097, 32768, 32769, 10**6, 10**6 + 1, 2**32)
FLOATABLE = INTS
INTS += (2**63, 10**400, -(10**400))  # JSON integers have no size limit; a float cast of these overflows
FLOATS = (0.0, -0.0, 1e-6, 1e-4, 0.05, 0.1, 0.5, 0.9999, 1.0, 1.5, 100.5, -0.1, 1e308, float("nan"), float("inf"))
WORDS = (
    "auto", "none", "no", "steps", "epoch", "best", "linear", "cosine", "LORA", "lora", "CAUSAL_LM", "float16",
    "bf16", "torch.float32", "tensorboard", "wandb", "all", "q_proj", "v_proj", "eager", "sdpa", "inductor",
    "cpu", "cuda:1", "gptq", "bitsandbytes", "nf4", "pissa", "pissa_niter_4", "pissa_niter_99999999", "gaussian",
    "loftq", "corda", "/etc/passwd", "../../x", "{prompt}", "{system_prompt}", "###", "Assistant", "", " ",
)  # fmt: skip


def pick(fdp: atheris.FuzzedDataProvider, options: Sequence[Any]) -> Any:
    return options[fdp.ConsumeIntInRange(0, len(options) - 1)]


def value(fdp: atheris.FuzzedDataProvider, keys: Sequence[str] = (), depth: int = 0) -> Any:
    """Any JSON value; containers nest at most three deep and hold at most four items."""
    kind = fdp.ConsumeIntInRange(0, 11 if depth < 3 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return pick(fdp, INTS)
    if kind == 3:
        return fdp.ConsumeInt(8)
    if kind == 4:
        return pick(fdp, FLOATS)
    if kind == 5:
        return fdp.ConsumeFloat()
    if kind == 6:
        return float(pick(fdp, FLOATABLE))
    if kind == 7:
        return pick(fdp, WORDS)
    if kind == 8:
        return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 24))
    if kind == 9:
        return [value(fdp, keys, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    if kind == 10:
        return [pick(fdp, WORDS) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    return mapping(fdp, keys, depth + 1)


def key(fdp: atheris.FuzzedDataProvider, keys: Sequence[str]) -> str:
    if keys and fdp.ConsumeIntInRange(0, 7):
        return str(pick(fdp, keys))
    return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 16))


def mapping(fdp: atheris.FuzzedDataProvider, keys: Sequence[str], depth: int = 0, size: int = 4) -> dict[str, Any]:
    return {key(fdp, keys): value(fdp, keys, depth) for _ in range(fdp.ConsumeIntInRange(0, size))}
