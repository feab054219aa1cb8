"""Shared fixtures: small data files, the real CLI in a subprocess, and a real server on a loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from tests.test_store_support import BACKENDS, POSTGRES_URL, fresh_database

# The browser fixtures live here once: imported into two modules they were two session-scoped
# fixtures, and a second live sync Playwright fails ("Sync API inside the asyncio loop").
from tests.web_support import browser_page, chromium, network, screenshots  # noqa: F401

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist, each worker's processes (its tests, and the servers, workers and training
# children they start) get the worker's share of the cores. With torch's default of a thread per core
# in each, two workers' processes oversubscribed two cores and OpenMP's spinning threads slowed one
# another: the suite ran 784 s, and 706 s with one thread each (test_smollm2 within it: 93 → 38 s).
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // workers)))

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


DATABASE_URL_FILE = "test-database-url.txt"


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


def cli_command(*args: str) -> list[str]:
    """The command line of `tuneloom ARGS` run by this interpreter (the checkout's package, not a PATH lookup)."""
    return [sys.executable, "-m", "tuneloom.cli", *args]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real `tuneloom` command in its own process: exit codes and stderr as a user sees them."""
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=600)


def cli_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """`tuneloom ARGS` through `main` in this process, answered as `run_cli` answers.

    The same code as the command (parsing, the run, the error rendering) without a process's ~5 s of
    imports: for a command's variants, once `run_cli` has run its main case for real. A usage error
    (argparse's exit) is exit code 2, as in a process.
    """
    from tuneloom.cli import main

    capsys.readouterr()  # what the test printed before is not the command's
    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    printed = capsys.readouterr()
    return subprocess.CompletedProcess(["tuneloom", *args], code, printed.out, printed.err)


def refused(result: subprocess.CompletedProcess[str], *names: str, code: int = 1) -> None:
    """Exit `code`, no traceback, and every one of `names` (the file, flag, key or limit) in the message."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    for name in names:
        assert name in result.stderr, (name, result.stderr)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api_key(data_dir: Path, *extra: str) -> str:
    """A new key, made as `tuneloom keys create [--app ID]` makes it (admin without `--app`).

    In this process, through the store as the command does: a `tuneloom` subprocess per key cost 1.5 s, some 60
    times a run. The command itself runs for real against a live server in test_server_auth. Keys live in the
    server's database, so this opens the database the server got.
    """
    from tuneloom.store.db import open_database
    from tuneloom.store.keys import create_key, load_pepper

    app = dict(zip(extra[::2], extra[1::2], strict=True)).get("--app")
    db = open_database(database_url(data_dir), data_dir=data_dir, migrate=False)
    try:
        return create_key(db, app, load_pepper(data_dir))[0]
    finally:
        db.dispose()


def database_args(data_dir: Path) -> list[str]:
    url = database_url(data_dir)
    return ["--database-url", url] if url else []


def database_url(data_dir: Path) -> str | None:
    """The PostgreSQL URL the `server` fixture gave the server of `data_dir`; None: its SQLite file."""
    marker = data_dir / DATABASE_URL_FILE
    return marker.read_text(encoding="utf-8") if marker.is_file() else None


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real `tuneloom serve` per test module and backend: SQLite always, PostgreSQL when configured.

    A module whose tests do not depend on the database (what it serves, not how it stores it) takes
    `server_helpers.server_on_sqlite` instead: each backend's storage is tested in the modules that
    store, queue, authorize and recover.
    """
    with serving(request.param, request.module, tmp_path_factory) as served:
        yield served


@contextlib.contextmanager
def serving(backend: str, module: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`tuneloom serve` on `backend` until the block ends: its URL and data dir.

    `module` may set `SERVER_ARGS` (a list of extra `serve` flags, e.g. limits it tests).
    For PostgreSQL the schema is wiped first, so each module starts from an empty database; the URL
    is noted in the data dir (a file the server ignores) for `api_key` to find.
    """
    data_dir = tmp_path_factory.mktemp(f"server-{backend}")
    cmd = cli_command("serve", "--data-dir", str(data_dir), "--port", str(_free_port()))
    cmd += ["--max-upload-mb", "1", *getattr(module, "SERVER_ARGS", ())]  # a module's own flags
    if backend == "postgresql":
        fresh_database("postgresql", data_dir, migrate=False).dispose()
        assert POSTGRES_URL
        (data_dir / DATABASE_URL_FILE).write_text(POSTGRES_URL, encoding="utf-8")
        cmd += ["--database-url", POSTGRES_URL]
    log_path = server_log(data_dir)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{cmd[cmd.index('--port') + 1]}"
    try:
        _wait_until_up(url, proc, log_path)
        yield url, data_dir
    finally:
        stop_process_group(proc)


def server_log(data_dir: Path) -> Path:
    """What the `server` fixture's process wrote (stdout and stderr), beside its data dir."""
    return data_dir.parent / f"{data_dir.name}.log"


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server (it stops its workers), then SIGKILL whatever of its group is left.

    A training child that outlived its server would keep using the database the next module's
    server starts from; on PostgreSQL that database is shared, so nothing may survive a module.
    """
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    output = log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
    pytest.fail(f"server did not start (exit code {proc.poll()}):\n{output}")
