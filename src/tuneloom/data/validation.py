"""Validate a data file the way training will read it, streaming, so any size fits in memory.

Rows are parsed and tokenized in chunks; only counters, token lengths and the first rejected rows
are kept. With a tokenizer, examples longer than the model's max length are rejected here too, so
`tuneloom validate` says exactly what `tuneloom train` will drop.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneloom.data import RESPONSE_HEADERS, detect_format, iter_rows
from tuneloom.data.tokenized import IGNORE_INDEX, TokenizedExample, token_stats, tokenize_examples
from tuneloom.data.types import DataReport, Example, InvalidRow
from tuneloom.errors import DataFileError

CHUNK = 2048


@dataclass
class TokenPiece:
    text: str
    trained: bool  # False: prompt token, masked out of the loss


@dataclass
class Validation:
    report: DataReport
    previews: list[list[TokenPiece]] = field(default_factory=list)


def validate_file(
    path: Path,
    *,
    tokenizer: Any | None = None,
    data_format: str = "auto",
    response_headers: Sequence[str] = RESPONSE_HEADERS,
    max_length: int = 512,
    train_on_prompt: bool = False,
    preview: int = 0,
) -> Validation:
    fmt = detect_format(path) if data_format == "auto" else data_format
    report = DataReport(source=str(path), format=fmt)
    result = Validation(report)
    lengths = array("I")
    pending: list[Example] = []

    def flush() -> None:
        if tokenizer is None:
            report.valid_rows += len(pending)
        else:
            kept, too_long = tokenize_examples(
                pending, tokenizer, max_length=max_length, train_on_prompt=train_on_prompt
            )
            report.valid_rows += len(kept)
            for row in too_long:
                report.add_invalid(row)
            lengths.extend(len(k) for k in kept)
            result.previews.extend(_pieces(k, tokenizer) for k in kept[: max(0, preview - len(result.previews))])
        pending.clear()

    for row in iter_rows(path, format=fmt, response_headers=tuple(response_headers)):
        report.total_rows += 1
        if isinstance(row, InvalidRow):
            report.add_invalid(row)
        else:
            pending.append(row)
            if len(pending) >= CHUNK:
                flush()
    flush()
    if report.total_rows == 0:
        raise DataFileError(f"{path}: no rows (the file is empty or holds only blank lines).")
    report.invalid.sort(key=lambda r: r.line)
    if tokenizer is not None:
        report.token_stats = token_stats(lengths)
    return result


def _pieces(example: TokenizedExample, tokenizer: Any) -> list[TokenPiece]:
    """Consecutive tokens with the same mask merged into one piece of text."""
    pieces: list[TokenPiece] = []
    for token, label in zip(example.input_ids, example.labels, strict=True):
        trained = label != IGNORE_INDEX
        text = tokenizer.decode([token])
        if pieces and pieces[-1].trained == trained:
            pieces[-1].text += text
        else:
            pieces.append(TokenPiece(text, trained))
    return pieces
