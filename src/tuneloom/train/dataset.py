"""From a data file to the tokenized train and held-out sets, with one report of everything dropped."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tuneloom.data import check_tolerance, parse_file
from tuneloom.data.tokenized import TokenizedExample, token_stats, tokenize_examples
from tuneloom.data.types import DataReport, Example

MIN_EXAMPLES_FOR_SPLIT = 20  # below this, holding out 10% leaves too little to learn from or to measure


@dataclass
class PreparedData:
    train: list[TokenizedExample]
    held_out: list[TokenizedExample]
    held_out_examples: list[Example]  # the same held-out rows as text, for evaluation
    examples: list[Example]  # all valid training examples as text (the prompt format is derived from them)
    report: DataReport


class ExampleDataset(torch.utils.data.Dataset[dict[str, Any]]):
    """The Trainer's view of tokenized examples: dicts the packing collator consumes."""

    def __init__(self, rows: Sequence[TokenizedExample]):
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        return {"input_ids": row.input_ids, "labels": row.labels}

    @property
    def token_count(self) -> int:
        return sum(len(r) for r in self.rows)


def read_and_tokenize(
    path: Path,
    tokenizer: Any,
    *,
    data_format: str,
    response_headers: Sequence[str],
    max_length: int,
    train_on_prompt: bool,
    tolerance_percent: float,
) -> tuple[list[Example], list[TokenizedExample], DataReport]:
    """Parse, tokenize, and apply the invalid-data tolerance over both kinds of rejection."""
    parsed = parse_file(path, format=data_format, response_headers=tuple(response_headers))
    report = parsed.report
    tokenized, too_long = tokenize_examples(
        parsed.examples, tokenizer, max_length=max_length, train_on_prompt=train_on_prompt
    )
    for row in too_long:
        report.valid_rows -= 1
        report.add_invalid(row)
    report.invalid.sort(key=lambda r: r.line)
    report.token_stats = token_stats([len(t) for t in tokenized])
    check_tolerance(report, tolerance_percent)
    kept_lines = {t.line for t in tokenized}
    examples = [e for e in parsed.examples if e.line in kept_lines]
    return examples, tokenized, report


def split_held_out(
    examples: list[Example], tokenized: list[TokenizedExample], fraction: float, seed: int
) -> tuple[list[TokenizedExample], list[TokenizedExample], list[Example]]:
    """A seeded random share held out for eval loss and evaluation; none when data is scarce."""
    if fraction <= 0 or len(tokenized) < MIN_EXAMPLES_FOR_SPLIT:
        return tokenized, [], []
    order = list(range(len(tokenized)))
    random.Random(seed).shuffle(order)
    n_held = max(1, round(len(order) * fraction))
    held = set(order[:n_held])
    train = [t for i, t in enumerate(tokenized) if i not in held]
    held_out = [t for i, t in enumerate(tokenized) if i in held]
    return train, held_out, [examples[i] for i in sorted(held)]
