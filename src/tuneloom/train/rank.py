"""One rank of a distributed run: `accelerate launch … -m tuneloom.train.rank CHANNEL_DIR`.

Started by `tuneloom.train.launch`, never by hand. Every rank runs the same recipe; rank 0 alone
talks to the launching process: events as JSON lines on stdout, the outcome in `result.json`, and a
`STOP` file in the channel dir as the request to checkpoint and stop.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from tuneloom.errors import TuneloomError
from tuneloom.train.events import TrainEvent, ignore_events
from tuneloom.train.launch import EVENT_PREFIX, RESULT, SPEC, STOP, job_from_json
from tuneloom.train.process import die_with_parent
from tuneloom.train.recipe import train_rank


def main(argv: list[str]) -> int:
    die_with_parent()
    channel = Path(argv[0])
    job = job_from_json((channel / SPEC).read_text())
    is_main = int(os.environ.get("RANK", "0")) == 0
    stop = threading.Event()
    if is_main:
        threading.Thread(target=_watch_for_stop, args=(channel / STOP, stop), daemon=True).start()
    try:
        outcome = train_rank(job, on_event=_print_event if is_main else ignore_events, stop=stop)
    except TuneloomError as err:  # TrainingInterrupted included: every rank stopped at the same step
        if is_main:
            _write_result(channel, {"kind": "error", "error": err.to_dict()})
        return 0 if err.code == "TRAINING_INTERRUPTED" else 1
    if outcome is not None:
        _write_result(channel, {"kind": "done", "metrics": outcome.metrics, "report": outcome.report.to_dict()})
    return 0


def _print_event(event: TrainEvent) -> None:
    print(EVENT_PREFIX + json.dumps(dataclasses.asdict(event)), flush=True)


def _watch_for_stop(path: Path, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        if path.exists():
            stop.set()


def _write_result(channel: Path, result: dict[str, Any]) -> None:
    tmp = channel / (RESULT + ".tmp")
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, channel / RESULT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
