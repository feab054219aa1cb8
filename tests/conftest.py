"""Shared fixtures: small data files, the real CLI in a subprocess, and a real server on a loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api_key(data_dir: Path, *extra: str) -> str:
    """A new key from the real `tuneloom keys create` (admin unless `--app ID` is passed)."""
    result = run_cli("keys", "create", "--data-dir", str(data_dir), *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    data_dir = tmp_path_factory.mktemp("server")
    port = _free_port()
    cmd = [sys.executable, "-m", "tuneloom.cli", "serve", "--data-dir", str(data_dir), "--port", str(port)]
    cmd += ["--max-upload-mb", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("server did not start")
    yield url, data_dir
    proc.terminate()
    proc.wait(timeout=30)
