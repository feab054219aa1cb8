"""Persistence for the platform server: the database (SQLAlchemy 2 + Alembic) and the data dir's files.

Modules, each a set of plain functions over a `Database` (every call is one short transaction and
returns detached, read-only-by-convention ORM objects):

- `db`         — `open_database(url | data_dir)`: SQLite (WAL, foreign keys) or PostgreSQL (psycopg 3)
- `migrations` — `upgrade_to_head(url)`: the Alembic environment shipped in the package
- `artifacts`  — `Artifacts(data_dir)`: file locations derived from ids, atomic writes
- `apps`, `keys`, `datasets`, `dataset_versions`, `registry` (models and versions), `jobs` (the
  training queue), `telemetry` (metrics and logs)

Errors a request can cause are `TuneloomError`s: `NotFoundError` (404), `ConflictError` (409),
`InvalidIdError` and `SettingsError` (422), `jobs.LeaseLostError` for workers.
"""

from tuneloom.store.artifacts import Artifacts, UnsafePathError
from tuneloom.store.db import Database, default_url, open_database
from tuneloom.store.ids import ConflictError, InvalidIdError, NotFoundError, check_id, new_id
from tuneloom.store.migrations import upgrade_to_head
from tuneloom.store.models import DatasetVersionState, TrainingStatus

__all__ = [
    "Artifacts",
    "ConflictError",
    "Database",
    "DatasetVersionState",
    "InvalidIdError",
    "NotFoundError",
    "TrainingStatus",
    "UnsafePathError",
    "check_id",
    "default_url",
    "new_id",
    "open_database",
    "upgrade_to_head",
]
