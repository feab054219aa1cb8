"""Connecting to the database: SQLite in the data dir by default, PostgreSQL when a URL says so.

Every store function takes a `Database` and runs in its own short transaction: `read()` for
queries, `write()` for anything that changes rows. On SQLite `write()` starts with
`BEGIN IMMEDIATE`, taking the single writer lock up front, so a read-then-update (claiming a job,
handing out input numbers) can never interleave with another writer or fail half-way with
SQLITE_BUSY; `busy_timeout` makes the others wait instead of erroring. WAL lets readers go on
while someone writes. On PostgreSQL transactions are READ COMMITTED and the functions that need
more lock the rows they change (`FOR UPDATE`, `SKIP LOCKED` for the queue).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tuneloom.errors import NotFoundError, TuneloomError
from tuneloom.store.artifacts import prepare_data_dir
from tuneloom.store.ids import check_id

DB_FILE = "tuneloom.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
POSTGRES_CONNECT_TIMEOUT_S = 5  # an unreachable database answers 503 in seconds, not after the OS gives up
_BEGIN_MODE = "tuneloom_sqlite_begin"
SQLITE_FULL = 13  # "database or disk is full"
POSTGRES_DISK_FULL = "53100"  # SQLSTATE disk_full
# What an `Integer` column holds on PostgreSQL (int4): a number past it in a query is a DataError
# there (and past 2**63 an OverflowError on SQLite), so the API refuses it as a 422 naming the field.
MIN_INTEGER = -(2**31)
MAX_INTEGER = 2**31 - 1

Row = TypeVar("Row")
SUPPORTED_BACKENDS = ("sqlite", "postgresql")


class InvalidDatabaseUrlError(TuneloomError):
    """`--database-url` is not a URL, or names a database tuneloom does not run on."""

    code = "INVALID_DATABASE_URL"


class DatabaseUnavailableError(TuneloomError):
    """The database could not be reached when opening it (down, wrong host or port, wrong credentials)."""

    code = "DATABASE_UNAVAILABLE"


def fetch(session: Session, model: type[Row], object_id: str, what: str, *, lock: bool = False) -> Row:
    """The row with this id, or NotFoundError naming it (`what` is e.g. "app", "model version")."""
    row = session.get(model, check_id(object_id, f"{what} id"), with_for_update=lock)
    if row is None:
        raise NotFoundError(f"{what} '{object_id}' not found")
    return row


def default_url(data_dir: Path) -> str:
    """The embedded database: one SQLite file inside the data dir."""
    return f"sqlite:///{(Path(data_dir).resolve() / DB_FILE).as_posix()}"


def normalize_url(url: str) -> str:
    """Accept `postgresql://` and `postgres://` as users write them; the driver is always psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def is_unavailable(err: BaseException) -> bool:
    """True when `err` says the database cannot be reached right now (down, restarting, connection cut).

    Such errors are transient: the server answers 503 and workers wait and retry, while a wrong
    query (a bug) stays an error. `pool_pre_ping` replaces dead pooled connections once it is back.
    """
    if isinstance(err, OperationalError | InterfaceError):
        return True
    return isinstance(err, DBAPIError) and bool(err.connection_invalidated)


def is_disk_full(err: BaseException) -> bool:
    """True when the database could not write because the disk it lives on is full.

    Such an error is also an `OperationalError` (so `is_unavailable`), but "stopped, restarting or
    unreachable" would send an operator looking in the wrong place.
    """
    orig = getattr(err, "orig", err)
    return (
        getattr(orig, "sqlite_errorcode", None) == SQLITE_FULL or getattr(orig, "sqlstate", None) == POSTGRES_DISK_FULL
    )


class Database:
    """An engine plus session factory; `read()` / `write()` give a session inside one transaction."""

    def __init__(self, url: str, *, echo: bool = False):
        self.url = normalize_url(url)
        self.engine = _make_engine(self.url, echo=echo)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._immediate = self.engine.execution_options(**{_BEGIN_MODE: "IMMEDIATE"})
        self._snapshot = (
            self.engine if self.is_sqlite else self.engine.execution_options(isolation_level="REPEATABLE READ")
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def read(self, *, snapshot: bool = False) -> Iterator[Session]:
        """A session for queries; objects stay usable (detached) after it closes.

        With `snapshot`, every query in it sees the database as of its first one (REPEATABLE READ on
        PostgreSQL; any SQLite read transaction in WAL mode already does), for multi-query reads
        such as copying a dataset's inputs into a version.
        """
        with self._sessions(bind=self._snapshot if snapshot else self.engine) as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on any exception."""
        with self._sessions(bind=self._immediate) as session, session.begin():
            yield session

    def ping(self) -> None:
        """Run a trivial query; raises (see `is_unavailable`) when the database cannot be reached."""
        with self.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(url: str | None = None, *, data_dir: Path | None = None, migrate: bool = True) -> Database:
    """Open (and by default migrate to head) the database at `url`, or the SQLite file in `data_dir`."""
    if url is None:
        if data_dir is None:
            raise ValueError("open_database needs a database URL or a data dir")
        prepare_data_dir(Path(data_dir))  # SQLite writes beside its file (WAL) even to read: say so by name
        url = default_url(Path(data_dir))
    db = Database(url)
    if migrate:
        from tuneloom.store.migrations import upgrade_database

        try:
            upgrade_database(db)
        except (OperationalError, InterfaceError) as err:  # the first connection: a start-up error, not a 503
            db.dispose()
            reason = str(err.orig or err).strip().splitlines()[0]
            raise DatabaseUnavailableError(
                f"cannot open the database at {shown_url(url)}: {reason}", details={"url": shown_url(url)}
            ) from None
    return db


def require_existing_database(url: str | None, data_dir: Path) -> None:
    """Refuse a data dir without a database, for commands that only read or revoke (`keys list`,
    `workers`): a mistyped --data-dir must not become a new, empty database answering "no keys"."""
    if url is None and not (data_dir / DB_FILE).is_file():
        raise NotFoundError(
            f"{data_dir} holds no tuneloom database ({DB_FILE}): give the --data-dir that `tuneloom serve` "
            "uses, or its --database-url",
            details={"data_dir": str(data_dir)},
        )


def parse_url(url: str) -> URL:
    """The URL parsed and checked to name SQLite or PostgreSQL, the two databases tuneloom runs on.

    Anything else failed deep inside SQLAlchemy (a missing MySQL driver, "Could not parse") with no
    word of which setting was wrong.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidDatabaseUrlError(
            "the database URL (--database-url) is not a URL: use postgresql://user:password@host:port/database, "
            "or leave it out for SQLite in the data dir"
        ) from None
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
        raise InvalidDatabaseUrlError(
            f"the database URL (--database-url) {shown_url(url)} names a {parsed.get_backend_name()!r} database: "
            "tuneloom runs on postgresql://… or on SQLite (no URL)"
        )
    return parsed


def shown_url(url: str) -> str:
    """The URL as it may be printed: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable URL)"


def _make_engine(url: str, *, echo: bool) -> Engine:
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        connect_args = {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S}
        return create_engine(url, echo=echo, pool_pre_ping=True, future=True, connect_args=connect_args)
    if parsed.database in (None, "", ":memory:"):
        raise ValueError("an in-memory SQLite database cannot be shared between connections; use a file")
    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        echo=echo,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """Foreign keys on (cascades), WAL, and driver-level autocommit so `_sqlite_on_begin` owns BEGIN."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # The busy timeout first: switching a new file to WAL needs a lock that a concurrent starter may hold.
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    """Put the file in WAL mode, waiting out concurrent starters.

    SQLite answers a journal-mode change with SQLITE_BUSY at once, without its busy handler, while
    another connection holds a lock on a file not yet in WAL (seen when three processes start on a
    new data dir together), so the wait is ours.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_on_begin(conn: Connection) -> None:
    """pysqlite's own BEGIN is deferred and late; emit ours, IMMEDIATE for `Database.write()`."""
    mode = conn.get_execution_options().get(_BEGIN_MODE, "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")
