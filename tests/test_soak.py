"""Load held: concurrent clients on a real server while it trains — no 5xx, bounded memory, the job finishes.

The load is bench/soak.py's (which also prints it as a table): predictions, SSE streams, dataset
uploads, status polls and input listings from concurrent clients while the server's worker trains
a tiny-random job sized to last through the window. The full run (32 clients for 60 s, SQLite and
PostgreSQL) is behind the `soak` marker (`make soak`). A short one (8 clients, SQLite) runs in
`make test` on the trained version tests/test_server_predict.py already has, so it costs no
server start and no first training of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest
from bench.soak import JOB_SIZE, client_keys, print_figures, soak
from bench.soak_load import KINDS
from tests.server_helpers import Deployed, deploy, server_database


def server_pid(url: str) -> int:
    """The process listening on the server's port (the fixture's `tuneloom serve`)."""
    port = urlsplit(url).port
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return conn.pid
    raise AssertionError(f"no process listens on port {port}")


def run_soak(deployed: Deployed, seconds: float, clients: int, job_size: float = JOB_SIZE) -> dict[str, Any]:
    """The load on a deployed server's app, beside a new training job there; the table goes to stdout."""
    db = server_database(deployed.data_dir)
    try:
        users = client_keys(db, deployed.data_dir, deployed.app_id, clients)
    finally:
        db.dispose()
    figures = soak(
        deployed.url, users, server_pid(deployed.url), app_id=deployed.app_id, model_id=deployed.model_id,
        trained_version_id=deployed.version_id, seconds=seconds, job_size=job_size,
    )  # fmt: skip
    print_figures(figures)
    return figures


def assert_held(figures: dict[str, Any], *, beside_training: float = 0.5) -> None:
    """Zero 5xx (and no other failure), every kind served, memory under the bound, the job trained, and the
    job training during at least `beside_training` of the load's window."""
    outcomes = {kind: figures["kinds"][kind]["outcomes"] for kind in KINDS}
    assert figures["server_errors_5xx"] == 0, outcomes
    assert figures["not_ok"] == 0, outcomes
    assert all(figures["kinds"][kind]["ok"] > 0 for kind in KINDS), outcomes
    memory = figures["memory"]
    assert memory["peak_mb"] < memory["bound_mb"], memory
    job = figures["job"]
    assert job["status_at_load_start"] == "MODEL_TRAINING", job
    assert job["final_status"] == "MODEL_TRAINED", job
    assert job["polls_seeing_training"] > 0, job
    assert job["training_fraction_of_window"] >= beside_training, job  # the load really ran beside training


@pytest.mark.soak
def test_32_clients_for_60_s_while_training(server: tuple[str, Path]) -> None:
    assert_held(run_soak(deploy(*server), seconds=60, clients=32))
