"""The "###"-sectioned line grammar: headers, preamble, response selection and every row reason."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_data_support import SEED_SENTIMENT, no_hang  # noqa: F401
from tuneloom.data import (
    RESPONSE_HEADERS,
    Example,
    InvalidRow,
    parse_sectioned_line,
    render_sections,
    split_sections,
)
from tuneloom.data.lines import excerpt
from tuneloom.data.sections import _parse_general, line_parser, missing_response_reason, normalize_header
from tuneloom.errors import SettingsError

SEED_OTHERS = {
    "### Instruction: Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request. ### Human: What is the capital of Vietnam? ### Assistant: The capital of Vietnam "
    "is Hanoi. ": "The capital of Vietnam is Hanoi.",
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request. ### Instruction: Translate the following "
    "phrase into French. ### Input: I miss you ### Response: Je te manque.": "Je te manque.",
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request. ### Instruction: How did Julius Caesar die? ### Response: Julius Caesar was assassinated.": (
        "Julius Caesar was assassinated."
    ),
}


def parse(text: str, headers: tuple[str, ...] = RESPONSE_HEADERS) -> Example | InvalidRow:
    return parse_sectioned_line(text, 7, headers)


def example(text: str, headers: tuple[str, ...] = RESPONSE_HEADERS) -> Example:
    row = parse(text, headers)
    assert isinstance(row, Example), row
    assert row.line == 7
    return row


def invalid(text: str, headers: tuple[str, ...] = RESPONSE_HEADERS) -> InvalidRow:
    row = parse(text, headers)
    assert isinstance(row, InvalidRow), row
    assert row.line == 7
    return row


def test_brief_example() -> None:
    row = example("### Instruction: Classify ### Human: hi there ### Assistant: positive.")
    assert row.prompt == "### Instruction: Classify ### Human: hi there ### Assistant:"
    assert row.completion == "positive."


@pytest.mark.parametrize("line", SEED_SENTIMENT)
def test_seed_sentiment_lines(line: str) -> None:
    row = example(line)
    assert row.completion in ("negative.", "neutral.", "positive.")
    assert row.prompt == line[: line.rindex("### Assistant:") + len("### Assistant:")]


@pytest.mark.parametrize(("line", "completion"), SEED_OTHERS.items())
def test_seed_page_other_examples(line: str, completion: str) -> None:
    row = example(line)
    assert row.completion == completion
    assert row.prompt.endswith(("### Assistant:", "### Response:"))
    assert row.prompt.startswith(("### Instruction:", "Below is an instruction"))


def test_alpaca_with_preamble_and_input() -> None:
    row = example("Be brief.  ### Instruction: Summarize ### Input:  A long text.  ### Response: Short.")
    assert row.prompt == "Be brief. ### Instruction: Summarize ### Input: A long text. ### Response:"
    assert row.completion == "Short."


def test_alpaca_without_input() -> None:
    row = example("### Instruction: Name a colour. ### Response: Blue")
    assert row.prompt == "### Instruction: Name a colour. ### Response:"


@pytest.mark.parametrize(
    "line",
    [
        "### instruction: x ### ASSISTANT: y",
        "###Instruction :  x ###assistant:y",
        "### Instruction:\tx\t### Assistant :   y   ",
        "  ###   Instruction   : x ### AnSwEr: y",
        "#### Instruction: x #### Output: y",
    ],
)
def test_header_case_and_whitespace(line: str) -> None:
    row = example(line)
    assert row.completion == "y"
    header = line.rsplit("#", 1)[1].split(":")[0].strip()
    assert row.prompt.endswith(f"### {header}:")
    assert row.prompt.startswith("### ")
    assert "x" in row.prompt


def test_prompt_keeps_the_users_header_spelling() -> None:
    assert example("### HUMAN: hi ### ASSISTANT: yo").prompt == "### HUMAN: hi ### ASSISTANT:"


def test_the_last_response_section_wins() -> None:
    row = example("### Human: a ### Assistant: b ### Human: c ### Assistant: d")
    assert row.prompt == "### Human: a ### Assistant: b ### Human: c ### Assistant:"
    assert row.completion == "d"


def test_a_section_after_the_last_response_is_rejected() -> None:
    row = invalid("### Human: a ### Assistant: b ### Human: c")
    assert row.reason.startswith("'### Human:' comes after the last response section '### Assistant:'")


def test_literal_hashes_stay_in_their_section() -> None:
    row = example("### Human: use ### to separate, C# ## too ### Assistant: ok")
    assert row.prompt == "### Human: use ### to separate, C# ## too ### Assistant:"
    assert split_sections("### Human: a ### b ### Assistant: c")[1][0] == ("Human", "a ### b")


def test_header_names_must_be_plain_words_of_at_most_40_chars() -> None:
    long_name = "A" * 41
    preamble, sections = split_sections(f"### {long_name}: x ### Step 2: y ### a.b: z ### Final-answer_1: w")
    assert preamble == f"### {long_name}: x"
    assert sections == [("Step 2", "y ### a.b: z"), ("Final-answer_1", "w")]


def test_a_header_without_colon_is_text() -> None:
    row = invalid("### Instruction x ### Assistant y")
    assert row.reason.startswith("no '### Assistant:' (or Response/Output/Answer) section")


def test_multi_word_and_custom_response_headers() -> None:
    row = example("### Question: 2+2? ### Final  Answer: 4", ("final answer",))
    assert row.prompt == "### Question: 2+2? ### Final  Answer:"
    assert invalid("### Question: 2+2? ### Answer: 4", ("bot",)).reason == "no '### Bot:' section"


def test_multiline_text_from_a_csv_cell() -> None:
    row = example("### Human: line one\nline two\n### Assistant: first\nsecond\n")
    assert row.prompt == "### Human: line one\nline two ### Assistant:"
    assert row.completion == "first\nsecond"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("### Human: hi ### Assistant:   ", "empty completion: nothing after '### Assistant:'"),
        ("### Assistant: hello", "empty prompt: nothing before '### Assistant:'"),
        ("### Instruction:  ### Input: ### Response: x", "empty prompt: nothing before '### Response:'"),
        ("### Human: hi ### Bot: x", "no '### Assistant:' (or Response/Output/Answer) section"),
        (
            "just text",
            "no '### Assistant:' (or Response/Output/Answer) section; the line has no '### Header:'",
        ),
        ("### Human: a\x00b ### Assistant: c", "contains a NUL byte at character 13"),
    ],
)
def test_row_reasons(line: str, reason: str) -> None:
    assert invalid(line).reason.startswith(reason)


def test_split_and_render_round_trip() -> None:
    text = "  Preamble.  ###Instruction :  Do it ### Input: ### Response:  done "
    preamble, sections = split_sections(text)
    assert preamble == "Preamble."
    assert sections == [("Instruction", "Do it"), ("Input", ""), ("Response", "done")]
    assert render_sections(preamble, sections) == "Preamble. ### Instruction: Do it ### Input: ### Response: done"
    assert render_sections("", [("Human", " hi "), ("Assistant", "")]) == "### Human: hi ### Assistant:"
    assert split_sections("no sections") == ("no sections", [])


def test_response_headers_are_validated() -> None:
    for bad in ((), ("as:sistant",), ("",), ("x" * 41,)):
        with pytest.raises(SettingsError) as caught:
            parse_sectioned_line("### Human: a ### Assistant: b", 1, bad)
        assert caught.value.details["key"] == "response_headers"
    assert missing_response_reason(RESPONSE_HEADERS) == "no '### Assistant:' (or Response/Output/Answer) section"
    assert normalize_header("  Final \t Answer ") == "final answer"


def test_excerpt_escapes_control_and_bidi_characters() -> None:
    text = "\x1b[31mred\x07 \u202eevil\u2066 tab\there\r\nnext" + "x" * 200
    shown = excerpt(text)
    assert len(shown) <= 120
    assert shown.endswith("…")
    assert shown.isprintable()
    assert "\\x1b[31mred\\x07 \\u202eevil\\u2066 tab\\there\\r\\n" in shown
    assert excerpt("short") == "short"


# The fast path (plain string methods) must agree with the full regex grammar on any line.
TOKENS = st.sampled_from(
    [
        "###",
        "####",
        " ",
        "  ",
        "\t",
        "\n",
        ":",
        "Human",
        "Assistant",
        "ASSISTANT",
        "Response",
        "Step 2",
        "x",
        "hello world",
        "#",
        "é",
        "\x00",
        "\r",
        "-",
        "_",
        "A" * 41,
        "Input",
        "answer",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(TOKENS, max_size=30).map("".join))
def test_fast_path_agrees_with_the_general_grammar(text: str) -> None:
    headers = RESPONSE_HEADERS
    keys = frozenset(normalize_header(h) for h in headers)
    assert line_parser(headers)(text, 3) == _parse_general(text, 3, keys, missing_response_reason(headers))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_gives_a_row(text: str) -> None:
    row = parse_sectioned_line(text, 1)
    assert isinstance(row, Example | InvalidRow)
    if isinstance(row, Example):
        assert row.completion and row.completion == row.completion.strip()
        assert row.prompt.endswith(":")
    else:
        assert row.reason and len(row.excerpt) <= 120
