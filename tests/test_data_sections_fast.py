"""The sectioned-line parser gives exactly what it gave before its canonical tier became one regex scan.

`_reference_line_parser` below is a frozen copy of the parser as it was (split on "###", canonical
prompts recognised piece by piece), with the helpers it used. Every example (prompt, completion,
line) and every invalid row (line, reason, excerpt) must be the same, for random sectioned lines
built to hit the canonical tier's edges: header spellings (case, digits, `-`, `_`, spaces, non-ASCII
letters, 40/41 characters), spaces and tabs around `###` and `:`, `####`, empty and repeated
sections, preambles, multi-turn lines, `#` and `:` inside text, unicode and trailing whitespace.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable, Sequence

import pytest
from bench.parse import make_line
from hypothesis import given, settings
from hypothesis import strategies as st

from tuneloom.data import RESPONSE_HEADERS, Example, InvalidRow
from tuneloom.data.lines import excerpt
from tuneloom.data.sections import check_response_headers, line_parser, missing_response_reason

# ---- frozen reference: tuneloom/data/sections.py before the regex tier (do not edit) ----

_REF_HEADER_RE = re.compile(r"####*[ \t]*(" + r"\w(?:[\w -]{0,38}[\w-])?" + r")[ \t]*:")


def _reference_normalize_header(name: str) -> str:
    return " ".join(name.split()).casefold()


def _reference_render_sections(preamble: str, sections: Sequence[tuple[str, str]]) -> str:
    pieces = [preamble.strip()] if preamble.strip() else []
    for header, content in sections:
        body = content.strip()
        pieces.append(f"### {header.strip()}: {body}" if body else f"### {header.strip()}:")
    return " ".join(pieces)


def _reference_line_parser(response_headers: tuple[str, ...]) -> Callable[[str, int], Example | InvalidRow]:
    headers = check_response_headers(response_headers)
    keys = frozenset(_reference_normalize_header(h) for h in headers)
    missing = missing_response_reason(headers)

    def parse(text: str, line: int) -> Example | InvalidRow:
        pieces = text.split("###")
        head, colon, completion = pieces[-1].partition(":")
        response = head.strip(" \t")
        completion = completion.strip()
        if not colon or not completion or len(pieces) == 1 or response.casefold() not in keys or "\x00" in text:
            return _reference_parse_general(text, line, keys, missing)
        if head[0] == " " and len(head) == len(response) + 1 and _reference_is_canonical(pieces):
            return Example(text[: len(text) - len(pieces[-1]) + len(head) + 1], completion, line)
        return _reference_rerender(pieces, response, completion, line) or _reference_parse_general(
            text, line, keys, missing
        )

    return parse


def _reference_rerender(pieces: list[str], response: str, completion: str, line: int) -> Example | None:
    preamble = pieces[0].strip()
    out = [preamble] if preamble else []
    filled = bool(preamble)
    for piece in pieces[1:-1]:
        name, colon, content = piece.partition(":")
        name = name.strip(" \t")
        if not colon or not name.isalpha() or len(name) > 40:
            return None
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


def _reference_is_canonical(pieces: list[str]) -> bool:
    first = pieces[0]
    filled = False
    if first:
        if len(first) < 2 or first[-1] != " " or first[0].isspace() or first[-2].isspace():
            return False
        filled = True
    for i in range(1, len(pieces) - 1):
        piece = pieces[i]
        colon = piece.find(":")
        if not 1 < colon <= 41 or piece[0] != " " or piece[-1] != " " or not piece[1:colon].isalpha():
            return False
        if len(piece) - colon == 2:
            continue
        if piece[colon + 1] != " " or piece[colon + 2].isspace() or piece[-2].isspace():
            return False
        filled = True
    return filled


def _reference_parse_general(text: str, line: int, keys: frozenset[str], missing: str) -> Example | InvalidRow:
    if "\x00" in text:
        return InvalidRow(line, f"contains a NUL byte at character {text.index(chr(0)) + 1}", excerpt(text))
    parts = _REF_HEADER_RE.split(text)
    last = k = len(parts) - 2
    while k > 0:
        if _reference_normalize_header(parts[k]) in keys:
            break
        k -= 2
    else:
        hint = "; the line has no '### Header:' sections at all" if len(parts) == 1 else ""
        return InvalidRow(line, missing + hint, excerpt(text))
    if k != last:
        reason = (
            f"'### {parts[k + 2]}:' comes after the last response section '### {parts[k]}:'; "
            "the response must be the last section"
        )
        return InvalidRow(line, reason, excerpt(text))
    completion = parts[-1].strip()
    if not completion:
        return InvalidRow(line, f"empty completion: nothing after '### {parts[k]}:'", excerpt(text))
    preamble = parts[0].strip()
    sections = [(parts[i], parts[i + 1].strip()) for i in range(1, k, 2)]
    if not preamble and not any(content for _, content in sections):
        return InvalidRow(line, f"empty prompt: nothing before '### {parts[k]}:'", excerpt(text))
    return Example(_reference_render_sections(preamble, [*sections, (parts[k], "")]), completion, line)


# ---- random sectioned lines ----

HEADER_SETS = [RESPONSE_HEADERS, ("Assistant",), ("bot reply", "Q-1", "answer_2")]

NAMES = st.sampled_from(
    [
        "Instruction",
        "Human",
        "Assistant",
        "assistant",
        "ASSISTANT",
        "AssistanT",
        "Response",
        "Output",
        "Answer",
        "Input",
        "System",
        "Bot Reply",
        "bot  reply",
        "Q-1",
        "answer_2",
        "Step 2",
        "2",
        "_",
        "-x",
        "x-",
        "Ünïcode",
        "Straße",
        "ﬁle",
        "x²",
        "A" * 40,
        "A" * 41,
        "Human\t",
        "Assistant ",
    ]
) | st.text(st.sampled_from("aZ9_- \tü#:"), min_size=0, max_size=6)
SPACES = st.sampled_from(["", " ", " ", " ", "  ", "\t", " \t", "\n", "\xa0"])
HASHES = st.sampled_from(["###", "###", "###", "####", "#####", "##"])
TEXT = st.text(st.sampled_from("ab ZÉ日#:\t\n\r\x00.!?-_"), max_size=12) | st.sampled_from(
    ["", "hello world", "C# and F#", "a ## b", "x #", "#tag", "note:", "a: b", "  padded  ", "😀 fine", "###"]
)


@st.composite
def sectioned_lines(draw: st.DrawFn) -> str:
    """A preamble (maybe), sections with varied spacing, often ending with a response header."""
    out = [draw(TEXT) + draw(SPACES)] if draw(st.booleans()) else []
    count = draw(st.integers(0, 6))
    for _ in range(count):
        out.append(draw(HASHES) + draw(SPACES) + draw(NAMES) + draw(SPACES) + ":" + draw(SPACES))
        out.append(draw(TEXT) + draw(SPACES))
    if draw(st.integers(0, 4)):  # usually a response last, so the canonical tier is reached
        last = draw(st.sampled_from(["Assistant", "assistant", "Response", "bot reply", "Q-1", "Answer"]))
        out.append(draw(st.sampled_from([" ### ", "### ", "  ### "])) + last + ":" + draw(SPACES) + draw(TEXT))
    return "".join(out) + draw(st.sampled_from(["", "", " ", "\r", "  \t"]))


NAMES_CANONICAL = ["Instruction", "Human", "Assistant", "Input", "Q1", "2", "a-b", "b-", "_x", "Ünï", "A" * 40]


@st.composite
def canonical_lines(draw: st.DrawFn) -> str:
    """Lines already in canonical form (the fast tier's whole domain), with hostile content."""
    words = st.text(st.sampled_from("abc XY日é#:.-"), min_size=1, max_size=10).map(str.strip).filter(bool)
    pieces = [draw(words)] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.sampled_from(NAMES_CANONICAL))
        content = draw(st.one_of(st.just(""), words))
        pieces.append(f"### {name}: {content}" if content else f"### {name}:")
    completion = draw(words | st.sampled_from(["", " ", "\r", "\t \n"]))
    pieces.append(f"### {draw(st.sampled_from(['Assistant', 'Response', 'answer']))}: {completion}")
    return " ".join(pieces)


@st.composite
def near_canonical_lines(draw: st.DrawFn) -> str:
    """A canonical line with one character inserted, removed or replaced: the fast tier's border.

    The edit lands next to a `#` or `:` most of the time (where the canonical form is decided).
    """
    line = draw(canonical_lines())
    marks = [i for i, ch in enumerate(line) if ch in "#:"]
    near = st.sampled_from(marks).flatmap(lambda i: st.integers(max(0, i - 2), min(len(line), i + 3)))
    at = draw(near | st.integers(0, len(line)))
    edit = draw(
        st.sampled_from([" ", "\t", "#", "##", ":", "-", "_", "1", "\xa0", "\n", "\r", "\x00", "A" * 41, "é", ""])
    )
    cut = draw(st.integers(0, 1)) if edit else 1
    return line[:at] + edit + line[at + cut :]


def _same(text: str, headers: tuple[str, ...]) -> None:
    fast, reference = line_parser(headers)(text, 11), _reference_line_parser(headers)(text, 11)
    assert fast == reference, (text, fast, reference)
    assert type(fast) is type(reference)


@settings(max_examples=700, deadline=None)
@given(sectioned_lines(), st.sampled_from(HEADER_SETS))
def test_random_sectioned_lines_parse_as_before(text: str, headers: tuple[str, ...]) -> None:
    _same(text, headers)


@settings(max_examples=300, deadline=None)
@given(canonical_lines(), st.sampled_from(HEADER_SETS))
def test_canonical_lines_parse_as_before(text: str, headers: tuple[str, ...]) -> None:
    _same(text, headers)


@settings(max_examples=1000, deadline=None)
@given(near_canonical_lines())
def test_almost_canonical_lines_parse_as_before(text: str) -> None:
    _same(text, RESPONSE_HEADERS)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32))
def test_benchmark_lines_parse_as_before(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(20):
        _same(make_line(rng), RESPONSE_HEADERS)


def test_the_fast_tier_keeps_a_canonical_prompt_as_a_slice_of_the_line() -> None:
    """The regex tier's own cases: empty sections, `#` in text, digits in names; and what it must refuse."""
    parse = line_parser(RESPONSE_HEADERS)
    line = "Intro: ### Q1: C# ## x# ### Empty: ### a-b: ok ### Assistant:  done \r"
    assert parse(line, 4) == Example("Intro: ### Q1: C# ## x# ### Empty: ### a-b: ok ### Assistant:", "done", 4)
    assert parse("### Empty: ### Human: hi ### Assistant: x", 1).prompt == "### Empty: ### Human: hi ### Assistant:"
    assert parse("x #### Assistant: y", 1) == _reference_line_parser(RESPONSE_HEADERS)("x #### Assistant: y", 1)
    assert parse("### Human:  hi  ###  Assistant : y", 1) == Example("### Human: hi ### Assistant:", "y", 1)
    assert isinstance(parse("### A: ### B: ### Assistant: y", 1), InvalidRow)  # nothing before the response


def test_an_example_built_through_its_slots_is_still_a_frozen_dataclass() -> None:
    """`Example.__init__` writes the slots directly; equality, hashing, replace and immutability stay."""
    example = Example("### Human: hi ### Assistant:", "hello", 3)
    assert example == Example(prompt="### Human: hi ### Assistant:", completion="hello", line=3)
    assert hash(example) == hash(Example("### Human: hi ### Assistant:", "hello", 3))
    assert dataclasses.replace(example, line=4).line == 4
    assert dataclasses.asdict(example) == {"prompt": "### Human: hi ### Assistant:", "completion": "hello", "line": 3}
    with pytest.raises(dataclasses.FrozenInstanceError):
        example.line = 5  # type: ignore[misc]
