"""What every request needs: the database, the key pepper, the data dir, the limits — built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuneloom.generate.params import MAX_TOKENS_LIMIT
from tuneloom.server.limit_defaults import (
    DEFAULT_EXPORTS_CACHE_BYTES,
    DEFAULT_MAX_BATCH_TOKENS,
    DEFAULT_MAX_GENERATIONS_PER_KEY,
    DEFAULT_MAX_JSON_BYTES,
    DEFAULT_UPLOAD_IDLE_S,
)
from tuneloom.store.artifacts import Artifacts, prepare_data_dir
from tuneloom.store.db import Database, open_database
from tuneloom.store.keys import check_pepper, load_pepper

DEFAULT_MAX_UPLOAD_BYTES = 200 * 1024 * 1024
DEFAULT_MODEL_CACHE_BYTES = 4 * 1024**3


@dataclass
class ServerContext:
    db: Database
    pepper: bytes
    artifacts: Artifacts
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    model_cache_bytes: int = DEFAULT_MODEL_CACHE_BYTES
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    max_generations_per_key: int = DEFAULT_MAX_GENERATIONS_PER_KEY
    max_tokens_limit: int = MAX_TOKENS_LIMIT
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS  # inputs × (prompt + max_tokens) per request
    upload_idle_s: float = DEFAULT_UPLOAD_IDLE_S  # the longest an upload may send nothing (408 after)
    exports_cache_bytes: int = DEFAULT_EXPORTS_CACHE_BYTES  # built downloads kept (`server.exports`)
    inference_backend: str = "transformers"  # resolved by `serve --backend` (tuneloom.server.backends)
    node_token: str | None = None  # set when this server generates for others (`serve --advertise-url`)

    @classmethod
    def open(
        cls,
        data_dir: Path,
        database_url: str | None = None,
        *,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        model_cache_bytes: int = DEFAULT_MODEL_CACHE_BYTES,
        max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
        max_generations_per_key: int = DEFAULT_MAX_GENERATIONS_PER_KEY,
        max_tokens_limit: int = MAX_TOKENS_LIMIT,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        upload_idle_s: float = DEFAULT_UPLOAD_IDLE_S,
        exports_cache_bytes: int = DEFAULT_EXPORTS_CACHE_BYTES,
        checked_pepper: bool = True,
    ) -> ServerContext:
        """Open (and migrate) the database; the pepper and artifacts live in the data dir.

        `checked_pepper=False` skips `check_pepper`, for what never hashes a key (listing, revoking); those
        only read, so a read-only data dir serves them.
        """
        prepare_data_dir(data_dir, writable=checked_pepper)
        db = open_database(database_url, data_dir=data_dir)
        limits = (max_json_bytes, max_generations_per_key, max_tokens_limit)
        pepper = check_pepper(db, data_dir) if checked_pepper else load_pepper(data_dir)
        ctx = cls(db, pepper, Artifacts(data_dir), max_upload_bytes, model_cache_bytes, *limits)
        ctx.max_batch_tokens, ctx.upload_idle_s = max_batch_tokens, upload_idle_s
        ctx.exports_cache_bytes = exports_cache_bytes
        return ctx
