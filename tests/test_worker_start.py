"""A worker is ready to train before its first job arrives.

Its training children fork from a forkserver that has imported torch and the training recipe. Started
with the worker, that server does those imports while the worker waits for a job; started lazily,
the first job paid ~5 s for them after it was claimed.
"""

from __future__ import annotations

from pathlib import Path

from tests.process_helpers import descendants, running_processes, wait_for


def loaded_torch(pid: int) -> bool:
    """Whether the process has torch's native library mapped (what importing torch does)."""
    try:
        return "libtorch_cpu" in Path(f"/proc/{pid}/maps").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_an_idle_worker_has_its_forkserver_import_torch_before_any_job(tmp_path: Path) -> None:
    with running_processes(tmp_path, "sqlite") as processes:
        worker = processes.start("worker", "--workers", "1")
        ready = wait_for(
            lambda: [pid for pid in descendants(worker.pid) if loaded_torch(pid)],
            "a child of the idle worker with torch loaded",
            timeout=60,
        )
        assert worker.poll() is None
        command = Path(f"/proc/{ready[0]}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert "multiprocessing.forkserver" in command, command
