"""The GPU benchmark's offline pieces, checked on the CPU: a GPU machine cannot download anything, so
these must be right before its 15 minutes start (bench/gpu.sh runs them there; `--dry-run` here)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from bench.decode_batches import batch_sizes, longest_row_tokens
from bench.random_models import SHAPES, card_for, lora_flops_per_token, matmul_parameters, shape, write_tokenizer
from bench.train import (
    PROFILED_STEPS,
    compiled_figures,
    first_step_excess,
    profile_summary,
    profiled_from,
    steady_figures,
    steady_step_profiler,
)

from tuneloom.generate.generator import BATCH_SIZE
from tuneloom.generate.results import Generation

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


def test_the_compile_estimate_leaves_out_the_first_step_warm_up_an_eager_run_has_too() -> None:
    """`bench.train --compile`: each tuneloom run's first step is slower than its steady ones (allocator,
    first kernel loads); only what the compiled run's first step adds beyond the eager run's is compile.
    Was: each run's whole excess was its `compile_s_estimate`, the eager run's included."""
    eager_steps = first_step_excess([0.0, 3.0, 4.0, 5.0, 6.5, 7.5])
    compiled_steps = first_step_excess([0.0, 52.0, 52.5, 53.0, 60.0, 60.5])
    assert eager_steps == {"steady_step_s": 1.0, "first_step_excess_s": 2.0}
    assert compiled_steps == {"steady_step_s": 0.5, "first_step_excess_s": 51.5}  # step 4 recompiled: not steady
    eager, compiled = {"tokens_per_s": 900.0, **eager_steps}, {"tokens_per_s": 450.0, **compiled_steps}
    figures = compiled_figures({"tokens_per_s": 1000.0}, eager, compiled)
    assert figures["compile_s_estimate"] == 49.5
    assert figures["compiled_steady_step_speedup"] == 2.0
    assert figures["compiled_speedup_tokens_per_s"] == 0.45  # the compile included, as a user's run has it
    failed = compiled_figures({"tokens_per_s": 1000.0}, eager, {"error": "stopped after 90 s (--limit-s)"})
    assert failed["compile_s_estimate"] is failed["compiled_speedup_tokens_per_s"] is None


def test_steady_throughput_is_the_tokens_over_the_median_step_times_the_steps() -> None:
    """What a long run settles to: the compile in the first step and one recompile later do not count."""
    compiled = steady_figures([0.0, 52.0, 52.5, 53.0, 60.0, 60.5], real_tokens=1000)
    assert compiled["steady_tokens_per_s"] == 1000 / (0.5 * 5)
    baseline = steady_figures([0.0, 3.0, 4.0, 5.0, 6.0, 7.0], real_tokens=1000)
    figures = compiled_figures({"tokens_per_s": 1.0, **baseline}, {}, {"tokens_per_s": 1.0, **compiled})
    assert figures["compiled_steady_speedup_tokens_per_s"] == 2.0
    assert steady_figures([0.0], real_tokens=1000) == {}  # no step: no figure rather than a division by zero


def test_decode_batches_counts_an_ending_eos_as_a_step_and_refuses_a_batch_generate_would_split() -> None:
    """`bench.decode_batches` times steps as the difference of two calls over their difference in tokens:
    a batch whose longest row ended on EOS ran one step more than that row's `tokens` (which leave the EOS
    out); and a batch above `generate`'s BATCH_SIZE runs as batches one after the other, whose steps would
    add up into one. Was: EOS not counted, and `--batches 64` gave a step time twice the true one."""
    rows = [Generation("p", "a b", 2, "length"), Generation("p", "a b c", 3, "stop")]
    assert longest_row_tokens(rows) == 4  # three tokens, then the EOS one more step made
    assert batch_sizes("1,8,32") == [1, 8, 32]
    for bad in (f"1,{BATCH_SIZE + 1}", "0", "1,,8", "eight"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"from 1 to {BATCH_SIZE}"):
            batch_sizes(bad)


def test_the_mid_run_profile_records_exactly_the_steps_its_wall_time_is_taken_over() -> None:
    """`bench.train --profile`: the profiler, stepped at each step's end, records steps first+1 … first+N,
    the window whose wall time (`step_ends[first + N] - step_ends[first]`) the summary divides by."""
    import torch

    steps = 8
    profiler = steady_step_profiler(steps)
    with profiler:
        for step in range(1, steps + 1):
            with torch.profiler.record_function(f"step-{step}"):
                torch.ones(8, 8) @ torch.ones(8, 8)
            profiler.step()
    recorded = sorted(e.key for e in profiler.key_averages() if e.key.startswith("step-"))
    first = profiled_from(steps)
    assert recorded == [f"step-{first + i}" for i in range(1, PROFILED_STEPS + 1)]
    summary = profile_summary(profiler.key_averages(), 0.3, PROFILED_STEPS)
    assert summary["wall_s_per_step"] == pytest.approx(0.1) and summary["device_busy_share"] is None
    assert any(name == "aten::mm" and calls == PROFILED_STEPS for name, calls, _ in summary["top_cpu_ops_ms"])


def test_the_decode_breakdown_times_every_step_of_one_request_and_restores_the_decoder() -> None:
    """bench.generate's answer to "host or device?" for the compiled loop (here eager, on the CPU)."""
    from bench.generate import decode_breakdown

    from tuneloom.generate.compiled import StaticDecoder
    from tuneloom.generate.loading import load_for_inference

    real_step = StaticDecoder.step
    loaded = load_for_inference("tiny-random")
    loaded.compiled_decode = True
    figures = decode_breakdown(loaded, "Is the delivery late?", 8)
    assert StaticDecoder.step is real_step
    picks = figures["tokens"] + (figures["tokens"] < 8)  # an EOS is drawn too, and not counted
    assert figures["steps"] == min(picks, 8 - 1)  # every pick but the 8th starts a step
    assert figures["prefill_ms"] > 0 and figures["device_ms_per_step"] > 0
