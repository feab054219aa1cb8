"""The GPU's packed path (one flat row, flash-attention's varlen kernel) and compiled blocks train the same
thing as one example at a time.

The varlen kernel (`torch.nn.attention.varlen.varlen_attn`) is CUDA-only. Here it is replaced by a
CPU stand-in with the same contract (flat `(tokens, heads, dim)` tensors, int32 offsets, the
PyTorch 2.10 or ≥ 2.11 keywords) that runs causal SDPA per example (`bench.cpu_varlen`, which also
gives PyTorch's own op a CPU kernel). What is checked is everything tuneloom itself does around the
kernel — the collator's offsets, the layout, the causal and grouped-query arguments, the transformers
plumbing — while the kernel's own numbers are checked on the GPU by `bench/gpu_attention_check.py`
(in `bench/gpu.sh`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bench.cpu_varlen import per_example, register_cpu_varlen
from bench.step_ops import CountOps
from tests.test_packing import _features
from transformers import AutoModelForCausalLM

import tuneloom.train.attention as attention
from tuneloom.data.tokenized import IGNORE_INDEX
from tuneloom.templates.sources import resolve_model_dir
from tuneloom.train.compiling import compile_blocks, wants_compile
from tuneloom.train.lora import fuse_lora_layers
from tuneloom.train.packing import PackedCollator, packed_causal_lm_loss
from tuneloom.train.recipe import TrainJob, run_training

LENGTHS = [17, 5, 30, 12, 9, 22]


def varlen_2_10(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, return_aux=None):  # type: ignore[no-untyped-def]
    """PyTorch 2.10's signature: `is_causal`, no `scale` (always 1/√dim), no grouped-query attention."""
    assert is_causal and torch.equal(cu_seq_q, cu_seq_k) and cu_seq_q.dtype == torch.int32
    assert max_q == max_k == int((cu_seq_q[1:] - cu_seq_q[:-1]).max())
    return per_example(q, k, v, cu_seq_q, None, gqa=False)


def varlen_current(  # type: ignore[no-untyped-def]
    q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None, window_size=(-1, -1), enable_gqa=False
):
    """The later signature: causal is `window_size=(-1, 0)`, grouped-query attention native."""
    assert window_size == (-1, 0) and torch.equal(cu_seq_q, cu_seq_k)
    assert max_q == max_k == int((cu_seq_q[1:] - cu_seq_q[:-1]).max())
    return per_example(q, k, v, cu_seq_q, scale, gqa=enable_gqa)


@pytest.fixture(params=[varlen_2_10, varlen_current], ids=["torch-2.10", "torch-2.11+"])
def cpu_varlen(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.nn.attention.varlen as varlen

    monkeypatch.setattr(varlen, "varlen_attn", request.param)
    monkeypatch.setattr(attention, "_kernel", None)  # use_flash_varlen sets it; put back after


@pytest.fixture(scope="module")
def cpu_varlen_op() -> None:
    """PyTorch's real varlen op — its Python wrapper, autograd and fake (compile-time) kernel — on the CPU."""
    register_cpu_varlen()


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    """tiny-random: Llama with 2 query heads over 1 key/value head (grouped-query attention)."""
    return AutoModelForCausalLM.from_pretrained(resolve_model_dir("tuneloom/tiny-random")).eval()


def _unpacked_loss(model: torch.nn.Module, features: list[dict[str, list[int]]]) -> torch.Tensor:
    total, count = torch.zeros(()), 0
    for f in features:
        labels = torch.tensor([f["labels"]])
        n = int((labels[:, 1:] != IGNORE_INDEX).sum())
        total = total + model(input_ids=torch.tensor([f["input_ids"]]), labels=labels).loss * n
        count += n
    return total / count


def test_flat_batches_are_one_row_with_every_example_start() -> None:
    batch = PackedCollator(pad_token_id=0, flat=True)(_features([4, 7, 3]))
    assert batch["input_ids"].shape == (1, 14)  # end to end, no padding
    assert batch["cu_seq_lens_q"].tolist() == [0, 4, 11, 14]  # in the batch's order
    assert batch["cu_seq_lens_q"].dtype == torch.int32
    assert batch["max_length_q"] == batch["max_length_k"] == 7
    assert batch["position_ids"][0].tolist() == [*range(4), *range(7), *range(3)]
    assert "attention_mask" not in batch


@pytest.mark.parametrize("scaling", [None, 0.3], ids=["default-scale", "own-scale"])
def test_flash_varlen_path_gives_the_unpacked_loss(
    tiny_model: torch.nn.Module, cpu_varlen: None, scaling: float | None
) -> None:
    features = _features(LENGTHS)
    if scaling is not None:  # a model whose attention scale is not 1/√dim (the 2.10 API has no `scale`)
        for layer in tiny_model.model.layers:
            layer.self_attn.scaling = scaling
    expected = _unpacked_loss(tiny_model, features)
    attention.use_flash_varlen(tiny_model)
    batch = PackedCollator(pad_token_id=0, flat=True)(features)
    labels = batch.pop("labels")
    loss = packed_causal_lm_loss(tiny_model(**batch, use_cache=False), labels)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_flash_varlen_path_refuses_a_batch_without_offsets(tiny_model: torch.nn.Module, cpu_varlen: None) -> None:
    """Without offsets the kernel would see one long example: a loud error, never cross-example attention."""
    attention.use_flash_varlen(tiny_model)
    batch = PackedCollator(pad_token_id=0)(_features([6, 4]))
    batch.pop("labels")
    with pytest.raises(RuntimeError, match="cu_seq_lens_q"):
        tiny_model(**batch, use_cache=False)


def test_the_cpu_keeps_per_example_sdpa_and_a_cpu_model_is_not_flash_usable(tiny_model: torch.nn.Module) -> None:
    assert not attention.flash_varlen_usable(tiny_model)
    assert attention.use_packed_attention(tiny_model) == attention.PER_EXAMPLE_SDPA
    attention.restore_attention(tiny_model)
    assert tiny_model.config._attn_implementation == "sdpa"


def test_compiled_blocks_on_the_real_varlen_op_compile_twice_and_learn_the_same(
    cpu_varlen_op: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU recipe end to end on the CPU: LoRA, flat batches, PyTorch's varlen op, compiled blocks.

    Two graphs in all (layer 0, whose input needs no gradient, and the others) over batches of
    different sizes: a recompile per batch would stall every step of a GPU run.
    """
    from tuneloom.templates.loading import apply_peft

    monkeypatch.setattr(attention, "_kernel", None)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_dir("tuneloom/tiny-random"))
    lora = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    model = apply_peft(model, {**lora, "task_type": "CAUSAL_LM"}).train()
    assert fuse_lora_layers(model) == 4 * model.config.num_hidden_layers  # as the recipe does: traced as one node each
    batches = [_features(sizes, seed=i) for i, sizes in enumerate(([17, 5, 30], [9, 40, 12, 7], [50, 6]))]

    def steps() -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        results = []
        for features in batches:
            batch = PackedCollator(pad_token_id=0, flat=True)(features)
            labels = batch.pop("labels")
            model.zero_grad()
            loss = packed_causal_lm_loss(model(**batch, use_cache=False), labels)
            loss.backward()
            results.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
        return results

    expected = [(_unpacked_loss(model, features), None) for features in batches]
    attention.use_flash_varlen(model)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eager = steps()
    compile_blocks(model, {"torch_compile_backend": "aot_eager"})
    compiled = steps()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2
    for (want, _), (got_eager, grads_eager), (got, grads) in zip(expected, eager, compiled, strict=True):
        torch.testing.assert_close(got_eager, want.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got, got_eager)
        for g, w in zip(grads, grads_eager, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)


def test_torch_compile_in_a_run_compiles_blocks_not_the_trainer(sentiment_file: Path, tmp_path: Path) -> None:
    """`torch_compile` is tuneloom's (regional), not the Trainer's, and the run learns what the eager one does."""
    losses, stages = [], []
    for compiled in (False, True):
        settings = {
            "trainer_config": {
                "max_steps": 2,
                "per_device_train_batch_size": 4,
                "eval_fraction": 0.0,
                "torch_compile": compiled,
                **({"torch_compile_backend": "eager"} if compiled else {}),  # dynamo only: seconds on a CPU
            }
        }
        job = TrainJob(data=sentiment_file, output=tmp_path / f"v{compiled}", template="tiny-random", settings=settings)
        outcome = run_training(job, on_event=lambda e: stages.append(e.message) if e.kind == "stage" else None)
        losses.append(outcome.metrics["train_loss"])
    assert "Compiling 2 LlamaDecoderLayer blocks (the first steps take longer)" in stages
    assert wants_compile({"torch_compile_mode": "default"}) and not wants_compile({"torch_compile": False})
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


def test_a_flat_lora_step_never_makes_the_host_wait_for_the_device(
    cpu_varlen_op: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forward, packed loss and backward of a flat batch: the kept positions come as indices and the loss
    finds its targets at a size it knows, so no boolean index or `.item()` stalls the host mid-step."""
    from tuneloom.templates.loading import apply_peft

    monkeypatch.setattr(attention, "_kernel", None)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_dir("tuneloom/tiny-random"))
    lora = {"peft_type": "LORA", "r": 8, "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM"}
    model = apply_peft(model, lora).train()
    features = _features(LENGTHS)
    expected = _unpacked_loss(model, features)
    attention.use_flash_varlen(model)
    batch = PackedCollator(pad_token_id=0, flat=True)(features)
    labels = batch.pop("labels")
    assert batch["logits_to_keep"].dtype == torch.int64
    with CountOps() as ops:
        loss = packed_causal_lm_loss(model(**batch, use_cache=False), labels)
        loss.backward()
    assert ops.waits == []
    torch.testing.assert_close(loss.detach(), expected.detach(), rtol=1e-5, atol=1e-6)
