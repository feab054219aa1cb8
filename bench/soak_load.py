"""The clients of the load test: concurrent loops of real HTTP requests, each timed and classified.

Every client keeps one role for the whole run (so each kind of request has a steady number of
clients) and sends requests back to back until the deadline; a request in flight at the deadline
is finished and counted. Nothing is retried: a 5xx, a refused connection, a timeout or a stream
that ends in `event: error` is recorded as what it is. Each client has a key of its own, as
separate users would: the server caps concurrent generations per key, so one key shared by 32
clients would mostly measure 429s. Memory is sampled beside the load as the RSS of the server's
whole process tree (the API process, its training worker and the worker's training child), an
overestimate where pages are shared, so a bound on it is a safe bound.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

from tuneloom.client._http import parse_sse

KINDS = ("predict", "stream", "upload", "status", "inputs")
# Half the clients predict; the other half are spread over streams, uploads, status polls and listings.
ROLE_CYCLE = ("predict", "stream", "predict", "upload", "predict", "status", "predict", "inputs")
MAX_TOKENS = 16
REQUEST_TIMEOUT_S = 120.0
OK_STATUS = {"predict": "200", "stream": "200", "upload": "201", "status": "200", "inputs": "200"}
PROMPTS = (
    "My card was charged twice for the same order",
    "The app crashes when I open settings",
    "I cannot log in after resetting my password",
    "Where is my parcel? It has been two weeks",
    "I want to send these shoes back",
    "How do I change the email on my account?",
)


@dataclass(frozen=True)
class Target:
    """What the clients talk to: one app, a trained version to predict with, a running job to poll."""

    url: str
    app_id: str
    model_id: str
    trained_version_id: str
    job_path: str  # the training job's version, as /api/apps/…/versions/ID
    dataset_id: str  # uploads go here and listings read it

    @property
    def model_url(self) -> str:
        return f"{self.url}/api/apps/{self.app_id}/models/{self.model_id}"

    @property
    def dataset_url(self) -> str:
        return f"{self.url}/api/apps/{self.app_id}/datasets/{self.dataset_id}"


@dataclass
class Record:
    """All requests of one run: (kind, latency s, outcome) plus what the status polls saw."""

    requests: list[tuple[str, float, str]] = field(default_factory=list)
    job_seen: list[tuple[float, str]] = field(default_factory=list)  # (wall time, status name)


def roles(clients: int) -> list[str]:
    return [ROLE_CYCLE[i % len(ROLE_CYCLE)] for i in range(clients)]


def upload_body(n: int) -> bytes:
    """A small sectioned file, different each time, with one invalid row (the report must name it)."""
    lines = [
        f"### Instruction: Route this ticket. ### Human: {PROMPTS[i % len(PROMPTS)]} (upload {n}, row {i}) "
        f"### Assistant: {'billing' if i % 2 else 'technical'}"
        for i in range(20)
    ]
    lines.insert(7, "### Instruction: a row without a response section ### Human: nothing to learn")
    return ("\n".join(lines) + "\n").encode()


async def one_request(http: httpx.AsyncClient, target: Target, kind: str, n: int, record: Record) -> str:
    """Send one request of `kind` (`http` carries the client's key); the HTTP status, or what went wrong."""
    params = {"max_tokens": MAX_TOKENS, "temperature": 0}
    prompt = f"{PROMPTS[n % len(PROMPTS)]} (#{n})"
    if kind == "predict":
        body = {"inputs": [prompt], "version": target.trained_version_id, "inference_params": params}
        answer = await http.post(f"{target.model_url}/predict", json=body)
        return str(answer.status_code)
    if kind == "stream":
        body = {"input": prompt, "version": target.trained_version_id, "inference_params": params}
        async with http.stream("POST", f"{target.model_url}/generate", json=body) as answer:
            lines = [line async for line in answer.aiter_lines()]
        events = [event for event, _ in parse_sse(lines)]
        if answer.status_code == 200 and events[-1:] != ["done"]:
            return "stream-error" if "error" in events else "stream-unfinished"
        return str(answer.status_code)
    if kind == "upload":
        answer = await http.post(f"{target.dataset_url}/uploads?filename=soak-{n}.txt", content=upload_body(n))
        if answer.status_code == 201 and answer.json()["invalid_rows"] != 1:
            return "upload-wrong-report"
        return str(answer.status_code)
    if kind == "status":
        answer = await http.get(f"{target.url}{target.job_path}")
        if answer.status_code == 200:
            record.job_seen.append((time.time(), answer.json()["status"]["name"]))
        return str(answer.status_code)
    answer = await http.get(f"{target.dataset_url}/inputs", params={"limit": 20})
    return str(answer.status_code)


async def client_loop(target: Target, key: str, kind: str, index: int, deadline: float, record: Record) -> None:
    """One client: its own key and connection, requests back to back until the deadline."""
    headers = {"Authorization": f"Key {key}"}
    async with httpx.AsyncClient(headers=headers, timeout=REQUEST_TIMEOUT_S) as http:
        await request_loop(http, target, kind, index, deadline, record)


async def request_loop(
    http: httpx.AsyncClient, target: Target, kind: str, index: int, deadline: float, record: Record
) -> None:
    n = index * 1_000_000
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            outcome = await one_request(http, target, kind, n, record)
        except httpx.TimeoutException:
            outcome = "timeout"
        except httpx.TransportError as err:
            outcome = type(err).__name__
        record.requests.append((kind, time.perf_counter() - started, outcome))
        n += 1


async def run_clients(target: Target, keys: list[str], seconds: float) -> tuple[Record, float]:
    """One client per key, concurrently for `seconds`; returns the record and the seconds it really took."""
    record = Record()
    started = time.perf_counter()
    deadline = started + seconds
    clients = enumerate(zip(keys, roles(len(keys)), strict=True))
    await asyncio.gather(*(client_loop(target, key, kind, i, deadline, record) for i, (key, kind) in clients))
    return record, time.perf_counter() - started


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..1)."""
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]


def summarize(record: Record, elapsed: float, clients: int) -> dict[str, dict[str, Any]]:
    """Per kind: clients, requests, requests/s, p50/p99 latency of the successful ones, outcomes."""
    per_kind = Counter(roles(clients))
    summary = {}
    for kind in KINDS:
        rows = [(latency, outcome) for k, latency, outcome in record.requests if k == kind]
        ok = sorted(latency for latency, outcome in rows if outcome == OK_STATUS[kind])
        summary[kind] = {
            "clients": per_kind[kind],
            "requests": len(rows),
            "ok": len(ok),
            "per_s": len(rows) / elapsed,
            "p50_ms": 1000 * statistics.median(ok) if ok else None,
            "p99_ms": 1000 * percentile(ok, 0.99) if ok else None,
            "outcomes": dict(Counter(outcome for _, outcome in rows)),
        }
    return summary


class MemorySampler:
    """Samples the RSS of a process and all its descendants every `interval` s, in a thread."""

    def __init__(self, pid: int, interval: float = 0.5):
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (wall time, bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def tree_rss(self) -> int:
        total = 0
        for proc in (self.process, *self.process.children(recursive=True)):
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:  # a child that ended between the listing and the read
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self.tree_rss()))
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, end: float) -> int:
        return max((rss for t, rss in self.samples if start <= t <= end), default=0)
