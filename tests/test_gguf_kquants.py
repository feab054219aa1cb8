"""Q4_K and Q6_K as tuneloom writes them (`tuneloom.gguf_kquants`) read back through the `gguf` package's own
dequantizers (llama.cpp's layout), with the error llama.cpp's types are known for."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from tuneloom.gguf_kquants import quantize_q4_k, quantize_q6_k

Q4_K, Q6_K = gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q6_K
QUANTIZERS = [(quantize_q4_k, Q4_K, 144), (quantize_q6_k, Q6_K, 210)]


def _read_back(rows: np.ndarray, quantize: object, kind: gguf.GGMLQuantizationType) -> np.ndarray:
    packed = quantize(rows)  # type: ignore[operator]
    return np.asarray(gguf.quants.dequantize(packed, kind), dtype=np.float32).reshape(rows.shape)


def _relative_rmse(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.sqrt(np.mean((got - want) ** 2)) / np.sqrt(np.mean(want**2)))


@pytest.mark.parametrize(("quantize", "kind", "block_bytes"), QUANTIZERS, ids=["Q4_K", "Q6_K"])
def test_blocks_have_llama_cpps_size_and_read_back_in_place(quantize: object, kind: object, block_bytes: int) -> None:
    rows = np.random.default_rng(0).standard_normal((6, 768)).astype(np.float32) * 0.02
    packed = quantize(rows)  # type: ignore[operator]
    assert packed.dtype == np.uint8 and packed.shape == (6, 3 * block_bytes)
    assert gguf.GGML_QUANT_SIZES[kind] == (256, block_bytes)  # type: ignore[index]
    back = _read_back(rows, quantize, kind)  # type: ignore[arg-type]
    # each value lands where it came from: the error is a fraction of each weight's size, not a shuffle
    assert np.corrcoef(back.ravel(), rows.ravel())[0, 1] > 0.99


def test_the_error_is_that_of_llama_cpps_k_types() -> None:
    """Q4_K below the older 4-bit Q4_0 (same size class), Q6_K well below Q5_0; Gaussian weights as a model's."""
    rows = np.random.default_rng(1).standard_normal((128, 1536)).astype(np.float32) * 0.02
    q4_k = _relative_rmse(_read_back(rows, quantize_q4_k, Q4_K), rows)
    q6_k = _relative_rmse(_read_back(rows, quantize_q6_k, Q6_K), rows)
    older = {
        kind: _relative_rmse(
            np.asarray(gguf.quants.dequantize(gguf.quants.quantize(rows, kind), kind)).reshape(rows.shape), rows
        )
        for kind in (gguf.GGMLQuantizationType.Q4_0, gguf.GGMLQuantizationType.Q5_0)
    }
    assert q4_k < 0.9 * older[gguf.GGMLQuantizationType.Q4_0] and q4_k < 0.075, (q4_k, older)
    assert q6_k < 0.5 * older[gguf.GGMLQuantizationType.Q5_0] and q6_k < 0.02, (q6_k, older)


@pytest.mark.parametrize(("quantize", "kind", "block_bytes"), QUANTIZERS, ids=["Q4_K", "Q6_K"])
def test_zero_constant_and_one_sided_blocks(quantize: object, kind: object, block_bytes: int) -> None:
    rows = np.zeros((4, 256), dtype=np.float32)
    rows[1] = -0.25  # a constant block: no spread to scale
    rows[2, :] = np.linspace(-1, -0.5, 256)  # all negative
    rows[3, 7] = 3.0  # one outlier among zeros
    back = _read_back(rows, quantize, kind)  # type: ignore[arg-type]
    assert np.array_equal(back[0], rows[0]) and np.isfinite(back).all()
    assert np.abs(back[1] + 0.25).max() < 1e-3
    assert np.abs(back[2] - rows[2]).max() < 0.05
    assert abs(back[3, 7] - 3.0) < 0.01 and np.abs(np.delete(back[3], 7)).max() < 1e-6


@pytest.mark.parametrize(("quantize", "kind", "block_bytes"), QUANTIZERS, ids=["Q4_K", "Q6_K"])
def test_a_large_tensor_is_quantized_in_chunks_to_the_same_bytes(
    quantize: object, kind: object, block_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows go through the search a chunk at a time (bounded memory for a 7B's embedding): same bytes as at once."""
    import tuneloom.gguf_kquants as kquants

    rows = np.random.default_rng(2).standard_normal((10, 512)).astype(np.float32)
    whole = quantize(rows)  # type: ignore[operator]
    monkeypatch.setattr(kquants, "_CHUNK_PER_THREAD", 3 * 512)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # 3 rows a chunk: 4 chunks, the last one short
    assert np.array_equal(quantize(rows), whole)  # type: ignore[operator]
