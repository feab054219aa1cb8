"""Time from a `train` call to MODEL_TRAINED through the platform, against the engine called directly.

The demo dataset (300 support tickets) and the demo's settings on SmolLM2-135M-Instruct, twice in
one run: once through a real `tuneloom serve` (upload → dataset version → model → `train` → poll
until MODEL_TRAINED, with the Python SDK), once with `run_training` in this process on the same
snapshot and settings. The difference is what the platform costs: queue claim, the training child
process starting (imports, model load), telemetry writes, the final status.

    python -m bench.queue                  # the demo: SmolLM2, 2 epochs (minutes on 2 CPU cores)
    python -m bench.queue --model tiny-random
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import MODEL_TEMPLATES, RESULTS_DIR, print_table, write_result
from bench.server_process import create_key, start_server, stop, train_through_api


def through_server(data_dir: Path, template: str, settings: dict[str, Any]) -> tuple[float, dict[str, Any], Path]:
    """Seconds from `model.train(...)` to the SDK seeing MODEL_TRAINED, the version's metrics, its data snapshot."""
    from tuneloom.demo import TRAIN_FILE

    key = create_key(data_dir)
    server, url = start_server(data_dir)
    try:
        _, elapsed, trained = train_through_api(
            url, key, TRAIN_FILE, template, settings, app_id="bench", model_id="router"
        )
    finally:
        stop(server)
    return (
        elapsed,
        dict(trained["metrics"] or {}),
        data_dir / "dataset-versions" / f"{trained['dataset_version_id']}.jsonl",
    )


def in_process(snapshot: Path, output: Path, template: str, settings: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    from tuneloom.train.recipe import TrainJob, run_training

    started = time.perf_counter()
    outcome = run_training(TrainJob(data=snapshot, output=output, template=template, settings=settings))
    return time.perf_counter() - started, outcome.metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODEL_TEMPLATES), default="smollm2")
    args = parser.parse_args()
    from tuneloom.demo import SETTINGS

    template = MODEL_TEMPLATES[args.model]
    with tempfile.TemporaryDirectory(prefix="tuneloom-bench-queue-") as tmp:
        served_s, served_metrics, snapshot = through_server(Path(tmp) / "data", template, SETTINGS)
        direct_s, direct_metrics = in_process(snapshot, Path(tmp) / "direct", template, SETTINGS)
    rows = [
        ["engine, in process (baseline)", f"{direct_s:.1f}", f"{direct_metrics['train_runtime_s']:.1f}", "1.00"],
        [
            "platform: train call → MODEL_TRAINED",
            f"{served_s:.1f}",
            f"{served_metrics['train_runtime_s']:.1f}",
            f"{served_s / direct_s:.2f}",
        ],
    ]
    print_table(f"train → MODEL_TRAINED, demo dataset, {template}", ["path", "wall s", "Trainer s", "× baseline"], rows)
    write_result(
        RESULTS_DIR / f"queue-{args.model}.json",
        benchmark="queue",
        figures={
            "model": args.model,
            "template": template,
            "settings": SETTINGS,
            "train_call_to_trained_s": round(served_s, 2),
            "in_process_s": round(direct_s, 2),
            "overhead_s": round(served_s - direct_s, 2),
            "ratio": round(served_s / direct_s, 3),
            "server_eval_loss": served_metrics.get("eval_loss"),
            "in_process_eval_loss": direct_metrics.get("eval_loss"),
        },
        libraries=("tuneloom", "torch", "transformers", "peft", "fastapi", "sqlalchemy"),
    )


if __name__ == "__main__":
    main()
