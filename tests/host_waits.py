"""A dispatch mode that records the operators which make the host wait for the device.

On a GPU each such operator (a boolean index, `nonzero`, `bool(tensor)`, `.item()`) stops the host
until every kernel queued before it has run, so the host can no longer prepare the next work while
the device does this one. Recorded on the CPU, where the same operators run, it shows which code
paths would wait there.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class HostWaits(TorchDispatchMode):
    WAITING: ClassVar = {
        "aten.nonzero.default",
        "aten.is_nonzero.default",
        "aten.item.default",
        "aten._local_scalar_dense.default",
        "aten.masked_select.default",
    }

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = str(func)
        by_mask = name == "aten.index.Tensor" and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None
        )
        if name in self.WAITING or by_mask:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))
