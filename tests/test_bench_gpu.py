"""The GPU benchmark's offline pieces, checked on the CPU: a GPU machine cannot download anything, so
these must be right before its 15 minutes start (bench/gpu.sh runs them there; `--dry-run` here)."""

from __future__ import annotations

from pathlib import Path

from bench.random_models import SHAPES, card_for, lora_flops_per_token, matmul_parameters, shape, write_tokenizer

TEXT = "### Instruction: Route the ticket. ### Human: my invoice shows €42 twice, ünïcode 🙂 ### Assistant: billing"


def test_cut_gpt2_tokenizer_stays_inside_the_1_1b_vocabulary(tmp_path: Path) -> None:
    """Every id the 32,000-token tokenizer emits must exist in the Llama-1.1B embedding, EOS included."""
    from transformers import AutoTokenizer

    write_tokenizer(tmp_path, 32000)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    ids = tokenizer(TEXT)["input_ids"]
    assert len(tokenizer) == 32000
    assert tokenizer.eos_token_id == 31999
    assert max(ids) < 31999
    assert tokenizer.decode(ids) == TEXT


def test_flops_formula_counts_the_real_shapes(tmp_path: Path, monkeypatch) -> None:
    """MFU is only as right as N: the configs must have TinyLlama-1.1B's and SmolLM2-135M's sizes."""
    from transformers import LlamaConfig

    monkeypatch.delenv("BENCH_TINY", raising=False)
    sizes = {}
    for name in SHAPES:
        folder = tmp_path / name
        LlamaConfig(**shape(name)).save_pretrained(folder)
        sizes[name] = matmul_parameters(folder, 16, ["q_proj", "k_proj", "v_proj", "o_proj"])
    linear, lora = sizes["llama-1.1b-random"]
    # 1,100,048,384 parameters, less the 65.5M-entry input embedding and the norms
    assert linear == 1_100_048_384 - 32000 * 2048 - (2 * 22 + 1) * 2048
    assert lora == 22 * 16 * (2 * (2048 + 2048) + 2 * (2048 + 256))
    assert lora_flops_per_token(linear, lora) == 4 * linear + 6 * lora
    # SmolLM2 ties its embedding: the projection to the vocabulary is still a matmul, counted once
    assert sizes["smollm2-135m-random"][0] == 134_515_008 - (2 * 30 + 1) * 576
    assert card_for("NVIDIA H100 80GB HBM3").memory_bytes_per_s == 3.35e12
    assert card_for("NVIDIA H200").memory_bytes_per_s == 4.8e12
    assert card_for("Intel(R) Xeon(R) Processor") is None
