"""JSON Lines rows: prompt/completion pairs, Alpaca records, chat transcripts, or sectioned "text".

Every row shape ends as the same canonical prompt a sectioned line would give (`… ### Response:`),
so a model trained from JSONL is prompted exactly like one trained from a .txt file.
Nesting depth is bounded (`MAX_JSON_DEPTH`): a `[[[[…` row is refused, never a RecursionError.
A key repeated within one object (`{"prompt": "a", "prompt": "b"}`) makes the row invalid:
`json.loads` would keep the last value without a word, and which one the user meant is anyone's
guess. Nested objects (chat messages, or any other) are checked the same way.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from json.scanner import make_scanner
from typing import Any

from tuneloom.data.lines import Batch, excerpt
from tuneloom.data.sections import line_parser, render_sections
from tuneloom.data.types import Example, InvalidRow

MAX_JSON_DEPTH = 64
TOO_DEEP = f"JSON is nested more than {MAX_JSON_DEPTH} levels deep"
_DEPTH_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]')
_ROLES = {"system": "System", "user": "Human", "human": "Human", "assistant": "Assistant"}
_SHAPES = "'prompt' and 'completion', 'instruction' and 'output', 'messages', or 'text'"


class _RowError(Exception):
    """Raised inside a row's checks; becomes an InvalidRow with this message as the reason."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook`: each JSON object as a dict, or a row error when a key repeats in it."""
    record = dict(pairs)
    if len(record) != len(pairs):
        raise _RowError(_duplicate_reason(pairs))
    return record


def _duplicate_reason(pairs: list[tuple[str, Any]]) -> str:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            both = f"{_shown(seen[key])} and {_shown(value)}"
            return (
                f"duplicate key '{excerpt(key, 40)}': one object gives it twice ({both}); a JSON reader would "
                "keep only the last value without a word, so keep the one you mean and remove the other"
            )
        seen[key] = value
    return "duplicate key"  # not reached: the caller saw fewer keys than pairs


def _shown(value: Any) -> str:
    return excerpt(json.dumps(value, ensure_ascii=False), 30)


# The C scanner json.loads ends up calling (typeshed types make_scanner oddly, hence the ignore).
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)
_SCAN: Callable[[str, int], tuple[Any, int]] = make_scanner(_DECODER)  # type: ignore[arg-type]


def jsonl_row_batches(
    batches: Iterable[Batch], response_headers: tuple[str, ...]
) -> Iterator[list[Example | InvalidRow]]:
    """One row per non-blank line, one list per batch of lines."""
    for first, items in batches:
        yield [
            parse_json_line(item, number, response_headers) if isinstance(item, str) else item
            for number, item in enumerate(items, first)
            if not isinstance(item, str) or (item and not item.isspace())
        ]


def parse_json_line(text: str, line: int, response_headers: tuple[str, ...]) -> Example | InvalidRow:
    """Parse and check one JSON line; every failure is a row with a reason, never an exception."""
    try:
        example = _to_example(_load(text), line, response_headers)
        if "\\" in text and "\\u" in text:  # one memchr first: most rows hold no escape at all
            _check_encodable(example)
        return example
    except _RowError as error:
        return InvalidRow(line, str(error), excerpt(text))


def _check_encodable(example: Example) -> None:
    """A `\\ud800`-style escape decodes to a lone surrogate, which no tokenizer can encode."""
    try:
        example.prompt.encode("utf-8")
        example.completion.encode("utf-8")
    except UnicodeEncodeError as error:
        raise _RowError(f"contains an unpaired surrogate (\\u{ord(error.object[error.start]):04x})") from None


def _load(text: str) -> dict[str, Any]:
    """`json.loads` minus its Python-level wrappers (a tenth of the per-row cost), same errors, as a row.

    Depth: the C scanner raises RecursionError long before the stack is at risk; a row that parses
    is scanned for depth only when it holds arrays or objects (a flat row cannot be deep).
    """
    start = 0 if text[:1] == "{" else len(text) - len(text.lstrip(" \t\r"))
    try:
        record, end = _SCAN(text, start)
    except StopIteration as stop:
        raise _RowError(f"malformed JSON at column {stop.value + 1}: Expecting value") from None
    except json.JSONDecodeError as error:
        raise _RowError(f"malformed JSON at column {error.colno}: {error.msg}") from None
    except RecursionError:
        raise _RowError(TOO_DEEP) from None
    except ValueError as error:
        if "integer string conversion" in str(error):  # Python's guard against quadratic int parsing
            raise _RowError(f"a number has more than {sys.get_int_max_str_digits():,} digits") from None
        raise _RowError(f"malformed JSON: {error}") from None
    if end != len(text) and not text[end:].isspace():
        raise _RowError(f"malformed JSON at column {len(text) - len(text[end:].lstrip()) + 1}: Extra data")
    if not isinstance(record, dict):
        raise _RowError(f"expected a JSON object, got {json_type(record)}")
    for value in record.values():
        if value.__class__ is list or value.__class__ is dict:
            if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _too_deep(text):
                raise _RowError(TOO_DEEP)
            break
    return record


def _too_deep(text: str) -> bool:
    """Bounded scan: stop as soon as the depth passes the limit, skipping brackets inside strings."""
    depth = 0
    for match in _DEPTH_TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif token in "]}":
            depth -= 1
    return False


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages like "got number"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _string(record: dict[str, Any], key: str, *, required: bool = True, where: str = "") -> str:
    if key not in record or (not required and record[key] is None):
        if required:
            raise _RowError(f"missing key '{key}'{where}")
        return ""
    value = record[key]
    if not isinstance(value, str):
        raise _RowError(f"'{key}'{where} must be a string, got {json_type(value)}")
    if "\x00" in value:
        raise _RowError(f"'{key}'{where} contains a NUL character")
    return value.strip()


def _to_example(record: dict[str, Any], line: int, headers: tuple[str, ...]) -> Example:
    if "messages" in record:
        prompt, completion = _chat(record)
    elif "prompt" in record or "completion" in record:
        prompt, completion = _string(record, "prompt"), _string(record, "completion")
    elif "instruction" in record or "output" in record:
        prompt, completion = _alpaca(record)
    elif "text" in record:
        result = line_parser(headers)(_string(record, "text"), line)
        if isinstance(result, InvalidRow):
            raise _RowError(f"in 'text': {result.reason}")
        return result
    else:
        found = ", ".join(f"'{key}'" for key in list(record)[:8]) or "none"
        raise _RowError(f"unknown row shape: expected keys {_SHAPES}; found {found}")
    if not completion:
        raise _RowError("empty completion")
    if not prompt:
        raise _RowError("empty prompt")
    return Example(prompt, completion, line)


def _alpaca(record: dict[str, Any]) -> tuple[str, str]:
    """`### Instruction: … ### Input: … ### Response:` with Input left out when empty."""
    instruction = _string(record, "instruction")
    context = _string(record, "input", required=False)
    output = _string(record, "output")
    if not instruction and not context:
        return "", output
    sections = [("Instruction", instruction)] + ([("Input", context)] if context else [])
    return render_sections("", [*sections, ("Response", "")]), output


def _chat(record: dict[str, Any]) -> tuple[str, str]:
    """Earlier turns become sections of the prompt; the final assistant message is the completion."""
    messages = record["messages"]
    if not isinstance(messages, list):
        raise _RowError(f"'messages' must be an array, got {json_type(messages)}")
    if not messages:
        raise _RowError("'messages' is empty")
    turns = [_turn(message, index) for index, message in enumerate(messages, 1)]
    role, completion = turns[-1]
    if role != "Assistant":
        raise _RowError(f"the last message must be from the assistant, not {role.lower()!r}")
    if not any(content for _, content in turns[:-1]):
        return "", completion
    return render_sections("", [*turns[:-1], ("Assistant", "")]), completion


def _turn(message: object, index: int) -> tuple[str, str]:
    where = f" of message {index}"
    if not isinstance(message, dict):
        raise _RowError(f"message {index} must be an object, got {json_type(message)}")
    role = _string(message, "role", where=where)
    header = _ROLES.get(role.lower())
    if header is None:
        raise _RowError(f"message {index} has role {role!r}; expected system, user or assistant")
    return header, _string(message, "content", where=where)
