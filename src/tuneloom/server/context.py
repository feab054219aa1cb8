"""What every request needs: the database, the key pepper, the data dir — built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuneloom.store.artifacts import Artifacts
from tuneloom.store.db import Database, open_database
from tuneloom.store.keys import load_pepper


@dataclass
class ServerContext:
    db: Database
    pepper: bytes
    artifacts: Artifacts

    @classmethod
    def open(cls, data_dir: Path, database_url: str | None = None) -> ServerContext:
        """Open (and migrate) the database; the pepper and artifacts live in the data dir."""
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(open_database(database_url, data_dir=data_dir), load_pepper(data_dir), Artifacts(data_dir))
