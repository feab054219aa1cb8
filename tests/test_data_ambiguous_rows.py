"""Rows whose meaning a parser would have to guess: a "\\r" inside a line, a JSON key given twice.

A lone "\\r" in a file whose lines end in "\\n" is not a line break (line numbers stay those of
"\\n"), and it is not kept either: the row holding it is invalid in every format, with a reason
that says where it is and why. A JSON object naming a key twice makes its row invalid, nested
objects included, because `json.loads` would silently keep the last value. Both are checked
through `parse_file` (the path training, the CLI and the API share); the hostile corpus runs the
same kind of file through the CLI and the API.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuneloom.data import Example, InvalidRow, parse_file
from tuneloom.data.lines import LONE_CR
from tuneloom.errors import DataFileError

GOOD = "### Human: fine ### Assistant: ok"


def rows(tmp_path: Path, name: str, data: bytes) -> list[Example | InvalidRow]:
    """Every row of the file in line order, valid or not."""
    path = tmp_path / name
    path.write_bytes(data)
    parsed = parse_file(path)
    return sorted([*parsed.examples, *parsed.report.invalid], key=lambda row: row.line)


def shape(found: list[Example | InvalidRow]) -> list[tuple[int, str]]:
    return [(row.line, "ok" if isinstance(row, Example) else "invalid") for row in found]


JOINED = '{"prompt": "a", "completion": "1"}\r{"prompt": "b", "completion": "2"}'
TEXT_ROW = f'{{"text": "{GOOD}"}}'


@pytest.mark.parametrize(
    ("name", "row", "column"),
    [
        # two sectioned rows joined by an old Mac line ending: they used to become one multi-turn example
        ("joined.txt", "### Human: a ### Assistant: 1\r### Human: b ### Assistant: 2", 30),
        ("completion.txt", "### Human: a ### Assistant: posi\rtive\r", 33),  # (its own "\r\n" is fine)
        ("unquoted.csv", "Say\rbye,bye", 4),
        ("quoted.csv", '"Write a\rpoem",roses', 9),
        ("text-column.csv", '"### Human: a\r### Assistant: b"', 14),
        ("joined.jsonl", JOINED, 35),
        ("between-keys.jsonl", '{"prompt": "a",\r"completion": "b"}', 16),
        ("in-a-string.jsonl", '{"prompt": "a\rb", "completion": "c"}', 14),
    ],
)
def test_a_carriage_return_inside_a_line_makes_that_row_invalid_in_every_format(
    tmp_path: Path, name: str, row: str, column: int
) -> None:
    header = {"unquoted.csv": "prompt,completion\n", "quoted.csv": "prompt,completion\n"}.get(name, "")
    header = "input.data.text.raw\n" if name == "text-column.csv" else header
    good = {"unquoted.csv": "ok,fine", "quoted.csv": "ok,fine"}.get(name, TEXT_ROW if "jsonl" in name else GOOD)
    found = rows(tmp_path, name, f"{header}{good}\n{row}\n{good}\n".encode())
    first = 2 if header else 1
    assert shape(found) == [(first, "ok"), (first + 1, "invalid"), (first + 2, "ok")]  # no row split or renumbered
    invalid = found[1]
    assert isinstance(invalid, InvalidRow)
    assert invalid.reason.startswith(f"{LONE_CR}, at character {column}: only \\n or \\r\\n end a line"), invalid
    assert "may be joining two rows" in invalid.reason and "\\r" in invalid.excerpt and "\r" not in invalid.excerpt


def test_the_reason_counts_every_carriage_return_of_the_line(tmp_path: Path) -> None:
    (invalid,) = rows(tmp_path, "d.txt", b"### Human: a\rb\rc ### Assistant: d\re\r\n")
    assert isinstance(invalid, InvalidRow)
    assert invalid.reason.startswith(f"{LONE_CR}, at character 13 (and 2 more): "), invalid.reason


@pytest.mark.parametrize("ending", ["\r\n", "\r\r\n"])  # Windows, and a CRLF converted twice
def test_carriage_returns_that_end_a_line_are_its_line_ending(tmp_path: Path, ending: str) -> None:
    files = {
        "d.txt": f"{GOOD}{ending}{GOOD}{ending}",
        "d.csv": f'prompt,completion{ending}a,b{ending}"two{ending}lines",c{ending}',
        "t.csv": f'input.data.text.raw{ending}"### Human: two{ending}lines ### Assistant: x"{ending}',
        "d.jsonl": f'{{"prompt": "a", "completion": "b"}}{ending}{{"text": "{GOOD}"}}{ending}',
    }
    for name, text in files.items():
        found = rows(tmp_path, name, text.encode())
        assert all(isinstance(row, Example) for row in found), (name, found)
        assert not any("\r" in row.prompt + row.completion for row in found if isinstance(row, Example)), found
    two_lines = rows(tmp_path, "d.csv", files["d.csv"].encode())[1]
    assert isinstance(two_lines, Example) and two_lines.prompt == "two\nlines"  # a line break inside a quoted cell
    assert rows(tmp_path, "t.csv", files["t.csv"].encode())[0].prompt == "### Human: two\nlines ### Assistant:"


def test_an_escaped_carriage_return_in_a_json_string_is_content(tmp_path: Path) -> None:
    (example,) = rows(tmp_path, "d.jsonl", b'{"prompt": "a\\rb", "completion": "c\\u000dd"}\n')
    assert example == Example("a\rb", "c\rd", 1)  # written as JSON escapes: the user meant them


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (
            '{"prompt": "a", "prompt": "b", "completion": "c"}',
            'duplicate key \'prompt\': one object gives it twice ("a" and "b")',
        ),
        (
            '{"messages": [{"role": "user", "content": "hi", "content": "bye"}, {"role": "assistant", "content": ""}]}',
            'duplicate key \'content\': one object gives it twice ("hi" and "bye")',
        ),
        (
            '{"prompt": "a", "completion": "c", "meta": {"n": [1], "n": {"m": 2}}}',
            "duplicate key 'n': one object gives it twice ([1] and {\"m\": 2})",
        ),
        (
            '{"pr\\u006fmpt": "a", "prompt": "b", "completion": "c"}',
            "duplicate key 'prompt'",
        ),  # same key, spelled apart
        ('{"\\u001b[2J": 1, "\\u001b[2J": 2}', "duplicate key '\\x1b[2J'"),  # shown escaped, never raw
    ],
)
def test_a_key_given_twice_in_any_object_makes_the_row_invalid(tmp_path: Path, row: str, reason: str) -> None:
    found = rows(tmp_path, "d.jsonl", f'{{"prompt": "p", "completion": "c"}}\n{row}\n'.encode())
    assert shape(found) == [(1, "ok"), (2, "invalid")]
    assert isinstance(found[1], InvalidRow) and found[1].reason.startswith(reason), found[1]
    assert "keep only the last value" in found[1].reason


def test_the_same_key_in_different_objects_is_not_a_duplicate(tmp_path: Path) -> None:
    chat = {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}
    nested = {"prompt": "p", "completion": "c", "meta": {"prompt": "x"}, "extra": [{"k": 1}, {"k": 2}]}
    found = rows(tmp_path, "d.jsonl", f"{json.dumps(chat)}\n{json.dumps(nested)}\n".encode())
    assert shape(found) == [(1, "ok"), (2, "ok")]


LINE_PIECES = st.sampled_from(["### Human: a", " ### Assistant: b", "x", ",", '"', "\r", "\r\n", " ", "q"])


@settings(max_examples=60, deadline=None)
@given(st.lists(LINE_PIECES, max_size=40).map("".join), st.sampled_from(["sections", "csv"]))
def test_no_raw_carriage_return_ever_reaches_an_example_and_none_splits_a_row(body: str, fmt: str) -> None:
    text = ("prompt,completion\n" if fmt == "csv" else "") + body + "\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.txt"
        path.write_bytes(text.encode())
        try:
            parsed = parse_file(path, format=fmt)
        except DataFileError:  # no rows at all
            return
    assert not any("\r" in e.prompt + e.completion for e in parsed.examples), parsed.examples
    lines = text.split("\n")
    assert all(1 <= row.line < len(lines) for row in [*parsed.examples, *parsed.report.invalid])
    if fmt == "sections":  # one row per non-blank "\n" line; flagged exactly where text follows a "\r"
        flagged = {row.line for row in parsed.report.invalid if row.reason.startswith(LONE_CR)}
        assert flagged == {n for n, line in enumerate(lines, 1) if "\r" in line.rstrip()}
        assert parsed.report.total_rows == sum(1 for line in lines if line.strip())


KEYS = st.sampled_from(["prompt", "completion", "role", "x"])
VALUES = st.sampled_from(['"p"', '"c"', "1", "null"])


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=5),
    st.lists(st.tuples(KEYS, VALUES), max_size=4),
)
def test_a_row_is_refused_for_duplicates_exactly_when_one_of_its_objects_repeats_a_key(
    top: list[tuple[str, str]], nested: list[tuple[str, str]]
) -> None:
    members = [f'"{key}": {value}' for key, value in top]
    inner = ", ".join(f'"{key}": {value}' for key, value in nested)
    text = "{" + ", ".join([*members, f'"meta": {{{inner}}}']) + "}\n"
    repeated = len({k for k, _ in top}) < len(top) or len({k for k, _ in nested}) < len(nested)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.jsonl"
        path.write_text(text)
        parsed = parse_file(path)
    (row,) = [*parsed.examples, *parsed.report.invalid]
    duplicate = isinstance(row, InvalidRow) and row.reason.startswith("duplicate key '")
    assert duplicate == repeated, (text, row)
