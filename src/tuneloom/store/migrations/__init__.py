"""The schema's Alembic environment, shipped inside the package and applied on start.

`upgrade_to_head(url)` (or `upgrade_database(db)`) brings any database, empty or older, to the
newest revision. It runs in one transaction on the caller's engine, so SQLite gets the same pragmas
as everywhere else, and it is safe when several processes start at once (a server and its workers):
SQLite's `BEGIN IMMEDIATE` and a PostgreSQL advisory lock let one migrate while the others wait,
after which they find nothing left to do. DDL is transactional on both, so a failed upgrade leaves
the previous schema intact. New revisions are written next to `versions/0001_initial.py`;
`tests/test_store_migrations.py` fails while they and `models.py` disagree.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from tuneloom.store.db import Database

HERE = Path(__file__).resolve().parent
_PG_LOCK_KEY = 7_305_223_115  # any constant shared by all tuneloom processes


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade_database(db: Database) -> None:
    """Apply every revision the database lacks, in one transaction that other starters wait on."""
    cfg = alembic_config()
    with db.engine.execution_options(tuneloom_sqlite_begin="IMMEDIATE").begin() as conn:
        if db.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def upgrade_to_head(url: str) -> None:
    """Migrate the database at `url` to the newest schema (what `tuneloom serve` does on start)."""
    db = Database(url)
    try:
        upgrade_database(db)
    finally:
        db.dispose()
