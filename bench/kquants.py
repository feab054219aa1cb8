"""How fast the `q4_k_m` GGUF export quantizes (`tuneloom/gguf_kquants.py`), and what that makes of a 7B.

    python -m bench.kquants [--threads N] [--layers 1]

Quantizes the tensors of one Llama-2-7B decoder layer (q/k/v/o 4096×4096, gate/up/down 4096×11008;
random Gaussian weights: the search's work does not depend on their values) to Q4_K and to Q6_K, and,
as the reference, to Q8_0 with the `gguf` package's own quantizer (what `--gguf q8_0` uses). Prints the
weights a second of each and the time llama.cpp's Q4_K_M recipe (`export_gguf._q4_k_m_type`: which
tensor gets Q4_K, Q6_K) would take for all of Llama-2-7B's 6.7 billion weights at those speeds.

To compare two versions of the quantizer, run the same command against each (`PYTHONPATH=<worktree>/src`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS_DIR, print_table, write_result

HIDDEN, INTERMEDIATE, LAYERS, VOCAB = 4096, 11008, 32, 32000  # Llama-2-7B
LAYER_SHAPES = {
    "attn_q": (HIDDEN, HIDDEN),
    "attn_k": (HIDDEN, HIDDEN),
    "attn_v": (HIDDEN, HIDDEN),
    "attn_output": (HIDDEN, HIDDEN),
    "ffn_gate": (INTERMEDIATE, HIDDEN),
    "ffn_up": (INTERMEDIATE, HIDDEN),
    "ffn_down": (HIDDEN, INTERMEDIATE),
}


def llama_7b_tensors() -> dict[str, int]:
    """Llama-2-7B's quantized tensors in GGUF names → weights (norms stay F32 and are left out)."""
    tensors = {"token_embd.weight": VOCAB * HIDDEN, "output.weight": VOCAB * HIDDEN}
    for layer in range(LAYERS):
        for short, (rows, cols) in LAYER_SHAPES.items():
            tensors[f"blk.{layer}.{short}.weight"] = rows * cols
    return tensors


def timed(quantize: Callable[[np.ndarray], Any], tensors: list[np.ndarray]) -> float:
    """Weights a second over `tensors`."""
    start = time.perf_counter()
    for tensor in tensors:
        quantize(tensor)
    return sum(t.size for t in tensors) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: PyTorch's own choice)")
    parser.add_argument("--layers", type=int, default=1, help="decoder layers' tensors to time")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "kquants-cpu.json")
    args = parser.parse_args()

    import gguf
    import torch

    from tuneloom.export_gguf import _q4_k_m_type
    from tuneloom.gguf_kquants import quantize_q4_k, quantize_q6_k

    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    tensors = [
        (rng.standard_normal(shape, dtype=np.float32) * 0.02)
        for _ in range(args.layers)
        for shape in LAYER_SHAPES.values()
    ]
    speeds = {
        "Q4_K": timed(quantize_q4_k, tensors),
        "Q6_K": timed(quantize_q6_k, tensors),
        "Q8_0 (gguf package)": timed(lambda t: gguf.quants.quantize(t, gguf.GGMLQuantizationType.Q8_0), tensors),
    }
    seven_b = llama_7b_tensors()
    by_type = {kind: 0 for kind in ("Q4_K", "Q6_K")}
    for name, weights in seven_b.items():
        by_type[_q4_k_m_type(name, LAYERS, tied=False)] += weights
    q4_k_m_s = sum(weights / speeds[kind] for kind, weights in by_type.items())
    q8_0_s = sum(seven_b.values()) / speeds["Q8_0 (gguf package)"]
    figures = {
        "threads": torch.get_num_threads(),
        "timed_weights": sum(t.size for t in tensors),
        "weights_per_s": speeds,
        "llama_2_7b": {"weights": by_type, "q4_k_m_s": q4_k_m_s, "q8_0_s": q8_0_s},
    }
    rows = [(kind, f"{speed / 1e6:.1f}") for kind, speed in speeds.items()]
    rows += [("Llama-2-7B as Q4_K_M", f"{q4_k_m_s / 60:.1f} min"), ("Llama-2-7B as Q8_0", f"{q8_0_s / 60:.1f} min")]
    print_table(f"GGUF quantization, {torch.get_num_threads()} threads", ["type", "M weights/s"], rows)
    write_result(args.out, benchmark="kquants", figures=figures, libraries=("tuneloom", "torch", "numpy", "gguf"))


if __name__ == "__main__":
    main()
