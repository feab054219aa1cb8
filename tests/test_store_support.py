"""Fixtures shared by the tests/test_store_*.py files (no tests here).

`make_db_fixture()` gives each test a freshly migrated database on every backend: a SQLite file
under tmp_path always, and PostgreSQL too when TUNELOOM_TEST_POSTGRES_URL names a server (its
`public` schema is wiped before each test, so point it at a throwaway database).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text

from tuneloom.data.types import DataReport, Example
from tuneloom.store import apps, dataset_versions, datasets, registry
from tuneloom.store.artifacts import Artifacts
from tuneloom.store.db import Database, open_database


def _database_of_this_process(url: str | None) -> str | None:
    """Under pytest-xdist each worker gets its own database beside the named one (`<name>_gw0`, ...).

    The fixtures wipe the schema before each test, so two workers on one database would wipe each
    other's tables mid-test.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not url or not worker:
        return url
    server = make_url(url)
    name = f"{server.database}_{worker}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


POSTGRES_URL = _database_of_this_process(os.environ.get("TUNELOOM_TEST_POSTGRES_URL"))
# The shape TrainingSettings.to_dict() gives (the store checks the shape, the server validates values).
SETTINGS: dict[str, Any] = {
    "model_config": {},
    "quantization_config": {},
    "peft_config": {"r": 4},
    "tokenizer_config": {},
    "trainer_config": {"num_train_epochs": 1},
    "invalid_data_tolerance_percent": 5.0,
}
BACKENDS = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.skipif(not POSTGRES_URL, reason="TUNELOOM_TEST_POSTGRES_URL unset")),
]


def fresh_database(backend: str, data_dir: Path, *, migrate: bool = True) -> Database:
    if backend == "sqlite":
        return open_database(data_dir=data_dir, migrate=migrate)
    assert POSTGRES_URL
    wipe = Database(POSTGRES_URL)
    with wipe.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    wipe.dispose()
    return open_database(POSTGRES_URL, migrate=migrate)


def make_db_fixture() -> Callable[..., Iterator[Database]]:
    @pytest.fixture(params=BACKENDS)
    def db(request: Any, tmp_path: Path) -> Iterator[Database]:
        database = fresh_database(request.param, tmp_path / "data")
        yield database
        database.dispose()

    return db


def make_artifacts_fixture() -> Callable[..., Artifacts]:
    @pytest.fixture
    def artifacts(tmp_path: Path) -> Artifacts:
        (tmp_path / "data").mkdir(exist_ok=True)
        return Artifacts(tmp_path / "data")

    return artifacts


def examples(n: int, tag: str = "") -> list[Example]:
    return [
        Example(prompt=f"### Human: q{i}{tag} ### Assistant:", completion=f"a{i}{tag}", line=i + 1) for i in range(n)
    ]


def report_for(items: list[Example], invalid: int = 0, source: str = "data.txt") -> DataReport:
    return DataReport(
        source=source, format="txt", total_rows=len(items) + invalid, valid_rows=len(items), invalid_rows=invalid
    )


def ready_dataset_version(db: Database, data_dir: Path) -> str:
    """App "a" with model "m" and a READY dataset version of three examples (its id)."""
    apps.create_app(db, "a", "a")
    datasets.create_dataset(db, "a", "ds")
    items = examples(3)
    datasets.add_upload(db, "a", "ds", report_for(items), items)
    version = dataset_versions.create_version(db, "a", "ds")
    dataset_versions.build_version(db, Artifacts(data_dir), version.id)
    registry.create_model(db, "a", "m")
    return version.id
