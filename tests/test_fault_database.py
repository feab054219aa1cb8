"""The database goes away for a while under a running server: 503s meanwhile, recovery by itself, nothing lost.

The test starts its own PostgreSQL cluster (`.ci/postgres.sh`, on a port of its own; the shared
test database is never touched), runs `tuneloom serve --database-url …` on it with a training job
in progress, stops the cluster, and checks what users see during the outage — `/healthz` and the
API answer 503 with a message, never a 500 — then starts it again: the same server process answers
normally, the apps and datasets made before are there, and the job finishes on its first attempt.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.conftest import DATABASE_URL_FILE
from tests.process_helpers import Processes, prepare_model, queue, state, wait_for

pytestmark = pytest.mark.soak  # 170 s measured on the shared, loaded 2-core machine: `make soak`
ROOT = Path(__file__).resolve().parents[1]
PORTS = range(55490, 55500)  # this test's own clusters; the shared one is on 55439
OUTAGE_S = 6.0  # longer than a worker heartbeat (2 s), so the running job meets the outage


@dataclass
class Cluster:
    """A throwaway PostgreSQL cluster that can be stopped and started again."""

    data: Path
    url: str
    port: int
    pg_ctl: Path

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def start(self) -> None:
        """As `.ci/postgres.sh` started it: `pg_ctl start` alone would not reuse the port and options."""
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-l", str(self.data / "server.log"), "-o", f"'{options}'", "start")

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            ["su", "postgres", "-c", " ".join([str(self.pg_ctl), "-D", str(self.data), "-w", *args])],
            check=True,
            capture_output=True,
            timeout=60,
        )


def _free_port() -> int:
    for port in PORTS:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    pytest.skip(f"no free port in {PORTS.start}-{PORTS.stop - 1} for a PostgreSQL cluster of our own")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or shutil.which("su") is None:
        pytest.skip("PostgreSQL server binaries (/usr/lib/postgresql/*/bin) are not installed")
    port = _free_port()
    made = subprocess.run(
        ["bash", str(ROOT / ".ci" / "postgres.sh")],
        env={**os.environ, "TUNELOOM_CI_PG_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if made.returncode != 0:
        pytest.skip(f"could not start a PostgreSQL cluster of our own: {made.stderr[-500:]}")
    data, url = made.stdout.strip().splitlines()[-2:]
    pg_ctl = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1]
    own = Cluster(Path(data), url, port, pg_ctl)
    yield own
    subprocess.run(["su", "postgres", "-c", f"{pg_ctl} -D {data} -m immediate stop"], capture_output=True, timeout=60)
    shutil.rmtree(data, ignore_errors=True)


def test_a_database_outage_answers_503_meanwhile_and_the_server_recovers_by_itself(
    cluster: Cluster, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    processes = Processes(data_dir, "sqlite")
    processes.extra = ["--database-url", cluster.url]
    (data_dir / DATABASE_URL_FILE).write_text(cluster.url, encoding="utf-8")  # for `keys create`
    try:
        server, url = processes.serve("--workers", "1")
        model, headers, dataset_version = prepare_model(url, data_dir)
        run = f"{model}/versions/{queue(model, headers, dataset_version, steps=120)}"
        wait_for(lambda: (state(run, headers)["progress"]["step"] or 0) >= 3, "the run to make progress")

        cluster.stop()
        answers = []
        deadline = time.monotonic() + OUTAGE_S
        while time.monotonic() < deadline:
            answers += [
                httpx.get(f"{url}/healthz", timeout=30),
                httpx.get(f"{url}/api/apps", headers=headers, timeout=30),
            ]
            answers.append(httpx.post(f"{url}/api/apps", json={"id": "during"}, headers=headers, timeout=30))
            time.sleep(0.5)
        cluster.start()

        assert {a.status_code for a in answers} == {503}, [(a.status_code, a.text[:200]) for a in answers]
        health = answers[0].json()
        assert health["status"] == "unavailable" and health["database"] == "unavailable", health
        api = answers[1].json()
        assert api["code"] == "DATABASE_UNAVAILABLE" and "database is unavailable" in api["message"], api
        assert answers[1].headers["retry-after"]

        wait_for(lambda: httpx.get(f"{url}/healthz", timeout=30).status_code == 200, "the server to recover", 60)
        assert server.poll() is None  # the same process, never restarted
        apps = httpx.get(f"{url}/api/apps", headers=headers, timeout=30).json()
        assert [a["id"] for a in apps] == ["shop"], apps  # made before; the refused one was not half made
        versions = httpx.get(f"{url}/api/apps/shop/datasets/reviews/versions", headers=headers).json()
        assert [(v["id"], v["state"]) for v in versions] == [(dataset_version, "READY")]
        done = wait_for(
            lambda: (
                (s := state(run, headers))["status"]["name"] not in ("MODEL_QUEUED_FOR_TRAINING", "MODEL_TRAINING")
                and s
            ),
            "the run to finish",
            timeout=240,
        )
        assert done["status"]["name"] == "MODEL_TRAINED", done["status"]
        assert done["attempts"] == 1 and done["progress"]["step"] == 120, done  # it went on; nothing was redone
    finally:
        processes.stop_all()
