"""The Trainer a run uses: transformers' own, less the host work it repeats every step for nothing.

Its FLOPs estimate (`state.total_flos`) counts the model's parameters again at every step: a walk over
every module and every parameter, 2.9 ms a step for a Llama-1.1B-shaped LoRA model on this project's
CPU, where a compiled step on an H200 takes about 100 ms and the host is what bounds it. The count
cannot change during a run, so it is taken once.
"""

from __future__ import annotations

import functools
from typing import Any

from transformers import Trainer


class RunTrainer(Trainer):
    @functools.cached_property
    def _parameters_without_embeddings(self) -> int:
        model: Any = self.model  # a PreTrainedModel (or a peft model around one): floating_point_ops checked
        return int(model.num_parameters(exclude_embeddings=True))

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """`Trainer.floating_point_ops` (6 × tokens × parameters), with the parameters counted once."""
        main_input = getattr(self.model, "main_input_name", "input_ids")
        if main_input not in inputs or not hasattr(self.model, "num_parameters"):
            return 0
        return 6 * inputs[main_input].numel() * self._parameters_without_embeddings
