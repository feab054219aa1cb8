"""A worker process's slots: one thread per device, each supervising one training child at a time."""

from __future__ import annotations

import threading

from tuneloom.store.artifacts import Artifacts
from tuneloom.store.db import Database
from tuneloom.worker.supervisor import WorkerConfig, WorkerSlot


def default_slot_count() -> int:
    """One slot per GPU; one on a CPU-only machine (a second CPU run would only halve each one's speed)."""
    import torch

    return max(1, torch.cuda.device_count())


class WorkerPool:
    def __init__(self, db: Database, artifacts: Artifacts, slots: int, config: WorkerConfig | None = None):
        import torch

        gpus = torch.cuda.device_count()
        self.slots = [
            WorkerSlot(db, artifacts, slot=i, config=config, cuda_device=(i % gpus) if gpus else None)
            for i in range(slots)
        ]
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for slot in self.slots:
            thread = threading.Thread(target=slot.run_forever, name=f"worker-{slot.worker_id}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self, timeout: float | None = None) -> None:
        """Ask every slot to checkpoint and release its job, and wait for them."""
        for slot in self.slots:
            slot.shutdown.set()
        for thread in self.threads:
            thread.join(timeout)
