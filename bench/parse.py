"""Parse + validate throughput of tuneloom.data against a plain-Python baseline.

    python -m bench.parse [--rows N] [--out FILE]

Generates a realistic sectioned file (sentiment lines, Alpaca lines with and without Input and a
preamble, multi-turn lines; lengths spread log-normally; ~1% broken rows), the same rows as CSV
(template columns) and as JSONL (prompt/completion), then times, per format:

- tuneloom `parse_file` keeping the examples, and validating only (`keep_examples=False`);
- a baseline doing the least a hand-written loader would: `open()` + a regex split per line for
  sections, the `csv` module + the same split for CSV, `json.loads` + type checks for JSONL.

Each timing is the best of `--repeat` runs. Peak Python memory of the validation-only run is
measured separately with tracemalloc (which slows it down, so it is not timed).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from bench.common import RESULTS_DIR, print_table, write_result
from tuneloom.data import parse_file

_VOCABULARY = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have "
    "an had they you were their one all we can her has there been if more when will would who so no market "
    "sales profit quarter growth company shares model data review product service customer price team "
    "report study climate energy weather city capital river language French summary passage translate"
)
WORDS = _VOCABULARY.split(" ")
_RESPONSE = {"assistant", "response", "output", "answer"}
_BASELINE_SPLIT = re.compile(r"###\s*(\w+)\s*:")


def _text(rng: random.Random, median_words: float) -> str:
    count = max(1, min(800, int(rng.lognormvariate(0, 0.8) * median_words)))
    return " ".join(rng.choices(WORDS, k=count))


def make_line(rng: random.Random) -> str:
    """One sectioned example in one of the shapes users write (about 1% deliberately broken)."""
    kind = rng.random()
    if kind < 0.01:
        return f"### Instruction: {_text(rng, 8)} ### Human: {_text(rng, 20)}"  # no response section
    if kind < 0.35:
        label = rng.choice(("negative.", "neutral.", "positive."))
        return (
            "### Instruction: What is the sentiment of this tweet? Please choose an answer from "
            f"{{negative/neutral/positive}} ### Human: {_text(rng, 30)} ### Assistant: {label}"
        )
    preamble = "Below is an instruction that describes a task. Write a response that completes the request."
    if kind < 0.65:
        instruction, context, response = _text(rng, 10), _text(rng, 40), _text(rng, 30)
        return f"{preamble} ### Instruction: {instruction} ### Input: {context} ### Response: {response}"
    if kind < 0.85:
        return f"{preamble} ### Instruction: {_text(rng, 12)} ### Response: {_text(rng, 25)}"
    turns = " ".join(f"### Human: {_text(rng, 12)} ### Assistant: {_text(rng, 15)}" for _ in range(rng.randint(1, 3)))
    return f"### System: You are helpful. {turns} ### Human: {_text(rng, 12)} ### Assistant: {_text(rng, 15)}"


def write_files(directory: Path, rows: int, seed: int = 1234) -> dict[str, Path]:
    """The same rows as .txt, .csv and .jsonl."""
    rng = random.Random(seed)
    names = {"sections": "bench.txt", "csv": "bench.csv", "jsonl": "bench.jsonl"}
    paths = {fmt: directory / name for fmt, name in names.items()}
    with (
        open(paths["sections"], "w", encoding="utf-8") as txt,
        open(paths["csv"], "w", encoding="utf-8", newline="") as csv_file,
        open(paths["jsonl"], "w", encoding="utf-8") as jsonl,
    ):
        writer = csv.writer(csv_file)
        writer.writerow(("input.data.text.raw", "input.data.concepts[*].id"))
        for _ in range(rows):
            line = make_line(rng)
            txt.write(line + "\n")
            writer.writerow((line, ""))
            cut = line.rfind("###")
            colon = line.find(":", cut)
            record = {"prompt": line[: colon + 1], "completion": line[colon + 1 :].strip()}
            jsonl.write(json.dumps(record) + "\n")
    return paths


def _baseline_line(line: str) -> tuple[str, str] | None:
    parts = _BASELINE_SPLIT.split(line)
    if len(parts) < 3 or parts[-2].lower() not in _RESPONSE:
        return None
    completion = parts[-1].strip()
    if not completion:
        return None
    return line[: line.rfind("###")].strip(), completion


def baseline_sections(path: Path) -> int:
    """What a hand-written loader does: open(), strip, regex split, keep (prompt, completion)."""
    kept = []
    with open(path, encoding="utf-8") as handle:
        for raw in handle:
            line = raw.strip()
            if line:
                pair = _baseline_line(line)
                if pair is not None:
                    kept.append(pair)
    return len(kept)


def baseline_csv(path: Path) -> int:
    kept = []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        for record in reader:
            if record:
                pair = _baseline_line(record[0])
                if pair is not None:
                    kept.append(pair)
    return len(kept)


def baseline_jsonl(path: Path) -> int:
    kept = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                prompt, completion = record.get("prompt"), record.get("completion")
                if isinstance(prompt, str) and isinstance(completion, str) and completion.strip():
                    kept.append((prompt.strip(), completion.strip()))
    return len(kept)


BASELINES: dict[str, Callable[[Path], int]] = {
    "sections": baseline_sections,
    "csv": baseline_csv,
    "jsonl": baseline_jsonl,
}


def best_time(action: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def peak_validation_memory(path: Path) -> float:
    """Peak traced Python allocations (MiB) while validating with keep_examples=False."""
    tracemalloc.start()
    try:
        parse_file(path, keep_examples=False)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def measure(paths: dict[str, Path], rows: int, repeat: int) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {}
    for fmt, path in paths.items():
        report = parse_file(path, keep_examples=False).report
        parse = best_time(lambda p=path: parse_file(p), repeat)
        validate = best_time(lambda p=path: parse_file(p, keep_examples=False), repeat)
        base = best_time(lambda p=path, f=fmt: BASELINES[f](p), repeat)
        figures[fmt] = {
            "rows": report.total_rows,
            "invalid_rows": report.invalid_rows,
            "file_mib": round(path.stat().st_size / 2**20, 1),
            "tuneloom_parse_rows_per_s": round(rows / parse),
            "tuneloom_validate_rows_per_s": round(rows / validate),
            "baseline_rows_per_s": round(rows / base),
            "parse_vs_baseline": round(base / parse, 2),
            "validate_vs_baseline": round(base / validate, 2),
        }
    sections = figures["sections"]
    sections["validate_peak_python_mib"] = round(peak_validation_memory(paths["sections"]), 1)
    return figures


NOTES = (
    "rows/s = rows / best wall time of parse_file (keep_examples=True), validate-only = keep_examples=False. "
    "Baselines do less: no canonical prompt, no per-row reasons, no encoding/binary checks, and keep "
    "plain tuples. parse_file pauses the cyclic GC while it collects rows (none of them is garbage)."
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "parse-cpu.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tuneloom-bench-") as tmp:
        paths = write_files(Path(tmp), args.rows)
        figures = measure(paths, args.rows, args.repeat)
    rows = [
        (
            fmt,
            f"{f['file_mib']}",
            f"{f['tuneloom_parse_rows_per_s']:,.0f}",
            f"{f['tuneloom_validate_rows_per_s']:,.0f}",
            f"{f['baseline_rows_per_s']:,.0f}",
            f"{f['parse_vs_baseline']:.2f}x",
        )
        for fmt, f in figures.items()
    ]
    columns = ("format", "MiB", "tuneloom rows/s", "validate-only", "baseline rows/s", "tuneloom/baseline")
    print_table(f"tuneloom.data parse, {args.rows:,} rows (best of {args.repeat})", columns, rows)
    sections = figures["sections"]
    print(f"sections validation-only peak Python memory: {sections['validate_peak_python_mib']} MiB")
    out = write_result(args.out, benchmark="parse", figures=figures, libraries=("tuneloom", "rich"), notes=NOTES)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
