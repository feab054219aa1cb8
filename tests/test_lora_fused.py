"""Fused LoRA layers (`train.lora`) compute what peft's do, with fewer operators, and step aside where they don't apply.

Each check runs peft's own layer and the fused one on the same weights, input and dropout seed: the
outputs and every gradient must match, in float32 and in the GPU's dtypes (bf16 base, float32 adapter).
"""

from __future__ import annotations

import copy

import pytest
import torch
from bench.step_ops import CountOps
from peft import LoraConfig, get_peft_model
from torch import nn

from tuneloom.train.lora import FusedLoraLinear, fuse_lora_layers


class TwoLinears(nn.Module):
    def __init__(self, bias: bool) -> None:
        super().__init__()
        self.q_proj = nn.Linear(24, 40, bias=bias)
        self.o_proj = nn.Linear(40, 24, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.o_proj(torch.relu(self.q_proj(x)))


def _peft(bias: bool = False, base_dtype: torch.dtype = torch.float32, **lora: object) -> nn.Module:
    torch.manual_seed(0)
    settings = {"r": 8, "lora_alpha": 24, "lora_dropout": 0.1, "target_modules": ["q_proj", "o_proj"], **lora}
    model = get_peft_model(TwoLinears(bias).to(base_dtype), LoraConfig(**settings))  # type: ignore[arg-type]
    for name, param in model.named_parameters():  # B starts at zero: make the adapter's path count
        if "lora_B" in name:
            nn.init.normal_(param, std=0.5)
    return model


def _run(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    x = x.detach().clone().requires_grad_(x.requires_grad)
    torch.manual_seed(7)  # the same dropout masks both ways
    out = model(x)
    (out.float() * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    if x.grad is not None:
        grads["input"] = x.grad
    return out.detach(), grads


def _same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], tolerance: float = 1e-5) -> None:
    """Equal up to rounding: float32 sums in another order, or bf16's 8 bits (relative to each tensor's scale)."""
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype, name
        torch.testing.assert_close(got[name], tensor, rtol=tolerance, atol=tolerance * tensor.abs().max().item())


@pytest.mark.parametrize(
    ("bias", "base_dtype", "tolerance"),
    [(False, torch.float32, 1e-5), (True, torch.float32, 1e-5), (False, torch.bfloat16, 1e-2)],
    ids=["float32", "float32 with bias", "bf16 base, float32 adapter"],
)
@pytest.mark.parametrize("needs_input_grad", [True, False], ids=["input grad", "no input grad"])
def test_fused_layers_give_peft_outputs_and_gradients(
    bias: bool, base_dtype: torch.dtype, tolerance: float, needs_input_grad: bool
) -> None:
    reference = _peft(bias, base_dtype).train()
    fused = copy.deepcopy(reference)
    assert fuse_lora_layers(fused) == 2 and all(type(m) is not FusedLoraLinear for m in reference.modules())
    x = torch.randn(3, 5, 24, dtype=base_dtype).requires_grad_(needs_input_grad)
    want, want_grads = _run(reference, x)
    got, got_grads = _run(fused, x)
    assert len(want_grads) == 4 + needs_input_grad  # A and B of both layers, and the input's where asked
    _same({"output": got, **got_grads}, {"output": want, **want_grads}, tolerance)


def test_without_dropout_and_in_eval_the_fused_layer_is_peft_s() -> None:
    for dropout, train in ((0.0, True), (0.1, False)):  # nn.Identity; nn.Dropout in eval mode
        reference = _peft(lora_dropout=dropout, use_rslora=True).train(train)
        fused = copy.deepcopy(reference)
        fuse_lora_layers(fused)
        x = torch.randn(4, 24, requires_grad=True)
        want, want_grads = _run(reference, x)
        got, got_grads = _run(fused, x)
        _same({"output": got, **got_grads}, {"output": want, **want_grads})


def test_what_the_fused_path_does_not_cover_runs_peft_s_forward() -> None:
    """DoRA, disabled adapters, merged weights, a trainable base: peft's forward, with its results."""
    x = torch.randn(2, 24)
    dora = _peft(use_dora=True).eval()
    fused_dora = copy.deepcopy(dora)
    fuse_lora_layers(fused_dora)
    assert not any(m._plain_adapter() for m in fused_dora.modules() if isinstance(m, FusedLoraLinear))
    torch.testing.assert_close(fused_dora(x), dora(x))

    model = _peft().eval()
    fuse_lora_layers(model)
    with model.disable_adapter():
        torch.testing.assert_close(
            model(x), model.base_model.model.o_proj.base_layer(torch.relu(model.base_model.model.q_proj.base_layer(x)))
        )
    adapted = model(x)
    model.merge_adapter()
    assert all(m._plain_adapter() is None for m in model.modules() if isinstance(m, FusedLoraLinear))
    torch.testing.assert_close(model(x), adapted, rtol=1e-5, atol=1e-5)
    model.unmerge_adapter()
    model.base_model.model.q_proj.base_layer.weight.requires_grad_(True)  # no frozen-weight shortcut then
    assert model.base_model.model.q_proj._plain_adapter() is None
    model.base_model.model.o_proj.base_layer.weight.ds_id = 3  # DeepSpeed ZeRO-3: gathered only by its own call
    assert model.base_model.model.o_proj._plain_adapter() is None


def test_fused_layers_save_and_merge_as_peft_s(tmp_path: object) -> None:
    reference = _peft()
    fused = copy.deepcopy(reference)
    fuse_lora_layers(fused)
    assert fused.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(2, 24)
    torch.testing.assert_close(fused.merge_and_unload()(x), reference.merge_and_unload()(x))


def test_a_fused_training_step_runs_a_fifth_fewer_operators() -> None:
    """The reason for the fusion: fewer operators for the host to issue on a host-bound GPU (bench/README.md)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
    )

    def step_ops(fuse: bool) -> tuple[int, torch.Tensor]:
        torch.manual_seed(0)
        lora = LoraConfig(
            r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
        )
        model = get_peft_model(LlamaForCausalLM(config), lora).train()
        if fuse:
            fuse_lora_layers(model)
        ids = torch.randint(1, 256, (2, 33))
        torch.manual_seed(1)
        with CountOps() as counter:
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
        return sum(counter.ops.values()), loss.detach()

    (plain, plain_loss), (fused, fused_loss) = step_ops(False), step_ops(True)
    torch.testing.assert_close(fused_loss, plain_loss)
    assert fused < 0.8 * plain, (fused, plain)


def test_with_gradient_checkpointing_the_recomputed_forward_draws_the_same_dropout() -> None:
    """`gradient_checkpointing: true` runs each block's forward again in the backward pass: the fused layers'
    dropout must draw the masks of the first pass, as peft's do, or the gradients would be of another model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
    )

    def grads(fuse: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        base = LlamaForCausalLM(config)
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        lora = LoraConfig(r=4, lora_alpha=12, lora_dropout=0.2, target_modules=["q_proj", "v_proj"])
        model = get_peft_model(base, lora).train()
        for name, param in model.named_parameters():
            if "lora_B" in name:
                nn.init.normal_(param, std=0.5)
        if fuse:
            fuse_lora_layers(model)
        ids = torch.randint(1, 128, (2, 17), generator=torch.Generator().manual_seed(1))
        torch.manual_seed(2)
        model(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    want, got = grads(False), grads(True)
    assert len(want) == 8
    _same(got, want)
