"""Training workers: claim queued model versions from the database and train them in child processes.

`tuneloom serve` runs a `WorkerPool` beside the API; `tuneloom worker` runs one on its own, on any
machine that shares the database and the data dir. See `supervisor` for a slot's loop and `child`
for the training process.
"""

from tuneloom.worker.pool import WorkerPool, default_slot_count
from tuneloom.worker.supervisor import WorkerConfig, WorkerSlot

__all__ = ["WorkerConfig", "WorkerPool", "WorkerSlot", "default_slot_count"]
