"""The bundled demo: support-ticket routing, before and after fine-tuning SmolLM2-135M-Instruct.

`data/train.txt` (300 examples) and `data/heldout.txt` (60, never trained on) were written for this
project. The base model cannot follow the routing instruction; a few minutes of LoRA on a CPU
teaches it. Everything here is plain calls into the core, so the CLI only renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloom.data import parse_file
from tuneloom.evaluate.runner import EvaluationResult, evaluate_examples
from tuneloom.generate.loading import load_for_inference
from tuneloom.train.events import EventSink, ignore_events
from tuneloom.train.recipe import TrainJob, TrainOutcome, run_training

DATA_DIR = Path(__file__).parent / "data"
TRAIN_FILE = DATA_DIR / "train.txt"
HELDOUT_FILE = DATA_DIR / "heldout.txt"
TEMPLATE = "smollm2-135m-instruct-lora"
# Tuned for 2 CPU cores: two epochs of the 300 examples, batches of 8, LoRA on all attention projections.
SETTINGS: dict[str, Any] = {
    "trainer_config": {"num_train_epochs": 2, "learning_rate": 1e-3, "per_device_train_batch_size": 8}
}


@dataclass
class DemoResult:
    before: EvaluationResult
    after: EvaluationResult
    training: TrainOutcome


def evaluate_on_heldout(model: str | Path) -> EvaluationResult:
    examples = parse_file(HELDOUT_FILE).examples
    return evaluate_examples(load_for_inference(model), examples)


def train_demo(output: Path, *, on_event: EventSink = ignore_events, overwrite: bool = True) -> TrainOutcome:
    job = TrainJob(
        data=TRAIN_FILE,
        output=output,
        template=TEMPLATE,
        settings=SETTINGS,
        validation=HELDOUT_FILE,
        overwrite=overwrite,
    )
    return run_training(job, on_event=on_event)
