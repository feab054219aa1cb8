"""The continuous batch itself (tuneloom.generate.continuous), on the tiny-random template.

Rows join a running batch at different steps and leave at their own max_tokens or stop string;
each must still produce exactly what `generate()` produces for it alone, and sampling knobs apply
per row.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
import torch

from tuneloom.errors import SettingsError
from tuneloom.generate.continuous import ContinuousBatch, supports_continuous
from tuneloom.generate.generator import BATCH_SIZE, _encode, count_prompt_tokens, generate, own_loop_serves, stream
from tuneloom.generate.loading import load_for_inference
from tuneloom.generate.logprobs import prompt_logprobs
from tuneloom.generate.params import InferenceParams
from tuneloom.generate.rows import Row
from tuneloom.generate.sampling import pick_tokens
from tuneloom.server.openai_logprobs import chat_logprobs

TEXTS = ["great product, works well", "broke after a day", "I love it", "awful quality", "ok", "hello there, friend"]
NEVER = "\u2603" * 100  # a stop string of 100 characters (128 are allowed) that tiny-random does not write


@pytest.fixture(scope="module")
def loaded() -> Any:
    return load_for_inference("tiny-random")


def test_rows_joining_and_leaving_answer_as_generate_does_alone(loaded: Any) -> None:
    params = [
        InferenceParams(max_tokens=m, temperature=0, stop=s)
        for m, s in [(12, ()), (20, ()), (7, ()), (30, ("e",)), (5, ()), (25, ())]
    ]
    expected = [generate(loaded, [t], p)[0] for t, p in zip(TEXTS, params, strict=True)]
    rows = [Row.create(loaded, t, p) for t, p in zip(TEXTS, params, strict=True)]
    streamed = {id(row): "" for row in rows}
    batch, waiting, steps = ContinuousBatch(loaded), rows[2:], 0
    batch.add(rows[:2])
    while batch.rows or waiting:
        if waiting and steps % 3 == 0:
            batch.add([waiting.pop(0)])  # joins a batch that is mid-generation
        else:
            batch.step()
        steps += 1
        for row in rows:
            streamed[id(row)], row.piece = streamed[id(row)] + row.piece, ""
        batch.drop_finished()
    assert [row.generation(loaded) for row in rows] == expected
    assert [streamed[id(row)] for row in rows] == [g.text for g in expected]  # the pieces add up
    assert expected[3].finish_reason == "stop" and expected[0].finish_reason == "length"


def test_many_inputs_run_through_the_loop_and_answer_as_generate_does_alone(loaded: Any) -> None:
    """More inputs than a batch holds: the loop refills its batch as rows finish (`generate_by_rows`), and
    each answer is still transformers' `generate()` for that input alone."""
    texts = [f"{TEXTS[i % len(TEXTS)]} number {i}" for i in range(BATCH_SIZE + 8)]
    params = InferenceParams(max_tokens=10, temperature=0)
    expected = [generate(loaded, [text], params)[0] for text in texts]
    assert own_loop_serves(loaded, params, len(texts)) and not own_loop_serves(loaded, params, 1)
    assert generate(loaded, texts, params) == expected  # each Generation names its prompt: in order too


def test_sampling_parameters_apply_per_row() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]] * 4)
    greedy = [1, 1, 1, 1]
    params = [
        InferenceParams(temperature=0),
        InferenceParams(temperature=2.0, top_k=1),  # only the best token is left
        InferenceParams(temperature=2.0, top_p=1e-6),  # the smallest nucleus: the best token
        InferenceParams(temperature=0.01),  # nearly greedy
    ]
    for _ in range(20):
        assert pick_tokens(logits, params).tolist() == greedy
    wide = [InferenceParams(temperature=5.0)] * 4
    drawn = {tuple(pick_tokens(logits, wide).tolist()) for _ in range(20)}
    assert len(drawn) > 1  # a hot row really samples


def test_beam_search_is_left_to_generate(loaded: Any) -> None:
    assert supports_continuous(loaded, InferenceParams())
    assert not supports_continuous(loaded, InferenceParams(num_beams=2))


def test_a_batch_encodes_whole_while_other_threads_count_tokens(loaded: Any) -> None:
    """The server counts a request's tokens in its own thread while the engine encodes a batch with the
    same tokenizer; a batch must still come out rectangular and left-padded (it once came out ragged)."""
    prompts = ["short one", "a much longer prompt " * 5, "mid length prompt here"]
    expected = _encode(loaded, prompts)
    failures: list[str] = []
    deadline = time.monotonic() + 3

    def encode_batches() -> None:
        while time.monotonic() < deadline:
            try:
                got = _encode(loaded, prompts)
            except ValueError as err:
                failures.append(str(err)[:200])
                return
            if not torch.equal(got["input_ids"], expected["input_ids"]):
                failures.append("different ids")
                return

    def count() -> None:
        while time.monotonic() < deadline:
            count_prompt_tokens(loaded, "count me please " * 3)

    threads = [threading.Thread(target=encode_batches), threading.Thread(target=count), threading.Thread(target=count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    mask = expected["attention_mask"]
    assert mask.shape == expected["input_ids"].shape and mask[:, -1].all() and not mask[0, 0]  # padded on the left


def test_the_stop_string_criterion_is_built_once_and_still_stops(loaded: Any) -> None:
    """Building it scans the vocabulary; `generate()` reuses one per tokenizer and set of stop strings."""
    from tuneloom.generate.generator import stop_criterion
    from tuneloom.generate.stops import stop_strings

    params = InferenceParams(max_tokens=6, stop=("zz",))
    first = stop_criterion(loaded.tokenizer, stop_strings(params))
    assert stop_criterion(loaded.tokenizer, stop_strings(params)) is first
    assert stop_criterion(loaded.tokenizer, ["###"]) is not first
    ids = torch.tensor([loaded.tokenizer.encode("an answer ###")])
    assert bool(stop_criterion(loaded.tokenizer, ["###"])(ids, None).all())  # ends with a stop string: stop
    ids = torch.tensor([loaded.tokenizer.encode("an answer")])
    assert not bool(stop_criterion(loaded.tokenizer, ["###"])(ids, None).any())


def pieces_per_token(loaded: Any, text: str, params: InferenceParams, seed: int = 0) -> tuple[list[str], Any]:
    """What a streamed row shows after each of its tokens ("" where it holds text back), and its Generation."""
    torch.manual_seed(seed)  # a sampled row draws the same tokens each time, whatever its stop strings
    row = Row.create(loaded, text, params)
    batch = ContinuousBatch(loaded)
    batch.add([row])
    pieces = [row.piece]
    while not row.finished:
        batch.step()
        pieces.append(row.piece)
    return pieces, row.generation(loaded)


def test_a_long_stop_string_that_never_occurs_holds_nothing_back(loaded: Any) -> None:
    """Streams held back as many characters as the longest stop string less one, though none could start it:
    with a stop string of 100 characters, the first ~99 characters came at once, long after they were made."""
    plain = InferenceParams(max_tokens=30, temperature=0)
    produced, _ = pieces_per_token(loaded, "I love it", plain)
    assert produced[0] and NEVER[0] not in "".join(produced)
    streamed, generation = pieces_per_token(loaded, "I love it", replace(plain, stop=(NEVER,)))
    assert streamed == produced  # each token's text as soon as it is made, the first with the first token
    (expected,) = generate(loaded, ["I love it"], replace(plain, stop=(NEVER,)))
    assert "".join(streamed) == generation.text == expected.text
    cli = list(stream(loaded, "I love it", replace(plain, stop=(NEVER,))))  # `tuneloom generate --stream`
    assert cli == list(stream(loaded, "I love it", plain)) and "".join(cli) == expected.text


def test_a_stop_string_split_across_tokens_is_never_sent(loaded: Any) -> None:
    sampled = InferenceParams(max_tokens=30, temperature=1.0)
    produced, _ = pieces_per_token(loaded, "I love it", sampled)
    boundary = next(i for i in range(8, len(produced)) if len(produced[i - 1]) >= 3 and len(produced[i]) >= 3)
    split = produced[boundary - 1][-3:] + produced[boundary][:3]  # the end of one token and the start of the next
    full = "".join(produced)
    streamed, generation = pieces_per_token(loaded, "I love it", replace(sampled, stop=(NEVER, split)))
    assert generation.finish_reason == "stop" and split not in "".join(streamed)
    assert "".join(streamed) == generation.text == full[: full.find(split)].strip() != ""


HOT = InferenceParams(max_tokens=6, temperature=1.5)  # tiny-random samples all over its vocabulary


def test_a_seed_gives_its_text_whatever_shares_the_batch(loaded: Any) -> None:
    """Sampling drew from torch's one global generator: no answer could be reproduced, and a row's draws
    depended on every other row's. A seeded row draws from a generator of its own."""
    seeded = replace(HOT, seed=7)
    (alone,) = generate(loaded, ["I love it"], seeded)
    assert generate(loaded, ["I love it"], replace(HOT, seed=8))[0].text != alone.text
    rows = [
        Row.create(loaded, TEXTS[0], replace(HOT, max_tokens=30)),  # unseeded: draws from the global generator
        Row.create(loaded, "I love it", seeded),
        Row.create(loaded, TEXTS[5], replace(HOT, seed=3, max_tokens=5)),
    ]
    batch = ContinuousBatch(loaded)
    batch.add(rows[:1])
    batch.step()
    batch.add(rows[1:2])  # joins a batch that is mid-generation, with another prompt length
    batch.step()
    batch.add(rows[2:])
    while not rows[1].finished:
        batch.step()
    assert rows[1].generation(loaded) == alone
    listed = generate(loaded, [TEXTS[1], "I love it"], replace(HOT, seed=6))  # input i samples with seed + i
    assert listed[1] == alone and listed[0].text != alone.text
    assert "".join(stream(loaded, "I love it", seeded)) == alone.text  # `tuneloom generate --stream --seed`


def test_a_seed_that_cannot_be_honoured_is_refused_by_name(loaded: Any) -> None:
    """Beam sampling runs in transformers' generate(), which draws from the generator every request shares."""
    with pytest.raises(SettingsError) as beams:
        generate(loaded, ["I love it"], replace(HOT, num_beams=2, seed=1))
    assert beams.value.key == "seed" and "num_beams" in beams.value.message
    greedy = InferenceParams(max_tokens=8, temperature=0)
    assert generate(loaded, ["I love it"], replace(greedy, seed=1)) == generate(loaded, ["I love it"], greedy)


def test_logprobs_only_generate_could_serve_are_refused_saying_why(loaded: Any) -> None:
    """A request that generate() must run gets no log-probabilities. For beam search the refusal blamed the model's
    generation config, naming no setting at all ("its generation config sets , which …")."""
    from tuneloom.server.engine import Job

    with pytest.raises(SettingsError) as beams:
        Job.create(loaded, ["I love it"], InferenceParams(max_tokens=4, num_beams=2), [], logprobs=1)
    assert beams.value.key == "logprobs" and "num_beams > 1" in beams.value.message
    loaded.model.generation_config.no_repeat_ngram_size = 2
    try:
        with pytest.raises(SettingsError) as config:
            Job.create(loaded, ["I love it"], InferenceParams(max_tokens=4), [], logprobs=1)
    finally:
        loaded.model.generation_config.no_repeat_ngram_size = 0
    assert config.value.key == "logprobs" and "sets no_repeat_ngram_size" in config.value.message


def test_a_token_inside_a_character_has_its_own_bytes(loaded: Any) -> None:
    """`bytes` was null for a token that is part of a character, as if it had none. Byte-level BPE splits 你 over
    two tokens, each decoding alone to U+FFFD; their bytes come from the vocabulary, so a client joining the
    tokens' bytes gets the text back, and each token starts (`offset`) in the character its first byte is in."""
    text = "Hi 你好 🙂, ok"
    (tokens,) = prompt_logprobs(loaded, [text], top_n=5)
    raw = [t.raw or b"" for t in tokens]
    assert any(t.token == "\ufffd" for t in tokens) and all(t.raw for t in tokens)
    assert b"".join(raw).decode() == text
    assert [t.offset for t in tokens] == [len(b"".join(raw[:i]).decode(errors="ignore")) for i in range(len(raw))]
    chat = chat_logprobs(tokens[1:])  # the first has no log-probability: chat only reports generated tokens
    assert chat is not None and chat.content is not None
    assert [t.bytes for t in chat.content] == [list(b) for b in raw[1:]]
    assert all(c.bytes is not None for t in chat.content for c in t.top_logprobs)


def test_models_loaded_from_several_threads_at_once_all_load(loaded: Any) -> None:
    """A server loads in request threads (two versions asked for at once, an export beside a generation):
    transformers' meta-device loading raced, and all but one thread got "Cannot copy out of meta tensor"."""

    def load(_: int) -> Any:
        try:
            return load_for_inference("tiny-random").model.device
        except Exception as err:  # the failure is the finding
            return err

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(load, range(3))) == [loaded.model.device] * 3
