"""llama.cpp's Q4_K and Q6_K weight types, the `q4_k_m` GGUF export's blocks.

Q4_K_M is what Ollama and most GGUF downloads default to: a 7B in about 4.1 GB instead of Q8_0's 7.2 GB,
with less loss than the older 4-bit types. The `gguf` package reads these types but writes only the
older ones, so tuneloom quantizes them itself, following llama.cpp's reference quantizers
(`quantize_row_q4_K_ref`, `quantize_row_q6_K_ref` in ggml-quants.c): the same block layout and the
same search for each sub-block's scale, vectorized over all blocks at once. The search runs in
PyTorch, whose element-wise operations use every core (NumPy's use one), a cache-sized chunk per
thread at a time: 3.3× the NumPy version's speed on 2 cores (`python -m bench.kquants`), and more
where there are more. tests/test_gguf_kquants.py checks every block against the `gguf` package's
dequantizers (the layout) and the error against the older types; tests/test_export_gguf.py runs the
file in llama.cpp.

A super-block holds 256 weights of one row:
- Q4_K (144 bytes, 4.5 bits a weight): 8 sub-blocks of 32, each `scale · q − min` with q in 0..15 and
  a 6-bit scale and min, those scaled by the super-block's two float16 factors;
- Q6_K (210 bytes, 6.56 bits a weight): 16 sub-blocks of 16, each `scale · q` with q in −32..31 and an
  8-bit scale, scaled by one float16 factor.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

QK_K = 256  # weights per super-block: a row must be a multiple of it
_EPS = 1e-15
# Weights quantized at once, per thread: each temporary of the search (a score per weight) stays at 512 KB a
# thread, in the core's cache. With 1M weights at once (4 MB temporaries) the same search ran 2.3× slower.
_CHUNK_PER_THREAD = 1 << 17


def quantize_q4_k(rows: np.ndarray) -> np.ndarray:
    """float32 `rows` (n, k), k a multiple of 256, as Q4_K bytes (n, k / 256 · 144)."""
    return _in_chunks(_q4_k, rows)


def quantize_q6_k(rows: np.ndarray) -> np.ndarray:
    """float32 `rows` (n, k), k a multiple of 256, as Q6_K bytes (n, k / 256 · 210)."""
    return _in_chunks(_q6_k, rows)


def _in_chunks(quantize: Callable[[torch.Tensor], torch.Tensor], rows: np.ndarray) -> np.ndarray:
    weights = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
    step = max(1, _CHUNK_PER_THREAD * torch.get_num_threads() // weights.shape[1])
    with torch.inference_mode():
        return torch.cat([quantize(weights[i : i + step]) for i in range(0, weights.shape[0], step)]).numpy()


def _q4_k(rows: torch.Tensor) -> torch.Tensor:
    n = rows.shape[0]
    x = rows.reshape(-1, 8, 32)
    spread = torch.sqrt(torch.mean(x.reshape(-1, QK_K) ** 2, dim=1)).reshape(-1, 1, 1)
    scales, mins = _scale_and_min(x, spread + x.abs())  # llama.cpp's weights: the block's RMS plus |x|
    d, levels = _six_bits(scales)
    dmin, min_levels = _six_bits(mins)
    step = (d * levels)[..., None]
    offset = (dmin * min_levels)[..., None]
    q = torch.where(step > 0, torch.round((x + offset) / torch.where(step > 0, step, 1)), 0)
    q = q.clamp(0, 15).to(torch.uint8)
    packed_scales = torch.cat(
        [
            (levels[:, :4] & 0x3F) | ((levels[:, 4:] >> 4) << 6),
            (min_levels[:, :4] & 0x3F) | ((min_levels[:, 4:] >> 4) << 6),
            (levels[:, 4:] & 0x0F) | ((min_levels[:, 4:] & 0x0F) << 4),
        ],
        dim=1,
    )
    pairs = q.reshape(-1, 4, 2, 32)  # sub-blocks 2c and 2c+1 share bytes: low and high nibble
    qs = (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(-1, 128)
    blocks = torch.cat([_f16_bytes(d), _f16_bytes(dmin), packed_scales, qs], dim=1)
    return blocks.reshape(n, -1)


def _q6_k(rows: torch.Tensor) -> torch.Tensor:
    n = rows.shape[0]
    x = rows.reshape(-1, 16, 16)
    scales = _symmetric_scale(x)
    largest = _signed_largest(scales)
    usable = largest.abs() >= _EPS
    inverse = torch.where(usable, -128 / torch.where(usable, largest, 1), 0)
    d = torch.where(usable, 1 / torch.where(usable, inverse, 1), 0).to(torch.float16).float()
    levels = torch.round(inverse[:, None] * scales).clamp(max=127).to(torch.int8)
    step = (d[:, None] * levels)[..., None]
    q = torch.where(step != 0, torch.round(x / torch.where(step != 0, step, 1)), 0)
    q = (q.clamp(-32, 31) + 32).to(torch.uint8).reshape(-1, 2, 128)  # two halves of 128
    ql = ((q[:, :, :64] & 0x0F) | ((q[:, :, 64:] & 0x0F) << 4)).reshape(-1, 128)
    high = (q >> 4).reshape(-1, 2, 4, 32)
    qh = (high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)).reshape(-1, 64)
    blocks = torch.cat([ql, qh, levels.view(torch.uint8), _f16_bytes(d)], dim=1)
    return blocks.reshape(n, -1)


def _scale_and_min(x: torch.Tensor, weights: torch.Tensor, steps: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sub-block's (scale, min ≥ 0) for `scale · q − min`, q in 0..15, by llama.cpp's `make_qkx2_quants`:
    weighted least squares on the levels of 21 trial scales around (max − min) / 15, keeping the best."""
    low = x.amin(dim=-1).clamp(max=0)
    high = x.amax(dim=-1)
    spread = torch.where(high > low, high - low, 1)
    flat = high <= low
    w = weights
    sum_w, sum_x = w.sum(-1), (w * x).sum(-1)
    best_scale = spread / 15
    best_min = low
    best_error = _error(x, w, _levels(x, low, 15 / spread, 15), best_scale, best_min)
    for trial in range(steps + 1):
        levels = _levels(x, low, (-1 + 0.1 * trial + 15) / spread, 15)
        weighted = w * levels
        sum_l, sum_l2, sum_xl = weighted.sum(-1), (weighted * levels).sum(-1), (weighted * x).sum(-1)
        det = sum_w * sum_l2 - sum_l**2
        solvable = det > 0
        safe_det = torch.where(solvable, det, 1)
        scale = (sum_w * sum_xl - sum_x * sum_l) / safe_det
        minimum = (sum_l2 * sum_x - sum_l * sum_xl) / safe_det
        positive = minimum > 0  # the min must stay ≤ 0: fit the scale alone
        scale = torch.where(positive, sum_xl / torch.where(sum_l2 > 0, sum_l2, 1), scale)
        minimum = torch.where(positive, 0, minimum)
        error = _error(x, w, levels, scale, minimum)
        better = solvable & (error < best_error)
        best_scale = torch.where(better, scale, best_scale)
        best_min = torch.where(better, minimum, best_min)
        best_error = torch.where(better, error, best_error)
    return torch.where(flat, 0, best_scale), torch.where(flat, -low, -best_min)


def _levels(x: torch.Tensor, low: torch.Tensor, inverse: torch.Tensor, top: int) -> torch.Tensor:
    return torch.round(inverse[..., None] * (x - low[..., None])).clamp(0, top)


def _error(
    x: torch.Tensor, w: torch.Tensor, levels: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor
) -> torch.Tensor:
    """Each sub-block's weighted squared error of `scale · levels + minimum` against `x`."""
    return (w * (scale[..., None] * levels + minimum[..., None] - x) ** 2).sum(-1)


def _symmetric_scale(x: torch.Tensor) -> torch.Tensor:
    """Each sub-block's signed scale for q in −32..31, by llama.cpp's `make_qx_quants` (weights x²): the best of
    19 trial scales around the one that maps the largest weight to −32."""
    largest = _signed_largest(x)
    usable = largest.abs() >= _EPS
    safe = torch.where(usable, largest, 1)
    w = x**2
    best_scale = torch.zeros(largest.shape)
    best_score = torch.full(largest.shape, -torch.inf)
    for trial in (0, *range(-9, 0), *range(1, 10)):
        levels = torch.round((-(32 + 0.1 * trial) / safe)[..., None] * x).clamp(-32, 31)
        weighted = w * levels
        sum_lx, sum_l2 = (weighted * x).sum(-1), (weighted * levels).sum(-1)
        scale = sum_lx / torch.where(sum_l2 > 0, sum_l2, 1)
        score = torch.where(sum_l2 > 0, scale * sum_lx, -torch.inf)
        better = score > best_score
        best_scale, best_score = torch.where(better, scale, best_scale), torch.where(better, score, best_score)
    return torch.where(usable, best_scale, 0)


def _signed_largest(values: torch.Tensor) -> torch.Tensor:
    """Along the last axis, the value of largest magnitude, with its sign (llama.cpp's `max` in its searches)."""
    return values.gather(-1, values.abs().argmax(dim=-1, keepdim=True))[..., 0]


def _six_bits(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A super-block's 8 non-negative sub-block values as a float16 factor and 6-bit levels (0..63)."""
    top = values.amax(dim=1)
    inverse = torch.where(top > 0, 63 / torch.where(top > 0, top, 1), 0)
    levels = torch.round(inverse[:, None] * values).clamp(max=63).to(torch.uint8)
    factor = (top / 63).to(torch.float16).float()
    return factor[:, None], levels


def _f16_bytes(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, 1).to(torch.float16).view(torch.uint8)
