"""Prompt formats derived from data, applied at inference; inference parameters validated up front."""

from __future__ import annotations

import pytest

from tuneloom.data.sections import parse_sectioned_line
from tuneloom.data.types import Example
from tuneloom.errors import SettingsError
from tuneloom.generate.params import MAX_TOKENS_LIMIT, InferenceParams
from tuneloom.generate.stops import cut_at_stop
from tuneloom.templates.prompting import PromptFormat, Turn, derive_prompt_format

INSTR = "### Instruction: Classify {a/b}."


def _examples(*humans: str) -> list[Example]:
    return [Example(f"{INSTR} ### Human: {h} ### Assistant:", "a", i) for i, h in enumerate(humans, 1)]


def test_fixed_instruction_becomes_part_of_the_format() -> None:
    fmt = derive_prompt_format(_examples("one", "two", "three"))
    assert fmt.template == f"{INSTR} ### Human: {{prompt}} ### Assistant:"
    assert fmt.render("new input") == f"{INSTR} ### Human: new input ### Assistant:"


def test_braces_in_user_text_are_not_format_fields() -> None:
    fmt = derive_prompt_format(_examples("x", "y"))
    assert fmt.render("{prompt} and {0}") == f"{INSTR} ### Human: {{prompt}} and {{0}} ### Assistant:"


def test_sectioned_input_is_used_as_written_and_completed() -> None:
    fmt = derive_prompt_format(_examples("x", "y"))
    assert fmt.render("### Instruction: Other ### Human: z") == "### Instruction: Other ### Human: z ### Assistant:"
    assert fmt.render("### Human: z ### Assistant:") == "### Human: z ### Assistant:"


def test_varying_instruction_and_input_keeps_last_varying_as_slot() -> None:
    examples = [
        Example("### Instruction: Translate to French. ### Input: hi ### Response:", "salut", 1),
        Example("### Instruction: Summarize. ### Input: long text ### Response:", "short", 2),
    ]
    assert derive_prompt_format(examples).template == "### Input: {prompt} ### Response:"


def test_plain_prompt_completion_data_has_no_sections() -> None:
    fmt = derive_prompt_format([Example("Q: 2+2?", "4", 1), Example("Q: 3+3?", "6", 2)])
    assert fmt == PromptFormat(template="{prompt}", response_header=None)
    assert fmt.render("Q: 1+1?") == "Q: 1+1?"


def test_system_prompt_and_prompt_template() -> None:
    fmt = derive_prompt_format(_examples("x", "y"))
    assert fmt.render("t", system_prompt="Be brief.").startswith("Be brief. ### Instruction:")
    custom = fmt.render("t", system_prompt="S", prompt_template="<{system_prompt}> Q: {prompt} A:")
    assert custom == "<S> Q: t A:"
    with pytest.raises(SettingsError, match=r"\{prompt\}"):
        fmt.render("t", prompt_template="no slot")


def test_format_round_trips_through_a_manifest() -> None:
    fmt = derive_prompt_format(_examples("x", "y"))
    assert PromptFormat.from_dict(fmt.to_dict()) == fmt


THREE_TURNS = [Turn("user", "q1"), Turn("assistant", "a1"), Turn("user", "q2"), Turn("assistant", "a2"),
               Turn("user", "q3")]  # fmt: skip


@pytest.mark.parametrize(
    ("one_turn", "training_line"),
    [
        (f"{INSTR} ### Human: HUMAN ### Assistant:",
         f"{INSTR} ### Human: q1 ### Assistant: a1 ### Human: q2 ### Assistant: a2 ### Human: q3 ### Assistant: a3"),
        ("### Human: HUMAN ### Response:",
         "### Human: q1 ### Response: a1 ### Human: q2 ### Response: a2 ### Human: q3 ### Response: a3"),
        ("Be kind. ### Context: shop ### Input: HUMAN ### Output:",
         "Be kind. ### Context: shop ### Input: q1 ### Output: a1 ### Input: q2 ### Output: a2 "
         "### Input: q3 ### Output: a3"),
    ],
    ids=["instruction", "bare", "preamble"],
)  # fmt: skip
def test_a_conversation_renders_as_its_multi_turn_training_line(one_turn: str, training_line: str) -> None:
    """Chat answered the last message alone; the history goes in the sections the model learned, as the
    training data parser reads a multi-turn line (the prompt of its last answer)."""
    fmt = derive_prompt_format([Example(one_turn.replace("HUMAN", h), "a", i) for i, h in enumerate(("x", "y"), 1)])
    expected = parse_sectioned_line(training_line, 1)
    assert isinstance(expected, Example) and fmt.render_turns(THREE_TURNS) == expected.prompt


def test_a_conversation_keeps_fixed_sections_after_the_slot_after_its_last_message() -> None:
    fmt = PromptFormat(template="### Human: {prompt} ### Note: be brief ### Assistant:")
    expected = "### Human: q2 ### Assistant: a2 ### Human: q3 ### Note: be brief ### Assistant:"
    assert fmt.render_turns(THREE_TURNS[2:]) == expected


def test_consecutive_messages_are_one_turn_and_the_system_prompt_goes_where_render_puts_it() -> None:
    fmt = derive_prompt_format(_examples("x", "y"))
    turns = [Turn("user", "hello"), Turn("user", "q1"), Turn("assistant", "a1"), Turn("user", "q2")]
    expected = f"Be brief. {INSTR} ### Human: hello\nq1 ### Assistant: a1 ### Human: q2 ### Assistant:"
    assert fmt.render_turns(turns, system_prompt="Be brief.") == expected
    slotted = PromptFormat(template="### System: {system_prompt} ### Human: {prompt} ### Assistant:")
    assert slotted.render_turns(THREE_TURNS[2:], system_prompt="S") == (
        "### System: S ### Human: q2 ### Assistant: a2 ### Human: q3 ### Assistant:"
    )
    assert fmt.render_turns([Turn("user", "t")], system_prompt="S") == fmt.render("t", system_prompt="S")


def test_a_sectioned_input_gets_the_system_prompt_where_the_template_puts_it() -> None:
    """Training lines with a `### System: {system_prompt}` section: a sectioned input was used as written and the
    system prompt dropped (the slot kept it from going first, and nothing filled the slot)."""
    lines = [f"### System: {{system_prompt}} ### Human: {h} ### Assistant:" for h in ("x", "y")]
    fmt = derive_prompt_format([Example(line, "a", i) for i, line in enumerate(lines, 1)])
    expected = "### System: S ### Human: q ### Assistant:"
    assert fmt.render("### Human: q", system_prompt="S") == expected == fmt.render("q", system_prompt="S")
    for given in ("### System: ### Human: q ### Assistant:", "### System: S ### Human: q"):
        assert fmt.render(given, system_prompt="S") == expected
    history = "### Human: q1 ### Assistant: a1 ### Human: q2"
    turns = [Turn("user", "q1"), Turn("assistant", "a1"), Turn("user", "q2")]
    assert fmt.render(history, system_prompt="S") == fmt.render_turns(turns, system_prompt="S")
    assert fmt.render("### Human: q") == "### Human: q ### Assistant:"  # no system prompt: as written
    with pytest.raises(SettingsError, match="the input carries its own system section") as refused:
        fmt.render("### System: other ### Human: q", system_prompt="S")
    assert refused.value.key == "system_prompt" and "'other'" in refused.value.message


def test_a_format_without_sections_cannot_show_earlier_turns() -> None:
    plain = PromptFormat(template="{prompt}", response_header=None)
    assert plain.turn_layout() is None
    assert PromptFormat(template="### Human: Q: {prompt} ### Assistant:").turn_layout() is None  # not a whole section
    assert plain.render_turns([Turn("user", "a"), Turn("user", "b")]) == "a\nb"
    with pytest.raises(ValueError, match="earlier turns"):
        plain.render_turns(THREE_TURNS)
    with pytest.raises(ValueError, match="end with a user message"):
        derive_prompt_format(_examples("x", "y")).render_turns(THREE_TURNS[:2])


def test_inference_params_cast_and_refuse() -> None:
    params = InferenceParams.from_dict({"max_tokens": 20.0, "temperature": 0, "top_k": 5, "stop": "\n"})
    assert params.max_tokens == 20 and params.stop == ("\n",) and not params.sampling
    assert InferenceParams.from_dict({"temperature": 0.7}).sampling
    with pytest.raises(SettingsError, match="max_tokens"):
        InferenceParams.from_dict({"max_tokens": MAX_TOKENS_LIMIT + 1})
    with pytest.raises(SettingsError, match="Did you mean 'temperature'"):
        InferenceParams.from_dict({"temprature": 0.5})
    with pytest.raises(SettingsError, match="integer"):
        InferenceParams.from_dict({"top_k": 2.5})
    with pytest.raises(SettingsError, match="prompt_template"):
        InferenceParams.from_dict({"prompt_template": "missing slot"})


# One mistake of each kind: unknown, wrong type, out of range, over a limit, a template without its slot.
WRONG_PARAMS = {
    "temprature": 0.5,
    "top_k": 2.5,
    "max_tokens": 0,
    "stop": ["x" * 10_000],
    "prompt_template": "missing slot",
}


def test_every_wrong_inference_parameter_is_named_in_one_error() -> None:
    """A request with five mistakes is refused once, naming all five, each message as it reads alone."""
    with pytest.raises(SettingsError) as info:
        InferenceParams.from_dict(WRONG_PARAMS)
    error = info.value
    assert sorted(each["key"] for each in error.details["errors"]) == sorted(WRONG_PARAMS)
    assert error.headline == "5 inference parameters are invalid" and error.message.startswith(error.headline)
    for each in error.details["errors"]:
        with pytest.raises(SettingsError) as alone:
            InferenceParams.from_dict({each["key"]: WRONG_PARAMS[each["key"]]})
        assert each["message"] == alone.value.message


def test_a_refusal_under_an_alias_names_the_alias_among_the_others() -> None:
    with pytest.raises(SettingsError) as info:
        InferenceParams.from_dict({"max_new_tokens": 0, "temperature": -1})
    assert [each["key"] for each in info.value.details["errors"]] == ["max_new_tokens", "temperature"]


def test_cut_at_the_earliest_stop() -> None:
    assert cut_at_stop("positive ### Human: more", ["###"]) == ("positive ", True)
    assert cut_at_stop("a\nb###", ["###", "\n"]) == ("a", True)
    assert cut_at_stop("no stop here", ["###"]) == ("no stop here", False)
