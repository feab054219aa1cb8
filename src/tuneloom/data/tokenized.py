"""Examples → token ids with a loss mask: what the model sees and which tokens it learns from.

The prompt is tokenized with the tokenizer's special tokens (BOS where the model wants one), the
completion without them and with a leading space, then EOS is appended: a model that never sees EOS
after a completion never learns to stop. Prompt tokens are masked out of the loss (`-100`) unless
`train_on_prompt` is set. Inference tokenizes the prompt the same way, so train and serve agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuneloom.data.lines import excerpt
from tuneloom.data.types import Example, InvalidRow

IGNORE_INDEX = -100


@dataclass(frozen=True, slots=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where the token is not trained on
    line: int

    def __len__(self) -> int:
        return len(self.input_ids)


def completion_text(completion: str) -> str:
    """The completion as it follows the prompt: one space, then the text (stripped)."""
    return " " + completion.strip()


def tokenize_examples(
    examples: Sequence[Example],
    tokenizer: Any,
    *,
    max_length: int,
    train_on_prompt: bool = False,
) -> tuple[list[TokenizedExample], list[InvalidRow]]:
    """Tokenize in batches (the fast tokenizer parallelises); over-long examples become invalid rows."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; set tokenizer_config.eos_token")
    if not examples:  # a fast tokenizer fails on an empty batch (IndexError), e.g. a file with no valid row
        return [], []
    prompts = tokenizer([e.prompt for e in examples], add_special_tokens=True)["input_ids"]
    completions = tokenizer([completion_text(e.completion) for e in examples], add_special_tokens=False)["input_ids"]
    eos = int(tokenizer.eos_token_id)
    kept: list[TokenizedExample] = []
    rejected: list[InvalidRow] = []
    for example, prompt_ids, completion_ids in zip(examples, prompts, completions, strict=True):
        total = len(prompt_ids) + len(completion_ids) + 1
        if total > max_length:
            rejected.append(
                InvalidRow(
                    example.line,
                    f"{total} tokens after tokenization, longer than the model's max length of {max_length} "
                    f"(tokenizer_config.model_max_length)",
                    excerpt(example.prompt),  # escaped: it is printed to terminals
                )
            )
            continue
        trained = [*completion_ids, eos]
        prompt_labels = list(prompt_ids) if train_on_prompt else [IGNORE_INDEX] * len(prompt_ids)
        kept.append(TokenizedExample([*prompt_ids, *trained], [*prompt_labels, *trained], example.line))
    return kept, rejected


def token_stats(lengths: Sequence[int]) -> dict[str, float]:
    """Token-length statistics a user sizes max length and batch size with."""
    if not lengths:
        return {"count": 0}
    arr = np.asarray(lengths)
    return {
        "count": int(arr.size),
        "total": int(arr.sum()),
        "min": int(arr.min()),
        "mean": round(float(arr.mean()), 1),
        "p50": float(np.percentile(arr, 50)),
        "p90": float(np.percentile(arr, 90)),
        "p99": float(np.percentile(arr, 99)),
        "max": int(arr.max()),
    }
