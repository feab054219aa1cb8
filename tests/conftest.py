"""Shared fixtures: an isolated model cache per session (built once), and small data files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

INSTRUCTION = "Is this review positive or negative? Answer with one word."
POSITIVE = [
    "great product, works well",
    "I love it",
    "excellent quality and fast",
    "very happy with this",
    "works perfectly every day",
    "best purchase this year",
    "superb, would buy again",
    "really nice",
]
NEGATIVE = [
    "broke after a day",
    "terrible, do not buy",
    "awful quality",
    "very disappointed",
    "stopped working quickly",
    "waste of money",
    "poor and cheap",
    "really bad",
]


def sentiment_lines(repeat: int = 3) -> list[str]:
    lines = []
    for i in range(repeat):
        for pos, neg in zip(POSITIVE, NEGATIVE, strict=True):
            lines.append(f"### Instruction: {INSTRUCTION} ### Human: {pos} ({i}) ### Assistant: positive")
            lines.append(f"### Instruction: {INSTRUCTION} ### Human: {neg} ({i}) ### Assistant: negative")
    return lines


@pytest.fixture
def sentiment_file(tmp_path: Path) -> Path:
    """48 valid examples and one invalid row (2%, within the default 5% tolerance)."""
    lines = sentiment_lines()
    lines.insert(5, "### Instruction: no answer section here ### Human: hello")
    path = tmp_path / "sentiment.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real `tuneloom` command in its own process: exit codes and stderr as a user sees them."""
    return subprocess.run([sys.executable, "-m", "tuneloom.cli", *args], capture_output=True, text=True, timeout=600)
