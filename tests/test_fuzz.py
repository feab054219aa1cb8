"""The atheris fuzz targets (fuzz/), run for a few seconds each and on their committed seeds.

Each target fails on any exception that is not a TuneloomError and on any broken invariant; a
failure here prints the input that caused it, ready for `python -m fuzz.run TARGET --replay FILE`.
Longer runs: `python -m fuzz.run --seconds 600 TARGET`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from fuzz.data_targets import TARGETS as DATA_TARGETS
from fuzz.run import RSS_LIMIT_MB, SEEDS
from fuzz.settings_targets import TARGETS as SETTINGS_TARGETS

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {**DATA_TARGETS, **SETTINGS_TARGETS}
# Seconds of fuzzing per target in `make test`; the settings target is ~100x slower per input.
SECONDS = {name: 1 for name in TARGETS} | {"settings": 2}
# These import transformers first (~5 s): started first, they overlap with the quick ones.
SLOW_FIRST = sorted(TARGETS, key=lambda name: name not in ("settings", "settings_json", "tokenized"))


@dataclass
class Run:
    target: str
    returncode: int
    executions: int
    output: str
    reproducers: list[Path]


def fuzz(target: str, scratch: Path) -> Run:
    """One target under libFuzzer in its own process (libFuzzer owns the process it runs in)."""
    artifacts = scratch / target
    artifacts.mkdir()
    command = [sys.executable, "-m", "fuzz.run", target, "--seconds", str(SECONDS[target])]
    command += ["--artifacts", str(artifacts), "--corpus", str(artifacts / "corpus")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    found = re.search(r"stat::number_of_executed_units: (\d+)", output)
    reproducers = sorted(p for p in artifacts.iterdir() if p.is_file())
    return Run(target, done.returncode, int(found.group(1)) if found else 0, output, reproducers)


def describe(run: Run) -> str:
    inputs = "\n".join(f"  {p.name}: {p.read_bytes()!r}" for p in run.reproducers) or "  (none written)"
    return f"fuzz target {run.target!r} failed (exit {run.returncode}); inputs:\n{inputs}\n{run.output[-3000:]}"


def test_every_fuzz_target_survives_a_bounded_run() -> None:
    """Two targets at a time: libFuzzer is single-threaded and the start-up is mostly imports."""
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda name: fuzz(name, Path(tmp)), SLOW_FIRST))
        failures = [describe(run) for run in runs if run.returncode != 0 or run.reproducers]
    assert not failures, "\n\n".join(failures)
    counts = {run.target: run.executions for run in runs}
    assert all(count >= 100 for count in counts.values()), counts
    print("fuzz executions:", counts)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_committed_seeds_and_regressions_replay_cleanly(target: str) -> None:
    """The seeds include every input that once crashed a target (the `regress-*` files)."""
    seeds = sorted((SEEDS / target).glob("*")) if (SEEDS / target).is_dir() else []
    for seed in seeds:
        TARGETS[target](seed.read_bytes())


def test_seed_corpus_stays_small() -> None:
    total = sum(p.stat().st_size for p in SEEDS.rglob("*") if p.is_file())
    assert 0 < total < 100_000, total


def test_a_target_started_by_a_process_that_held_gigabytes_is_not_out_of_memory(tmp_path: Path) -> None:
    """Linux hands a parent's peak RSS to the child it starts (getrusage, across exec), and libFuzzer read
    it as the target's own: every target was "out of memory" when the pytest worker had loaded a model."""
    held = (RSS_LIMIT_MB + 256) * 2**20
    parent = (
        "import subprocess, sys\n"
        f"held = bytearray({held})\n"
        "held[::4096] = b'x' * len(held[::4096])  # touched: resident, not just reserved\n"
        f"done = subprocess.run([sys.executable, '-m', 'fuzz.run', 'lines', '--runs', '200', "
        f"'--artifacts', {str(tmp_path)!r}, '--corpus', {str(tmp_path / 'corpus')!r}])\n"
        "sys.exit(done.returncode)\n"
    )
    ran = subprocess.run([sys.executable, "-c", parent], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-3000:]
    peak = re.search(r"stat::peak_rss_mb:\s+(\d+)", ran.stderr)
    assert peak and int(peak.group(1)) < RSS_LIMIT_MB // 2, ran.stderr[-1000:]
