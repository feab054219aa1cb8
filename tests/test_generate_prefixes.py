"""Packed prefill and prompt-prefix reuse in the continuous batch (tuneloom.generate.packing, .prefixes).

Rows that share an instruction prefill only what follows it, packed into one sequence; each must
still answer exactly as `generate()` answers it alone, penalties must still count the whole prompt,
and a model whose attention cannot take a packed mask must prefill padded as before.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import DynamicCache

from tuneloom.generate import prefixes as prefixes_module
from tuneloom.generate.continuous import ContinuousBatch
from tuneloom.generate.generator import generate, padded_batch, padded_positions
from tuneloom.generate.loading import load_for_inference
from tuneloom.generate.packing import pack, packs_prefill, split_into_packs, unpacked
from tuneloom.generate.params import InferenceParams
from tuneloom.generate.prefixes import KEPT, MIN_SHARED_TOKENS, PREFIX_CACHE_ENV, PromptPrefixes
from tuneloom.generate.rows import Row

INSTRUCTION = "### Instruction: Route this support ticket to one queue, answering with one word. ### Human: "
TICKETS = ["my card was charged twice", "the app crashes", "where is my parcel", "I want a refund", "login fails"]
OTHER = "### Instruction: Summarise the report below in one sentence for a manager. ### Human: "


@pytest.fixture
def loaded() -> Any:
    return load_for_inference("tiny-random")


def _answers_alone(loaded: Any, prompts: list[str], params: InferenceParams) -> list[Any]:
    return [generate(loaded, [prompt], params)[0] for prompt in prompts]


def _run_joining(loaded: Any, prompts: list[str], params: InferenceParams) -> list[Any]:
    """Two rows start, the rest join one at a time while the batch decodes; each row's Generation."""
    rows = [Row.create(loaded, prompt, params) for prompt in prompts]
    batch, waiting, steps = ContinuousBatch(loaded), rows[2:], 0
    batch.add(rows[:2])
    while batch.rows or waiting:
        if waiting and steps % 2 == 0:
            batch.add([waiting.pop(0)])
        else:
            batch.step()
        steps += 1
    return [row.generation(loaded) for row in rows]


def _prefill_widths(loaded: Any) -> list[int]:
    """The input widths of `loaded`'s forwards from now on (the model itself, only watched)."""
    widths: list[int] = []
    forward = loaded.model.forward

    def watched(*args: Any, **kwargs: Any) -> Any:
        widths.append(kwargs["input_ids"].shape[1])
        return forward(*args, **kwargs)

    loaded.model.forward = watched
    return widths


def test_rows_sharing_an_instruction_prefill_only_the_rest_and_answer_as_alone(loaded: Any) -> None:
    assert packs_prefill(loaded.model)
    prompts = [INSTRUCTION + ticket for ticket in TICKETS] + [OTHER + "sales fell 3% in May", OTHER + "a new office"]
    params = InferenceParams(max_tokens=9, temperature=0)
    expected = _answers_alone(loaded, prompts, params)
    loaded.prefixes = PromptPrefixes()
    widths = _prefill_widths(loaded)
    assert _run_joining(loaded, prompts, params) == expected

    ids = [loaded.tokenizer(Row.create(loaded, p, params).prompt)["input_ids"] for p in prompts]
    kept = loaded.prefixes.kept
    assert len(kept) == 2  # one per instruction, each a start its prompts share
    for prefix, group in ((kept[0], ids[:5]), (kept[1], ids[5:])):
        assert len(prefix.ids) >= MIN_SHARED_TOKENS
        assert all(tuple(row[: len(prefix.ids)]) == prefix.ids for row in group)
    # the first instruction's prefix is prefilled once, then read by all five of its prompts; the other's
    # first prompt has nothing to share yet, and its prefix is prefilled as the second arrives
    assert sum(w for w in widths if w > 1) == sum(len(row) for row in ids) - 4 * len(kept[0].ids)


def test_a_repetition_penalty_still_counts_the_prefix_tokens(loaded: Any) -> None:
    prompts = [INSTRUCTION + ticket for ticket in TICKETS[:4]]
    params = InferenceParams(max_tokens=12, temperature=0, repetition_penalty=1.8)
    expected = _answers_alone(loaded, prompts, params)
    loaded.prefixes = PromptPrefixes()
    assert _run_joining(loaded, prompts, params) == expected
    assert loaded.prefixes.kept


def test_a_model_whose_attention_cannot_pack_prefills_padded_and_answers_the_same(loaded: Any) -> None:
    loaded.model.config.sliding_window = 4096  # a sliding window: a packed 4D mask would not slide it
    assert not packs_prefill(loaded.model)
    prompts = [INSTRUCTION + ticket for ticket in TICKETS]
    params = InferenceParams(max_tokens=7, temperature=0)
    expected = _answers_alone(loaded, prompts, params)
    loaded.prefixes = PromptPrefixes()
    assert _run_joining(loaded, prompts, params) == expected
    assert not loaded.prefixes.kept


def test_prefix_reuse_is_switched_off_by_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PREFIX_CACHE_ENV, "0")
    prefixes = PromptPrefixes()
    shared = list(range(40))
    groups = prefixes.grouped([[*shared, 1], [*shared, 2]], lambda ids: pytest.fail("prefilled a prefix"))
    assert [(g.prefix, g.tokens, g.rows) for g in groups] == [(None, 0, [0, 1])]


class _Fills:
    """Prefix prefills recorded, each a real one-layer cache of the prompt start's length."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def __call__(self, ids: list[int]) -> Any:
        self.calls.append(ids)
        cache = DynamicCache()
        cache.update(torch.randn(1, 2, len(ids), 4), torch.randn(1, 2, len(ids), 4), 0)
        return cache


def test_prefixes_are_found_reused_capped_and_evicted() -> None:
    prefixes, fills = PromptPrefixes(enabled=True), _Fills()
    start = list(range(100, 130))  # 30 shared tokens
    first = prefixes.grouped([[*start, 1, 2], [*start, 3]], fills)
    assert fills.calls == [start] and [(g.tokens, g.rows) for g in first] == [(30, [0, 1])]

    # a later prompt sharing more with the previous one still reuses the kept prefix: no new prefill
    again = prefixes.grouped([[*start, 3, 9], start[:20] + [7] * 5, [5] * 40], fills)
    assert fills.calls == [start]
    assert [(g.tokens, g.rows) for g in again] == [(20, [0, 1]), (0, [2])]  # the fewest any of them shares

    # a prompt that is the prefix itself prefills its last token; one sharing too little is left alone
    capped = prefixes.grouped([start, start[: MIN_SHARED_TOKENS - 1] + [0] * 10], fills)
    assert [(g.tokens, g.rows) for g in capped] == [(29, [0]), (0, [1])]

    for n in range(KEPT + 1):  # more instructions than are kept: the least recently used goes
        other = [1000 * (n + 1) + i for i in range(MIN_SHARED_TOKENS + 2)]
        prefixes.grouped([[*other, 1], [*other, 2]], fills)
    assert len(prefixes.kept) == KEPT
    assert all(prefix.ids != tuple(start) for prefix in prefixes.kept)


def test_kept_prefixes_stay_within_their_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A big model's prefixes are hundreds of MB each: the oldest go first, the newest always stays."""
    prefixes, fills = PromptPrefixes(enabled=True), _Fills()
    one = 2 * 2 * 20 * 4 * 4  # keys and values of a 20-token start in `_Fills`' one-layer cache, in bytes
    monkeypatch.setattr(prefixes_module, "KEPT_BYTES", 2 * one)
    starts = [[1000 * (n + 1) + i for i in range(20)] for n in range(3)]
    for start in starts:
        prefixes.grouped([[*start, 1], [*start, 2]], fills)
    assert [prefix.ids for prefix in prefixes.kept] == [tuple(start) for start in starts[1:]]
    monkeypatch.setattr(prefixes_module, "KEPT_BYTES", one // 2)
    prefixes.grouped([[*starts[0], 1], [*starts[0], 2]], fills)
    assert [prefix.ids for prefix in prefixes.kept] == [tuple(starts[0])]  # over budget alone: still kept


@pytest.mark.parametrize("count", [1, 3])  # one row: a plain causal forward, no block mask
def test_a_packed_prefill_matches_the_padded_one_token_for_token(loaded: Any, count: int) -> None:
    """Same last-token logits and the same cache, row by row, as left-padded rows prefilled from scratch."""
    prompts = [loaded.tokenizer(INSTRUCTION + ticket)["input_ids"] for ticket in TICKETS[:count]]
    shared = 12
    model = loaded.model
    with torch.inference_mode():
        start = DynamicCache()
        model(input_ids=torch.tensor([prompts[0][:shared]]), cache=start, use_cache=True)
        packed = pack([p[shared:] for p in prompts], shared, torch.float32, torch.device("cpu"))
        out = model(
            input_ids=packed.ids, attention_mask=packed.mask, position_ids=packed.positions, cache=start, use_cache=True
        )
        cache, mask = unpacked(start, packed)

        inputs = padded_batch(loaded, prompts)
        plain = DynamicCache()
        ids, plain_mask = inputs["input_ids"], inputs["attention_mask"]
        expected = model(
            input_ids=ids, attention_mask=plain_mask, position_ids=padded_positions(plain_mask), cache=plain
        )
    torch.testing.assert_close(out.logits[0, packed.last], expected.logits[:, -1], rtol=1e-4, atol=1e-4)
    assert mask[:, :shared].all() and mask[:, -1].all()  # the prefix, then each row's rest left-padded
    assert torch.equal(mask.sum(dim=1), plain_mask.sum(dim=1))
    for got, want in zip(cache.layers, plain.layers, strict=True):  # each row's real tokens, in order
        for ours, theirs in ((got.keys, want.keys), (got.values, want.values)):
            real = ours.transpose(1, 2)[mask.bool()], theirs.transpose(1, 2)[plain_mask.bool()]
            torch.testing.assert_close(*real, rtol=1e-4, atol=1e-4)


def test_packs_hold_at_most_their_token_limit() -> None:
    assert split_into_packs([400, 400, 300, 900, 2000, 10], limit=1024) == [[0, 1], [2], [3], [4], [5]]
    assert split_into_packs([5, 5, 5], limit=1024) == [[0, 1, 2]]
