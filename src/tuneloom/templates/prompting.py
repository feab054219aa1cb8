"""The prompt format a model version was trained with, stored with it and applied at inference.

A mismatch between the text a model was trained on and the text it is prompted with at inference
is the commonest reason a fine-tune "does not work". So the format is derived from the training
data itself: sections whose content is the same on every example (a fixed instruction) are kept,
and the varying section (the human input) becomes the `{prompt}` slot. A bare text sent for
generation is wrapped in that format; a text that already has `###` sections is used as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tuneloom.data.sections import normalize_header, render_sections, split_sections
from tuneloom.data.types import Example
from tuneloom.errors import SettingsError

PROMPT_SLOT = "{prompt}"
SYSTEM_SLOT = "{system_prompt}"
SECTION_STOP = "###"


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
        _, sections = split_sections(text)
        if sections and self.response_header is not None:
            rendered = self._complete_sections(text)
        else:
            rendered = _fill(self.template, text.strip(), system_prompt or "")
        if system_prompt and SYSTEM_SLOT not in self.template:
            rendered = f"{system_prompt.strip()} {rendered}"
        return rendered

    def _complete_sections(self, text: str) -> str:
        """A sectioned input: canonical rendering, ending with the response header."""
        preamble, sections = split_sections(text)
        assert self.response_header is not None
        header, content = sections[-1]
        if normalize_header(header) == normalize_header(self.response_header) and not content:
            return render_sections(preamble, sections)
        return render_sections(preamble, [*sections, (self.response_header, "")])


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
