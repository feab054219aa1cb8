"""The text of a generation as its tokens arrive (tuneloom.generate.detokenize, `VisibleText`).

Each new token decodes only the few ids not yet read for good, and the stop-string search reads only
what is new; what a user sees must be exactly what decoding everything each time gave: the text
`tokenizer.decode(ids, skip_special_tokens=True)`, streamed pieces that add up to the answer, and
log-probability offsets. Checked on the tokenizers the project uses (SmolLM2's, GPT-2's BPE, the
tiny-random model's) with characters split over byte tokens, special tokens mid-stream, leading spaces
and newlines, and a few hundred seeded random id sequences.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from tests.test_vllm_backend import _at, _output
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tuneloom.generate.detokenize import DecodedText
from tuneloom.generate.generator import finish_generation
from tuneloom.generate.logprobs import CHAR_TO_BYTE
from tuneloom.generate.params import InferenceParams
from tuneloom.generate.rows import Row
from tuneloom.generate.stops import VisibleText, cut_at_stop
from tuneloom.generate.vllm_engine import generation_of
from tuneloom.templates.sources import resolve_tokenizer_dir

SAMPLE = "  Héllo wörld — naïve café 東京タワー 🚀🎉 👩‍👩‍👧 ñandú\n\n\tindented “quotes” it's ok . , ? !"
TOKENIZERS = ["HuggingFaceTB/SmolLM2-135M-Instruct", "EleutherAI/gpt-neo-125m", "tuneloom/tiny-random"]


@pytest.fixture(scope="module", params=TOKENIZERS)
def tokenizer(request: pytest.FixtureRequest) -> Any:
    return AutoTokenizer.from_pretrained(resolve_tokenizer_dir(request.param))


def full(tokenizer: Any, ids: list[int]) -> str:
    return str(tokenizer.decode(ids, skip_special_tokens=True))


def assert_decodes_as_whole(tokenizer: Any, ids: list[int]) -> None:
    """After every id: the text is the decode of all ids so far, and the settled part only grows."""
    decoded, settled = DecodedText(tokenizer), ""
    for k, token in enumerate(ids, 1):
        unchanged = decoded.add(token)
        assert decoded.text == full(tokenizer, ids[:k]), ids[:k]
        assert unchanged == len(settled) and decoded.settled.startswith(settled)
        assert decoded.text.startswith(decoded.settled)
        settled = decoded.settled


def test_the_text_is_the_full_decode_after_every_token(tokenizer: Any) -> None:
    ids = tokenizer(SAMPLE, add_special_tokens=False)["input_ids"]
    assert DecodedText(tokenizer).windowed  # the incremental path, not the fallback
    assert any(full(tokenizer, ids[:k]).endswith("\ufffd") for k in range(len(ids)))  # a character split over ids
    assert_decodes_as_whole(tokenizer, ids)
    rng, specials = random.Random(7), tokenizer.all_special_ids
    for n in range(300):
        if n % 3 == 0:  # anything the model could write, special tokens included
            sequence = [rng.randrange(len(tokenizer)) for _ in range(rng.randint(1, 30))]
        elif n % 3 == 1:  # the sample with special tokens anywhere, inside a character too
            sequence = list(ids)
            for _ in range(3):
                sequence.insert(rng.randrange(len(sequence) + 1), rng.choice(specials))
        else:  # its pieces out of order: bytes of characters that never complete
            sequence = [rng.choice(ids + specials) for _ in range(rng.randint(1, 30))]
        assert_decodes_as_whole(tokenizer, sequence)


def test_a_tokenizer_that_reads_tokens_in_context_decodes_all_ids_each_time() -> None:
    """SentencePiece's decoder drops the space of whichever token comes first, and transformers' clean-up rewrites
    " ." or " 's" where two windows meet: decoding a window alone would lose text, so these decode everything."""
    vocab = {"<s>": 0, "▁Hello": 1, "▁world": 2, "!": 3, "<unk>": 4}
    metaspace = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    metaspace.decoder = decoders.Metaspace()
    sentencepiece = PreTrainedTokenizerFast(tokenizer_object=metaspace, bos_token="<s>", unk_token="<unk>")
    spaced = [1, 0, 2, 3, 0, 0, 1]  # a special token, then a word whose space a window starting there would drop
    assert full(sentencepiece, spaced[:2]) + full(sentencepiece, spaced[2:3]) != full(sentencepiece, spaced[:3])
    bytewise = Tokenizer(models.Unigram([(char, -1.0) for char in sorted(CHAR_TO_BYTE)] + [("<unk>", -9.0)], 256))
    bytewise.pre_tokenizer, bytewise.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    cleaned = PreTrainedTokenizerFast(tokenizer_object=bytewise, unk_token="<unk>", clean_up_tokenization_spaces=True)
    tidied = cleaned("it 's a test . Done , ok ?", add_special_tokens=False)["input_ids"]
    assert full(cleaned, tidied) == "it's a test. Done, ok?"
    at = full(cleaned, tidied).index(".") + 2  # the ids of "it 's a test", then " ." ...
    assert full(cleaned, tidied[:at]) + full(cleaned, tidied[at:]) != full(cleaned, tidied)
    for tokenizer, ids in [(sentencepiece, spaced), (cleaned, tidied)]:
        assert not DecodedText(tokenizer).windowed
        assert_decodes_as_whole(tokenizer, ids)


def test_streamed_pieces_add_up_and_reading_only_the_new_text_changes_none() -> None:
    """`VisibleText.update` with `unchanged` searches only the new end for stop strings; the pieces, the stop, the
    rest and the offsets are those of reading the whole text each time, and they add up to the final text (stop
    strings split across updates, after a space too, a character not complete yet, leading and trailing spaces)."""
    rng = random.Random(3)
    parts = ["a", "b", " ", "\n", "#", "##", " #", "é", "ab", "  ", "\t", "x", "s"]
    for _ in range(2000):
        stops = rng.choice([["###"], ["###", "ab"], ["###", "\n\n"], ["###", "a b", "bab"], ["###", "é!"], ["\n"]])
        hinted, whole, settled, unsettled, pieces = VisibleText(stops), VisibleText(stops), "", "", []
        for _ in range(rng.randint(1, 25)):
            unchanged = len(settled)
            if rng.random() < 0.25:  # a character not complete yet: what precedes it stays as it is
                unsettled = unsettled.removesuffix("\ufffd") + rng.choice(["", " ", "a"]) + "\ufffd"
            else:
                settled, unsettled = settled + unsettled.replace("\ufffd", "é") + rng.choice(parts), ""
            assert hinted.offset() == whole.offset()
            shown = hinted.update(settled + unsettled, unchanged)
            assert shown == whole.update(settled + unsettled), (stops, settled + unsettled)
            pieces.append(shown[0])
            if shown[1]:
                break
        pieces.append(hinted.rest())
        assert whole.rest() == pieces[-1]
        assert "".join(pieces) == cut_at_stop(settled + unsettled, stops)[0].strip()  # as `finish_generation` cuts


def test_a_rows_pieces_and_offsets_are_those_of_its_whole_text() -> None:
    """Through `Row.accept`, as the continuous batch and the server run it, and vLLM's logprobs: an emoji split over
    byte tokens with a special token inside it, CJK, a stop string split over two tokens: the pieces add up to the
    answer, none shows half a character, and each token's offset is where it starts in the returned text."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_tokenizer_dir(TOKENIZERS[0]))
    ids = tokenizer("  Café 🚀 東京 naïve\n\nok STOP never shown", add_special_tokens=False)["input_ids"]
    rocket = next(k for k in range(len(ids)) if full(tokenizer, ids[: k + 1]).endswith("\ufffd"))
    ids.insert(rocket + 1, tokenizer.convert_tokens_to_ids("<|im_start|>"))  # special, not EOS: skipped
    params = InferenceParams(max_tokens=len(ids), stop=("STOP",))
    row, pieces = Row.rendered("prompt", params, top_logprobs=1), []
    for token in ids:
        row.accept(token, tokenizer, (-0.5, [(token, -0.5)]))
        pieces.append(row.piece)
        if row.finished:
            break
    answer = finish_generation("prompt", full(tokenizer, row.ids), len(row.ids), False, params).text
    assert "".join(pieces) == answer == "Café 🚀 東京 naïve\n\nok" and all("\ufffd" not in p for p in pieces)
    offsets = [len(full(tokenizer, row.ids[:i]).lstrip().removesuffix("\ufffd")) for i in range(len(row.ids))]
    assert [logprob.offset for logprob in row.logprobs] == offsets
    assert offsets[rocket + 1 : rocket + 4] == [answer.index("🚀")] * 3  # tokens inside it start where it does
    final = _output([1], full(tokenizer, row.ids), list(row.ids), "length")
    final.outputs[0].logprobs = [_at(token, 1) for token in row.ids]
    vllm = generation_of(final, "prompt", params, tokenizer, 1, None)
    assert vllm.logprobs is not None and [logprob.offset for logprob in vllm.logprobs] == offsets


def test_a_stop_string_of_whitespace_at_the_start_ends_a_stream_as_it_ends_the_answer() -> None:
    """The stream searched for stop strings only past the leading whitespace: with stop "\\n" and a completion
    "\\nHello there\\n…" it sent "Hello there" (and went on generating) while the answer was ""."""
    visible = VisibleText(["###", "\n"])
    assert visible.update("\n") == ("", True)
    assert visible.rest() == "" == cut_at_stop("\nHello there\n", ["###", "\n"])[0].strip()
