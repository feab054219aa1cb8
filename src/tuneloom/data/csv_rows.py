"""CSV rows: tuneloom's template (`input.data.text.raw`), the hosted SDK's export (`input`), or
`prompt`/`completion` columns.

The `csv` module does the quoting (multi-line cells included); it is fed one physical line at a time
so `reader.line_num` counts physical lines and every row can name the line where it starts.
Lines with bad UTF-8 are fed with U+FFFD in place of the bad bytes (so quoting stays intact),
lines with a "\\r" inside (see `lines.lone_cr`) with it blanked, over-long lines as blank lines; in
each case the record that spans them is reported invalid, with the line's own reason.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tuneloom.data.lines import Batch, excerpt, iter_batches
from tuneloom.data.sections import LineParser, line_parser
from tuneloom.data.sniff import KNOWN_CSV_COLUMNS, fail, header_cells
from tuneloom.data.types import Example, InvalidRow

TEXT_COLUMNS = ("input.data.text.raw", "input")
ID_COLUMNS = ("input.id", "inputid")
EXPECTED = "'input.data.text.raw' (tuneloom's template), 'input' (the SDK's export) or 'prompt' and 'completion'"


@dataclass(frozen=True)
class _Layout:
    """Which cells a record's example comes from."""

    width: int
    text: int | None  # index of the sectioned-text column, or None for prompt/completion
    prompt: int
    completion: int
    ident: int | None
    text_name: str


def iter_csv_rows(
    chunks: Iterable[bytes], path: Path, response_headers: tuple[str, ...]
) -> Iterator[Example | InvalidRow]:
    """Rows of a CSV file; `DataFileError` if the header names none of the known column sets."""
    bad: dict[int, InvalidRow] = {}
    lines = _feed(iter_batches(chunks, bad), bad)
    skipped = 0
    for first in lines:
        if first.strip():
            break
        skipped += 1
    else:
        return
    delimiter = _delimiter(first)
    # strict: a stray or unclosed quote fails its record instead of silently swallowing the lines after it
    reader = csv.reader(itertools.chain([first], lines), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except csv.Error as error:
        raise fail(path, f"has an unreadable CSV header: {_csv_problem(error)}") from None
    layout = _layout(path, header, delimiter)
    yield from _records(reader, layout, bad, skipped, line_parser(response_headers))


def check_header(path: Path, sample: str) -> None:
    """Fail on wrong columns from the 64 KB sample, before any row is streamed."""
    first = next((line for line in sample.split("\n") if line.strip()), None)
    if first is None or first.count('"') % 2:
        return  # no header in the sample, or a quoted header cell spanning lines: the reader decides
    delimiter = _delimiter(first)
    try:
        header = next(csv.reader([first], delimiter=delimiter), [])
    except csv.Error as error:
        raise fail(path, f"has an unreadable CSV header: {_csv_problem(error)}") from None
    _layout(path, header, delimiter)


def _feed(batches: Iterable[Batch], bad: dict[int, InvalidRow]) -> Iterator[str]:
    """Physical lines for the csv module, ended by "\\n" alone: a quoted cell's line breaks become "\\n"."""
    for first, items in batches:
        for number, item in enumerate(items, first):
            if isinstance(item, str):
                yield item.rstrip("\r") + "\n"
            else:
                bad[number] = item
                yield "\n"


def _delimiter(header_line: str) -> str:
    """Comma, or the semicolon/tab some spreadsheet locales write, whichever splits out a known name."""
    for delimiter in (",", ";", "\t"):
        if any(_column(cell) in KNOWN_CSV_COLUMNS for cell in header_cells(header_line, delimiter)):
            return delimiter
    return ","


def _column(cell: str) -> str:
    return cell.strip().strip("\ufeff").strip().lower()


def _layout(path: Path, header: list[str], delimiter: str) -> _Layout:
    names = [_column(cell) for cell in header]
    ident = next((names.index(name) for name in ID_COLUMNS if name in names), None)
    for name in TEXT_COLUMNS:
        if name in names and not (name == "input" and {"prompt", "completion"} <= set(names)):
            index = names.index(name)
            return _Layout(len(names), index, index, index, ident, header[index].strip())
    if {"prompt", "completion"} <= set(names):
        return _Layout(len(names), None, names.index("prompt"), names.index("completion"), ident, "")
    found = ", ".join(repr(excerpt(cell.strip(), 40)) for cell in header[:10]) or "none"
    shown = {",": "", ";": " (semicolon-separated)", "\t": " (tab-separated)"}[delimiter]
    raise fail(path, f"has CSV columns {found}{shown}; expected {EXPECTED}")


class _Reader(Protocol):
    line_num: int

    def __next__(self) -> list[str]: ...


def _records(
    reader: _Reader, layout: _Layout, bad: dict[int, InvalidRow], offset: int, parse: LineParser
) -> Iterator[Example | InvalidRow]:
    """Walk the records, tracking the physical line each starts on (header = line offset+1)."""
    prev = reader.line_num
    while True:
        start = offset + prev + 1
        failure: InvalidRow | None = None
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            record, failure = [], InvalidRow(start, _csv_reason(error, start, offset + reader.line_num))
        prev = reader.line_num
        if bad:  # lines the reader could not decode, inside this record or (rarely) before it
            earlier, spanning = _take_bad(bad, start, offset + prev)
            yield from earlier
            failure = spanning or failure
        if failure is not None:
            yield failure
        elif not _blank(record):
            yield _row(record, start, layout, parse)
    yield from _take_bad(bad, 1 << 62, 1 << 62)[0]


def _blank(record: list[str]) -> bool:
    """A blank line, or a row of empty cells as spreadsheets leave at the end."""
    if record and record[0] and not record[0].isspace():
        return False
    return not any(cell.strip() for cell in record)


def _take_bad(bad: dict[int, InvalidRow], start: int, end: int) -> tuple[list[InvalidRow], InvalidRow | None]:
    """Pop bad lines up to `end`: those before `start` as they are, those in the record as one row."""
    numbers = sorted(n for n in bad if n <= end)
    earlier = [bad.pop(n) for n in numbers if n < start]
    inside = [bad.pop(n) for n in numbers if n >= start]
    if not inside:
        return earlier, None
    first = inside[0]
    return earlier, InvalidRow(start, first.reason + _at(first.line, start), first.excerpt)


def _at(bad_line: int, start: int) -> str:
    return "" if bad_line == start else f" (on line {bad_line}, inside this record)"


def _csv_reason(error: csv.Error, start: int, end: int) -> str:
    """Say which lines a broken record took, so no line it swallowed goes unmentioned."""
    message = str(error)
    if "field larger" in message:
        return f"a cell is longer than {csv.field_size_limit():,} characters (an unclosed quote?)"
    if "unexpected end of data" in message:
        return f"unclosed quote: the quoted cell runs from line {start} to the end of the file (line {end})"
    if "expected after" in message:
        span = f"line {start}" if end <= start else f"lines {start}-{end}"
        return f'stray quote ({span}): text follows a closing quote; a quote inside a cell is written twice ("")'
    return f"unreadable CSV record: {_csv_problem(error)}"


def _csv_problem(error: csv.Error) -> str:
    """The csv module's message, in the file's terms where it speaks of Python's file modes."""
    if "new-line character seen in unquoted field" in str(error):
        return (
            "a carriage return (\\r) inside an unquoted cell; lines must end in \\n or \\r\\n "
            "(old Mac files end them in \\r alone: save the file as CSV UTF-8)"
        )
    return str(error)


def _row(record: list[str], line: int, layout: _Layout, parse: LineParser) -> Example | InvalidRow:
    """One record → an example via the sectioned-line parser, or prompt/completion cells directly."""
    suffix = ""
    if layout.ident is not None and layout.ident < len(record) and record[layout.ident].strip():
        suffix = f" (input id {excerpt(record[layout.ident].strip(), 60)!r})"
    width_problem = _width(record, layout)
    if width_problem:
        return InvalidRow(line, width_problem + suffix, excerpt(",".join(record)))
    if layout.text is not None:
        text = record[layout.text]
        if not text.strip():
            return InvalidRow(line, f"empty '{layout.text_name}' cell" + suffix, excerpt(",".join(record)))
        result = parse(text, line)
        if isinstance(result, InvalidRow) and suffix:
            return InvalidRow(result.line, result.reason + suffix, result.excerpt)
        return result
    return _pair(record, line, layout, suffix)


def _width(record: list[str], layout: _Layout) -> str:
    needed = max(layout.prompt, layout.completion) + 1
    if len(record) < needed:
        return f"row has {len(record)} cells, the header has {layout.width}"
    if len(record) > layout.width and any(cell.strip() for cell in record[layout.width :]):
        return f"row has {len(record)} cells but the header has {layout.width}; is a comma in the text unquoted?"
    return ""


def _pair(record: list[str], line: int, layout: _Layout, suffix: str) -> Example | InvalidRow:
    prompt = record[layout.prompt].strip()
    completion = record[layout.completion].strip()
    reason = ""
    if "\x00" in prompt or "\x00" in completion:
        reason = "contains a NUL character"
    elif not completion:
        reason = "empty completion"
    elif not prompt:
        reason = "empty prompt"
    if reason:
        return InvalidRow(line, reason + suffix, excerpt(",".join(record)))
    return Example(prompt, completion, line)
