"""What this machine offers a training run, as each worker slot advertises it (`tuneloom.store.workers.Capacity`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from tuneloom.store.workers import Capacity


@dataclass(frozen=True)
class Machine:
    """This machine's GPUs (each one's memory, by index) and its physical memory, in MiB."""

    gpu_memory_mb: tuple[int, ...]
    cpu_memory_mb: int

    def slot_capacity(self, gpus: tuple[int, ...]) -> Capacity:
        """What a slot training on GPUs `gpus` offers: their count and the smallest one's memory.

        A slot's processes each take one of its GPUs, so the smallest decides what fits; the other
        slots' GPUs, larger or smaller, do not.
        """
        memory = min((self.gpu_memory_mb[i] for i in gpus), default=0)
        return Capacity(gpu_count=len(gpus), gpu_memory_mb=memory, cpu_memory_mb=self.cpu_memory_mb)


def detect_machine() -> Machine:
    import torch

    gpus = tuple(torch.cuda.get_device_properties(i).total_memory // 2**20 for i in range(torch.cuda.device_count()))
    return Machine(gpu_memory_mb=gpus, cpu_memory_mb=_physical_memory() // 2**20)


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system that says: claim no memory estimate
        return 0
