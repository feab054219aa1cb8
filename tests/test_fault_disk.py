"""A full disk while a run writes its checkpoints or its model version, on a real size-limited file system.

The module mounts one tmpfs (the tests run as root in CI; elsewhere they skip, saying why) and
each test shrinks it with `mount -o remount,size=…` to the bytes in use plus a chosen margin, so the run
that follows fills it exactly where the test means it to: a few KB (the first checkpoint does not
fit) or 1 MB (every checkpoint fits, the model version's 3.5 MB tokenizer does not). What must
hold: one clear error naming the folder (DiskFullError in the engine, one line from the CLI, a
failed job saying DISK_FULL in the server), nothing that looks like a finished version, and the
earlier model version on the same file system intact, verified and generating exactly as before.
A server whose database (SQLite's file, or a PostgreSQL table's tablespace) sits on the full disk refuses
writes with a 507 saying so, and reads go on.
The engine runs are in `make test`; the CLI and server runs (other processes, 12-120 s on the shared
2-core machine) are in `make soak`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, create_engine, make_url, text
from tests.conftest import api_key, run_cli, sentiment_lines
from tests.process_helpers import prepare_model, queue, running_processes, state, wait_for
from tests.test_store_support import POSTGRES_URL

from tuneloom.errors import ModelVersionError
from tuneloom.generate.generator import generate
from tuneloom.generate.loading import load_for_inference
from tuneloom.generate.params import InferenceParams
from tuneloom.model_version import open_version
from tuneloom.train.disk_full import DiskFullError
from tuneloom.train.events import TrainEvent
from tuneloom.train.recipe import TrainJob, run_training

SETTINGS = {"trainer_config": {"num_train_epochs": 2, "per_device_train_batch_size": 8, "learning_rate": 0.05}}
GREEDY = InferenceParams(max_tokens=8)
PROMPT = "great product, works well"
CHECKPOINT_DOES_NOT_FIT = 8 * 1024  # two pages: less than one checkpoint (about 60 KB of files)
VERSION_DOES_NOT_FIT = 1024 * 1024  # every checkpoint fits (about 120 KB); the version's 3.5 MB does not
ROOMY = 256 * 1024 * 1024
RUNNING = ("MODEL_QUEUED_FOR_TRAINING", "MODEL_TRAINING")
NEEDS_POSTGRES = pytest.mark.skipif(not POSTGRES_URL, reason="TUNELOOM_TEST_POSTGRES_URL unset")


class SmallDisk:
    """A tmpfs mounted at `path` for one test module, resized to leave an exact amount free."""

    def __init__(self, path: Path):
        self.path = path

    def used(self) -> int:
        stat = os.statvfs(self.path)
        return (stat.f_blocks - stat.f_bfree) * stat.f_frsize

    def leave_free(self, free: int) -> None:
        """Resize the file system to what is in use now plus `free` bytes."""
        _mount("-o", f"remount,size={self.used() + free}", str(self.path))

    def grow(self) -> None:
        _mount("-o", f"remount,size={ROOMY}", str(self.path))


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmallDisk]:
    """A fresh tmpfs, unmounted at the end; skipped (with the reason) where this process cannot mount one."""
    with _tmpfs(tmp_path_factory.mktemp("small-disk")) as disk:
        yield disk


@contextlib.contextmanager
def _tmpfs(path: Path, *options: str) -> Iterator[SmallDisk]:
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root (CI runs the tests as root)")
    try:
        _mount("-t", "tmpfs", "-o", ",".join([f"size={ROOMY}", *options]), "tmpfs", str(path))
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"cannot mount a tmpfs here: {getattr(err, 'stderr', '') or err}")
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("disk-data") / "train.txt"
    path.write_text("\n".join(sentiment_lines()) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def earlier(small_disk: SmallDisk, data_file: Path) -> tuple[Path, str]:
    """A model version trained on the small disk before it fills, and what it generates."""
    output = small_disk.path / "earlier"
    run_training(TrainJob(data=data_file, output=output, template="tiny-random", settings=SETTINGS))
    return output, _generated(output)


def _generated(version: Path) -> str:
    return generate(load_for_inference(version), [PROMPT], GREEDY)[0].text


def _assert_intact(earlier: tuple[Path, str]) -> None:
    path, text = earlier
    open_version(path, verify=True)  # every file still matches its checksum
    assert _generated(path) == text


def _assert_not_a_version(output: Path) -> None:
    assert not output.exists()
    staging = output.with_name(output.name + ".partial") / "version"
    assert not staging.exists(), "a half-written model version was left on the full disk"
    with pytest.raises(ModelVersionError):
        open_version(output)


@pytest.mark.parametrize(
    ("free", "in_version"),
    [
        pytest.param(CHECKPOINT_DOES_NOT_FIT, False, id="checkpoint"),
        pytest.param(VERSION_DOES_NOT_FIT, True, id="version"),
    ],
)
def test_a_full_disk_fails_the_run_naming_the_folder(
    small_disk: SmallDisk, data_file: Path, earlier: tuple[Path, str], free: int, in_version: bool
) -> None:
    small_disk.grow()
    output = small_disk.path / f"second-{free}"
    stages: list[str] = []

    def note(event: TrainEvent) -> None:
        if event.kind == "stage":
            stages.append(event.message)

    small_disk.leave_free(free)
    with pytest.raises(DiskFullError) as failure:
        run_training(TrainJob(data=data_file, output=output, template="tiny-random", settings=SETTINGS), on_event=note)
    assert "Training" in stages
    assert ("Saving model version" in stages) is in_version  # where it failed: a checkpoint, or the version
    assert failure.value.code == "DISK_FULL"
    assert f"holding {output}.partial " in failure.value.message
    _assert_not_a_version(output)
    _assert_intact(earlier)


@pytest.mark.soak  # a second `tuneloom` process: 12-30 s
def test_a_full_disk_while_writing_the_version_is_one_line_from_the_cli(
    small_disk: SmallDisk, data_file: Path, earlier: tuple[Path, str]
) -> None:
    small_disk.grow()
    output = small_disk.path / "third"
    small_disk.leave_free(VERSION_DOES_NOT_FIT)
    result = run_cli(
        "train", str(data_file), "--template", "tiny-random", "--output", str(output), "--trainer-config",
        '{"num_train_epochs": 2, "per_device_train_batch_size": 8, "learning_rate": 0.05}',
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    saving = result.stderr.index("Saving model version")  # every checkpoint fitted; the version did not
    assert f"The disk is full: no space left on the file system holding {output}.partial " in result.stderr[saving:]
    _assert_not_a_version(output)
    _assert_intact(earlier)


@pytest.mark.soak  # a server and two training runs: 60-120 s on the shared 2-core machine
@pytest.mark.parametrize(
    ("backend", "free"),
    [
        pytest.param("sqlite", VERSION_DOES_NOT_FIT, id="sqlite-version"),
        pytest.param("postgresql", VERSION_DOES_NOT_FIT, marks=NEEDS_POSTGRES, id="postgresql-version"),
        # a few KB free is too little for SQLite's own writes there: this case needs the database elsewhere
        pytest.param("postgresql", CHECKPOINT_DOES_NOT_FIT, marks=NEEDS_POSTGRES, id="postgresql-checkpoint"),
    ],
)
def test_a_full_data_dir_fails_the_job_and_the_server_serves_on(small_disk: SmallDisk, backend: str, free: int) -> None:
    """A real server whose data dir is on the small disk: the first version fits, the second does not.

    On SQLite the database shares the full disk too, and must still record the failure (it used to
    wait forever for space that the failed run's own files held).
    """
    small_disk.grow()
    root = small_disk.path / f"{backend}-{free}"
    root.mkdir()
    with running_processes(root, backend) as processes:
        _, url = processes.serve("--workers", "1")
        model, headers, dataset_version = prepare_model(url, processes.data_dir)
        first = _trained(f"{model}/versions/{queue(model, headers, dataset_version, steps=6)}", headers)
        answer = _predict(model, headers, first)
        assert answer.status_code == 200, answer.text

        small_disk.leave_free(free)
        second = f"{model}/versions/{queue(model, headers, dataset_version, steps=6)}"
        status = _finished(second, headers)
        assert status["name"] == "MODEL_TRAINING_FAILED", status
        assert status["message"].startswith("DISK_FULL: The disk is full"), status
        assert str(processes.data_dir) not in status["message"]  # the data dir's place is the server's business
        assert not (processes.data_dir / "model-versions" / second.rsplit("/", 1)[1]).exists()

        assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
        assert _predict(model, headers, first).json() == answer.json()  # the earlier version serves on
        inputs = httpx.get(f"{url}/api/apps/shop/datasets/reviews/inputs", headers=headers)
        assert inputs.status_code == 200 and len(inputs.json()) > 0
        version = httpx.get(f"{url}/api/apps/shop/datasets/reviews/versions/{dataset_version}", headers=headers)
        assert version.json()["state"] == "READY"


@pytest.mark.soak  # a server: 10-20 s on the shared 2-core machine
def test_a_full_database_disk_is_a_507_saying_so_and_reads_go_on(small_disk: SmallDisk) -> None:
    """SQLite in the data dir: a write on the full disk is refused naming the disk, not "database unavailable"."""
    small_disk.grow()
    root = small_disk.path / "database"
    root.mkdir()
    with running_processes(root, "sqlite") as processes:
        _, url = processes.serve("--workers", "0")
        _assert_writes_refused_while_full(url, api_key(processes.data_dir), small_disk)


@pytest.mark.soak
@NEEDS_POSTGRES
def test_a_full_postgresql_tablespace_is_a_507_saying_so_and_reads_go_on(tmp_path: Path) -> None:
    """PostgreSQL's `apps` table in a tablespace on a full disk: SQLSTATE 53100 is the same 507.

    Only a table moves there: PostgreSQL itself stops when its own WAL cannot be written, which no
    server could answer for; a table that cannot grow is what a full data volume gives a client.
    """
    with running_processes(tmp_path, "postgresql") as processes, _postgres_tablespace() as (disk, tablespace):
        _, url = processes.serve("--workers", "0")
        with _apps_table_in(tablespace):
            _assert_writes_refused_while_full(url, api_key(processes.data_dir), disk)


def _assert_writes_refused_while_full(url: str, key: str, disk: SmallDisk) -> None:
    """Fill `disk`: creating an app becomes a 507 naming the disk, reads go on, and writes work once it has room."""
    headers = {"Authorization": f"Key {key}"}
    assert httpx.post(f"{url}/api/apps", json={"id": "shop"}, headers=headers).status_code == 201
    disk.leave_free(0)
    created, refused = _create_apps_until_refused(url, headers)
    assert refused.status_code == 507, refused.text
    assert refused.json()["code"] == "DISK_FULL"
    assert refused.json()["message"].startswith("the disk holding the server's database is full: nothing was saved")
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
    listed = httpx.get(f"{url}/api/apps", headers=headers).json()
    assert sorted(app["id"] for app in listed) == sorted(["shop", *created])
    disk.grow()
    assert httpx.post(f"{url}/api/apps", json={"id": "more"}, headers=headers).status_code == 201


def _create_apps_until_refused(url: str, headers: dict[str, str]) -> tuple[list[str], httpx.Response]:
    """Create apps until one is refused: the ids that were created, and the refusal.

    A full SQLite file refuses the first write; a PostgreSQL table first fills the free room left
    in the pages it already has.
    """
    created: list[str] = []
    for number in range(2_000):
        answer = httpx.post(f"{url}/api/apps", json={"id": f"app-{number}"}, headers=headers)
        if answer.status_code != 201:
            return created, answer
        created.append(f"app-{number}")
    raise AssertionError("2,000 apps fitted on a full disk")


@contextlib.contextmanager
def _postgres_tablespace() -> Iterator[tuple[SmallDisk, str]]:
    """A tablespace on a tmpfs of its own (owned by `postgres`, where the server can reach it), dropped after."""
    assert POSTGRES_URL
    if make_url(POSTGRES_URL).host not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip("a tablespace on a small disk needs PostgreSQL on this machine")
    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no 'postgres' user here to own the tablespace's folder")
    name = f"small_disk_{os.getpid()}"
    engine = create_engine(make_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    path = Path(tempfile.mkdtemp(prefix="tuneloom-tablespace-"))
    try:
        with _tmpfs(path, "mode=0700", f"uid={owner.pw_uid}", f"gid={owner.pw_gid}") as disk:
            with engine.connect() as conn:
                conn.execute(text(f"CREATE TABLESPACE {name} LOCATION '{path}'"))
            try:
                yield disk, name
            finally:
                disk.grow()
                with engine.connect() as conn:
                    conn.execute(text(f"DROP TABLESPACE IF EXISTS {name}"))
    finally:
        engine.dispose()
        path.rmdir()


@contextlib.contextmanager
def _apps_table_in(tablespace: str) -> Iterator[None]:
    """The test database's `apps` table and its indexes in `tablespace`, moved back to the default after."""
    assert POSTGRES_URL
    engine = create_engine(make_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            _move_apps(conn, tablespace)
        try:
            yield
        finally:
            with engine.connect() as conn:
                _move_apps(conn, "pg_default")
    finally:
        engine.dispose()


def _move_apps(conn: Connection, tablespace: str) -> None:
    conn.execute(text(f"ALTER TABLE apps SET TABLESPACE {tablespace}"))
    for (index,) in conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'apps'")).all():
        conn.execute(text(f'ALTER INDEX "{index}" SET TABLESPACE {tablespace}'))


def _finished(version_url: str, headers: dict[str, str]) -> dict[str, Any]:
    """The run's final status, once it has one."""
    return dict(wait_for(lambda: (s := state(version_url, headers)["status"])["name"] not in RUNNING and s, "the run"))


def _trained(version_url: str, headers: dict[str, str]) -> str:
    status = _finished(version_url, headers)
    assert status["name"] == "MODEL_TRAINED", status
    return version_url.rsplit("/", 1)[1]


def _predict(model: str, headers: dict[str, str], version: str) -> httpx.Response:
    body = {"inputs": [PROMPT], "version": version, "inference_params": {"max_tokens": 8, "temperature": 0}}
    return httpx.post(f"{model}/predict", json=body, headers=headers, timeout=120)
