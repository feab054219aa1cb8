"""The link between a worker slot and its training child: how the child is started, and what its
messages (progress events, then one result) add up to between two heartbeats."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any


@dataclass
class RunState:
    """What the child reported since the last heartbeat, waiting to be written."""

    step: int | None = None
    total: int | None = None
    eta_s: float | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    logs: list[tuple[str, str]] = field(default_factory=list)
    result: tuple[str, dict[str, Any]] | None = None


@functools.cache
def process_context() -> Any:
    """Training children fork from a fresh server process that has already imported torch and transformers.

    A forkserver starts clean (no threads, no CUDA), so forking from it is safe where forking the
    worker itself is not, and a run starts in a fraction of a second instead of re-importing the
    libraries for every job. The children die with it, and it dies with the worker.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tuneloom.worker.child", "tuneloom.train.recipe"])
    return context


def start_process_server() -> None:
    """Start the forkserver now, so it imports the libraries while the worker waits for its first job.

    Started lazily, the first run paid those imports (~5 s on two cores) after it was claimed. The
    forkserver is its own process, so its imports race nothing in this one.
    """
    import multiprocessing.forkserver

    process_context()
    multiprocessing.forkserver.ensure_running()


def receive(conn: Connection, state: RunState, *, timeout: float) -> None:
    """Take every message waiting (up to `timeout` for the first) into `state`."""
    try:
        while conn.poll(timeout):
            timeout = 0
            kind, payload = conn.recv()
            if kind == "event":
                absorb(state, payload)
            else:
                state.result = (kind, payload)
                return
    except (EOFError, OSError):
        return


def absorb(state: RunState, event: dict[str, Any]) -> None:
    kind = event["kind"]
    if event.get("total_steps"):
        state.step, state.total, state.eta_s = event["step"], event["total_steps"], event.get("eta_s")
    if kind == "stage":
        state.logs.append(("info", event["message"]))
    elif kind in ("log", "eval"):
        state.metrics.append({k: event.get(k) for k in ("step", "loss", "eval_loss", "learning_rate")})
        value = f"loss {event['loss']:.4f}" if kind == "log" else f"eval loss {event['eval_loss']:.4f}"
        state.logs.append(("info", f"step {event['step']}/{event['total_steps']}: {value}"))


def send(conn: Connection, message: str) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        conn.send(message)


def kill(child: Any) -> None:
    if child.is_alive():
        child.kill()
    child.join(timeout=10)


def describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        name = {-9: "SIGKILL, often the out-of-memory killer", -11: "SIGSEGV", -15: "SIGTERM"}.get(code, "a signal")
        return f"killed by {name}"
    return f"exit code {code}"
