"""Evaluate a model (a trained version or an untrained template) on held-out examples.

Generates for every example, compares with its expected completion (see `metrics`), and measures
eval loss / perplexity on the same examples. Running it on the base template and on the trained
version of the same data is the before/after a user decides with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from tuneloom.data.tokenized import IGNORE_INDEX, tokenize_examples
from tuneloom.data.types import Example
from tuneloom.errors import DataFileError
from tuneloom.evaluate.metrics import per_example, score
from tuneloom.generate.generator import context_length, count_prompt_tokens, generate, render_prompt
from tuneloom.generate.loading import InferenceModel
from tuneloom.generate.params import MAX_INPUTS, InferenceParams
from tuneloom.train.packing import PackedCollator, packed_causal_lm_loss

MAX_EVAL_TOKENS = 256


@dataclass
class EvaluationResult:
    model: str
    metrics: dict[str, float]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "metrics": self.metrics, "rows": self.rows}


def evaluate_examples(
    loaded: InferenceModel,
    examples: Sequence[Example],
    *,
    params: InferenceParams | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> EvaluationResult:
    params = params or InferenceParams(max_tokens=_enough_tokens(loaded, examples))
    predictions: list[str] = []
    for start in range(0, len(examples), MAX_INPUTS):
        chunk = examples[start : start + MAX_INPUTS]
        fitted = _fitted(loaded, chunk, params)
        predictions += [g.text for g in generate(loaded, [e.prompt for e in chunk], fitted)]
        if on_progress:
            on_progress(len(predictions), len(examples))
    references = [e.completion for e in examples]
    metrics = score(predictions, references)
    metrics.update(loss_metrics(loaded, examples))
    matches = per_example(predictions, references) if examples else []
    rows = [
        {"line": e.line, "prompt": e.prompt, "expected": e.completion, "generated": p, "match": m}
        for e, p, m in zip(examples, predictions, matches, strict=True)
    ]
    return EvaluationResult(loaded.name, metrics, rows)


def _fitted(loaded: InferenceModel, chunk: Sequence[Example], params: InferenceParams) -> InferenceParams:
    """`params` with max_tokens lowered so that the chunk's longest prompt leaves room in the context.

    A held-out set is the user's data, not a request: a long example shortens what is generated for
    its chunk instead of refusing the whole evaluation. A prompt that fills the context on its own
    cannot be evaluated, and the error names its line.
    """
    context = context_length(loaded)
    if context is None:
        return params
    tokens = [count_prompt_tokens(loaded, render_prompt(loaded, e.prompt, params)) for e in chunk]
    longest = max(range(len(chunk)), key=lambda i: tokens[i])
    if tokens[longest] >= context:
        raise DataFileError(
            f"line {chunk[longest].line}: the prompt is {tokens[longest]} tokens and this model's context is "
            f"{context}, so nothing can be generated for it; shorten it or leave it out of the evaluation",
            details={"line": chunk[longest].line, "limit": context},
        )
    return replace(params, max_tokens=min(params.max_tokens, context - tokens[longest]))


def _enough_tokens(loaded: InferenceModel, examples: Sequence[Example]) -> int:
    """Room for the longest expected completion plus slack — no need to let a classifier ramble."""
    if not examples:
        return 16
    longest = max(len(loaded.tokenizer(e.completion, add_special_tokens=False)["input_ids"]) for e in examples)
    return min(MAX_EVAL_TOKENS, int(longest * 1.5) + 8)


@torch.inference_mode()
def loss_metrics(loaded: InferenceModel, examples: Sequence[Example], batch_size: int = 16) -> dict[str, float]:
    """Mean per-token loss of the expected completions (and its perplexity), packed like training."""
    max_length = int(min(getattr(loaded.tokenizer, "model_max_length", 2048), 8192))
    rows, _ = tokenize_examples(examples, loaded.tokenizer, max_length=max_length)
    if not rows:
        return {}
    collate = PackedCollator(pad_token_id=loaded.tokenizer.pad_token_id)
    device = next(loaded.model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = collate([{"input_ids": r.input_ids, "labels": r.labels} for r in rows[start : start + batch_size]])
        labels = batch.pop("labels")
        n = int((labels[:, 1:] != IGNORE_INDEX).sum())
        outputs = loaded.model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False)
        total += float(packed_causal_lm_loss(outputs, labels.to(device), n)) * n
        count += n
    loss = total / count
    return {"eval_loss": loss, "perplexity": math.exp(min(loss, 50.0))}
