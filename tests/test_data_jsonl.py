"""JSON Lines rows: each accepted shape, and a precise reason for every broken row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_data_support import VALID, no_hang, write  # noqa: F401
from tuneloom.data import Example, InvalidRow, parse_file
from tuneloom.data.jsonl_rows import MAX_JSON_DEPTH, json_type, parse_json_line
from tuneloom.data.sections import RESPONSE_HEADERS


def row(value: object | str) -> Example | InvalidRow:
    text = value if isinstance(value, str) else json.dumps(value)
    return parse_json_line(text, 4, RESPONSE_HEADERS)


def ok(value: object) -> Example:
    result = row(value)
    assert isinstance(result, Example), result
    return result


def reason(value: object | str) -> str:
    result = row(value)
    assert isinstance(result, InvalidRow), result
    assert result.line == 4
    return result.reason


def test_prompt_completion() -> None:
    assert ok({"prompt": " Q: 2+2? ", "completion": " 4 ", "extra": 1}) == Example("Q: 2+2?", "4", 4)


def test_alpaca_with_and_without_input() -> None:
    full = ok({"instruction": "Translate to French.", "input": "I miss you", "output": "Je te manque."})
    assert full.prompt == "### Instruction: Translate to French. ### Input: I miss you ### Response:"
    assert full.completion == "Je te manque."
    for missing in ({"input": ""}, {"input": None}, {}):
        bare = ok({"instruction": "Name a colour.", "output": "Blue", **missing})
        assert bare.prompt == "### Instruction: Name a colour. ### Response:"


def test_chat_messages() -> None:
    messages = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Capital of Vietnam?"},
        {"role": "assistant", "content": " Hanoi. "},
    ]
    example = ok({"messages": messages})
    assert example.prompt == (
        "### System: Be terse. ### Human: Hi ### Assistant: Hello ### Human: Capital of Vietnam? ### Assistant:"
    )
    assert example.completion == "Hanoi."


def test_sectioned_text() -> None:
    assert ok({"text": VALID}).completion == "positive."
    assert reason({"text": "### Human: hi"}).startswith("in 'text': no '### Assistant:'")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('{"prompt": "a", "completion": ', "malformed JSON at column 31: Expecting value"),
        ("{'prompt': 'a'}", "malformed JSON at column 2"),
        ("[1, 2]", "expected a JSON object, got array"),
        ('"just a string"', "expected a JSON object, got string"),
        ({"prompt": "a", "completion": 5}, "'completion' must be a string, got number"),
        ({"prompt": None, "completion": "b"}, "'prompt' must be a string, got null"),
        ({"prompt": "a", "completion": True}, "'completion' must be a string, got boolean"),
        ({"prompt": "a"}, "missing key 'completion'"),
        ({"prompt": "a", "completion": "  "}, "empty completion"),
        ({"prompt": " ", "completion": "b"}, "empty prompt"),
        ({"prompt": "a\u0000", "completion": "b"}, "'prompt' contains a NUL character"),
        ({"instruction": "x", "input": ["y"], "output": "z"}, "'input' must be a string, got array"),
        ({"instruction": "x"}, "missing key 'output'"),
        ({"instruction": "", "output": "z"}, "empty prompt"),
        ({"messages": "hi"}, "'messages' must be an array, got string"),
        ({"messages": []}, "'messages' is empty"),
        ({"messages": ["hi"]}, "message 1 must be an object, got string"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "the last message must be from the assistant"),
        (
            {"messages": [{"role": "tool", "content": "x"}]},
            "message 1 has role 'tool'; expected system, user",
        ),
        ({"messages": [{"role": "user"}]}, "missing key 'content' of message 1"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "empty prompt"),
        (
            {"messages": [{"role": "user", "content": {}}]},
            "'content' of message 1 must be a string, got object",
        ),
        ({"text": 3}, "'text' must be a string, got number"),
        ({"question": "a", "answer": "b"}, "unknown row shape: expected keys 'prompt' and 'completion'"),
        ("{}", "unknown row shape"),
        ('{"prompt": "a", "completion": "b"} x', "malformed JSON at column 36: Extra data"),
        (r'{"prompt": "a\ud800", "completion": "b"}', "contains an unpaired surrogate (\\ud800)"),
        ('{"prompt": "a", "completion": 1' + "0" * 5000 + "}", "a number has more than 4,300 digits"),
    ],
)
def test_row_reasons(value: object | str, expected: str) -> None:
    assert reason(value).startswith(expected)


def test_deep_nesting_is_rejected_before_json_loads() -> None:
    assert reason("[" * 100_000) == f"JSON is nested more than {MAX_JSON_DEPTH} levels deep"
    assert reason('{"a":' * 100_000) == f"JSON is nested more than {MAX_JSON_DEPTH} levels deep"
    shallow = {"prompt": "a", "completion": "b", "x": [[[[1]]]], "y": "[" * 1000}
    assert isinstance(row(shallow), Example)


def test_jsonl_file(tmp_path: Path) -> None:
    lines = [
        json.dumps({"prompt": "a", "completion": "b"}),
        "",
        "not json",
        "[" * 100_000,
        json.dumps({"instruction": "i", "output": "o"}),
    ]
    path = write(tmp_path, "d.jsonl", "\r\n".join(lines) + "\r\n")
    parsed = parse_file(path)
    assert parsed.report.format == "jsonl"
    assert [e.line for e in parsed.examples] == [1, 5]
    assert [r.line for r in parsed.report.invalid] == [3, 4]
    assert parsed.report.invalid[0].excerpt == "not json"
    assert len(parsed.report.invalid[1].excerpt) <= 120


def test_json_type_names() -> None:
    assert [json_type(v) for v in (None, True, 1, 1.5, "s", [], {})] == [
        "null",
        "boolean",
        "number",
        "number",
        "string",
        "array",
        "object",
    ]
