"""The schema: migrations apply from empty, match the models, and tolerate concurrent starters."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from tests.test_store_support import BACKENDS, fresh_database, ready_dataset_version

from tuneloom.store import jobs
from tuneloom.store.db import Database, default_url, normalize_url, open_database
from tuneloom.store.migrations import (
    alembic_config,
    current_revision,
    head_revision,
    upgrade_database,
    upgrade_to_head,
)
from tuneloom.store.models import Base
from tuneloom.store.workers import Capacity
from tuneloom.templates import resolve_settings

TABLES = {
    "apps",
    "api_keys",
    "datasets",
    "uploads",
    "inputs",
    "dataset_versions",
    "models",
    "model_versions",
    "metric_points",
    "log_lines",
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_migrations_apply_from_empty_and_match_the_models(backend: str, tmp_path: Path) -> None:
    db = fresh_database(backend, tmp_path / "data", migrate=False)
    assert current_revision(db) is None
    upgrade_to_head(db.url)
    assert current_revision(db) == head_revision()
    assert set(inspect(db.engine).get_table_names()) >= TABLES
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models.py and the migrations disagree: {diff}"
    upgrade_database(db)  # a second start finds nothing to do
    assert current_revision(db) == head_revision()
    db.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_starters_both_succeed(backend: str, tmp_path: Path) -> None:
    db = fresh_database(backend, tmp_path / "data", migrate=False)
    errors: list[BaseException] = []

    def start() -> None:
        try:
            upgrade_to_head(db.url)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert current_revision(db) == head_revision()
    db.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_run_queued_before_gpu_counts_still_waits_for_a_gpu_per_process(backend: str, tmp_path: Path) -> None:
    """Revision 0006 reads each unfinished run's GPU count from its settings, and downgrades cleanly."""
    db = fresh_database(backend, tmp_path / "data")
    dsv = ready_dataset_version(db, tmp_path / "data")
    queued = []
    for processes in (4, 1):  # the four-process run first: a one-GPU slot must skip it
        settings = resolve_settings("tiny-random", {"distributed": {"num_processes": processes}}).to_dict()
        queued.append(jobs.enqueue(db, "a", "m", dataset_version_id=dsv, template="tiny-random", settings=settings).id)
    cfg = alembic_config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005")
    assert "needs_gpu_count" not in {c["name"] for c in inspect(db.engine).get_columns("model_versions")}
    upgrade_database(db)
    one_gpu, four_gpus = (Capacity(gpu_count=n, gpu_memory_mb=80_000, cpu_memory_mb=256_000) for n in (1, 4))
    narrow = jobs.claim_next(db, "box:1:0", 60, capacity=one_gpu)
    wide = jobs.claim_next(db, "big:1:0", 60, capacity=four_gpus)
    assert narrow is not None and wide is not None
    assert [wide.id, narrow.id] == queued
    db.dispose()


def test_sqlite_defaults_wal_and_foreign_keys(tmp_path: Path) -> None:
    db = open_database(data_dir=tmp_path / "data")
    assert db.url == default_url(tmp_path / "data")
    assert (tmp_path / "data" / "tuneloom.db").is_file()
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    db.dispose()


def test_urls_are_normalised_to_psycopg() -> None:
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:////x/y.db") == "sqlite:////x/y.db"
    with pytest.raises(ValueError, match="in-memory"):
        Database("sqlite://")
