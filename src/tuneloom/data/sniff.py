"""Look at the first 64 KB of a file: is it text at all, in which encoding, and in which format.

Whole-file problems are caught here, once, with one clear `DataFileError` naming the file, instead of
surfacing as a million identical row errors: an archive or PDF uploaded by mistake, binary noise,
a file in a legacy 8-bit encoding. The file extension is only a tie-breaker: content decides.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tuneloom.data.lines import CHUNK_BYTES
from tuneloom.errors import DataFileError

SAMPLE_BYTES = 64 * 1024
FORMATS = ("auto", "sections", "csv", "jsonl")
KNOWN_CSV_COLUMNS = frozenset(
    {
        "input.data.text.raw",
        "input.data.concepts[*].id",
        "input.id",
        "inputid",
        "input",
        "prompt",
        "completion",
    }
)

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a zip archive (an .xlsx or .docx file is one too: save the sheet as CSV UTF-8)"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"\x1f\x8b", "a gzip archive (decompress it first)"),
    (b"%PDF-", "a PDF document"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x28\xb5\x2f\xfd", "a zstd archive"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old-style Office document (.xls/.doc)"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\x7fELF", "an executable"),
    (b"\x93NUMPY", "a NumPy array file"),
)
_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
# Bytes no text file holds in quantity: C0 controls except \t \n \v \f \r, and DEL.
_CONTROL = bytes([*range(0, 9), *range(14, 32), 127])


@dataclass(frozen=True)
class Sniffed:
    """What the sample showed: how to decode the file and what its first lines say."""

    path: Path
    encoding: str  # a Python codec name; "utf-8" means bytes are passed through as they are
    skip: int  # bytes of BOM to skip
    sample: str  # the decoded sample (complete lines only, when the file is longer)


def fail(path: Path, problem: str) -> DataFileError:
    """A whole-file error whose message starts with the file's name."""
    return DataFileError(f"'{path}' {problem}", details={"path": str(path)})


def sniff(path: Path) -> Sniffed:
    """Read the sample and reject what is not text, before any row is parsed."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(SAMPLE_BYTES)
            truncated = bool(handle.read(1))
    except OSError as error:
        raise fail(path, f"cannot be read: {error.strerror or error}") from None
    if not raw:
        raise fail(path, "is empty: it has no rows")
    for magic, what in _MAGIC:
        if raw.startswith(magic):
            raise fail(path, f"is {what}, not a text file")
    encoding, skip = _encoding(raw)
    if encoding == "utf-8":
        return Sniffed(path, encoding, skip, _utf8_sample(path, raw[skip:], truncated))
    return Sniffed(path, encoding, skip, _wide_sample(path, raw[skip:], encoding, truncated))


def _encoding(raw: bytes) -> tuple[str, int]:
    """The BOM decides; without one, alternating NULs betray UTF-16."""
    for bom, name in _BOMS:
        if raw.startswith(bom):
            return name, len(bom)
    head = raw[:4096]
    pairs = len(head) // 2
    even_nuls = head[0 : 2 * pairs : 2].count(0)
    odd_nuls = head[1 : 2 * pairs : 2].count(0)
    if odd_nuls >= max(4, 0.3 * pairs) and even_nuls <= 0.05 * pairs:
        return "utf-16-le", 0
    if even_nuls >= max(4, 0.3 * pairs) and odd_nuls <= 0.05 * pairs:
        return "utf-16-be", 0
    return "utf-8", 0


def _utf8_sample(path: Path, raw: bytes, truncated: bool) -> str:
    """Reject binary noise and files in another 8-bit encoding; return the sample as text."""
    if not raw:
        raise fail(path, "is empty: it has no rows")
    control = len(raw) - len(raw.translate(None, _CONTROL))
    if control * 20 > len(raw):
        share = 100 * control / len(raw)
        raise fail(path, f"looks binary, not text: {share:.0f}% of its first bytes are control characters")
    if truncated and b"\n" in raw:
        raw = raw[: raw.rindex(b"\n") + 1]
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(raw, final=not truncated)
    except UnicodeDecodeError:
        _check_mostly_utf8(path, raw)
        return raw.decode("utf-8", "replace")


def _check_mostly_utf8(path: Path, raw: bytes) -> None:
    """A few bad lines are row errors; every line, or 3+ lines and a quarter, means the file is not UTF-8."""
    lines = [line for line in raw.split(b"\n") if line.strip()]
    bad = []
    for number, line in enumerate(lines, 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as error:
            bad.append((number, error.start + 1))
    if bad and (len(bad) == len(lines) or (len(bad) >= 3 and len(bad) * 4 >= len(lines))):
        first_line, first_byte = bad[0]
        raise fail(
            path,
            f"is not UTF-8 text: {len(bad)} of its first {len(lines)} lines have invalid bytes "
            f"(first: line {first_line}, byte {first_byte}). Save it as UTF-8 (in Excel: 'CSV UTF-8').",
        )


def _wide_sample(path: Path, raw: bytes, encoding: str, truncated: bool) -> str:
    try:
        text = codecs.getincrementaldecoder(encoding)().decode(raw, final=not truncated)
    except UnicodeDecodeError as error:
        raise fail(path, f"looks like {encoding.upper()} but has invalid bytes at offset {error.start}") from None
    if "\x00" in text and text.count("\x00") * 20 > len(text):
        raise fail(path, f"looks binary, not {encoding.upper()} text: it is full of NUL characters")
    if truncated and "\n" in text:
        text = text[: text.rindex("\n") + 1]
    return text


def open_chunks(sniffed: Sniffed) -> Iterator[bytes]:
    """The file's bytes as UTF-8 chunks, transcoding UTF-16/32 on the way, in bounded memory."""
    try:
        handle = open(sniffed.path, "rb")  # noqa: SIM115 - closed by the generator's `with`
    except OSError as error:
        raise fail(sniffed.path, f"cannot be read: {error.strerror or error}") from None
    with handle:
        handle.seek(sniffed.skip)
        if sniffed.encoding == "utf-8":
            yield from iter(lambda: handle.read(CHUNK_BYTES), b"")
            return
        decoder = codecs.getincrementaldecoder(sniffed.encoding)()
        offset = sniffed.skip
        try:
            for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
                yield decoder.decode(chunk).encode("utf-8")
                offset += len(chunk)
            yield decoder.decode(b"", final=True).encode("utf-8")
        except UnicodeDecodeError as error:
            where = f"near byte {offset + error.start}"
            raise fail(sniffed.path, f"is not valid {sniffed.encoding.upper()} {where}") from None


def check_line_endings(sniffed: Sniffed) -> None:
    """Lines ended by "\\r" alone (classic Mac) would read as one long row that swallows the others."""
    if "\n" not in sniffed.sample and "\r" in sniffed.sample.rstrip("\r\t "):
        raise fail(
            sniffed.path,
            "ends its lines in \\r alone (old Mac line endings), so it would read as one line: "
            "save it with \\n or \\r\\n line endings",
        )


def choose_format(sniffed: Sniffed, requested: str = "auto") -> str:
    """Content first, extension as a tie-breaker; an explicit `format` always wins."""
    if requested != "auto":
        return requested
    first = next((line.strip() for line in sniffed.sample.split("\n") if line.strip()), "")
    suffix = sniffed.path.suffix.lower()
    if not first:
        raise fail(sniffed.path, "has no rows: it is empty or holds only blank lines")
    if first in ("{", "[") or first.startswith("[{"):
        raise fail(
            sniffed.path,
            "looks like one JSON document, not JSON Lines: put one object per line, "
            'e.g. {"prompt": "…", "completion": "…"}',
        )
    if first.startswith("{"):
        return "jsonl"
    if "###" in first and not first.startswith('"'):
        return "sections"  # checked before CSV: a header row never holds "###", a text line may hold commas
    if _csv_header(first):
        return "csv"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    return "sections"


def _csv_header(line: str) -> bool:
    """Does the first line name at least one column tuneloom knows, with any common delimiter?"""
    for delimiter in (",", ";", "\t"):
        if any(cell.strip().lower() in KNOWN_CSV_COLUMNS for cell in header_cells(line, delimiter)):
            return True
    return False


def header_cells(line: str, delimiter: str) -> list[str]:
    """The cells of a one-line CSV header, or none when the line is not CSV with this delimiter.

    The csv module raises on a bare "\r" inside an unquoted cell (a file with old Mac line endings
    is one long line of them): for guessing the format or the delimiter, that line just is not a
    header; `csv_rows` says why when the file is read as CSV anyway.
    """
    try:
        return next(csv.reader([line], delimiter=delimiter), [])
    except csv.Error:
        return []


def detect_format(path: Path) -> str:
    """ "sections", "csv" or "jsonl", from the first 64 KB; `DataFileError` if it is not a data file."""
    return choose_format(sniff(Path(path)))
