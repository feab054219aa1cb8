"""Property tests: whatever bytes or text a file holds, parsing ends in rows or a TuneloomError."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_data_support import VALID, no_hang  # noqa: F401
from tuneloom.data import Example, InvalidRow, iter_rows, parse_file
from tuneloom.errors import TuneloomError

FORMATS = st.sampled_from(["auto", "sections", "csv", "jsonl"])
SUFFIXES = st.sampled_from([".txt", ".csv", ".jsonl", ""])
# Bytes that make the interesting cases likely: separators, quotes, brackets, BOMs, bad UTF-8.
PIECES = st.sampled_from(
    [
        b"###",
        b" Human:",
        b" Assistant:",
        b" x",
        b"\n",
        b"\r\n",
        b'"',
        b",",
        b"{",
        b"[",
        b"}",
        b'"prompt":',
        b"\x00",
        b"\xff",
        b"\xe9",
        b"\xef\xbb\xbf",
        b"\xff\xfe",
        b"PK\x03\x04",
        b"input.data.text.raw",
        b";",
    ]
)
BYTES = st.one_of(st.binary(max_size=2000), st.lists(PIECES, max_size=60).map(b"".join))


def parse_bytes(data: bytes, suffix: str, fmt: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"data{suffix}"
        path.write_bytes(data)
        try:
            parsed = parse_file(path, format=fmt)
        except TuneloomError:
            return
        report = parsed.report
        assert report.total_rows == report.valid_rows + report.invalid_rows > 0
        assert len(parsed.examples) == report.valid_rows
        assert len(report.invalid) == min(report.invalid_rows, 100)
        assert all(isinstance(e, Example) and e.completion and e.prompt for e in parsed.examples)
        assert all(isinstance(r, InvalidRow) and r.line >= 1 and len(r.excerpt) <= 120 for r in report.invalid)
        rows = list(iter_rows(path, format=fmt))
        assert len(rows) == report.total_rows


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BYTES, SUFFIXES, FORMATS)
def test_any_bytes_end_in_rows_or_a_tuneloom_error(data: bytes, suffix: str, fmt: str) -> None:
    parse_bytes(data, suffix, fmt)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=80), min_size=1, max_size=20))
def test_arbitrary_text_lines_as_sections(lines: list[str]) -> None:
    text = "\n".join(lines)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.txt"
        path.write_text(text, encoding="utf-8", errors="surrogatepass", newline="")
        try:
            parsed = parse_file(path, format="sections")
        except TuneloomError:
            return
    assert parsed.report.total_rows == parsed.report.valid_rows + parsed.report.invalid_rows
    if "\x00" in text:
        return  # NUL-rich text may rightly be read as UTF-16 without a BOM: line counts differ then
    physical = text.encode("utf-8", "surrogatepass").split(b"\n")
    non_blank = [n for n, line in enumerate(physical, 1) if line.decode("utf-8", "replace").strip()]
    lines_seen = sorted([e.line for e in parsed.examples] + [r.line for r in parsed.report.invalid])
    assert lines_seen == non_blank[: len(lines_seen)]
    assert parsed.report.total_rows == len(non_blank)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([VALID, "", "  ", "### Human: x", "junk"]), min_size=1, max_size=30))
def test_line_numbers_match_the_physical_lines(lines: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.txt"
        path.write_text("\r\n".join(lines), encoding="utf-8", newline="")
        try:
            rows = list(iter_rows(path, format="sections"))
        except TuneloomError:
            assert not any(line.strip() for line in lines)
            return
    expected = [n for n, line in enumerate(lines, 1) if line.strip()]
    assert [r.line for r in rows] == expected
    assert [isinstance(r, Example) for r in rows] == [lines[n - 1] == VALID for n in expected]
