"""The engine's per-token log-probabilities in OpenAI's two shapes, which the `openai` package parses.

/v1/completions (`logprobs: N`): `{tokens, token_logprobs, top_logprobs, text_offset}`, each
`top_logprobs` entry a `{token: logprob}` of the N most likely tokens and the chosen one (up to N + 1,
as OpenAI sends them). /v1/chat/completions (`logprobs: true`, `top_logprobs: N`):
`{"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}, …N]}], "refusal": null}`.
A streamed chunk carries the tokens generated since the previous chunk. The values are those of the
distribution each token was drawn from, after temperature, top-k and top-p (`sampling.token_logprobs`).
"""

from __future__ import annotations

from collections.abc import Sequence

from tuneloom.generate.generator import TokenLogprob
from tuneloom.server.schemas.openai import ChatLogprobs, ChatTokenLogprob, CompletionLogprobs, TopLogprob


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


def _alternatives(token: TokenLogprob) -> dict[str, float]:
    """The most likely tokens and the chosen one; where two decode to the same text, the likelier is kept."""
    alternatives: dict[str, float] = {}
    for text, logprob in (*token.top, (token.token, token.logprob)):
        alternatives.setdefault(text, logprob)
    return alternatives


def chat_logprobs(tokens: Sequence[TokenLogprob] | None) -> ChatLogprobs | None:
    """/v1/chat/completions' `choices[i].logprobs` (or a chunk's); None where none were asked for."""
    if tokens is None:
        return None
    content = [
        ChatTokenLogprob(
            token=t.token,
            logprob=t.logprob,
            bytes=utf8(t.token),
            top_logprobs=[TopLogprob(token=text, logprob=value, bytes=utf8(text)) for text, value in t.top],
        )
        for t in tokens
    ]
    return ChatLogprobs(content=content)


def utf8(token: str) -> list[int] | None:
    """A token's text as UTF-8 bytes; None (OpenAI: "no bytes representation") for a token that is part of a
    character, which decodes alone to U+FFFD: its own bytes are not that character's."""
    return None if "\ufffd" in token else list(token.encode("utf-8"))
