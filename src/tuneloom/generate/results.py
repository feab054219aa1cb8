"""What a generation returns: text, token counts, log-probabilities.

Kept apart from `generator` (and free of torch) because the server's routes, the node wire and the
remote backend handle these values without running a model, and a server should not import torch
to start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

TokenIds = tuple[int, ...]
"""A prompt sent as the model's own token ids (OpenAI's token-id prompts): read as is, never put in a template, so
an evaluation harness that counted the tokens itself scores exactly those."""
Prompt = str | TokenIds


class Candidate(NamedTuple):
    """A token that could stand at a place, with its log-probability there."""

    token: str  # its text, decoded alone (U+FFFD for a part of a character)
    logprob: float
    raw: bytes | None  # its own bytes; None where the tokenizer cannot tell them (`logprobs.Vocabulary`)


@dataclass(frozen=True)
class TokenLogprob:
    """One token with its log-probability, and the most likely tokens at its place with theirs.

    For a generated token the distribution is the one it was drawn from (`sampling.token_logprobs`
    says which); for a prompt's token, the model's own (`logprobs.prompt_logprobs`), and the prompt's
    first token has none. A token's text is what it decodes to alone; `offset` is where it starts:
    in the prompt, for a prompt's token; in the completion as generated, for a generated one (leading
    whitespace dropped, as the returned text drops it; a token past a stop string starts at or past
    the end of the returned text).
    """

    token: str
    logprob: float | None  # None: the prompt's first token, which nothing precedes
    offset: int
    top: tuple[Candidate, ...] = ()  # most likely first; tokens top-k / top-p dropped are left out
    raw: bytes | None = None  # the token's own bytes (`Candidate.raw`)


@dataclass(frozen=True)
class Generation:
    prompt: str  # the prompt text as the model saw it
    text: str  # the generated completion (or prompt + completion with return_full_text)
    tokens: int  # new tokens generated
    finish_reason: str  # "stop" (EOS or stop string) or "length"
    logprobs: tuple[TokenLogprob, ...] | None = None  # one per new token, where they were asked for
    prompt_logprobs: tuple[TokenLogprob, ...] | None = None  # one per prompt token, where they were asked for
