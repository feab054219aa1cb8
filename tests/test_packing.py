"""Packed batches must train the same thing as plain padded batches, token for token."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tuneloom.data.tokenized import IGNORE_INDEX
from tuneloom.templates.sources import resolve_model_dir
from tuneloom.train.packing import PackedCollator, pack_rows, packed_causal_lm_loss


def _features(lengths: list[int], prompt: int = 3, seed: int = 0) -> list[dict[str, list[int]]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(10, 5000, (n,), generator=gen).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return out


def test_pack_rows_first_fit_decreasing() -> None:
    rows = pack_rows([5, 3, 7, 2, 9], row_tokens=10)
    assert sorted(i for r in rows for i in r) == [0, 1, 2, 3, 4]
    assert all(sum([5, 3, 7, 2, 9][i] for i in r) <= 10 for r in rows)
    assert len(rows) == 3
    assert pack_rows([15], row_tokens=10) == [[0]]  # longer than a row: alone, not dropped


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(resolve_model_dir("tuneloom/tiny-random"))
    return model.eval()


@pytest.mark.parametrize("row_tokens", [64, 4096])
def test_packed_loss_equals_unpacked_loss(tiny_model: torch.nn.Module, row_tokens: int) -> None:
    features = _features([17, 5, 30, 12, 9, 22])
    reference = []
    for f in features:  # one example at a time: no padding, no packing, the model's own loss
        ids = torch.tensor([f["input_ids"]])
        labels = torch.tensor([f["labels"]])
        out = tiny_model(input_ids=ids, labels=labels)
        n = int((labels[:, 1:] != IGNORE_INDEX).sum())
        reference.append((out.loss * n, n))
    expected = sum(s for s, _ in reference) / sum(n for _, n in reference)

    for packing in (True, False):
        batch = PackedCollator(pad_token_id=0, row_tokens=row_tokens, packing=packing)(features)
        labels = batch.pop("labels")
        if packing and row_tokens == 4096:
            assert batch["input_ids"].shape[0] == 1  # all six in one row, no padding at all
            assert "attention_mask" not in batch
        outputs = tiny_model(**batch, use_cache=False)
        loss = packed_causal_lm_loss(outputs, labels)
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_packed_rows_isolate_examples(tiny_model: torch.nn.Module) -> None:
    """Changing one example must not change the logits of another packed in the same row."""
    a = _features([10, 8], seed=1)
    b = [a[0], _features([8], seed=2)[0]]
    logits = []
    for feats in (a, b):
        batch = PackedCollator(pad_token_id=0)(feats)
        batch.pop("labels")
        batch["logits_to_keep"] = 0
        logits.append(tiny_model(**batch, use_cache=False).logits[0, :10])
    torch.testing.assert_close(logits[0], logits[1])


def test_the_run_trainer_estimates_flops_as_transformers_does_counting_parameters_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import Trainer, TrainingArguments

    from tuneloom.train.trainer import RunTrainer

    model = AutoModelForCausalLM.from_pretrained(resolve_model_dir("tuneloom/tiny-random"))
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    inputs = {"input_ids": torch.zeros(3, 40, dtype=torch.long)}
    expected = Trainer(model=model, args=args).floating_point_ops(inputs)
    trainer = RunTrainer(model=model, args=args)
    assert trainer.floating_point_ops(inputs) == expected > 0
    monkeypatch.setattr(model, "num_parameters", lambda **_: pytest.fail("parameters counted again"))
    assert trainer.floating_point_ops({"input_ids": torch.zeros(1, 10, dtype=torch.long)}) == expected // 12
