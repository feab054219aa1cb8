"""What this machine offers a training run, as a worker advertises it (`tuneloom.store.workers.Capacity`)."""

from __future__ import annotations

import os

from tuneloom.store.workers import Capacity


def detect_capacity() -> Capacity:
    """The machine's GPUs (count and the smallest one's memory) and its physical memory, in MiB."""
    import torch

    gpus = torch.cuda.device_count()
    gpu_memory = min((torch.cuda.get_device_properties(i).total_memory for i in range(gpus)), default=0)
    return Capacity(gpu_count=gpus, gpu_memory_mb=gpu_memory // 2**20, cpu_memory_mb=_physical_memory() // 2**20)


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system that says: claim no memory estimate
        return 0
