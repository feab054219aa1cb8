"""CSV rows: tuneloom's template (`input.data.text.raw`), the hosted SDK's export (`input`), or
`prompt`/`completion` columns.

Plain lines (no quote, the common case) are split on the delimiter here; the `csv` module does the
quoting of the others (multi-line cells included), fed one physical line at a time from the same
cursor (`csv_lines.CsvLines`), so every row can name the line where it starts.
Lines with bad UTF-8 are fed with U+FFFD in place of the bad bytes (so quoting stays intact),
lines with a "\\r" inside (see `lines.lone_cr`) with it blanked, over-long lines as blank lines; in
each case the record that spans them is reported invalid, with the line's own reason.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

from tuneloom.data.csv_lines import CsvLines
from tuneloom.data.lines import excerpt, iter_batches
from tuneloom.data.sections import LineParser, line_parser
from tuneloom.data.sniff import KNOWN_CSV_COLUMNS, fail, header_cells
from tuneloom.data.types import Example, InvalidRow

TEXT_COLUMNS = ("input.data.text.raw", "input")
ID_COLUMNS = ("input.id", "inputid")
ROW_BATCH = 4096  # rows are handed on in lists of about this many
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
    delimiter: str = ","


def iter_csv_rows(
    chunks: Iterable[bytes], path: Path, response_headers: tuple[str, ...], *, plain: bool = True
) -> Iterator[Example | InvalidRow]:
    """Rows of a CSV file; `DataFileError` if the header names none of the known column sets."""
    for rows in csv_row_batches(chunks, path, response_headers, plain=plain):
        yield from rows


def csv_row_batches(
    chunks: Iterable[bytes], path: Path, response_headers: tuple[str, ...], *, plain: bool = True
) -> Iterator[list[Example | InvalidRow]]:
    """The rows of a CSV file in lists (a comprehension per run of plain lines, see `csv_lines`).

    `plain=False` reads every line with the csv module: the reference the fast path is tested against.
    """
    bad: dict[int, InvalidRow] = {}
    lines = CsvLines(iter_batches(chunks, bad), bad, plain=plain)
    first = lines.skip_blank()
    if first is None:
        return
    delimiter = _delimiter(first)
    # strict: a stray or unclosed quote fails its record instead of silently swallowing the lines after it
    reader = csv.reader(lines.source, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except csv.Error as error:
        raise fail(path, f"has an unreadable CSV header: {_csv_problem(error)}") from None
    layout = _layout(path, header, delimiter)
    yield from _row_batches(lines, reader, layout, line_parser(response_headers))


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
            return _Layout(len(names), index, index, index, ident, header[index].strip(), delimiter)
    if {"prompt", "completion"} <= set(names):
        prompt, completion = names.index("prompt"), names.index("completion")
        return _Layout(len(names), None, prompt, completion, ident, "", delimiter)
    found = ", ".join(repr(excerpt(cell.strip(), 40)) for cell in header[:10]) or "none"
    shown = {",": "", ";": " (semicolon-separated)", "\t": " (tab-separated)"}[delimiter]
    raise fail(path, f"has CSV columns {found}{shown}; expected {EXPECTED}")


def _row_batches(
    lines: CsvLines, reader: Iterator[list[str]], layout: _Layout, parse: LineParser
) -> Iterator[list[Example | InvalidRow]]:
    """Walk the records: runs of plain lines split here, anything else one record by the csv module."""
    bad = lines.bad
    row = _row_maker(layout, parse)
    delimiter = layout.delimiter
    rows: list[Example | InvalidRow] = []
    rows += _take_bad(bad, lines.line, lines.line - 1)[0]  # undecodable header lines, reported first
    while not lines.at_end():
        first = lines.line
        run = lines.plain_run()
        # A plain line is one record, its cells line.split(delimiter): built from `partition`, which
        # finds the first delimiter with memchr where `split` walks every character of the (long) text.
        if run:
            rows += [
                row([head, *tail.split(delimiter)] if sep else [head], n)
                for n, (head, sep, tail) in enumerate(map(str.partition, run, repeat(delimiter)), first)
                if (head and not head.isspace()) or not _blank(tail.split(delimiter))
            ]
        else:
            rows += _records(lines, reader, row)
        if len(rows) >= ROW_BATCH:
            yield rows
            rows = []
    rows += _take_bad(bad, 1 << 62, 1 << 62)[0]
    if rows:
        yield rows


def _records(lines: CsvLines, reader: Iterator[list[str]], row: _RowMaker) -> list[Example | InvalidRow]:
    """Records read by the csv module (consuming the lines each spans), while the next line needs it too.

    A record spanning bad lines is invalid, with the first one's reason.
    """
    out: list[Example | InvalidRow] = []
    bad = lines.bad
    while True:
        start = lines.first + lines.pos  # (`lines.line`, inlined: this loop runs once per record)
        # Its first line, taken while held: a record the csv module refuses may have run on into the
        # next batch by then, and its excerpt must not depend on where the batches were cut.
        head = lines.items[lines.pos]
        failure: InvalidRow | None = None
        try:
            record = next(reader)
        except StopIteration:
            return out
        except csv.Error as error:
            reason = _csv_reason(error, start, lines.line - 1)  # the record's cells are lost: show its first line
            record, failure = [], InvalidRow(start, reason, excerpt(head if isinstance(head, str) else ""))
        if bad:
            earlier, spanning = _take_bad(bad, start, lines.line - 1)
            out += earlier
            failure = spanning or failure
        if failure is not None:
            out.append(failure)
        elif not _blank(record):
            out.append(row(record, start))
        if lines.pos not in lines.hard:  # a plain line next, or the end of the batch
            return out


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


_RowMaker = Callable[[list[str], int], Example | InvalidRow]


def _row_maker(layout: _Layout, parse: LineParser) -> _RowMaker:
    """The record → example function for this layout, its fields bound once: this is the hot path.

    The sectioned-text cell goes to the sectioned-line parser, prompt/completion cells are used
    directly. A plain line's last cell may still end in the "\r" of a "\r\n" (`CsvLines.plain_run`):
    every cell but the text is stripped, and the text loses that "\r" here (a cell the csv module
    returns never ends in "\r": one before a closing quote is a lone "\r", blanked), so the row is
    the one the csv module's cells give. The input id is only looked at for a rejected row's reason.
    """
    width, text_index = layout.width, layout.text

    def row(record: list[str], line: int) -> Example | InvalidRow:
        if len(record) != width:
            problem = _width(record, layout)
            if problem:
                return _invalid(record, line, problem, layout)
        if text_index is None:
            return _pair(record, line, layout)
        text = record[text_index]
        if not text or text.isspace():  # (`not text.strip()` without copying the text)
            return _invalid(record, line, f"empty '{layout.text_name}' cell", layout)
        if text[-1:] == "\r":
            text = text[:-1]
        result = parse(text, line)
        if result.__class__ is InvalidRow:
            suffix = _id_suffix(record, layout)
            return InvalidRow(line, result.reason + suffix, result.excerpt) if suffix else result
        return result

    return row


def _id_suffix(record: list[str], layout: _Layout) -> str:
    """The " (input id 'b2')" a rejected row's reason ends with, when the file has an id column and the row an id."""
    if layout.ident is not None and layout.ident < len(record) and record[layout.ident].strip():
        return f" (input id {excerpt(record[layout.ident].strip(), 60)!r})"
    return ""


def _invalid(record: list[str], line: int, reason: str, layout: _Layout) -> InvalidRow:
    return InvalidRow(line, reason + _id_suffix(record, layout), excerpt(",".join(record)))


def _width(record: list[str], layout: _Layout) -> str:
    needed = max(layout.prompt, layout.completion) + 1
    if len(record) < needed:
        return f"row has {len(record)} cells, the header has {layout.width}"
    if len(record) > layout.width and any(cell.strip() for cell in record[layout.width :]):
        return f"row has {len(record)} cells but the header has {layout.width}; is a comma in the text unquoted?"
    return ""


def _pair(record: list[str], line: int, layout: _Layout) -> Example | InvalidRow:
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
        return _invalid(record, line, reason, layout)
    return Example(prompt, completion, line)
