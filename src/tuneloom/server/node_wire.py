"""Log-probabilities as a generation node sends them to the server that relayed the request (`--backend remote`),
and back: the same `TokenLogprob`s on both sides, so the API server answers exactly what the node computed.

A token is `{"token", "logprob", "offset", "bytes", "top": [[token, logprob, bytes], …]}`, its bytes in hex (null
where unknown); a prompt's first token has a null logprob.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tuneloom.generate.results import Candidate, TokenLogprob


def tokens_json(tokens: Sequence[TokenLogprob] | None) -> list[dict[str, Any]] | None:
    if tokens is None:
        return None
    return [
        {
            "token": t.token,
            "logprob": t.logprob,
            "offset": t.offset,
            "bytes": _hex(t.raw),
            "top": [[c.token, c.logprob, _hex(c.raw)] for c in t.top],
        }
        for t in tokens
    ]


def tokens_of(data: list[dict[str, Any]] | None) -> tuple[TokenLogprob, ...] | None:
    if data is None:
        return None
    return tuple(
        TokenLogprob(
            t["token"],
            t["logprob"],
            t["offset"],
            tuple(Candidate(token, logprob, _bytes(raw)) for token, logprob, raw in t["top"]),
            _bytes(t["bytes"]),
        )
        for t in data
    )


def _hex(raw: bytes | None) -> str | None:
    return None if raw is None else raw.hex()


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else bytes.fromhex(text)
