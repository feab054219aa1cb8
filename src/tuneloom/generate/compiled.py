"""A compiled decode step for one-input generation on a GPU: static KV cache + CUDA graphs.

At batch 1 a small model's decode step is a few hundred tiny kernels; on a GPU their launches, not
the arithmetic or the weights' bytes, set the speed (transformers' eager `generate` reaches a few
percent of the bandwidth floor). transformers compiles the decode step (`torch.compile`, mode
"reduce-overhead", i.e. CUDA graphs) when the KV cache is static, so this asks for one.

The cost is a compile the first time, tens of seconds, which only a long-lived process or a long
output pays back; hence it is opt-in (`tuneloom generate --compile`). Recompiles are what would
make it slow, so the cache length is rounded up to a bucket of `CACHE_BUCKET` positions (the same
compiled graph then serves every prompt + max_tokens up to it) and only single-row, single-beam calls
take this path (a new batch size would be a new graph).
"""

from __future__ import annotations

import math
from typing import Any

from tuneloom.generate.loading import InferenceModel
from tuneloom.generate.params import InferenceParams

CACHE_BUCKET = 1024


def cache_length(needed: int, context: int | None) -> int:
    """`needed` (prompt + max_tokens) rounded up to a bucket, never past the model's context."""
    bucket = math.ceil(max(needed, 1) / CACHE_BUCKET) * CACHE_BUCKET
    return max(needed, min(bucket, context)) if context else bucket


def static_cache_kwargs(
    enabled: bool, rows: int, prompt_tokens: int, params: InferenceParams, context: int | None
) -> dict[str, Any]:
    """`generate` kwargs for a static (compilable) cache, or none where this call does not qualify."""
    if not enabled or rows != 1 or params.num_beams > 1:
        return {}
    return {
        "cache_implementation": "static",
        "max_cache_len": cache_length(prompt_tokens + params.max_tokens, context),
    }


def compile_decode(loaded: InferenceModel) -> bool:
    """Switch `loaded` to the compiled decode step; False where there is no GPU to compile for.

    transformers compiles only for an accelerator; on a CPU the static cache would run eagerly and
    gain nothing, so the model is left as it is.
    """
    on_gpu = next(loaded.model.parameters()).device.type == "cuda"
    loaded.compiled_decode = on_gpu
    return on_gpu
