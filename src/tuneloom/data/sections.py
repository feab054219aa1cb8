"""The "###"-sectioned line: `<preamble> ### Header: content ### Header: content …`.

One line is one example. The completion is the content of the LAST response-role section
(`### Assistant:`, `### Response:`, …); the prompt is everything before it, rendered canonically and
ending with that response header, so training and inference always see the same prompt text.

What counts as a header: `###` (or more `#`), optional spaces/tabs, a name of letters, digits,
spaces, `_` or `-` (at most 40 characters, starting with a letter/digit/`_`), optional spaces, then a
colon. A `###` not followed by such a `Name:` is not a header: it stays literal text of the section
(or preamble) it appears in, e.g. `### Human: use ### to separate ### Assistant: ok` has the human
content "use ### to separate".

Decisions, each with its row reason when it rejects a line:
- Earlier response sections stay in the prompt (multi-turn lines train on the last answer).
- A section after the last response section (`… ### Assistant: b ### Human: c`) rejects the line:
  the answer must come last, and guessing which part to learn would teach the wrong thing.
- Empty completion, or a prompt with no text besides headers, rejects the line.
- Canonical rendering keeps the user's header spelling/casing and the content's inner whitespace;
  it strips contents and writes `### Name: content` joined by single spaces.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache

from tuneloom.data.lines import Batch, excerpt
from tuneloom.data.types import Example, InvalidRow
from tuneloom.errors import SettingsError

RESPONSE_HEADERS: tuple[str, ...] = ("assistant", "response", "output", "answer")

HEADER_NAME = r"\w(?:[\w -]{0,38}[\w-])?"
_HEADER_RE = re.compile(r"####*[ \t]*(" + HEADER_NAME + r")[ \t]*:")  # "###" first: a fast literal prefix
_NAME_RE = re.compile(HEADER_NAME)

LineParser = Callable[[str, int], Example | InvalidRow]

# Tier 1's grammar: the text before the last "###" is canonical (see `render_sections`): a stripped
# preamble or a first section with content, then "### Name: content " or "### Name: " sections. A
# content holds any "#" but no "###"; it is matched atomically up to the next "###" (no backtracking),
# then must end in a non-space and the one space before "###". Names are ASCII words here (a subset
# of HEADER_NAME); other spellings, and lines opening with an empty section, take the slower tiers.
# One scan in C: splitting on "###" and checking each piece in Python took twice as long.
_TEXT = r"(?=\S)(?>[^#]*(?:#(?!##)[^#]*)*)(?<=\S )"
_HEADER = r"### [A-Za-z0-9_][A-Za-z0-9_-]{0,39}: "
_CANONICAL_PROMPT = re.compile(rf"(?:(?!###){_TEXT}|{_HEADER}(?!###){_TEXT})(?:{_HEADER}(?:{_TEXT})?)*")


def split_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Split a sectioned text into (preamble, [(header, content)]), all stripped.

    Headers keep the user's spelling and casing; the generation code uses this to rebuild prompts.
    """
    parts = _HEADER_RE.split(text)
    sections = [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts), 2)]
    return parts[0].strip(), sections


def render_sections(preamble: str, sections: Sequence[tuple[str, str]]) -> str:
    """The canonical text: preamble, then `### Header: content` pieces, joined by single spaces.

    An empty content renders as a bare `### Header:` — which is how every prompt ends.
    """
    pieces = [preamble.strip()] if preamble.strip() else []
    for header, content in sections:
        body = content.strip()
        pieces.append(f"### {header.strip()}: {body}" if body else f"### {header.strip()}:")
    return " ".join(pieces)


def normalize_header(name: str) -> str:
    """Compare header names case-insensitively and with runs of whitespace as one space."""
    return " ".join(name.split()).casefold()


def check_response_headers(response_headers: Sequence[str]) -> tuple[str, ...]:
    """Validate configured response headers early, with the setting's name in the error."""
    headers = (response_headers,) if isinstance(response_headers, str) else tuple(response_headers)
    if not headers:
        raise SettingsError("response_headers must name at least one header", key="response_headers")
    for header in headers:
        if not isinstance(header, str) or not _NAME_RE.fullmatch(header.strip()):
            raise SettingsError(
                f"response header {header!r} is not a plain word (letters, digits, spaces, _ or -; ≤ 40)",
                key="response_headers",
            )
    return tuple(h.strip() for h in headers)


def missing_response_reason(response_headers: Sequence[str]) -> str:
    """E.g. "no '### Assistant:' (or Response/Output/Answer) section"."""
    names = [" ".join(word.capitalize() for word in h.split()) for h in response_headers]
    alternatives = f" (or {'/'.join(names[1:])})" if len(names) > 1 else ""
    return f"no '### {names[0]}:'{alternatives} section"


def parse_sectioned_line(
    text: str, line: int, response_headers: Sequence[str] = RESPONSE_HEADERS
) -> Example | InvalidRow:
    """Turn one sectioned line (or CSV cell, or JSON "text") into an example or a rejected row."""
    return line_parser(tuple(response_headers))(text, line)


@lru_cache(maxsize=32)
def line_parser(response_headers: tuple[str, ...]) -> LineParser:
    """Build the per-line parser with the header set bound once: this is the hot path.

    Three tiers, each falling back to the next: (1) a line whose prompt is already canonical (the
    common case) yields it as one slice of the line, checked by one regex scan with no copies;
    (2) one-word headers with irregular spacing are re-rendered from `str.split` pieces; (3) anything
    else, and every invalid line (for its precise reason), goes to the general grammar. All tiers give
    the same result for every line (property-tested against the general grammar and a frozen copy of
    the earlier parser).
    """
    headers = check_response_headers(response_headers)
    keys = frozenset(normalize_header(h) for h in headers)
    spaced = frozenset(" " + key for key in keys)  # the last header as a canonical line spells it, casefolded
    missing = missing_response_reason(headers)
    canonical = _CANONICAL_PROMPT.fullmatch

    def parse(text: str, line: int) -> Example | InvalidRow:
        cut = text.rfind("###")
        colon = text.find(":", cut)
        if cut > 0 and colon > 0 and text[cut + 3 : colon].casefold() in spaced and "\x00" not in text:
            completion = text[colon + 1 :].strip()
            if completion and canonical(text, 0, cut):
                return Example(text[: colon + 1], completion, line)
        return _parse_split(text, line, keys, missing)

    return parse


def _parse_split(text: str, line: int, keys: frozenset[str], missing: str) -> Example | InvalidRow:
    """Tiers 2 and 3, for lines whose prompt is not canonical."""
    pieces = text.split("###")
    head, colon, completion = pieces[-1].partition(":")
    response = head.strip(" \t")
    completion = completion.strip()
    if not colon or not completion or len(pieces) == 1 or response.casefold() not in keys or "\x00" in text:
        return _parse_general(text, line, keys, missing)
    return _rerender(pieces, response, completion, line) or _parse_general(text, line, keys, missing)


def _rerender(pieces: list[str], response: str, completion: str, line: int) -> Example | None:
    """Rebuild the prompt from `str.split` pieces when every header is one plain word; else None."""
    preamble = pieces[0].strip()
    out = [preamble] if preamble else []
    filled = bool(preamble)
    for piece in pieces[1:-1]:
        name, colon, content = piece.partition(":")
        name = name.strip(" \t")
        if not colon or not name.isalpha() or len(name) > 40:
            return None  # a header with spaces/digits, a literal "###", or "####"
        content = content.strip()
        if content:
            out.append(f"### {name}: {content}")
            filled = True
        else:
            out.append(f"### {name}:")
    if not filled:
        return None
    out.append(f"### {response}:")
    return Example(" ".join(out), completion, line)


def _parse_general(text: str, line: int, keys: frozenset[str], missing: str) -> Example | InvalidRow:
    """The full grammar: any header spelling, literal `###`, and a precise reason for every failure."""
    if "\x00" in text:
        return InvalidRow(line, f"contains a NUL byte at character {text.index(chr(0)) + 1}", excerpt(text))
    parts = _HEADER_RE.split(text)
    last = k = len(parts) - 2
    while k > 0:
        if normalize_header(parts[k]) in keys:
            break
        k -= 2
    else:
        return _no_response(text, line, missing, len(parts))
    if k != last:
        return _after_response(text, line, parts[k], parts[k + 2])
    completion = parts[-1].strip()
    if not completion:
        return InvalidRow(line, f"empty completion: nothing after '### {parts[k]}:'", excerpt(text))
    preamble = parts[0].strip()
    sections = [(parts[i], parts[i + 1].strip()) for i in range(1, k, 2)]
    if not preamble and not any(content for _, content in sections):
        return InvalidRow(line, f"empty prompt: nothing before '### {parts[k]}:'", excerpt(text))
    return Example(render_sections(preamble, [*sections, (parts[k], "")]), completion, line)


def _no_response(text: str, line: int, missing: str, n_parts: int) -> InvalidRow:
    hint = "; the line has no '### Header:' sections at all" if n_parts == 1 else ""
    return InvalidRow(line, missing + hint, excerpt(text))


def _after_response(text: str, line: int, response: str, following: str) -> InvalidRow:
    reason = (
        f"'### {following}:' comes after the last response section '### {response}:'; "
        "the response must be the last section"
    )
    return InvalidRow(line, reason, excerpt(text))


def section_row_batches(
    batches: Iterable[Batch], response_headers: tuple[str, ...]
) -> Iterator[list[Example | InvalidRow]]:
    """Rows, one list per batch of lines (a comprehension per batch costs less than a yield per row).

    One row per non-blank line; blank lines count nowhere (neither examples nor invalid rows).
    Items that are already rows come from the line reader (bad UTF-8, over-long lines).
    """
    parse = line_parser(response_headers)
    for first, items in batches:
        yield [
            parse(item, number) if isinstance(item, str) else item
            for number, item in enumerate(items, first)
            if not isinstance(item, str) or (item and not item.isspace())
        ]
