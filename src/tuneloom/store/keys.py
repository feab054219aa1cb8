"""API keys: shown once, stored as a peppered SHA-256, checked in constant time.

A key reads `tl_<key id>_<secret>`: the id finds the row with an indexed lookup, the secret (32
random bytes, URL-safe base64) is what proves possession. The row keeps HMAC-SHA256(pepper, key)
and a short display prefix, never the key. A fast hash is enough because the secret has 256 bits
of entropy (a slow hash only helps against guessable passwords); the pepper, a file in the data
dir, means a leaked database alone is not enough to test key guesses offline.
Revocation is a timestamp checked on every `authenticate`, so it takes effect on the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import socket
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from tuneloom.errors import ConflictError, NotFoundError
from tuneloom.store.db import Database, fetch
from tuneloom.store.ids import InvalidIdError, check_id, new_id
from tuneloom.store.models import ApiKey, App, KeyPepperCheck, utcnow

KEY_PREFIX = "tl"
PEPPER_FILE = "secrets/key-pepper"
_DISPLAY_CHARS = 12  # "tl_" + the first characters of the id: enough to tell keys apart in a list
_DUMMY_HASH = "0" * 64


def load_pepper(data_dir: Path) -> bytes:
    """The data dir's pepper, created (readable by the owner only) the first time it is needed."""
    path = Path(data_dir) / PEPPER_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # fails if another process won the race: theirs is kept
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return bytes.fromhex(path.read_text().strip())


def check_pepper(db: Database, data_dir: Path) -> bytes:
    """The data dir's pepper, refused unless it is the one the database's keys were made with.

    Servers on separate data dirs share one database only with the same pepper file; with another,
    every key would be a silent 401 on that server. The database keeps a fingerprint of the first
    pepper (an HMAC of a constant: it tells peppers apart without revealing one) and who recorded it.
    A pepper made just now, for a database that already has keys, cannot be theirs: it is refused
    rather than recorded (a database from before the fingerprint, opened from a new data dir).
    """
    fresh = not (Path(data_dir) / PEPPER_FILE).exists()
    pepper = load_pepper(data_dir)
    fingerprint = hash_key("tuneloom key pepper check", pepper)
    with db.read() as session:
        recorded = session.get(KeyPepperCheck, 1)
        if recorded is None and fresh and session.scalars(select(ApiKey.id).limit(1)).first() is not None:
            raise _other_pepper(data_dir, "the one its existing keys were made with")
    if recorded is None:
        try:
            with db.write() as session:
                session.add(KeyPepperCheck(id=1, fingerprint=fingerprint, recorded_by=_where(data_dir)))
            return pepper
        except IntegrityError:  # a concurrent first start recorded its own: compare with that one
            with db.read() as session:
                recorded = session.get(KeyPepperCheck, 1)
    if recorded is not None and recorded.fingerprint != fingerprint:
        raise _other_pepper(data_dir, f"the one {recorded.recorded_by} has")
    return pepper


def _where(data_dir: Path) -> str:
    return f"{socket.gethostname()}:{Path(data_dir).resolve()}"[:255]


def _other_pepper(data_dir: Path, expected: str) -> ConflictError:
    return ConflictError(
        f"'{Path(data_dir) / PEPPER_FILE}' is not the key pepper this database's API keys were made with "
        f"({expected}), so no key would be accepted here; copy secrets/key-pepper from that data dir "
        "(every server on one database needs the same file)"
    )


def hash_key(plaintext: str, pepper: bytes) -> str:
    return hmac.new(pepper, plaintext.encode("utf-8"), hashlib.sha256).hexdigest()


def create_key(db: Database, app_id: str | None, pepper: bytes) -> tuple[str, ApiKey]:
    """A new key for one app (or an admin key when `app_id` is None): (plaintext, stored record)."""
    key_id = new_id()
    plaintext = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKey(
        id=key_id,
        app_id=None if app_id is None else check_id(app_id, "app id"),
        prefix=plaintext[:_DISPLAY_CHARS],
        hash=hash_key(plaintext, pepper),
    )
    with db.write() as session:
        if app_id is not None and session.get(App, app_id) is None:
            raise NotFoundError(
                f"app '{app_id}' not found: a key can only be scoped to an existing app; "
                "create it first with an admin key (POST /api/apps, or Client.create_app)",
                details={"key": "app_id"},
            )
        session.add(record)
    return plaintext, record


def authenticate(db: Database, plaintext: str, pepper: bytes) -> ApiKey | None:
    """The key's record if `plaintext` is a live key, else None (malformed, unknown, wrong or revoked)."""
    key_id = key_id_of(plaintext)
    record = None
    if key_id is not None:
        with db.read() as session:
            record = session.get(ApiKey, key_id)
    expected = record.hash if record is not None else _DUMMY_HASH
    matches = hmac.compare_digest(hash_key(plaintext, pepper), expected)
    if record is None or not matches or record.revoked_at is not None:
        return None
    return record


def revoke_key(db: Database, key_id: str, *, at: datetime | None = None) -> ApiKey:
    """Revoke a key from now on (idempotent: the first revocation time is kept)."""
    with db.write() as session:
        record = fetch(session, ApiKey, key_id, "key")
        if record.revoked_at is None:
            record.revoked_at = at or utcnow()
    return record


def list_keys(db: Database, app_id: str | None = None, *, admin_only: bool = False) -> list[ApiKey]:
    """Keys of one app, or admin keys (`admin_only`), or all; revoked ones included."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if admin_only:
        query = query.where(ApiKey.app_id.is_(None))
    elif app_id is not None:
        query = query.where(ApiKey.app_id == app_id)
    with db.read() as session:
        return list(session.scalars(query))


def key_id_of(plaintext: object) -> str | None:
    """The key id inside a plaintext key (`tl_<id>_<secret>`), or None if it is not shaped like one."""
    if not isinstance(plaintext, str) or len(plaintext) > 200:
        return None
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        return None
    try:
        return check_id(parts[1], "key id")
    except InvalidIdError:
        return None
