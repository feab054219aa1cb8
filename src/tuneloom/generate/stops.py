"""Where a generation's text ends, and how much of it a stream may show while it grows.

Every engine (transformers' `generate()`, the continuous batch, vLLM) cuts its text with the same stop
strings (`###` always, and the request's), so that streamed pieces add up to the returned text whichever
engine made it.
"""

from __future__ import annotations

from collections.abc import Sequence

from tuneloom.generate.params import InferenceParams
from tuneloom.templates.prompting import SECTION_STOP


def stop_strings(params: InferenceParams) -> list[str]:
    return [SECTION_STOP, *params.stop]


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """The text before the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def stop_prefix_length(text: str, stops: Sequence[str], begin: int = 0) -> int:
    """The length of the longest end of `text[begin:]` that begins some stop string: what may still become one.

    Runs for every token of every streamed row, so each stop string costs a search of the tail for its
    first character, not a comparison per possible length.
    """
    longest = 0
    for stop in stops:
        start = text.find(stop[0], max(len(text) - len(stop) + 1, begin))
        while start >= 0 and not stop.startswith(text[start:]):
            start = text.find(stop[0], start + 1)
        if start >= 0:
            longest = max(longest, len(text) - start)
    return longest


class VisibleText:
    """How much of a growing completion may be shown yet, so that streamed pieces add up to the final text.

    The final text is the completion cut at its first stop string and stripped. While it grows, the
    tail that could still be the start of a stop string is held back (no more: text that starts no
    stop string is shown at once, however long the stop strings), and so is an unfinished multi-byte
    character (decoded as U+FFFD for now), and so are the spaces before what is held back or at the end
    (the cut strips them: "answer #" must not send the space that "answer ###" drops).

    It runs for every token of every row, so it reads what is new, not the whole text again: a caller
    that says how much of the text is as it was (`unchanged`) has only that part's end searched for stop
    strings, and what is shown is found in the part not shown yet.
    """

    def __init__(self, stops: Sequence[str]):
        self.stops = list(stops)
        self.emitted = 0  # characters of the shown text (the completion less its leading whitespace) sent so far
        self.text = ""
        self._lead = 0  # the leading whitespace of `text`, which the shown text drops
        self._clear = 0  # no stop string starts in text[:_clear] (and ends in it)

    def update(self, text: str, unchanged: int = 0) -> tuple[str, bool]:
        """The newly showable piece of `text` (the whole completion so far); whether a stop string ended it.
        `unchanged`: how many leading characters of `text` the previous call's text had too (0: none known)."""
        unchanged = min(unchanged, len(self.text), len(text))
        self._lead = self._lead if self._lead < unchanged else unchanged + _leading_space(text[unchanged:])
        self.text, lead = text, self._lead
        cut, stopped = self._cut_at_stop(text, unchanged)
        unshown = text[lead + self.emitted : cut]
        showable = len(unshown)
        if not stopped:
            showable -= stop_prefix_length(text, self.stops, lead)
            unfinished = unshown.find("\ufffd")
            showable = min(showable, unfinished) if unfinished >= 0 else showable
        piece = unshown[: max(showable, 0)].rstrip()
        self.emitted += len(piece)
        return piece, stopped

    def _cut_at_stop(self, text: str, unchanged: int) -> tuple[int, bool]:
        """Where the earliest stop string starts in `text`, and whether there is one; else its length. Leading
        whitespace is searched too, as `finish_generation` cuts the raw text: a completion that starts with a stop
        string of whitespace ("\n") is empty, streamed or not. Only stop strings that reach past `unchanged` can
        be new."""
        found = [
            at
            for stop in self.stops
            if (at := text.find(stop, max(0, min(self._clear, unchanged - len(stop) + 1)))) >= 0
        ]
        self._clear = min(found, default=len(text))
        return self._clear, bool(found)

    def offset(self) -> int:
        """Where the next token starts in the completion: the text so far less its leading whitespace (the
        returned text drops it) and a character not complete yet (a token inside one starts with it)."""
        return len(self.text) - self._lead - self.text.endswith("\ufffd")

    def rest(self) -> str:
        """Everything not shown yet, once the completion is over."""
        final = cut_at_stop(self.text, self.stops)[0].strip()
        piece, self.emitted = final[self.emitted :], max(self.emitted, len(final))
        return piece


def _leading_space(text: str) -> int:
    return len(text) - len(text.lstrip())
