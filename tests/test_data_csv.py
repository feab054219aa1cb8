"""CSV files: the template, the SDK export, prompt/completion columns, quoting and line numbers."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from test_data_support import MISSING, SEED_SENTIMENT, VALID, file_error, no_hang, write  # noqa: F401
from tuneloom.data import iter_rows, parse_file, write_csv_template
from tuneloom.data.csv_template import TEMPLATE_COLUMNS
from tuneloom.errors import DataFileError

HEADER = "input.data.text.raw,input.data.concepts[*].id\n"


def quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def test_template_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "template.csv"
    write_csv_template(path)
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == TEMPLATE_COLUMNS
    assert 5 <= len(rows) - 1 <= 8 and all(row[1] == "" for row in rows[1:])
    parsed = parse_file(path)
    assert parsed.report.format == "csv" and parsed.report.invalid_rows == 0
    completions = [e.completion for e in parsed.examples]
    assert completions[:3] == ["negative.", "neutral.", "positive."]
    assert "The capital of Vietnam is Hanoi." in completions and "Je te manque." in completions
    assert any(e.prompt.endswith("### Input: I miss you ### Response:") for e in parsed.examples)


def test_template_write_error(tmp_path: Path) -> None:
    with pytest.raises(DataFileError):
        write_csv_template(tmp_path / "missing-dir" / "t.csv")


def test_template_columns_with_seed_lines(tmp_path: Path) -> None:
    body = "".join(f"{quoted(line)},\n" for line in SEED_SENTIMENT)
    parsed = parse_file(write(tmp_path, "d.csv", HEADER + body))
    assert [e.line for e in parsed.examples] == [2, 3, 4]
    assert parsed.examples[0].completion == "negative."


def test_sdk_export_columns_and_ids_in_reasons(tmp_path: Path) -> None:
    text = "inputid,input,concepts,metadata\n" + f"a1,{quoted(VALID)},,{{}}\n" + f"b2,{quoted(MISSING)},,\n"
    parsed = parse_file(write(tmp_path, "export.csv", text))
    assert parsed.examples[0].completion == "positive."
    row = parsed.report.invalid[0]
    assert row.line == 3
    assert row.reason.endswith("(input id 'b2')")


def test_prompt_completion_columns(tmp_path: Path) -> None:
    text = 'id,prompt,completion\n1,"Say hi:\r\n","  hi  "\n2,"Say bye:",""\n3,"",bye\n'
    parsed = parse_file(write(tmp_path, "pc.csv", text))
    assert [(e.prompt, e.completion, e.line) for e in parsed.examples] == [("Say hi:", "hi", 2)]
    assert [(r.line, r.reason) for r in parsed.report.invalid] == [
        (4, "empty completion"),
        (5, "empty prompt"),
    ]


def test_line_numbers_of_multiline_cells(tmp_path: Path) -> None:
    multi = "### Human: first line\nsecond line\n\nfourth ### Assistant: yes\nand more"
    text = HEADER + f"{quoted(multi)},\n\n{quoted(VALID)},\n{quoted(MISSING)},\n"
    parsed = parse_file(write(tmp_path, "d.csv", text))
    assert [e.line for e in parsed.examples] == [2, 8]
    assert parsed.examples[0].completion == "yes\nand more"
    assert parsed.report.invalid[0].line == 9


def test_crlf_and_bom(tmp_path: Path) -> None:
    text = "\ufeff" + HEADER.replace("\n", "\r\n") + f"{quoted(VALID)},\r\n{quoted(VALID)},\r\n"
    parsed = parse_file(write(tmp_path, "d.csv", text.encode("utf-8")))
    assert [e.line for e in parsed.examples] == [2, 3]
    assert parsed.examples[0].completion == "positive."


def test_semicolon_separated(tmp_path: Path) -> None:
    parsed = parse_file(write(tmp_path, "d.csv", f"input.data.text.raw;x\n{quoted(VALID)};\n"))
    assert parsed.report.valid_rows == 1


def test_wrong_columns(tmp_path: Path) -> None:
    message = file_error(write(tmp_path, "d.csv", "text,label\nhello,world\n")).message
    assert "'text', 'label'" in message
    assert "input.data.text.raw" in message and "'prompt' and 'completion'" in message


def test_wrong_columns_fail_before_streaming(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "\n\ntext;label\nhello;world\n")
    with pytest.raises(DataFileError) as caught:
        iter_rows(path)  # no next(): the error comes at the call
    assert "(semicolon-separated)" not in caught.value.message and "'text;label'" in caught.value.message


def test_only_prompt_is_wrong_columns(tmp_path: Path) -> None:
    assert "expected" in file_error(write(tmp_path, "d.csv", "prompt,answer\na,b\n")).message


def test_header_only(tmp_path: Path) -> None:
    assert "no rows" in file_error(write(tmp_path, "d.csv", HEADER)).message
    assert "no rows" in file_error(write(tmp_path, "e.csv", HEADER + "\n,\n\n")).message


def test_ragged_rows_and_empty_cells(tmp_path: Path) -> None:
    text = "prompt,completion\nonly one cell\n" + "a,b,unquoted, comma\n" + "a,b,,\n"
    parsed = parse_file(write(tmp_path, "d.csv", text))
    assert [e.line for e in parsed.examples] == [4]
    reasons = [(r.line, r.reason) for r in parsed.report.invalid]
    assert reasons[0] == (2, "row has 1 cells, the header has 2")
    assert reasons[1][0] == 3 and "is a comma in the text unquoted?" in reasons[1][1]
    empty = parse_file(write(tmp_path, "e.csv", HEADER + f'" ",x\n{quoted(VALID)},\n'))
    assert empty.report.invalid[0].reason == "empty 'input.data.text.raw' cell"


def test_bad_utf8_inside_a_record(tmp_path: Path) -> None:
    raw = (HEADER + f"{quoted(VALID)},\n").encode() + b'"### Human: a\n caf\xe9 ### Assistant: b",\n'
    raw += (f"{quoted(VALID)},\n").encode() * 3
    parsed = parse_file(write(tmp_path, "d.csv", raw))
    assert [e.line for e in parsed.examples] == [2, 5, 6, 7]
    row = parsed.report.invalid[0]
    assert row.line == 3
    assert row.reason.startswith("not valid UTF-8 at byte 5 of the line") and "(on line 4" in row.reason


def test_unclosed_quote_does_not_hang(tmp_path: Path) -> None:
    text = HEADER + f"{quoted(VALID)},\n" + '"### Human: never closed ### Assistant: x,\n' + f"{quoted(VALID)},\n" * 3
    parsed = parse_file(write(tmp_path, "d.csv", text))
    assert parsed.report.total_rows == parsed.report.valid_rows + parsed.report.invalid_rows
    assert parsed.examples[0].line == 2


def test_a_broken_record_shows_the_line_it_starts_on(tmp_path: Path) -> None:
    """The csv module returns no cells for it: the report's "row starts with" was empty."""
    text = HEADER + f"{quoted(VALID)},\n" + '"### Human: broken ### Assistant: ok,""\n' + f"{quoted(VALID)},\n"
    row = parse_file(write(tmp_path, "d.csv", text)).report.invalid[0]
    assert row.line == 3 and row.reason.startswith("stray quote (lines 3-4)")
    assert row.excerpt == '"### Human: broken ### Assistant: ok,""'


def test_huge_cell_is_a_row_error(tmp_path: Path) -> None:
    text = HEADER + '"' + "x" * 300_000 + '",\n' + f"{quoted(VALID)},\n"
    parsed = parse_file(write(tmp_path, "d.csv", text))
    assert parsed.report.invalid_rows >= 1
    assert "longer than" in parsed.report.invalid[0].reason


def test_nul_in_prompt_completion_cells(tmp_path: Path) -> None:
    parsed = parse_file(write(tmp_path, "d.csv", "prompt,completion\na\x00,b\nc,d\n"))
    assert parsed.report.invalid[0].reason == "contains a NUL character"
    assert parsed.examples[0].line == 3
