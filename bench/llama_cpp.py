"""`tuneloom export --gguf` in llama.cpp itself: the same token ids and the same greedy answers as tuneloom's?

    python -m bench.llama_cpp --version runs/demo --llama-cpp DIR [--types f32,q8_0]

DIR holds node-llama-cpp (llama.cpp's prebuilt CPU build from the npm registry), as `.ci/run` installs it:
`npm install --prefix DIR --ignore-scripts --omit=optional node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1`
(default: `$TUNELOOM_TEST_LLAMA_CPP`). The version is exported in each type; llama.cpp tokenizes and answers
the version's held-out prompts greedily, and each is compared with tuneloom's own tokenizer and `generate`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, print_table, write_result

RUNNER = Path(__file__).with_name("llama_cpp_run.mjs")


def run_llama_cpp(
    install: str | Path,
    model: Path,
    prompts: list[str],
    tokenize: list[str],
    max_tokens: int,
    score: list[str] | None = None,
) -> Any:
    """llama.cpp's token ids for each `tokenize` text, greedy continuation (≤ `max_tokens`) of each prompt, and
    for each `score` text the log-probability of each token after those before it (`log_likelihoods`)."""
    entry = (Path(install) / "node_modules" / "node-llama-cpp" / "dist" / "index.js").as_uri()
    job = {"model": str(model), "prompts": prompts, "max_tokens": max_tokens, "tokenize": tokenize}
    job["score"] = score or []
    ran = subprocess.run(
        [shutil.which("node") or "node", str(RUNNER), entry],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if ran.returncode != 0:
        raise RuntimeError(f"llama.cpp failed (exit {ran.returncode}):\n{ran.stderr[-2000:]}")
    return json.loads(ran.stdout.strip().splitlines()[-1])


def token_log_probs(loaded: Any, text: str) -> list[float]:
    """tuneloom's log-probability of each token of `text` after those before it, as llama.cpp's scores are taken."""
    import torch

    ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        log_probs = loaded.model(ids).logits[0, :-1].float().log_softmax(-1)
    return log_probs.gather(1, ids[0, 1:, None])[:, 0].tolist()


def mean_nll(log_probs: list[list[float]]) -> float:
    """Nats a token over every scored text: the log of llama.cpp's perplexity figure."""
    return -sum(map(sum, log_probs)) / sum(map(len, log_probs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", type=Path, required=True, help="a model-version directory (with held_out.json)")
    installed = os.environ.get("TUNELOOM_TEST_LLAMA_CPP")
    parser.add_argument("--llama-cpp", default=installed, help="node-llama-cpp's folder")
    parser.add_argument("--types", default="f32,q8_0", help="GGUF weight types to export and compare")
    parser.add_argument("--max-tokens", type=int, default=12)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "gguf-llama-cpp.json")
    args = parser.parse_args()
    if not args.llama_cpp:
        parser.error("--llama-cpp (or TUNELOOM_TEST_LLAMA_CPP) must name node-llama-cpp's folder")

    from tuneloom.export import GGUF_FILE, export_version
    from tuneloom.generate.generator import generate
    from tuneloom.generate.loading import load_for_inference
    from tuneloom.generate.params import InferenceParams

    held_out = json.loads((args.version / "held_out.json").read_text(encoding="utf-8"))
    prompts = [example["prompt"] for example in held_out]
    loaded = load_for_inference(args.version)
    ours = [g.text for g in generate(loaded, prompts, InferenceParams(max_tokens=args.max_tokens))]
    ids = [loaded.tokenizer(prompt)["input_ids"] for prompt in prompts]
    scored = [f"{example['prompt']} {example['completion']}" for example in held_out]
    full_nll = mean_nll([token_log_probs(loaded, text) for text in scored])
    rows, figures = [], {}
    for gguf_type in args.types.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            exported = export_version(args.version, Path(tmp) / "export", gguf_type=gguf_type)
            size_mb = (exported.path / GGUF_FILE).stat().st_size / 2**20
            file = exported.path / GGUF_FILE
            theirs = run_llama_cpp(args.llama_cpp, file, prompts, prompts, args.max_tokens, score=scored)
        answers = [text.split("###")[0].strip() for text in theirs["completions"]]
        figures[gguf_type] = {
            "prompts": len(prompts),
            "file_mib": round(size_mb, 1),
            "same_token_ids": sum(a == b for a, b in zip(theirs["tokens"], ids, strict=True)),
            "same_answer_as_tuneloom": sum(a == b for a, b in zip(answers, ours, strict=True)),
            "right": sum(a == example["completion"] for a, example in zip(answers, held_out, strict=True)),
            "nll": round(mean_nll(theirs["log_likelihoods"]), 4),
        }
        rows.append([gguf_type, *figures[gguf_type].values()])
    figures["tuneloom_right"] = sum(a == example["completion"] for a, example in zip(ours, held_out, strict=True))
    figures["tuneloom_nll"] = round(full_nll, 4)
    write_result(args.out, benchmark="gguf-llama-cpp", figures=figures, notes=f"version {args.version}")
    columns = ["type", "prompts", "file MiB", "same token ids", "same answer as tuneloom", "right", "nats/token"]
    title = f"llama.cpp on {args.version} (tuneloom: {figures['tuneloom_right']} right, {full_nll:.4f} nats/token)"
    print_table(title, columns, rows)


if __name__ == "__main__":
    main()
