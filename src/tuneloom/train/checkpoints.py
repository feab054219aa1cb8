"""Where a run's checkpoints are, readable without the training libraries.

The server's workers look for a job's checkpoint to decide whether it resumes; they should not
import torch and transformers to list a folder.
"""

from __future__ import annotations

from pathlib import Path


def latest_checkpoint(workdir: Path) -> Path | None:
    """The newest complete checkpoint; a process killed while saving leaves one without its state file.

    The Trainer writes `trainer_state.json` last, so its presence marks a checkpoint as complete.
    """
    complete = [p for p in (workdir / "checkpoints").glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(complete, key=lambda p: int(p.name.rsplit("-", 1)[-1]), default=None)
