"""What a token's log-probability is reported with (its text, its bytes, where it starts), and the
log-probabilities of a prompt's own tokens: what an evaluation harness scores a text by.

A prompt is scored in one forward pass (batched, `MAX_LOGITS_PER_PASS` bounding the logits held at
once): the log-probability of token k is that of the model's raw distribution after tokens 0..k-1
(log_softmax of its logits, as vLLM's `prompt_logprobs`: temperature, top-k and top-p shape what is
drawn, and nothing is drawn here). The first token, which nothing precedes, has none (null, as
OpenAI and vLLM report it).

A token that is part of a character (byte-level BPE splits an emoji or a CJK character over two or
three tokens) decodes alone to U+FFFD, but it has bytes of its own: for byte-level tokenizers (GPT-2,
SmolLM2, Llama 3) they are read back from its vocabulary entry through the byte↔unicode map those
tokenizers are built on, so a client can join the tokens' bytes into the text.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tuneloom.generate.generator import padded_batch, padded_positions
from tuneloom.generate.loading import InferenceModel
from tuneloom.generate.results import Candidate, Prompt, TokenLogprob

Reported = tuple[float, list[tuple[int, float]]]  # a token's log-probability; the alternatives' ids and theirs
MAX_LOGITS_PER_PASS = 2**27  # rows × width × vocabulary: 512 MB of float32 logits (a longer prompt runs alone)
_VOCABULARIES: weakref.WeakKeyDictionary[Any, Vocabulary] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _byte_to_char() -> dict[int, str]:
    """GPT-2's map of the 256 byte values to printable characters, which byte-level BPE vocabularies are written in:
    printable Latin-1 bytes stand for themselves, the others for the characters from U+0100 on, in byte order."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in kept]
    return {**{b: chr(b) for b in kept}, **{b: chr(256 + i) for i, b in enumerate(moved)}}


CHAR_TO_BYTE = {char: byte for byte, char in _byte_to_char().items()}


@dataclass(frozen=True)
class Vocabulary:
    """What a tokenizer's tokens are made of: whether its entries are byte-level, and its added tokens' texts."""

    byte_level: bool
    added: dict[int, str]  # special and added tokens: stored as text, not as mapped bytes

    @classmethod
    def of(cls, tokenizer: Any) -> Vocabulary:
        """Read once per tokenizer (its decoder's settings and its added tokens)."""
        with _LOCK:
            known = _VOCABULARIES.get(tokenizer)
        if known is not None:
            return known
        backend = getattr(tokenizer, "backend_tokenizer", None)
        decoder = json.loads(backend.decoder.__getstate__()) if backend is not None and backend.decoder else {}
        kinds = [decoder.get("type"), *(d.get("type") for d in decoder.get("decoders", []))]
        added = {i: token.content for i, token in tokenizer.added_tokens_decoder.items()}
        vocabulary = cls("ByteLevel" in kinds, added)
        with _LOCK:
            return _VOCABULARIES.setdefault(tokenizer, vocabulary)

    def token_bytes(self, tokenizer: Any, token: int, text: str) -> bytes | None:
        """A token's raw bytes; None only where they cannot be known: a part of a character (`text` is U+FFFD)
        in a vocabulary that is not byte-level."""
        if token in self.added:
            return self.added[token].encode()
        if self.byte_level:
            entry = tokenizer.convert_ids_to_tokens(token)
            if isinstance(entry, str) and all(char in CHAR_TO_BYTE for char in entry):
                return bytes(CHAR_TO_BYTE[char] for char in entry)
        return None if "\ufffd" in text else text.encode()


def token_logprob(tokenizer: Any, token: int, reported: Reported | None, offset: int) -> TokenLogprob:
    """A token with its log-probability and its alternatives' (each with its text and bytes; a special token shows
    as itself); `reported` None: a prompt's first token, which has none. Each id is decoded once: the token is
    nearly always among its own alternatives."""
    logprob, top = reported if reported is not None else (None, [])
    vocabulary = Vocabulary.of(tokenizer)
    text = {t: tokenizer.decode([t]) for t in (token, *(t for t, _ in top))}
    raw = {t: vocabulary.token_bytes(tokenizer, t, text[t]) for t in text}
    alternatives = tuple(Candidate(text[t], value, raw[t]) for t, value in top)
    return TokenLogprob(text[token], logprob, offset, alternatives, raw[token])


def scored_tokens(
    tokenizer: Any, ids: Sequence[int], reported: Sequence[Reported | None], added: Sequence[int]
) -> tuple[TokenLogprob, ...]:
    """A prompt's tokens with their log-probabilities (`reported[0]` None: the first has none), each at its offset
    in the prompt (`text_offsets`; `added`: which tokens the tokenizer added, not the text)."""
    offsets = text_offsets(tokenizer, ids, added)
    return tuple(token_logprob(tokenizer, t, r, o) for t, r, o in zip(ids, reported, offsets, strict=True))


def added_tokens(tokenizer: Any, text: Prompt, ids: Sequence[int]) -> list[int]:
    """Which of a prompt's token ids (as another engine tokenized it) the tokenizer added (1) rather than read from
    the text (0): its own encoding's special-tokens mask where the ids agree; none where they do not, nor for a
    prompt sent as token ids (all of them are its text)."""
    if isinstance(text, tuple):
        return [0] * len(ids)
    encoded = tokenizer(text, add_special_tokens=True, return_special_tokens_mask=True)
    same = list(encoded["input_ids"]) == list(ids)
    return list(encoded["special_tokens_mask"]) if same else [0] * len(ids)


def text_offsets(tokenizer: Any, ids: Sequence[int], added: Sequence[int]) -> list[int]:
    """Where each token starts in the text, in characters, decoding a few tokens at a time (a token's text depends
    on its neighbours: a leading space, a character split over tokens), so a long prompt costs no more per token.

    A token inside a character starts where that character does; a token the tokenizer added (`added[i]` 1: a BOS
    token) takes no room in the text.
    """
    offsets: list[int] = []
    emitted = start = read = 0  # characters so far; the window's first token and its first unread one
    for i in range(len(ids)):
        offsets.append(emitted)
        if added[i]:
            start = read = i + 1
            continue
        before = tokenizer.decode(list(ids[start:read]))
        after = tokenizer.decode(list(ids[start : i + 1]))
        if len(after) > len(before) and not after.endswith("\ufffd"):  # else: a character is not complete yet
            emitted += len(after) - len(before)
            start, read = read, i + 1
    return offsets


@torch.inference_mode()
def prompt_logprobs(loaded: InferenceModel, prompts: Sequence[Prompt], top_n: int) -> list[tuple[TokenLogprob, ...]]:
    """Each prompt's tokens (special tokens as the model reads them), each with its log-probability and its `top_n`
    most likely alternatives'; the first has none. A prompt repeated (OpenAI's `n`) is scored once."""
    unique = list(dict.fromkeys(prompts))
    encoded = [_encoded_with_added(loaded.tokenizer, p) for p in unique]
    scored: dict[Prompt, tuple[TokenLogprob, ...]] = {}
    for chunk in _passes([len(encoded[i][0]) for i in range(len(unique))], _vocabulary_size(loaded)):
        reported = _score(loaded, [encoded[i][0] for i in chunk], top_n)
        for i, rows in zip(chunk, reported, strict=True):
            ids, added = encoded[i]
            scored[unique[i]] = scored_tokens(loaded.tokenizer, ids, [None, *rows], added)
    return [scored[p] for p in prompts]


def _encoded_with_added(tokenizer: Any, prompt: Prompt) -> tuple[list[int], list[int]]:
    """A prompt's token ids and which of them the tokenizer added (`text_offsets`): token ids sent are all the text."""
    if isinstance(prompt, tuple):
        return list(prompt), [0] * len(prompt)
    encoded = tokenizer(prompt, add_special_tokens=True, return_special_tokens_mask=True)
    return list(encoded["input_ids"]), list(encoded["special_tokens_mask"])


def _vocabulary_size(loaded: InferenceModel) -> int:
    return int(getattr(loaded.model.config, "vocab_size", 0) or len(loaded.tokenizer))


def _passes(lengths: list[int], vocabulary: int) -> list[list[int]]:
    """Prompts (by index, shortest first) grouped into forward passes whose logits fit `MAX_LOGITS_PER_PASS`."""
    passes: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        current = passes[-1] if passes else []
        if current and (len(current) + 1) * lengths[i] * vocabulary <= MAX_LOGITS_PER_PASS:
            current.append(i)
        else:
            passes.append([i])
    return passes


def _score(loaded: InferenceModel, rows: list[list[int]], top_n: int) -> list[list[Reported]]:
    """One forward pass over left-padded prompts; per prompt, for each token after the first, its log-probability
    and the `top_n` best alternatives' (from the logits at the position before it)."""
    inputs = padded_batch(loaded, rows)
    mask = inputs["attention_mask"]
    positions = padded_positions(mask)
    logits = loaded.model(**inputs, position_ids=positions, use_cache=False).logits
    width = mask.shape[1]
    reported = []
    for r, row in enumerate(rows):
        start = width - len(row)  # left padding
        logprobs = logits[r, start : width - 1].float().log_softmax(dim=-1)
        targets = torch.tensor(row[1:], device=logprobs.device)
        chosen = logprobs.gather(1, targets[:, None]).squeeze(1).tolist()
        top = logprobs.topk(min(top_n, logprobs.shape[-1]), dim=-1)
        best = zip(top.indices.tolist(), top.values.tolist(), strict=True)
        alternatives = [list(zip(ids, values, strict=True)) for ids, values in best]
        reported.append(list(zip(chosen, alternatives, strict=True)))
    return reported
