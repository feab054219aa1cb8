"""The hostile-input corpus: files that have broken other tools, each with the verdict tuneloom owes it.

One list for every channel: `tuneloom validate` (tests/test_validate_hostile.py), the upload API
(tests/test_server_datasets.py) and the web uploader (tests/test_web_e2e.py, a few of the files).
The small files sit beside this module as they are (byte for byte: `.gitattributes` keeps git from
touching their line endings); the big ones (a multi-megabyte line, 100,000-deep nesting, a file over
the upload limit) are made here on demand, so the repository stays small.

A verdict is either a whole-file refusal (`refused`: one message naming the file, CLI exit 1, API
422) or a report of rows (`rows` = valid, invalid; `says`: the first invalid row's reason), usable
or not under the default 5% tolerance. The API answers 413 instead for anything over its limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
GOOD = "### Instruction: Label the review. ### Human: review {} was fine ### Assistant: positive\n"
MB = 1024 * 1024


@dataclass(frozen=True)
class Verdict:
    usable: bool  # `tuneloom validate` exits 0 (usable) or 1
    refused: str = ""  # a whole-file refusal: a fragment of its one message
    rows: tuple[int, int] | None = None  # (valid, invalid) rows of the report
    says: str = ""  # a fragment of the first invalid row's reason

    def status(self, size: int, limit: int) -> int:
        """What the upload API answers: 413 over the limit, 422 for a refused file, else 201 and the report."""
        if size > limit:
            return 413
        return 422 if self.refused else 201


@dataclass(frozen=True)
class Hostile:
    name: str
    data: bytes
    verdict: Verdict

    def write(self, folder: Path) -> Path:
        path = folder / self.name
        path.write_bytes(self.data)
        return path


def refused(fragment: str) -> Verdict:
    return Verdict(usable=False, refused=fragment)


def report(valid: int, invalid: int, says: str = "") -> Verdict:
    """Rows read one by one; usable when some are valid and at most 5% are not (the default tolerance)."""
    usable = valid > 0 and invalid * 100 <= 5 * (valid + invalid)
    return Verdict(usable=usable, rows=(valid, invalid), says=says)


# The committed files, by name.
FILES: dict[str, Verdict] = {
    "empty.txt": refused("is empty"),
    "blank.txt": refused("has no rows"),
    "noise.bin": refused("looks binary"),
    "all-nul.txt": refused("looks binary"),
    "nul-bytes.txt": report(5, 1, "NUL"),
    "bad-utf8.txt": report(19, 1, "not valid UTF-8 at byte 15 of the line (0xe9)"),  # 1 in 20: 5%, still usable
    "latin1.txt": refused("is not UTF-8"),
    "utf16-bom.txt": report(5, 0),
    "utf16-no-bom.txt": report(5, 0),
    "excel-unicode.txt": report(5, 0),  # Excel's "Unicode text": UTF-16 with BOM, tab-separated
    "crlf.txt": report(5, 0),
    "crlf-multiline.csv": report(5, 0),
    "cr-only.txt": refused("ends its lines in \\r alone"),  # was: one row swallowing the other four
    "cr-only.csv": refused("a carriage return (\\r) inside an unquoted cell"),
    "excel-semicolon.csv": report(5, 0),
    "header-only.csv": refused("nothing below the CSV header"),
    "wrong-columns.csv": refused("has CSV columns 'text', 'label'"),  # was: read as sections by the API
    "ragged-rows.csv": report(18, 2, "row has 1 cells, the header has 2"),
    "unclosed-quote-eof.csv": report(5, 1, "unclosed quote"),  # was: 6 valid, the quote kept
    "unclosed-quote-mid.csv": report(3, 1, "from line 5 to the end of the file (line 21)"),  # was: lines unnamed
    "stray-quote.csv": report(18, 1, "stray quote (lines 5-6)"),  # was: 19 valid, 2 lines merged
    "broken-lines.jsonl": report(3, 3, "malformed JSON at column 16"),
    "wrong-types.jsonl": report(1, 10, "'prompt' must be a string, got number"),
    "json-escapes.jsonl": report(1, 2, "NUL"),
    "huge-number.jsonl": report(1, 1, "a number has more than 4,300 digits"),
    "json-document.json": refused("one JSON document, not JSON Lines"),
    # A key given twice in one object, at the top or nested (a chat message, metadata), even spelled with
    # an escape; the same key in two objects is fine. Was: 6 valid, each keeping the last value given.
    "duplicate-keys.jsonl": report(3, 4, 'duplicate key \'completion\': one object gives it twice ("hi" and "bye")'),
    # A "\r" inside a line (not its "\r\n" ending) of a "\n" file: the row is reported, whatever the format.
    # Was: .txt 20 valid (two rows joined into one multi-turn example, a completion "posi\rtive");
    # .csv an unquoted \r blamed on old Mac files, a quoted one kept in the prompt; .jsonl "Extra data"
    # for two joined objects, a \r between keys accepted. An escaped \r in a JSON string stays content.
    "lone-cr.txt": report(18, 2, "a carriage return (\\r) inside the line, at character 40"),
    "lone-cr.csv": report(4, 2, "a carriage return (\\r) inside the line, at character 4"),
    "lone-cr.jsonl": report(3, 2, "a carriage return (\\r) inside the line, at character 43"),
    "sections-repeated.txt": report(3, 0),  # the completion is the last response section
    "sections-odd-order.txt": report(0, 5, "comes after the last response section"),  # was: validate crashed
    "terminal-controls.txt": report(4, 1, "no '### Assistant:'"),
    "script-bidi.txt": report(3, 1, "no '### Assistant:'"),
    "zip-renamed.csv": refused("is a zip archive"),
    "gzip-renamed.csv": refused("is a gzip archive"),
}


def _long_line(size: int, good: int) -> bytes:
    """`good` valid lines, then one sectioned line of `size` bytes: over the 1,000,000-byte line cap."""
    head = b"### Human: " + b"a" * (size - 30)
    return _good(good) + head + b" ### Assistant: x\n"


def _good(count: int) -> bytes:
    return "".join(GOOD.format(i) for i in range(count)).encode()


def _deep_arrays() -> bytes:
    return (
        _good(1).replace(b"### Instruction", b'{"text": "### Instruction').rstrip(b"\n")
        + b'"}\n'
        + (b"[" * 100_000 + b"]" * 100_000 + b"\n")
    )


def _deep_objects() -> bytes:
    return b'{"prompt": "a", "completion": "b"}\n' + b'{"a": ' * 100_000 + b"\n"


OVER_LIMIT_ROWS = 1 + (3 * MB // 2) // len(GOOD.format(99_999))

# The generated files: name → (how to make it, its verdict).
GENERATED: dict[str, tuple[Callable[[], bytes], Verdict]] = {
    "long-line-3mb.txt": (lambda: _long_line(3 * MB, 1), report(1, 1, "longer than 1,000,000 bytes")),
    "long-line-1mb.txt": (lambda: _long_line(1_000_100, 20), report(20, 1, "longer than 1,000,000 bytes")),
    "deep-arrays.jsonl": (_deep_arrays, report(1, 1, "nested more than 64 levels deep")),
    "deep-objects.jsonl": (_deep_objects, report(1, 1, "nested more than 64 levels deep")),
    "over-limit.txt": (lambda: _good(OVER_LIMIT_ROWS), report(OVER_LIMIT_ROWS, 0)),
}


def corpus() -> Iterator[Hostile]:
    """Every hostile file with its verdict: the committed ones, then the generated ones."""
    for name, verdict in FILES.items():
        yield Hostile(name, (FOLDER / name).read_bytes(), verdict)
    for name, (make, verdict) in GENERATED.items():
        yield Hostile(name, make(), verdict)


def names() -> list[str]:
    return [*FILES, *GENERATED]


def get(name: str) -> Hostile:
    if name in FILES:
        return Hostile(name, (FOLDER / name).read_bytes(), FILES[name])
    make, verdict = GENERATED[name]
    return Hostile(name, make(), verdict)
