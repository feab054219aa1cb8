"""The text of a generation as its tokens arrive, decoding only the last few tokens per new one.

`tokenizer.decode(ids, skip_special_tokens=True)` over all ids so far, once per token, costs time in the
length of the answer for every token: a 1,000-token row spent 0.1 s decoding. `DecodedText` decodes only
the ids not yet read for good, as vLLM and TGI do (their read offset), and keeps their text once it
ends on a whole character: a token that ends inside a multi-byte character (an emoji or a CJK
character split over byte tokens) decodes to U+FFFD until the token that completes it arrives.

The text is always exactly `tokenizer.decode(ids, skip_special_tokens=True)`. That holds by construction
only for decoders that turn each token into its own bytes and join them (`ByteLevel`: GPT-2, SmolLM2,
Llama 3, Qwen), and only where the tokenizer rewrites nothing afterwards: there, text that ends on a
whole character decodes the same alone as after any other text. Other decoders read a token in
context and fall back to decoding every id each time (`decodes_bytewise` says which): SentencePiece's
`Metaspace` and `Strip` drop the space of whichever token comes first (a window that starts after a
skipped special token would lose a space the full text has), `ByteFallback` turns an invalid byte
run into one U+FFFD per byte (the split where a window ends changes how many), and transformers'
`clean_up_tokenization_spaces` rewrites " 's" or " ." across the place where two windows meet.
vLLM's second, earlier offset (its prefix window) exists for the first of those; byte-level decoding
needs none, so the window here is only the unread ids.
"""

from __future__ import annotations

import json
import threading
import weakref
from typing import Any

# Text that transformers' `clean_up_tokenization` rewrites wherever it runs: one pattern of each kind it replaces.
_CLEANUP_PROBE = "a . b , c ? d ! e ' f n't g 'm h 's i 've j 're"
_BYTEWISE: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def decodes_bytewise(tokenizer: Any) -> bool:
    """Whether `tokenizer` decodes token by token into bytes and adds nothing after: its decoder is `ByteLevel`
    alone, and its decode of text its clean-up would change is its backend's, unchanged (transformers skips
    `clean_up_tokenization_spaces` for some BPE tokenizers and not others: asked, not assumed). A vocabulary
    that cannot spell that text cannot be asked: it decodes all ids each time. Asked once per tokenizer."""
    if getattr(tokenizer, "backend_tokenizer", None) is None:  # no Rust tokenizer behind it: nothing to ask
        return False
    with _LOCK:
        known = _BYTEWISE.get(tokenizer)
    if known is None:
        known = _ask_bytewise(tokenizer)
        with _LOCK:
            _BYTEWISE[tokenizer] = known
    return known


def _ask_bytewise(tokenizer: Any) -> bool:
    backend = tokenizer.backend_tokenizer
    if backend.decoder is None:
        return False
    decoder = json.loads(backend.decoder.__getstate__())
    parts = decoder.get("decoders", []) if decoder.get("type") == "Sequence" else [decoder]
    if not parts or any(part.get("type") != "ByteLevel" for part in parts):
        return False
    probe = backend.encode(_CLEANUP_PROBE, add_special_tokens=False).ids
    raw = backend.decode(probe, skip_special_tokens=True)
    return bool(raw.strip() == _CLEANUP_PROBE and tokenizer.decode(probe, skip_special_tokens=True) == raw)


class DecodedText:
    """`tokenizer.decode(ids, skip_special_tokens=True)` of a growing list of generated ids, one `add` per id.

    `settled` is the text of the ids read for good: no later token changes it, and it only grows (what a
    consumer scanning the text need not scan again). `text` is that and the text of the ids after it, which
    may end in U+FFFD while a character is incomplete. A decoder that is not byte-level (`decodes_bytewise`)
    settles nothing: every `add` decodes all ids, as before this class. Nor do ids whose text keeps ending
    inside a character (a run of bytes that is no UTF-8): they are decoded together until one ends whole.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.windowed = decodes_bytewise(tokenizer)
        self.settled = ""
        self.text = ""
        self._unread: list[int] = []

    def add(self, token: int) -> int:
        """Take the next id: decode the ids not yet settled (a few at most), and settle them on a whole character.
        Returns how many leading characters of `text` are as they were before it (`VisibleText.update`'s hint)."""
        unchanged = len(self.settled)
        self._unread.append(token)
        tail = str(self.tokenizer.decode(self._unread, skip_special_tokens=True))
        if self.windowed and not tail.endswith("\ufffd"):
            self.settled += tail
            self.text = self.settled
            self._unread.clear()
        else:
            self.text = self.settled + tail
        return unchanged
