"""The CSV fast path (`tuneloom.data.csv_lines`) gives exactly the rows the csv module gives.

Plain lines (no quote, no "\\r" before the end, no over-long cell) are split on the delimiter
directly; everything else goes through the csv module. `plain=False` sends every line through the
csv module, one physical line at a time, the way every CSV file was read before the fast path: the
reference here. Random files mix what breaks CSV readers (quotes, doubled quotes, delimiters and
newlines inside quoted cells, "\\r" anywhere, blank lines, unclosed quotes, bad UTF-8, a BOM, NUL,
semicolon and tab delimiters), cut into random chunks so records cross the line reader's batches.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuneloom.data import Example, InvalidRow
from tuneloom.data.csv_lines import CsvLines
from tuneloom.data.csv_rows import iter_csv_rows
from tuneloom.data.lines import iter_batches
from tuneloom.errors import DataFileError

RESPONSE = ("assistant", "response")
HEADER_LINES = [
    "input.data.text.raw,input.data.concepts[*].id",
    "input.id;input.data.text.raw",
    "inputid\tinput\tconcepts\tmetadata",
    "id,prompt,completion",
    "prompt;completion",
    "\ufeffprompt,completion",
    '"input.data.text.raw","note\nspanning a line"',
    "input.data.text.raw\r,x",
    "name,age",
    "",
]
PIECES = [
    "### Human: hi ### Assistant: ok",
    "### Instruction: x ### Input: y ### Response: z",
    "###Assistant :",
    "### Human: no answer",
    "plain words",
    "  ",
    ",",
    ";",
    "\t",
    '"',
    '""',
    '"a, b"',
    "\n",
    "\n",
    "\n\n",
    "\r\n",
    "\r",
    "\r\r\n",
    " \r \r",
    "\x00",
    "\ufeff",
    "\u202e",
    "é",
    "x" * 40,
]
BAD_BYTES = [b"\xff", b"\xc3", b"\xe9 "]


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A header (or none), random pieces and bad bytes, and random cuts into chunks."""
    header = draw(st.sampled_from(HEADER_LINES)) + draw(st.sampled_from(["\n", "\r\n"]))
    pieces = st.one_of(st.sampled_from(PIECES).map(str.encode), st.sampled_from(BAD_BYTES))
    body = header.encode() + b"".join(draw(st.lists(pieces, max_size=50)))
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=6)))
    return body, [body[a:b] for a, b in itertools.pairwise([0, *cuts, len(body)])]


def rows(chunks: list[bytes], *, plain: bool) -> list[Example | InvalidRow] | str:
    try:
        return list(iter_csv_rows(iter(chunks), Path("f.csv"), RESPONSE, plain=plain))
    except DataFileError as error:
        return error.message


@pytest.fixture(params=[csv.field_size_limit(), 24], ids=["default-cell-limit", "cell-limit-24"])
def cell_limit(request: pytest.FixtureRequest) -> Iterator[int]:
    """The csv module's cell limit, also set small so plain lines longer than it are tried too."""
    previous = csv.field_size_limit(request.param)
    try:
        yield request.param
    finally:
        csv.field_size_limit(previous)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(csv_files())
def test_fast_path_gives_the_csv_modules_rows(cell_limit: int, file: tuple[bytes, list[bytes]]) -> None:
    body, chunks = file
    expected = rows([body], plain=False)
    assert rows(chunks, plain=True) == expected, body


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text(alphabet=' ab,;"\n\t#:', max_size=12), st.text(alphabet="ab ,\n", max_size=6))))
def test_examples_are_the_cells_csv_writer_wrote(pairs: list[tuple[str, str]]) -> None:
    """Whatever csv.writer quotes (or not), each example is its row's stripped cells, on its line."""
    lines = ["prompt,completion\n"]
    expected = []
    for prompt, completion in pairs:
        row = _write_row(prompt, completion)
        if prompt.strip() and completion.strip():
            expected.append((prompt.strip(), completion.strip(), len("".join(lines).split("\n"))))
        lines.append(row)
    text = "".join(lines).encode()
    got = [
        (row.prompt, row.completion, row.line)
        for row in iter_csv_rows([text], Path("f.csv"), RESPONSE)
        if isinstance(row, Example)
    ]
    assert got == expected


def _write_row(*cells: str) -> str:
    out: list[str] = []

    class Sink:
        def write(self, text: str) -> None:
            out.append(text)

    csv.writer(Sink(), lineterminator="\r\n").writerow(cells)
    return "".join(out)


def test_quote_free_lines_skip_the_csv_module_and_quoted_ones_do_not() -> None:
    """What the speed rests on: a run of plain lines ("\\r\\n" endings too) is handed out whole."""
    body = b"a,b\r\nc,d\r\n\r\ne,f\n" + b'"g\n,h",i\nj,k\n'
    lines = CsvLines(iter_batches([body]), {})
    assert not lines.at_end()
    assert lines.plain_run() == ["a,b\r", "c,d\r", "\r", "e,f"]
    assert lines.plain_run() == []  # the quoted record: the csv module reads it, both lines
    assert next(csv.reader(lines.source)) == ["g\n,h", "i"]
    assert lines.line == 7
    assert lines.plain_run() == ["j,k"]
    assert lines.at_end()
