"""Whole files: encodings, line endings, line numbers, binary uploads, and detection of the format."""

from __future__ import annotations

import gzip
import io
import random
import zipfile
from pathlib import Path

import pytest

from test_data_support import MISSING, SEED_SENTIMENT, VALID, file_error, no_hang, write  # noqa: F401
from tuneloom.data import FORMATS, Example, InvalidRow, detect_format, iter_rows, parse_file
from tuneloom.data.lines import MAX_LINE_BYTES
from tuneloom.data.types import MAX_REPORTED_INVALID
from tuneloom.errors import DataFileError, SettingsError, TuneloomError


def test_seed_lines_file(tmp_path: Path) -> None:
    path = write(tmp_path, "seed.txt", "\n".join(SEED_SENTIMENT) + "\n")
    parsed = parse_file(path)
    assert [e.completion for e in parsed.examples] == ["negative.", "neutral.", "positive."]
    assert parsed.report.format == "sections"
    assert parsed.report.source == str(path)
    assert (parsed.report.total_rows, parsed.report.valid_rows, parsed.report.invalid_rows) == (3, 3, 0)


def test_blank_lines_count_nowhere_and_line_numbers_stay_physical(tmp_path: Path) -> None:
    path = write(tmp_path, "d.txt", f"\n{VALID}\n   \n\t\n{MISSING}\n\n{VALID}")
    parsed = parse_file(path)
    assert [e.line for e in parsed.examples] == [2, 7]
    assert [(r.line, r.reason.split(" section")[0]) for r in parsed.report.invalid] == [
        (5, "no '### Assistant:' (or Response/Output/Answer)")
    ]
    assert parsed.report.total_rows == 3


def test_crlf_and_utf8_bom(tmp_path: Path) -> None:
    path = write(tmp_path, "d.txt", ("\ufeff" + VALID + "\r\n\r\n" + VALID + "\r\n").encode("utf-8"))
    parsed = parse_file(path)
    assert [(e.line, e.prompt, e.completion) for e in parsed.examples] == [
        (1, "### Instruction: Classify ### Human: hi there ### Assistant:", "positive."),
        (3, "### Instruction: Classify ### Human: hi there ### Assistant:", "positive."),
    ]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_decode(tmp_path: Path, encoding: str) -> None:
    """With a BOM (utf-16, utf-32) or without one (utf-16-le/-be, detected by the alternating NULs)."""
    text = f"{VALID}\r\n{MISSING}\n### Human: ünïcödé ✓ ### Assistant: ok\n"
    parsed = parse_file(write(tmp_path, "d.txt", text.encode(encoding)))
    assert [e.line for e in parsed.examples] == [1, 3]
    assert parsed.examples[1].prompt == "### Human: ünïcödé ✓ ### Assistant:"
    assert parsed.report.invalid[0].line == 2


def test_utf16_csv_with_bom(tmp_path: Path) -> None:
    data = f'input.data.text.raw,input.data.concepts[*].id\r\n"{VALID}",\r\n'.encode("utf-16")
    parsed = parse_file(write(tmp_path, "d.csv", data))
    assert parsed.report.format == "csv" and parsed.examples[0].line == 2


def test_broken_utf16_is_a_file_error(tmp_path: Path) -> None:
    data = VALID.encode("utf-16-le") + b"\x00\xd8\x41\x00" + "\n".encode("utf-16-le")  # lone surrogate
    error = file_error(write(tmp_path, "d.txt", b"\xff\xfe" + data))
    assert "UTF-16" in error.message


def test_invalid_utf8_row_says_where(tmp_path: Path) -> None:
    path = write(tmp_path, "d.txt", VALID.encode() + b"\n### Human: caf\xe9 ### Assistant: x\n" + VALID.encode())
    parsed = parse_file(path)
    assert parsed.report.valid_rows == 2
    row = parsed.report.invalid[0]
    assert row.line == 2
    assert row.reason.startswith("not valid UTF-8 at byte 15 of the line (0xe9)")
    assert "caf\\xe9" in row.excerpt


def test_mostly_latin1_file_is_a_file_error(tmp_path: Path) -> None:
    lines = [f"### Human: caf{chr(233)} {i} ### Assistant: s{chr(233)}r" for i in range(20)]
    error = file_error(write(tmp_path, "d.txt", "\n".join(lines).encode("latin-1")))
    assert "is not UTF-8 text" in error.message and "line 1, byte 15" in error.message


def test_nul_bytes_in_a_line_are_a_row_error(tmp_path: Path) -> None:
    path = write(tmp_path, "d.txt", f"{VALID}\n### Human: a\x00b ### Assistant: c\n{VALID}\n")
    parsed = parse_file(path)
    assert parsed.report.valid_rows == 2
    assert parsed.report.invalid[0].line == 2
    assert "NUL" in parsed.report.invalid[0].reason
    assert "\x00" not in parsed.report.invalid[0].excerpt


def test_a_2mb_line_is_rejected_without_hanging(tmp_path: Path) -> None:
    huge = "### Human: " + "x" * 2_000_000 + " ### Assistant: y"
    path = write(tmp_path, "d.txt", f"{VALID}\n{huge}\n{VALID}\n{huge}")
    parsed = parse_file(path)
    assert [e.line for e in parsed.examples] == [1, 3]
    assert [r.line for r in parsed.report.invalid] == [2, 4]
    assert parsed.report.invalid[0].reason == f"line is longer than {MAX_LINE_BYTES:,} bytes; skipped"
    assert len(parsed.report.invalid[0].excerpt) <= 120


def test_a_line_just_under_the_cap_is_parsed(tmp_path: Path) -> None:
    line = "### Human: " + "x" * (MAX_LINE_BYTES - 40) + " ### Assistant: y"
    parsed = parse_file(write(tmp_path, "d.txt", f"{line}\n{line}\n"))
    assert parsed.report.valid_rows == 2


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("data.txt", date_time=(2024, 1, 1, 0, 0, 0)), VALID)
    return buffer.getvalue()


# Fixed timestamps in the archives: the ids must be the same in every xdist worker's collection.
@pytest.mark.parametrize(
    ("name", "content", "phrase"),
    [
        ("data.csv", _zip_bytes(), "is a zip archive"),
        ("data.txt", gzip.compress(VALID.encode(), mtime=0), "is a gzip archive"),
        ("data.jsonl", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "is a PDF document"),
        ("data.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is a PNG image"),
        ("data.txt", b"", "is empty"),
        ("data.txt", b"\n \n\t\r\n\n", "has no rows"),
        ("data.txt", bytes(range(32)) * 100, "looks binary"),
        ("data.txt", b"[\n", "one JSON document, not JSON Lines"),
        ("data.json", b'[{"prompt": "a", "completion": "b"}]', "one JSON document, not JSON Lines"),
    ],
)
def test_whole_file_problems(tmp_path: Path, name: str, content: bytes, phrase: str) -> None:
    path = write(tmp_path, name, content)
    assert phrase in file_error(path).message
    with pytest.raises(DataFileError):
        detect_format(path)


def test_zip_message_says_not_a_text_file(tmp_path: Path) -> None:
    message = file_error(write(tmp_path, "upload.csv", _zip_bytes())).message
    assert message.startswith(f"'{tmp_path / 'upload.csv'}' is a zip archive")
    assert "not a text file" in message


@pytest.mark.parametrize("seed", range(5))
def test_binary_noise(tmp_path: Path, seed: int) -> None:
    noise = random.Random(seed).randbytes(200_000)
    file_error(write(tmp_path, "noise.txt", noise))


def test_blank_only_file_with_forced_format(tmp_path: Path) -> None:
    path = write(tmp_path, "d.txt", "\n\n  \n")
    for fmt in ("sections", "jsonl", "csv"):
        assert "has no rows" in file_error(path, format=fmt).message


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert "cannot be read" in file_error(tmp_path / "nope.txt").message
    assert "cannot be read" in file_error(tmp_path).message
    with pytest.raises(DataFileError):
        iter_rows(tmp_path / "nope.txt")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("a.txt", VALID, "sections"),
        ("a.csv", VALID, "sections"),
        ("a.dat", "input.data.text.raw,input.data.concepts[*].id\n", "csv"),
        ("a.txt", "inputid,input,concepts,metadata\n", "csv"),
        ("a.txt", "prompt;completion\n", "csv"),
        ("a.csv", "text,label\nx,y\n", "csv"),
        ("a.csv", f'"{VALID}"\n', "csv"),
        ("a.txt", '{"prompt": "a", "completion": "b"}\n', "jsonl"),
        ("a.jsonl", "not json\n", "jsonl"),
        ("a.txt", "plain text without sections\n", "sections"),
        ("a.txt", "[INST] hi [/INST] ### Assistant: x\n", "sections"),
    ],
)
def test_detect_format_from_content_with_extension_as_hint(
    tmp_path: Path, name: str, content: str, expected: str
) -> None:
    assert detect_format(write(tmp_path, name, "\n\n" + content)) == expected


def test_format_override_and_bad_format(tmp_path: Path) -> None:
    path = write(tmp_path, "d.txt", '{"text": "### Human: a ### Assistant: b"}\n')
    assert parse_file(path).report.format == "jsonl"
    forced = parse_file(path, format="sections")
    assert forced.report.format == "sections"
    assert forced.examples[0].prompt.startswith('{"text": ')  # forced means forced
    with pytest.raises(SettingsError) as caught:
        parse_file(path, format="xml")
    assert caught.value.details["key"] == "format"
    assert FORMATS == ("auto", "sections", "csv", "jsonl")


def test_iter_rows_streams_in_order(tmp_path: Path) -> None:
    path = write(tmp_path, "d.txt", "\n".join([VALID, MISSING, VALID]))
    rows = list(iter_rows(path))
    assert [type(r) for r in rows] == [Example, InvalidRow, Example]
    assert [r.line for r in rows] == [1, 2, 3]


def test_keep_examples_false_keeps_counts_and_first_invalid_rows(tmp_path: Path) -> None:
    lines = [VALID if i % 3 else MISSING for i in range(1, 30_001)]
    parsed = parse_file(write(tmp_path, "d.txt", "\n".join(lines)), keep_examples=False)
    assert parsed.examples == []
    report = parsed.report
    assert (report.total_rows, report.valid_rows, report.invalid_rows) == (30_000, 20_000, 10_000)
    assert len(report.invalid) == MAX_REPORTED_INVALID
    assert [r.line for r in report.invalid[:3]] == [3, 6, 9]


def test_errors_are_tuneloom_errors_with_codes(tmp_path: Path) -> None:
    error = file_error(write(tmp_path, "d.txt", b""))
    assert isinstance(error, TuneloomError)
    assert error.code == "INVALID_DATA_FILE"
    assert error.to_dict()["details"]["path"] == str(tmp_path / "d.txt")
