"""The engine's per-token log-probabilities in OpenAI's two shapes, which the `openai` package parses.

/v1/completions (`logprobs: N`): `{tokens, token_logprobs, top_logprobs, text_offset}`, each
`top_logprobs` entry a `{token: logprob}` of the N most likely tokens and the chosen one (up to N + 1,
as OpenAI sends them). With `echo`, the prompt's tokens come first, scored by the model's own
distribution; the first has no log-probability and no alternatives (null, as OpenAI sends it).
/v1/chat/completions (`logprobs: true`, `top_logprobs: N`):
`{"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}, …N]}], "refusal": null}`.
A streamed chunk carries the tokens generated since the previous chunk. A generated token's values are
those of the distribution it was drawn from, after temperature, top-k and top-p (`sampling.token_logprobs`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from tuneloom.generate.results import Generation, TokenLogprob
from tuneloom.server.schemas.openai import ChatLogprobs, ChatTokenLogprob, CompletionLogprobs, TopLogprob


def echoed_tokens(generation: Generation, echoed: str) -> tuple[TokenLogprob, ...] | None:
    """A choice's tokens: the prompt's (where it was scored, with echo), then the completion's, each offset to where
    it starts in the choice's text (`echoed` + completion); None where no log-probabilities were asked for."""
    if generation.logprobs is None:
        return None
    completion = (dataclasses.replace(t, offset=t.offset + len(echoed)) for t in generation.logprobs)
    return (*(generation.prompt_logprobs or ()), *completion)


def completion_logprobs(tokens: Sequence[TokenLogprob] | None) -> CompletionLogprobs | None:
    """/v1/completions' `choices[i].logprobs`; None where none were asked for."""
    if tokens is None:
        return None
    return CompletionLogprobs(
        tokens=[t.token for t in tokens],
        token_logprobs=[t.logprob for t in tokens],
        top_logprobs=[_alternatives(t) for t in tokens],
        text_offset=[t.offset for t in tokens],
    )


def _alternatives(token: TokenLogprob) -> dict[str, float] | None:
    """The most likely tokens and the chosen one; where two decode to the same text, the likelier is kept.
    None for the prompt's first token, which nothing precedes."""
    if token.logprob is None:
        return None
    alternatives: dict[str, float] = {}
    for text, logprob in (*((c.token, c.logprob) for c in token.top), (token.token, token.logprob)):
        alternatives.setdefault(text, logprob)
    return alternatives


def chat_logprobs(tokens: Sequence[TokenLogprob] | None) -> ChatLogprobs | None:
    """/v1/chat/completions' `choices[i].logprobs` (or a chunk's); None where none were asked for."""
    if tokens is None:
        return None
    content = [
        ChatTokenLogprob(
            token=t.token,
            logprob=_generated(t),
            bytes=_listed(t.raw),
            top_logprobs=[TopLogprob(token=c.token, logprob=c.logprob, bytes=_listed(c.raw)) for c in t.top],
        )
        for t in tokens
    ]
    return ChatLogprobs(content=content)


def _generated(token: TokenLogprob) -> float:
    """A generated token's log-probability: only a prompt's first token has none, and chat reports no prompt."""
    if token.logprob is None:
        raise ValueError(f"token {token.token!r} has no log-probability: it is a prompt's first token")
    return token.logprob


def _listed(raw: bytes | None) -> list[int] | None:
    """A token's bytes as OpenAI lists them; None (OpenAI: "no bytes representation") where they are not known."""
    return None if raw is None else list(raw)
