"""llama.cpp's Q4_K and Q6_K weight types, written in NumPy: the `q4_k_m` GGUF export.

Q4_K_M is what Ollama and most GGUF downloads default to: a 7B in about 4.1 GB instead of Q8_0's 7.2 GB,
with less loss than the older 4-bit types. The `gguf` package reads these types but writes only the
older ones, so tuneloom quantizes them itself, following llama.cpp's reference quantizers
(`quantize_row_q4_K_ref`, `quantize_row_q6_K_ref` in ggml-quants.c): the same block layout and the
same search for each sub-block's scale, vectorized over all blocks at once. tests/test_gguf_kquants.py
checks every block against the `gguf` package's dequantizers (the layout) and the error against the
older types; tests/test_export_gguf.py runs the file in llama.cpp.

A super-block holds 256 weights of one row:
- Q4_K (144 bytes, 4.5 bits a weight): 8 sub-blocks of 32, each `scale · q − min` with q in 0..15 and
  a 6-bit scale and min, those scaled by the super-block's two float16 factors;
- Q6_K (210 bytes, 6.56 bits a weight): 16 sub-blocks of 16, each `scale · q` with q in −32..31 and an
  8-bit scale, scaled by one float16 factor.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

QK_K = 256  # weights per super-block: a row must be a multiple of it
_EPS = 1e-15
_CHUNK = 1 << 20  # weights quantized at once: the search's temporaries stay tens of MB, whatever the tensor


def _in_chunks(quantize: Callable[[np.ndarray], np.ndarray], rows: np.ndarray) -> np.ndarray:
    step = max(1, _CHUNK // rows.shape[1])
    return np.concatenate([quantize(rows[i : i + step]) for i in range(0, rows.shape[0], step)])


def quantize_q4_k(rows: np.ndarray) -> np.ndarray:
    """float32 `rows` (n, k), k a multiple of 256, as Q4_K bytes (n, k / 256 · 144)."""
    return _in_chunks(_q4_k, rows)


def quantize_q6_k(rows: np.ndarray) -> np.ndarray:
    """float32 `rows` (n, k), k a multiple of 256, as Q6_K bytes (n, k / 256 · 210)."""
    return _in_chunks(_q6_k, rows)


def _q4_k(rows: np.ndarray) -> np.ndarray:
    n = rows.shape[0]
    x = rows.astype(np.float32).reshape(-1, 8, 32)
    spread = np.sqrt(np.mean(x.reshape(-1, QK_K) ** 2, axis=1)).reshape(-1, 1, 1)
    scales, mins = _scale_and_min(x, spread + np.abs(x))  # llama.cpp's weights: the block's RMS plus |x|
    d, levels = _six_bits(scales)
    dmin, min_levels = _six_bits(mins)
    step = (d * levels)[..., None]
    offset = (dmin * min_levels)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(step > 0, np.rint((x + offset) / np.where(step > 0, step, 1)), 0)
    q = np.clip(q, 0, 15).astype(np.uint8)
    packed_scales = np.concatenate(
        [
            (levels[:, :4] & 0x3F) | ((levels[:, 4:] >> 4) << 6),
            (min_levels[:, :4] & 0x3F) | ((min_levels[:, 4:] >> 4) << 6),
            (levels[:, 4:] & 0x0F) | ((min_levels[:, 4:] & 0x0F) << 4),
        ],
        axis=1,
    ).astype(np.uint8)
    pairs = q.reshape(-1, 4, 2, 32)  # sub-blocks 2c and 2c+1 share bytes: low and high nibble
    qs = (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(-1, 128)
    blocks = np.concatenate([_f16_bytes(d), _f16_bytes(dmin), packed_scales, qs], axis=1)
    return blocks.reshape(n, -1)


def _q6_k(rows: np.ndarray) -> np.ndarray:
    n = rows.shape[0]
    x = rows.astype(np.float32).reshape(-1, 16, 16)
    scales = _symmetric_scale(x)
    largest = _signed_largest(scales)
    usable = np.abs(largest) >= _EPS
    inverse = np.where(usable, -128 / np.where(usable, largest, 1), 0)
    d = np.where(usable, 1 / np.where(usable, inverse, 1), 0).astype(np.float16).astype(np.float32)
    levels = np.minimum(127, np.rint(inverse[:, None] * scales)).astype(np.int8)
    step = (d[:, None] * levels)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(step != 0, np.rint(x / np.where(step != 0, step, 1)), 0)
    q = (np.clip(q, -32, 31) + 32).astype(np.uint8).reshape(-1, 2, 128)  # two halves of 128
    ql = ((q[:, :, :64] & 0x0F) | ((q[:, :, 64:] & 0x0F) << 4)).reshape(-1, 128)
    high = (q >> 4).reshape(-1, 2, 4, 32)
    qh = (high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)).reshape(-1, 64)
    blocks = np.concatenate([ql, qh, levels.view(np.uint8), _f16_bytes(d)], axis=1)
    return blocks.reshape(n, -1)


def _scale_and_min(x: np.ndarray, weights: np.ndarray, steps: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Each sub-block's (scale, min ≥ 0) for `scale · q − min`, q in 0..15, by llama.cpp's `make_qkx2_quants`:
    weighted least squares on the levels of 21 trial scales around (max − min) / 15, keeping the best."""
    low = np.minimum(x.min(axis=-1), 0)
    high = x.max(axis=-1)
    spread = np.where(high > low, high - low, 1)
    flat = high <= low
    w = weights
    sum_w, sum_x = w.sum(-1), (w * x).sum(-1)
    best_scale = spread / 15
    best_min = low
    best_error = _error(x, w, _levels(x, low, 15 / spread, 15), best_scale, best_min)
    for trial in range(steps + 1):
        levels = _levels(x, low, (-1 + 0.1 * trial + 15) / spread, 15)
        sum_l, sum_l2, sum_xl = (w * levels).sum(-1), (w * levels**2).sum(-1), (w * levels * x).sum(-1)
        det = sum_w * sum_l2 - sum_l**2
        solvable = det > 0
        safe_det = np.where(solvable, det, 1)
        scale = (sum_w * sum_xl - sum_x * sum_l) / safe_det
        minimum = (sum_l2 * sum_x - sum_l * sum_xl) / safe_det
        positive = minimum > 0  # the min must stay ≤ 0: fit the scale alone
        scale = np.where(positive, sum_xl / np.where(sum_l2 > 0, sum_l2, 1), scale)
        minimum = np.where(positive, 0, minimum)
        error = _error(x, w, levels, scale, minimum)
        better = solvable & (error < best_error)
        best_scale, best_min, best_error = (
            np.where(better, a, b) for a, b in ((scale, best_scale), (minimum, best_min), (error, best_error))
        )
    return np.where(flat, 0, best_scale), np.where(flat, -low, -best_min)


def _levels(x: np.ndarray, low: np.ndarray, inverse: np.ndarray, top: int) -> np.ndarray:
    return np.clip(np.rint(inverse[..., None] * (x - low[..., None])), 0, top)


def _error(x: np.ndarray, w: np.ndarray, levels: np.ndarray, scale: np.ndarray, minimum: np.ndarray) -> np.ndarray:
    return (w * (scale[..., None] * levels + minimum[..., None] - x) ** 2).sum(-1)


def _symmetric_scale(x: np.ndarray) -> np.ndarray:
    """Each sub-block's signed scale for q in −32..31, by llama.cpp's `make_qx_quants` (weights x²): the best of
    19 trial scales around the one that maps the largest weight to −32."""
    largest = _signed_largest(x)
    usable = np.abs(largest) >= _EPS
    safe = np.where(usable, largest, 1)
    w = x**2
    best_scale = np.zeros(largest.shape, dtype=np.float32)
    best_score = np.full(largest.shape, -np.inf, dtype=np.float32)
    for trial in (0, *range(-9, 0), *range(1, 10)):
        levels = np.clip(np.rint((-(32 + 0.1 * trial) / safe)[..., None] * x), -32, 31)
        sum_lx, sum_l2 = (w * x * levels).sum(-1), (w * levels**2).sum(-1)
        scale = sum_lx / np.where(sum_l2 > 0, sum_l2, 1)
        score = np.where(sum_l2 > 0, scale * sum_lx, -np.inf)
        better = score > best_score
        best_scale, best_score = np.where(better, scale, best_scale), np.where(better, score, best_score)
    return np.where(usable, best_scale, 0).astype(np.float32)


def _signed_largest(values: np.ndarray) -> np.ndarray:
    """Along the last axis, the value of largest magnitude, with its sign (llama.cpp's `max` in its searches)."""
    return np.take_along_axis(values, np.argmax(np.abs(values), axis=-1)[..., None], axis=-1)[..., 0]


def _six_bits(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A super-block's 8 non-negative sub-block values as a float16 factor and 6-bit levels (0..63)."""
    top = values.max(axis=1)
    inverse = np.where(top > 0, 63 / np.where(top > 0, top, 1), 0)
    levels = np.minimum(63, np.rint(inverse[:, None] * values)).astype(np.uint8)
    factor = (top / 63).astype(np.float16).astype(np.float32)
    return factor[:, None], levels


def _f16_bytes(values: np.ndarray) -> np.ndarray:
    return values.reshape(-1, 1).astype(np.float16).view(np.uint8)
