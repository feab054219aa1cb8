"""Turn a stream of UTF-8 byte chunks into numbered text lines, in big batches.

Why batches: decoding a megabyte at once and splitting it on "\\n" is done in C, and costs a small
fraction of what a per-line `readline()` + `decode()` does. Only a chunk that fails to decode is
redone line by line, to say which line holds the bad bytes and where.

Lines are split on "\\n" only (a trailing "\\r" stays and is whitespace to every parser), so line
numbers match what an editor shows. A line longer than `MAX_LINE_BYTES` is never held in memory
whole: it becomes one `InvalidRow` and the rest of it is skipped.

A "\\r" inside a line (anywhere but the trailing whitespace, where "\\r\\n" and a doubled "\\r\\r\\n" put
it) is no line break: splitting on it would renumber every later line and break quoted CSV cells,
and keeping it would join what were probably two rows (a file with old Mac line endings pasted into
a Unix one) or teach the model to write carriage returns. So the row holding it is invalid, in every
format, with a reason that says where and why (`lone_cr_row`). A file ended by "\\r" alone
throughout is refused as a whole instead (`sniff.check_line_endings`). JSON's escaped `\\r` is not
a raw "\\r" and stays content.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import cast

from tuneloom.data.types import InvalidRow

MAX_LINE_BYTES = 1_000_000  # a hard cap per line: a longer "line" is a broken file, not an example
CHUNK_BYTES = 1 << 19  # below MAX_LINE_BYTES, so a batch of ordinary lines needs no length check
EXCERPT_CHARS = 120
LONE_CR = "a carriage return (\\r) inside the line"  # how every row with a "\r" inside is reported

# One batch: the number of its first line, then one item per line (text, or the row it became).
Batch = tuple[int, list[str | InvalidRow]]


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The start of a raw row, safe to print: control, bidi and other invisible characters escaped.

    A terminal must never receive a raw escape sequence or a right-to-left override from a data file.
    """
    text = text.rstrip("\r\n")  # the line ending is not part of the row
    head = text[: limit + 1]
    if not head.isprintable():
        head = "".join(ch if ch.isprintable() or ch == " " else _escape_char(ch) for ch in head)
    if len(head) > limit or len(text) > limit:
        head = head[: limit - 1] + "…"
    return head


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return {"\t": "\\t", "\n": "\\n", "\r": "\\r"}.get(ch, f"\\x{code:02x}")
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def too_long_row(line: int, head: bytes) -> InvalidRow:
    """The row a line over the cap becomes; `head` is its first bytes, for the excerpt."""
    text = head[: EXCERPT_CHARS * 4].decode("utf-8", "replace")
    return InvalidRow(line, f"line is longer than {MAX_LINE_BYTES:,} bytes; skipped", excerpt(text))


def bad_utf8_row(line: int, raw: bytes, error: UnicodeDecodeError) -> InvalidRow:
    """Say where in the line the undecodable byte sits, counting bytes from 1."""
    bad = raw[error.start : error.start + 1].hex()
    reason = f"not valid UTF-8 at byte {error.start + 1} of the line (0x{bad}); is the file saved as UTF-8?"
    return InvalidRow(line, reason, excerpt(raw[: EXCERPT_CHARS * 4].decode("utf-8", "backslashreplace")))


def lone_cr(line: str) -> int:
    """Index of the first "\\r" inside `line` (one with text after it on the line), or -1."""
    first = line.find("\r")
    if first < 0 or first == len(line) - 1:  # none, or only the "\r" of a "\r\n" ending
        return -1
    return line.find("\r", first, len(line.rstrip()))


def lone_cr_row(line: int, text: str, index: int) -> InvalidRow:
    """The row a line with a "\\r" inside becomes: where the first one is, how many, and what to do."""
    count = text.count("\r", 0, len(text.rstrip()))
    many = f" (and {count - 1} more)" if count > 1 else ""
    reason = (
        f"{LONE_CR}, at character {index + 1}{many}: only \\n or \\r\\n end a line, so this \\r is not read "
        "as a line break and may be joining two rows (old Mac line endings mixed in?); replace it with a "
        "line break or remove it"
    )
    return InvalidRow(line, reason, excerpt(text))


def decode_lines(body: bytes, first_line: int, bad: dict[int, InvalidRow] | None = None) -> list[str | InvalidRow]:
    """Decode a run of complete lines; fall back to line-by-line only when something is wrong."""
    if len(body) > MAX_LINE_BYTES and max(map(len, body.split(b"\n"))) > MAX_LINE_BYTES:
        items = _decode_each(body, first_line, bad)
    else:
        try:
            items = cast("list[str | InvalidRow]", body.decode("utf-8").split("\n"))
        except UnicodeDecodeError:
            items = _decode_each(body, first_line, bad)
    if b"\r" in body:  # one scan of the chunk in C: most files hold no "\r" and pay nothing more
        _mark_lone_cr(items, first_line, bad)
    return items


def _mark_lone_cr(items: list[str | InvalidRow], first_line: int, bad: dict[int, InvalidRow] | None) -> None:
    """Lines with a "\\r" inside become rows (or, with `bad`, CSV text with the "\\r" blanked + an entry).

    Only lines with a "\\r" before their last character can hold one: found first, in one cheap pass
    ("\\r\\n" files have a "\\r" on every line), so `lone_cr` runs on those alone.
    """
    for index in [i for i, item in enumerate(items) if isinstance(item, str) and "\r" in item[:-1]]:
        text = cast(str, items[index])
        at = lone_cr(text)
        if at < 0:
            continue
        row = lone_cr_row(first_line + index, text, at)
        if bad is None:
            items[index] = row
        else:  # the csv module would raise on an unquoted "\r": blank it, keep the quoting intact
            bad.setdefault(first_line + index, row)
            items[index] = text.replace("\r", " ")


def _decode_each(body: bytes, first_line: int, bad: dict[int, InvalidRow] | None) -> list[str | InvalidRow]:
    items: list[str | InvalidRow] = []
    for number, raw in enumerate(body.split(b"\n"), first_line):
        if len(raw) > MAX_LINE_BYTES:
            items.append(too_long_row(number, raw))
            continue
        try:
            items.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            row = bad_utf8_row(number, raw, error)
            if bad is None:
                items.append(row)
            else:
                bad[number] = row
                items.append(raw.decode("utf-8", "replace"))
    return items


def iter_batches(chunks: Iterable[bytes], bad: dict[int, InvalidRow] | None = None) -> Iterator[Batch]:
    """Yield (first line number, lines) batches from UTF-8 chunks of any size.

    Memory stays bounded by one chunk plus one capped line, whatever the file holds.
    Undecodable lines become `InvalidRow`s in place, or, when `bad` is given (CSV, where a quoted
    cell may span lines and the quoting must survive), text with U+FFFD plus an entry in `bad`.
    """
    line_no = 1
    tail = b""
    skipping = False  # inside an over-long line, already reported, until its newline
    for chunk in chunks:
        if skipping:
            cut = chunk.find(b"\n")
            if cut < 0:
                continue
            chunk = chunk[cut + 1 :]
            skipping = False
            line_no += 1
        data = tail + chunk if tail else chunk
        cut = data.rfind(b"\n")
        if cut >= 0:
            items = decode_lines(data[:cut], line_no, bad)
            yield line_no, items
            line_no += len(items)
            data = data[cut + 1 :]
        tail = data
        if len(tail) > MAX_LINE_BYTES:
            yield line_no, [too_long_row(line_no, tail)]
            tail = b""
            skipping = True
    if tail and not skipping:
        yield line_no, decode_lines(tail, line_no, bad)
