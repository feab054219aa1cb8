"""Padding-free batches: the examples of a batch laid end to end, each attending only to itself.

A batch of `per_device_train_batch_size` examples is packed first-fit-decreasing into as few rows of
at most `row_tokens` tokens as possible. Position ids restart at 0 for every example and no
attention mask is passed, so transformers builds a block-diagonal causal mask from the position ids
(`find_packed_sequence_indices`): no example sees another, and the loss per token equals the
unpacked loss. The first label of each example is masked, because in a packed row the token before
it belongs to the previous example. Only rows' tails are padded (a padding segment with its own
positions and no labels).

With `flat=True` (flash-attention's varlen kernel on a GPU, `train/attention.py`) the batch is one
row with no padding at all, and `cu_seq_lens_q`/`cu_seq_lens_k` (int32 offsets where each example
begins, and the total) with `max_length_q`/`max_length_k` tell the kernel where examples start —
the keywords transformers' own flash path reads.

`logits_to_keep` marks the positions whose next token is trained on, so the vocabulary projection
runs only there — with completion-only training that skips most of the most expensive matmul of a
small model. A flat batch passes them as indices (the mask's other form, a boolean one, makes the
device report its count to the host mid-step).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tuneloom.data.tokenized import IGNORE_INDEX


def pack_rows(lengths: Sequence[int], row_tokens: int) -> list[list[int]]:
    """First-fit decreasing: indices of examples per row; an example longer than a row gets its own."""
    rows: list[list[int]] = []
    free: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        need = lengths[index]
        for row, room in enumerate(free):
            if need <= room:
                rows[row].append(index)
                free[row] -= need
                break
        else:
            rows.append([index])
            free.append(max(row_tokens, need) - need)
    return rows


@dataclass
class PackedCollator:
    """Collate `{"input_ids", "labels"}` features into packed rows (or padded rows when `packing=False`)."""

    pad_token_id: int
    row_tokens: int = 4096
    packing: bool = True
    flat: bool = False  # one row of every example, with the varlen kernel's offsets

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if self.flat:
            rows = [list(range(len(features)))]
        elif self.packing:
            rows = pack_rows([len(f["input_ids"]) for f in features], self.row_tokens)
        else:
            rows = [[i] for i in range(len(features))]
        width = max(sum(len(features[i]["input_ids"]) for i in row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            start = 0
            for i in row:
                ids, labs = features[i]["input_ids"], features[i]["labels"]
                end = start + len(ids)
                input_ids[r, start:end] = torch.as_tensor(ids)
                labels[r, start:end] = torch.as_tensor(labs)
                labels[r, start] = IGNORE_INDEX
                position_ids[r, start:end] = torch.arange(len(ids))
                attention_mask[r, start:end] = 1
                start = end
            position_ids[r, start:] = torch.arange(width - start)
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
        batch: dict[str, Any] = {
            "input_ids": input_ids,
            "labels": labels,
            "position_ids": position_ids,
            "logits_to_keep": keep,
        }
        if self.flat:  # one row: the kept positions as indices, found here on the host, not on the device
            batch["logits_to_keep"] = keep[0].nonzero().squeeze(1)
            lengths = torch.tensor([len(f["input_ids"]) for f in features])
            starts = torch.zeros(len(features) + 1, dtype=torch.int32)
            starts[1:] = lengths.cumsum(0)
            longest = int(lengths.max())
            batch |= {"cu_seq_lens_q": starts, "cu_seq_lens_k": starts}
            batch |= {"max_length_q": longest, "max_length_k": longest}
        elif not self.packing:
            batch["attention_mask"] = attention_mask
        return batch


def packed_causal_lm_loss(
    outputs: Any, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """Cross-entropy over the kept logits (flattened in row-major order, like the mask that chose them).

    Summed and divided by the number of trained tokens in the whole (accumulated) batch, which is
    what makes gradient accumulation and packing give the same loss as one big unpacked batch.
    The targets are found with `nonzero_static`, sized by the logits: a boolean index would make the
    host wait for the device (its output size is data), and a flat batch's step needs no such wait.
    So `outputs.logits` must hold exactly the kept positions: the model ran with the batch's
    `logits_to_keep`, as `PackedCollator` makes it.
    """
    logits = outputs.logits.reshape(-1, outputs.logits.shape[-1]).float()
    following = labels[:, 1:].reshape(-1)
    trained = torch.nonzero_static(following != IGNORE_INDEX, size=logits.shape[0]).squeeze(1)
    targets = following[trained]
    total = torch.nn.functional.cross_entropy(logits, targets.to(logits.device), reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else targets.numel()
    if isinstance(count, torch.Tensor):
        count = count.to(total.device)
    return total / count
