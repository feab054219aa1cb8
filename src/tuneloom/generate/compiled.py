"""A compiled decode loop for one-input generation on a GPU: static KV cache, CUDA graphs, no `generate()` around it.

At batch 1 a small model's decode step is about a thousand tiny kernels; on a GPU their launches, not
the arithmetic or the weights' bytes, set the speed (eager `generate` on the 1.1B shape: 16 ms a
token where the H200's bandwidth allows 0.46). Compiling the step with `torch.compile` mode
"reduce-overhead" replays it as one CUDA graph. transformers does that inside `generate()` when the
cache is static, but keeps its own per-token loop around the graph — preparing inputs, logits
processors, stopping criteria, a sync — and that loop alone held it at 3.6 ms a token (277 tokens/s
on the H200, bench/README.md). So this module runs its own loop: the graph replay, then the same
token choice the continuous batch makes (`rows.pick_next`: penalties, greedy or sampling
with the row's seed, log-probabilities where asked) on the device, then the next replay started
before the host reads the token, so that the host's per-token work overlaps the device's. A row's
rules are those of every other path: the same text, token count and finish reason as `generate()`.

The cost is two compiles the first time (the step, and the prompt's pass for any length), tens of
seconds, which only a long-lived process or a long output pays back; hence it is opt-in (`tuneloom
generate --compile`). Recompiles are what would make it slow, so the cache length is rounded up to a
bucket of `CACHE_BUCKET` positions (one compiled graph then serves every prompt + max_tokens up to
it) and only single-input, single-beam calls take this path (a new batch size would be a new graph).
On a CPU nothing is compiled: the loop runs eagerly (the tests check its answers there).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from tuneloom.generate.loading import InferenceModel

CACHE_BUCKET = 1024


def cache_length(needed: int, context: int | None) -> int:
    """`needed` (prompt + max_tokens) rounded up to a bucket, never past the model's context."""
    bucket = math.ceil(max(needed, 1) / CACHE_BUCKET) * CACHE_BUCKET
    return max(needed, min(bucket, context)) if context else bucket


def compile_decode(loaded: InferenceModel) -> bool:
    """Switch `loaded` to the compiled decode loop for one-input calls; False where there is no GPU.

    On a CPU a compiled step gains nothing (no launches to save), so the model is left as it is.
    """
    on_gpu = next(loaded.model.parameters()).device.type == "cuda"
    loaded.compiled_decode = on_gpu
    return on_gpu


class StaticDecoder:
    """A model's forward over one static KV cache of `length` positions, its one-token step compiled once.

    The cache and the position live on the device at fixed addresses, so every step replays the same
    CUDA graph with nothing copied in but the token. The prompt's pass is compiled too, for any length
    (`dynamic`) and without CUDA graphs (each length would be one): eager, its several hundred small
    operators took tens of milliseconds of every request on the GPU machine, a fifth of a 64-token answer.
    """

    def __init__(self, model: Any, length: int, *, compile_step: bool | None = None):
        from transformers import StaticCache

        self.model = model
        self.cache = StaticCache(config=model.config, max_cache_len=length)
        device = next(model.parameters()).device
        self.position = torch.zeros(1, 1, dtype=torch.long, device=device)  # one tensor for good: a static input
        if compile_step is None:  # on a CPU compiling saves no launches (the tests compile there to check the graph)
            compile_step = device.type == "cuda"
        self._step = torch.compile(self._forward, mode="reduce-overhead") if compile_step else self._forward
        self._prompt = torch.compile(self._forward_prompt, dynamic=True) if compile_step else self._forward

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids, position_ids=positions, cache=self.cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :].float()

    def _forward_prompt(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """`_forward` under a code object of its own, so that its compiled graphs are kept apart from the step's."""
        return self._forward(ids, positions)

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """Start over with the prompt `ids` (1, n). The first prompt runs eagerly: it allocates the cache, and
        only tensors allocated outside a compiled graph get the fixed addresses the step's CUDA graph needs."""
        initialized = self.cache.is_initialized
        self.cache.reset()
        self.position.fill_(ids.shape[1] - 1)
        run = self._prompt if initialized else self._forward
        return run(ids, torch.arange(ids.shape[1], device=ids.device)[None])

    def step(self, token: torch.Tensor) -> torch.Tensor:
        """The logits after `token` (one id, on the device): one replay of the compiled step."""
        self.position += 1
        torch.compiler.cudagraph_mark_step_begin()  # the previous step's logits are consumed: reuse their memory
        return self._step(token.view(1, 1), self.position)


def decoder_for(loaded: InferenceModel, needed: int, context: int | None) -> StaticDecoder:
    """The model's decoder for a bucket that holds `needed` positions, built (and compiled) once per bucket."""
    length = cache_length(needed, context)
    if length not in loaded.decoders:
        loaded.decoders[length] = StaticDecoder(loaded.model, length)
    return loaded.decoders[length]


@torch.inference_mode()
def run_static(loaded: InferenceModel, row: Any) -> Iterator[None]:
    """Decode one `continuous.Row` to its end over a static cache, pausing after the prefill and every token.

    The device runs one step ahead of the host: a token is drawn on the device, the step it feeds is
    started, and only then does the host wait for the token and take it (detokenize, stop strings,
    the pause). So the host's work per token overlaps the device's instead of following it. A row
    that then ends (EOS, a stop string) leaves one step unused; one that reaches `max_tokens` starts none.
    """
    from tuneloom.generate.generator import _encode, context_length
    from tuneloom.generate.rows import pick_next, prepare_rows, take_next

    inputs = _encode(loaded, [row.prompt])
    ids = inputs["input_ids"]
    decoder = decoder_for(loaded, ids.shape[1] + row.params.max_tokens, context_length(loaded))
    logits = decoder.prefill(ids)
    counts = prepare_rows(loaded, [row], ids, inputs["attention_mask"], logits.shape[1])
    picked = pick_next(loaded, [row], logits, counts)
    while True:
        last = len(row.ids) + 1 >= row.params.max_tokens  # the token on its way is the row's last
        ahead = None if last else decoder.step(picked.tokens)
        take_next(loaded, [row], picked)
        yield
        if row.finished or ahead is None:
            return
        picked = pick_next(loaded, [row], ahead, counts)
