"""A worker process's slots: one thread per device, each supervising one training child at a time.

The slots split the machine's GPUs (`slot_gpus`) and each advertises only its share, so a run over
N processes (one GPU each) is claimed only by a slot with N GPUs of its own, never one whose
neighbours train on the same GPUs. Beside them, one thread keeps every slot's row in the `workers`
table fresh (capacity and a heartbeat), which is how the queue knows which runs a live worker can take.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable

from sqlalchemy.exc import DBAPIError

from tuneloom.store import workers
from tuneloom.store.artifacts import Artifacts
from tuneloom.store.db import Database, is_unavailable
from tuneloom.worker.capacity import detect_machine
from tuneloom.worker.child_link import start_process_server
from tuneloom.worker.supervisor import WorkerConfig, WorkerSlot

log = logging.getLogger("tuneloom.worker")


def default_slot_count() -> int:
    """One slot per GPU; one on a CPU-only machine (a second CPU run would only halve each one's speed)."""
    import torch

    return max(1, torch.cuda.device_count())


def slot_gpus(slot: int, slots: int, gpus: int) -> tuple[int, ...]:
    """The GPUs (indices) that slot `slot` of `slots` trains on: its share of the machine's `gpus`.

    With fewer slots than GPUs, slot i takes GPUs i, i + slots, … (one slot: all of them, for a
    multi-process run); otherwise one each, slots beyond the GPU count sharing them round-robin.
    """
    return tuple(range(slot % gpus, gpus, slots)) if gpus else ()


class WorkerPool:
    def __init__(self, db: Database, artifacts: Artifacts, slots: int, config: WorkerConfig | None = None):
        self.db = db
        machine = detect_machine()
        self.slots = []
        for i in range(slots):
            mine = slot_gpus(i, slots, len(machine.gpu_memory_mb))
            capacity = machine.slot_capacity(mine)
            self.slots.append(WorkerSlot(db, artifacts, slot=i, config=config, cuda_devices=mine, capacity=capacity))
        self.threads: list[threading.Thread] = []
        self._stopped = threading.Event()

    def start(self) -> None:
        start_process_server()
        self._beat()  # registered before the first claim, so a waiting run's reason counts this worker
        beating = threading.Thread(target=self._beat_forever, name="worker-heartbeat", daemon=True)
        beating.start()
        for slot in self.slots:
            thread = threading.Thread(target=slot.run_forever, name=f"worker-{slot.worker_id}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self, timeout: float | None = None) -> None:
        """Ask every slot to checkpoint and release its job, and wait for them."""
        self._stopped.set()
        for slot in self.slots:
            slot.shutdown.set()
        for thread in self.threads:
            thread.join(timeout)
        for slot in self.slots:
            self._quietly(functools.partial(workers.leave, self.db, slot.worker_id))

    def _beat_forever(self) -> None:
        """Refresh the slots' rows a few times per lease, until stopped."""
        period = max(0.5, min(5.0, min(s.config.lease_s for s in self.slots) / 3)) if self.slots else 5.0
        while not self._stopped.wait(period):
            self._beat()

    def _beat(self) -> None:
        for slot in self.slots:
            assert slot.capacity is not None  # every pool slot is given its share in __init__
            self._quietly(functools.partial(workers.beat, self.db, slot.worker_id, slot.capacity, slot.config.lease_s))

    def _quietly(self, write: Callable[[], None]) -> None:
        """A heartbeat lost to a database outage is retried by the next one; the slots keep training."""
        try:
            write()
        except DBAPIError as err:
            if not is_unavailable(err):
                raise
            log.warning("worker heartbeat: database unavailable: %s", err.orig)
