"""Apps and API keys: hashed storage, constant-time checks, immediate revocation, cascading deletes."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from tests.conftest import run_cli
from tests.test_store_support import SETTINGS, examples, make_db_fixture, report_for

from tuneloom.store import apps, dataset_versions, datasets, jobs, keys, registry, telemetry
from tuneloom.store.artifacts import Artifacts
from tuneloom.store.db import Database
from tuneloom.store.ids import ConflictError, InvalidIdError, NotFoundError
from tuneloom.store.models import (
    ApiKey,
    App,
    Dataset,
    DatasetVersion,
    Input,
    KeyPepperCheck,
    LogLine,
    MetricPoint,
    Model,
    ModelVersion,
    TrainingStatus,
    Upload,
)

db = make_db_fixture()
PEPPER = b"p" * 32


def test_apps_create_list_get_and_refuse_bad_or_taken_ids(db: Database) -> None:
    app = apps.create_app(db, "Demo", "demo")
    assert (app.id, app.name) == ("demo", "Demo")
    assert apps.get_app(db, "demo").created_at.tzinfo is not None
    random_app = apps.create_app(db, "no id given")
    assert [a.id for a in apps.list_apps(db)] == ["demo", random_app.id]
    assert [a.id for a in apps.list_apps(db, ["demo"])] == ["demo"]
    with pytest.raises(ConflictError):
        apps.create_app(db, "again", "demo")
    with pytest.raises(InvalidIdError):
        apps.create_app(db, "bad", "../demo")
    with pytest.raises(NotFoundError):
        apps.get_app(db, "nope")


def test_keys_are_stored_hashed_and_checked(db: Database) -> None:
    apps.create_app(db, "a", "a")
    admin_key, admin = keys.create_key(db, None, PEPPER)
    app_key, scoped = keys.create_key(db, "a", PEPPER)
    assert admin.app_id is None and scoped.app_id == "a"
    assert admin_key.startswith(admin.prefix) and len(admin.prefix) < 16
    with db.read() as session:
        stored = [f"{k.id} {k.prefix} {k.hash}" for k in session.scalars(select(ApiKey))]
    for plaintext in (admin_key, app_key):
        secret = plaintext.split("_", 2)[2]
        assert all(secret not in row for row in stored)
    assert keys.authenticate(db, app_key, PEPPER).id == scoped.id  # type: ignore[union-attr]
    assert keys.authenticate(db, admin_key, PEPPER).app_id is None  # type: ignore[union-attr]
    assert keys.authenticate(db, app_key, b"other pepper" * 3) is None
    assert keys.authenticate(db, app_key[:-1] + ("A" if app_key[-1] != "A" else "B"), PEPPER) is None
    for junk in ("", "tl_", "tl_x_y", "Bearer x", "tl_../../etc_x", "x" * 1000, admin_key + "x"):
        assert keys.authenticate(db, junk, PEPPER) is None


def test_plaintext_never_reaches_the_sqlite_file(tmp_path: Path) -> None:
    from tuneloom.store.db import open_database

    database = open_database(data_dir=tmp_path / "data")
    plaintext, _ = keys.create_key(database, None, PEPPER)
    database.dispose()
    secret = plaintext.split("_", 2)[2].encode()
    for file in (tmp_path / "data").iterdir():
        assert secret not in file.read_bytes(), file


def test_revocation_is_immediate_and_idempotent(db: Database) -> None:
    plaintext, record = keys.create_key(db, None, PEPPER)
    assert keys.authenticate(db, plaintext, PEPPER) is not None
    first = keys.revoke_key(db, record.id).revoked_at
    assert keys.authenticate(db, plaintext, PEPPER) is None
    assert keys.revoke_key(db, record.id).revoked_at == first
    assert [k.id for k in keys.list_keys(db, admin_only=True)] == [record.id]
    with pytest.raises(NotFoundError):
        keys.revoke_key(db, "nokey")


def test_key_for_a_missing_app_is_refused(db: Database) -> None:
    """`keys create --app demo` on a fresh data dir (as the README lists it first) says how to make the app."""
    with pytest.raises(NotFoundError, match=r"app 'ghost' not found.*create it first.*POST /api/apps"):
        keys.create_key(db, "ghost", PEPPER)


def test_pepper_file_is_created_once_and_private(tmp_path: Path) -> None:
    first = keys.load_pepper(tmp_path)
    assert len(first) == 32 and keys.load_pepper(tmp_path) == first
    assert (tmp_path / keys.PEPPER_FILE).stat().st_mode & 0o077 == 0


def test_a_second_data_dirs_own_pepper_is_refused_naming_the_file_to_copy(db: Database, tmp_path: Path) -> None:
    """Servers on one database with different pepper files would turn every key into a silent 401 on one of them."""
    first, second = tmp_path / "first", tmp_path / "second"
    pepper = keys.check_pepper(db, first)  # the first server records its pepper
    assert pepper == keys.load_pepper(first) and keys.check_pepper(db, first) == pepper  # and starts again
    keys.load_pepper(second)  # a pepper of its own, made before it met this database
    with pytest.raises(ConflictError) as refused:
        keys.check_pepper(db, second)
    message = refused.value.message
    assert f"'{second / keys.PEPPER_FILE}' is not the key pepper this database's API keys were made with" in message
    assert f"the one {socket.gethostname()}:{first.resolve()} has" in message and "copy secrets/key-pepper" in message
    (second / keys.PEPPER_FILE).write_bytes((first / keys.PEPPER_FILE).read_bytes())  # what the message says to do
    assert keys.check_pepper(db, second) == pepper


def test_a_pepper_made_for_a_database_that_already_has_keys_is_refused(db: Database, tmp_path: Path) -> None:
    """A database from before the fingerprint, opened from a new data dir: its new pepper cannot be the keys'."""
    apps.create_app(db, "a", "a")
    keys.create_key(db, "a", PEPPER)  # made with a pepper the database never recorded
    with pytest.raises(ConflictError) as refused:
        keys.check_pepper(db, tmp_path / "new")
    assert "(the one its existing keys were made with)" in refused.value.message
    with db.read() as session:
        assert session.get(KeyPepperCheck, 1) is None  # the wrong pepper was not recorded


def test_a_server_with_another_pepper_on_the_database_stops_with_the_reason(tmp_path: Path) -> None:
    """Through the real CLI: `keys create` (as `serve`) on a second data dir sharing the first's database."""
    first, second = tmp_path / "first", tmp_path / "second"
    assert run_cli("keys", "create", "--data-dir", str(first)).returncode == 0
    shared = ["--database-url", f"sqlite:///{first / 'tuneloom.db'}"]
    refused = run_cli("keys", "create", "--data-dir", str(second), *shared)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "not the key pepper this database's API keys were made with" in " ".join(refused.stderr.split())
    listed = run_cli("keys", "list", "--data-dir", str(second), *shared)  # needs no pepper: works from anywhere
    assert listed.returncode == 0 and "tl_" in listed.stdout, listed.stderr


def _populate(db: Database, artifacts: Artifacts, app_id: str) -> str:
    apps.create_app(db, app_id, app_id)
    keys.create_key(db, app_id, PEPPER)
    datasets.create_dataset(db, app_id, "ds")
    items = examples(5)
    datasets.add_upload(db, app_id, "ds", report_for(items), items)
    version = dataset_versions.create_version(db, app_id, "ds")
    dataset_versions.build_version(db, artifacts, version.id)
    registry.create_model(db, app_id, "m")
    job = jobs.enqueue(db, app_id, "m", dataset_version_id=version.id, template="tiny-random", settings=SETTINGS)
    telemetry.add_metrics(db, job.id, [{"step": 1, "loss": 2.0}])
    telemetry.append_logs(db, job.id, [("info", "hello")])
    return job.id


MODELS = (App, ApiKey, Dataset, Upload, Input, DatasetVersion, Model, ModelVersion, MetricPoint, LogLine)


def _counts(db: Database) -> dict[str, int]:
    with db.read() as session:
        return {m.__tablename__: int(session.scalar(select(func.count()).select_from(m)) or 0) for m in MODELS}


def test_deleting_an_app_cascades_to_everything_it_owns(db: Database, tmp_path: Path) -> None:
    artifacts = Artifacts(tmp_path / "data")
    _populate(db, artifacts, "keep")
    job_id = _populate(db, artifacts, "gone")
    before = _counts(db)
    paths = apps.delete_app(db, "gone")
    after = _counts(db)
    assert all(after[name] * 2 == count for name, count in before.items()), (before, after)
    assert any(p.startswith("dataset-versions/") for p in paths) and f"checkpoints/{job_id}" in paths
    for p in paths:
        artifacts.remove(p)
    assert len(list((artifacts.root / "dataset-versions").iterdir())) == 1  # the kept app's snapshot
    with pytest.raises(NotFoundError):
        apps.delete_app(db, "gone")


def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(Exception, match=r"(?i)foreign key"), db.write() as session:
        session.execute(
            text("INSERT INTO models (app_id, id, model_type_id, created_at) VALUES ('x', 'y', 'z', :t)"),
            {"t": "2020-01-01 00:00:00"},
        )
    assert TrainingStatus.MODEL_TRAINING_CANCELLED.code == 21120
