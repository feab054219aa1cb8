"""The prompt format a model version was trained with, stored with it and applied at inference.

A mismatch between the text a model was trained on and the text it is prompted with at inference
is the commonest reason a fine-tune "does not work". So the format is derived from the training
data itself: sections whose content is the same on every example (a fixed instruction) are kept,
and the varying section (the human input) becomes the `{prompt}` slot. A bare text sent for
generation is wrapped in that format; a text that already has `###` sections is used as written,
with the system prompt added where the template puts it (`{system_prompt}`). A conversation (earlier
turns and the last user message) is rendered in the same sections, as a multi-turn training line
holds it (`PromptFormat.render_turns`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from tuneloom.data.sections import normalize_header, render_sections, split_sections
from tuneloom.data.types import Example
from tuneloom.errors import SettingsError

PROMPT_SLOT = "{prompt}"
SYSTEM_SLOT = "{system_prompt}"
SECTION_STOP = "###"
Section = tuple[str, str]


@dataclass(frozen=True)
class Turn:
    """One message of a conversation: who said it and what."""

    role: Literal["user", "assistant"]
    text: str


@dataclass(frozen=True)
class TurnLayout:
    """A sectioned template around its `{prompt}` section: what comes once before it, and after it."""

    preamble: str
    before: list[Section]  # fixed sections ahead of the slot (an instruction): once, at the start
    slot_header: str  # the header of the section the user's text fills ("Human")
    after: list[Section]  # fixed sections between the slot and the response header: after the last message


@dataclass(frozen=True)
class PromptFormat:
    template: str  # contains {prompt}; e.g. "### Instruction: Classify. ### Human: {prompt} ### Assistant:"
    response_header: str | None = "Assistant"  # None: plain prompt/completion data without sections

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptFormat:
        return cls(template=str(data["template"]), response_header=data.get("response_header"))

    def render(self, text: str, *, system_prompt: str | None = None, prompt_template: str | None = None) -> str:
        """The prompt text for one input, exactly as training prompts looked."""
        if prompt_template is not None:
            check_prompt_template(prompt_template)
            return _fill(prompt_template, text.strip(), system_prompt or "")
        preamble, sections = split_sections(text)
        if sections and self.response_header is not None:
            rendered = self._complete_sections(preamble, sections, system_prompt)
        else:
            rendered = _fill(self.template, text.strip(), system_prompt or "")
        return self._with_system(rendered, system_prompt)

    def render_turns(self, turns: Sequence[Turn], *, system_prompt: str | None = None) -> str:
        """The prompt for a conversation, exactly as a multi-turn training line of this format looks.

        Training lines keep earlier turns as sections (`### Human: q1 ### Assistant: a1 ### Human: q2
        ### Assistant: a2`: the model learns the last answer with the history in view), so history is
        shown in the sections the model learned, never dropped: the template's fixed sections once (the
        instruction), each earlier message in the slot's header (user) or the response header
        (assistant), the last user message in the slot's header, any fixed sections the template puts
        after its slot, then the response header. Consecutive messages of one role are one turn
        (`merge_turns`). A conversation of one user message renders as `render` renders it.

        Raises ValueError for what the caller must refuse first: a conversation that does not end with
        a user message, or earlier turns in a format without a `turn_layout` (plain prompt/completion
        data has no section to show them in).
        """
        merged = merge_turns(turns)
        if not merged or merged[-1].role != "user":
            raise ValueError("a conversation must end with a user message")
        if len(merged) == 1:
            return self.render(merged[0].text, system_prompt=system_prompt)
        layout = self.turn_layout()
        if layout is None or self.response_header is None:
            raise ValueError("this prompt format has no sections to show earlier turns in")
        said = [(layout.slot_header if t.role == "user" else self.response_header, t.text) for t in merged]
        filled = with_system_prompt(layout, system_prompt or "")
        rendered = render_sections(filled.preamble, [*filled.before, *said, *filled.after, (self.response_header, "")])
        return self._with_system(rendered, system_prompt)

    def turn_layout(self) -> TurnLayout | None:
        """Where a conversation's messages go in this format; None where earlier turns have no section the
        model learned: plain prompt/completion data, or a template whose `{prompt}` is not a whole section."""
        if self.response_header is None:
            return None
        preamble, sections = split_sections(self.template)
        slots = [i for i, (_, content) in enumerate(sections) if content == PROMPT_SLOT]
        last_header, last_content = sections[-1] if sections else ("", "")
        if len(slots) != 1 or last_content or normalize_header(last_header) != normalize_header(self.response_header):
            return None
        slot = slots[0]
        return TurnLayout(preamble, sections[:slot], sections[slot][0], sections[slot + 1 : -1])

    def _with_system(self, rendered: str, system_prompt: str | None) -> str:
        """A system prompt the template has no `{system_prompt}` slot for goes first."""
        if system_prompt and SYSTEM_SLOT not in self.template:
            return f"{system_prompt.strip()} {rendered}"
        return rendered

    def _complete_sections(self, preamble: str, sections: list[Section], system_prompt: str | None) -> str:
        """A sectioned input (`split_sections`): canonical rendering, with the template's system sections, ending
        with the response header."""
        assert self.response_header is not None
        header, content = sections[-1]
        ends_open = normalize_header(header) == normalize_header(self.response_header) and not content
        body, tail = (sections[:-1], sections[-1]) if ends_open else (sections, (self.response_header, ""))
        if system_prompt and SYSTEM_SLOT in self.template:
            preamble, body = self._place_system(preamble, body, system_prompt)
        return render_sections(preamble, [*body, tail])

    def _place_system(self, preamble: str, sections: list[Section], system_prompt: str) -> tuple[str, list[Section]]:
        """The template's `{system_prompt}` parts, filled, where `render_turns` puts them: sections ahead of the
        slot before the input's sections, those after it after them. The input used as written must not lose
        the system prompt (the template's slot kept `_with_system` from putting it first), nor say two."""
        layout = self.turn_layout()
        if layout is None:
            raise SettingsError(
                "'system_prompt' has no place in a sectioned input for this model: its prompt format's "
                "{system_prompt} is not in a section of its own; write the system prompt into the input's sections",
                key="system_prompt",
            )
        filled = with_system_prompt(layout, system_prompt)
        if SYSTEM_SLOT in layout.preamble:
            preamble = _own_system(preamble, layout.preamble, filled.preamble, "the text before its first section")
        placed = list(sections)
        ahead = _fill_system_sections(placed, layout.before, filled.before)
        after = _fill_system_sections(placed, layout.after, filled.after)
        return preamble, [*ahead, *placed, *after]


def with_system_prompt(layout: TurnLayout, system_prompt: str) -> TurnLayout:
    """The layout with its `{system_prompt}` slots filled: one filling for conversations and sectioned inputs."""

    def filled(sections: list[Section]) -> list[Section]:
        return [(header, content.replace(SYSTEM_SLOT, system_prompt)) for header, content in sections]

    preamble = layout.preamble.replace(SYSTEM_SLOT, system_prompt)
    return TurnLayout(preamble, filled(layout.before), layout.slot_header, filled(layout.after))


def _fill_system_sections(placed: list[Section], template: list[Section], filled: list[Section]) -> list[Section]:
    """Fill, in `placed` (the input's sections), those the template holds `{system_prompt}` in; the ones the input
    lacks are returned, filled, for the caller to add where the template has them."""
    missing: list[Section] = []
    for (header, content), (_, fill) in zip(template, filled, strict=True):
        if SYSTEM_SLOT not in content:
            continue
        at = next((i for i, (h, _) in enumerate(placed) if normalize_header(h) == normalize_header(header)), None)
        if at is None:
            missing.append((header, fill))
            continue
        given_header, given = placed[at]
        placed[at] = (given_header, _own_system(given, content, fill, f"'### {given_header}:'"))
    return missing


def _own_system(given: str, template: str, filled: str, where: str) -> str:
    """The filled system part, where the input left it empty, wrote the template's own text or the same;
    refused where the input carries a system part of its own (two system prompts, one would be dropped)."""
    if given in ("", template, filled):
        return filled
    raise SettingsError(
        f"'system_prompt' was given, but the input carries its own system section ({where} says {given[:80]!r}); "
        "send the system prompt once: leave system_prompt out, or that section out of the input",
        key="system_prompt",
    )


def merge_turns(turns: Sequence[Turn]) -> list[Turn]:
    """Consecutive messages of one role as one turn, their texts joined by a newline.

    A training line alternates human and response sections; two user messages in a row (a question
    sent in two parts) are one human section there, not two, so the model reads them as it learned to.
    """
    merged: list[Turn] = []
    for turn in turns:
        if merged and merged[-1].role == turn.role:
            merged[-1] = Turn(turn.role, f"{merged[-1].text}\n{turn.text}")
        else:
            merged.append(turn)
    return merged


def check_prompt_template(template: str) -> None:
    if PROMPT_SLOT not in template:
        raise SettingsError("prompt_template must contain {prompt}", key="prompt_template")


def _fill(template: str, prompt: str, system_prompt: str) -> str:
    """Plain replacement, not str.format: instructions often contain braces ("{negative/positive}")."""
    return template.replace(SYSTEM_SLOT, system_prompt).replace(PROMPT_SLOT, prompt).strip()


def derive_prompt_format(examples: Sequence[Example]) -> PromptFormat:
    """Find the fixed sections shared by every example and the one varying section to fill.

    With several varying sections, the last one (the input closest to the answer) is the slot and
    the others are left out of the bare-text form; users send sectioned text to fill them all.
    """
    if not examples:
        return PromptFormat(template=PROMPT_SLOT, response_header=None)
    first_preamble, first_sections = split_sections(examples[0].prompt)
    if not first_sections:
        return PromptFormat(template=PROMPT_SLOT, response_header=None)
    *inputs, (response_header, _) = first_sections
    shape = [normalize_header(h) for h, _ in first_sections]
    fixed_preamble = True
    fixed = [True] * len(inputs)
    for example in examples[1:]:
        preamble, sections = split_sections(example.prompt)
        if [normalize_header(h) for h, _ in sections] != shape:
            return PromptFormat(
                template=f"### Human: {PROMPT_SLOT} ### {response_header}:", response_header=response_header
            )
        fixed_preamble &= preamble == first_preamble
        for i, (_, content) in enumerate(sections[:-1]):
            fixed[i] &= content == inputs[i][1]
    varying = [i for i, is_fixed in enumerate(fixed) if not is_fixed]
    slot = varying[-1] if varying else None
    kept = [
        (header, PROMPT_SLOT if i == slot else content)
        for i, (header, content) in enumerate(inputs)
        if fixed[i] or i == slot
    ]
    if slot is None:  # every input identical: the text goes in a new input section
        kept.append(("Input", PROMPT_SLOT))
    preamble = first_preamble if fixed_preamble else ""
    return PromptFormat(
        template=render_sections(preamble, [*kept, (response_header, "")]), response_header=response_header
    )
