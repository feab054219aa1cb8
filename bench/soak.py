"""Load: concurrent clients against a real `tuneloom serve` for a fixed time while its worker trains.

A tiny-random version is fine-tuned through the API first (it serves the predictions), then a
second training job is queued on the same server, sized from the first one's speed so that it is
still training during most of the window. Once it is MODEL_TRAINING, C clients run for S seconds,
each in one role: /predict (half of them), SSE /generate streams, dataset uploads (a 21-line file
with one invalid row), polls of the running job's status, and input listings. Afterwards the job
must reach MODEL_TRAINED. Figures: requests/s and p50/p99 latency per kind, every non-2xx outcome
(5xx above all), the peak RSS of the server's process tree against a stated bound, the job's course.

    python -m bench.soak                           # 32 clients, 60 s (about 2 minutes in all)
    python -m bench.soak --seconds 15 --clients 8  # a smoke run

`tests/test_soak.py` runs the same against the test server (SQLite and PostgreSQL) and asserts it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import RESULTS_DIR, print_table, write_result
from bench.server_process import create_key, start_server, stop, train_through_api
from bench.soak_load import KINDS, OK_STATUS, PROMPTS, MemorySampler, Target, run_clients, summarize
from tuneloom.store import keys
from tuneloom.store.db import Database, open_database

APP, MODEL = "soak", "router"
JOB_MODEL, UPLOADS = "soak-job", "soak-uploads"  # made in the app under load: the job trains a model of its own
FIRST_TRAINING = {"max_steps": 30, "per_device_train_batch_size": 8, "learning_rate": 0.05}
# The job's steps = the first run's steps/s × the window × this. The first run's rate counts its
# start-up too (an underestimate), so the job lasts about the window under load and ends near its end.
JOB_SIZE = 1.0
# Measured peak 1.65 GiB at 32 clients (bench/README.md, "Load"); the bound leaves ~1.8× margin.
RSS_BOUND_MB = 3072
RUNNING = ("MODEL_QUEUED_FOR_TRAINING", "MODEL_TRAINING")
MB = 1024**2


def api(target_url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=target_url, headers={"Authorization": f"Key {key}"}, timeout=120)


def steps_per_second(metrics: dict[str, Any]) -> float:
    """The unloaded training speed, from a trained version's own metrics."""
    return float(metrics["steps"]) / float(metrics["train_runtime_s"])


def queue_job(http: httpx.Client, app_path: str, dataset_version_id: str, steps: int) -> str:
    """A tiny-random run of `steps` steps, of a model of its own (the served model's latest stays put).

    Returns the new version's path.
    """
    http.post(f"{app_path}/models", json={"id": JOB_MODEL}).raise_for_status()
    trainer_config = {**FIRST_TRAINING, "max_steps": steps}
    body = {"dataset_version_id": dataset_version_id, "template": "tiny-random", "trainer_config": trainer_config}
    job = http.post(f"{app_path}/models/{JOB_MODEL}/versions", json=body).raise_for_status().json()
    return f"{app_path}/models/{JOB_MODEL}/versions/{job['id']}"


def wait_while(http: httpx.Client, version_path: str, statuses: tuple[str, ...], timeout_s: float) -> dict[str, Any]:
    """Poll the version until its status leaves `statuses`; its JSON then (or at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        version: dict[str, Any] = http.get(version_path).raise_for_status().json()
        if version["status"]["name"] not in statuses or time.monotonic() > deadline:
            return version
        time.sleep(0.5)


def warm_up(http: httpx.Client, target: Target) -> None:
    """One prediction and one stream, so the model is loaded before the clock starts."""
    body = {"inputs": [PROMPTS[0]], "version": target.trained_version_id, "inference_params": {"max_tokens": 4}}
    http.post(f"{target.model_url}/predict", json=body).raise_for_status()
    stream = {"input": PROMPTS[0], "version": target.trained_version_id, "inference_params": {"max_tokens": 4}}
    http.post(f"{target.model_url}/generate", json=stream).raise_for_status()


def client_keys(db: Database, data_dir: Path, app_id: str, n: int) -> list[str]:
    """`n` keys of the app, one per client, made in the server's own store as `tuneloom keys create` does."""
    pepper = keys.load_pepper(data_dir)
    return [keys.create_key(db, app_id, pepper)[0] for _ in range(n)]


def soak(
    url: str,
    users: list[str],
    pid: int,
    *,
    app_id: str,
    model_id: str,
    trained_version_id: str,
    seconds: float,
    job_size: float = JOB_SIZE,
) -> dict[str, Any]:
    """Queue the job, run one client per key while it trains, wait for it to finish; every figure of the run."""
    app_path = f"/api/apps/{app_id}"
    clients = len(users)
    with api(url, users[0]) as http:
        trained = http.get(f"{app_path}/models/{model_id}/versions/{trained_version_id}").raise_for_status().json()
        rate = steps_per_second(trained["metrics"])
        steps = max(10, round(rate * seconds * job_size))
        http.post(f"{app_path}/datasets", json={"id": UPLOADS}).raise_for_status()
        job_path = queue_job(http, app_path, trained["dataset_version_id"], steps)
        started = wait_while(http, job_path, ("MODEL_QUEUED_FOR_TRAINING",), 120)
        target = Target(url, app_id, model_id, trained_version_id, job_path, UPLOADS)
        warm_up(http, target)
        load_before = os.getloadavg()[0]
        with MemorySampler(pid) as memory:
            rss_before = memory.tree_rss()
            load_start = time.time()
            record, elapsed = asyncio.run(run_clients(target, users, seconds))
            load_end = time.time()
            at_end = http.get(job_path).raise_for_status().json()
            finished = wait_while(http, job_path, RUNNING, 600)
            job_end = time.time()
        rss_after = memory.tree_rss()
    kinds = summarize(record, elapsed, clients)
    outcomes = [outcome for _, _, outcome in record.requests]
    return {
        "clients": clients,
        "seconds": seconds,
        "elapsed_s": round(elapsed, 2),
        "kinds": kinds,
        "requests": len(outcomes),
        "server_errors_5xx": sum(outcome.startswith("5") for outcome in outcomes),
        "not_ok": sum(kinds[k]["requests"] - kinds[k]["ok"] for k in KINDS),
        "ok_status": OK_STATUS,
        "memory": {
            "what": "RSS summed over the server process and all its descendants (worker, training child)",
            "bound_mb": RSS_BOUND_MB,
            "before_load_mb": round(rss_before / MB),
            "peak_during_load_mb": round(memory.peak_between(load_start, load_end) / MB),
            "peak_mb": round(max(rss for _, rss in memory.samples) / MB),
            "after_mb": round(rss_after / MB),
            "samples": len(memory.samples),
        },
        "job": job_figures(started, at_end, finished, steps, rate, load_start, load_end, job_end, record.job_seen),
        "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
    }


def job_figures(
    started: dict[str, Any],
    at_end: dict[str, Any],
    finished: dict[str, Any],
    steps: int,
    rate: float,
    load_start: float,
    load_end: float,
    job_end: float,
    seen: list[tuple[float, str]],
) -> dict[str, Any]:
    """How the training job went: its size, where it was when the load began and ended, its outcome."""
    finished_at = finished.get("finished_at")
    end = dt.datetime.fromisoformat(finished_at).timestamp() if finished_at else job_end
    return {
        "max_steps": steps,
        "unloaded_steps_per_s": round(rate, 2),
        "status_at_load_start": started["status"]["name"],
        "step_at_load_end": at_end["progress"]["step"],
        "status_at_load_end": at_end["status"]["name"],
        "training_fraction_of_window": round(min(1.0, max(0.0, (end - load_start) / (load_end - load_start))), 3),
        "polls_seeing_training": sum(name == "MODEL_TRAINING" for _, name in seen),
        "final_status": finished["status"]["name"],
        "final_message": finished["status"].get("message"),
        "finished_s_after_load": round(max(0.0, end - load_end), 1),
        "eval_loss": (finished.get("metrics") or {}).get("eval_loss"),
    }


def print_figures(figures: dict[str, Any]) -> None:
    kinds, memory, job = figures["kinds"], figures["memory"], figures["job"]
    rows = [
        [
            kind,
            k["clients"],
            k["requests"],
            f"{k['per_s']:.1f}",
            "-" if k["p50_ms"] is None else f"{k['p50_ms']:.0f}",
            "-" if k["p99_ms"] is None else f"{k['p99_ms']:.0f}",
            k["requests"] - k["ok"],
        ]
        for kind, k in kinds.items()
    ]
    title = f"{figures['clients']} clients for {figures['seconds']:.0f} s while a tiny-random job trains (CPU)"
    print_table(title, ["kind", "clients", "requests", "requests/s", "p50 ms", "p99 ms", "not OK"], rows)
    print(
        f"5xx: {figures['server_errors_5xx']}   not OK: {figures['not_ok']}   "
        f"server tree RSS: {memory['before_load_mb']} MiB before, peak {memory['peak_mb']} MiB "
        f"(bound {memory['bound_mb']} MiB)   job: {job['final_status']} {job['finished_s_after_load']} s after "
        f"the load, training during {100 * job['training_fraction_of_window']:.0f}% of it"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "soak.json")
    args = parser.parse_args()

    from tuneloom.demo import TRAIN_FILE

    with tempfile.TemporaryDirectory(prefix="tuneloom-bench-soak-") as tmp:
        data_dir = Path(tmp)
        server, url = start_server(data_dir)
        try:
            admin = create_key(data_dir)
            settings = {"trainer_config": FIRST_TRAINING}
            version_id, _, _ = train_through_api(
                url, admin, TRAIN_FILE, "tiny-random", settings, app_id=APP, model_id=MODEL
            )
            db = open_database(None, data_dir=data_dir, migrate=False)
            try:
                users = client_keys(db, data_dir, APP, args.clients)
            finally:
                db.dispose()
            figures = soak(
                url, users, server.pid, app_id=APP, model_id=MODEL, trained_version_id=version_id, seconds=args.seconds
            )
        finally:
            stop(server)
    print_figures(figures)
    write_result(
        args.out, benchmark="soak", figures=figures, device="cpu", libraries=("tuneloom", "torch", "fastapi", "uvicorn")
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
