"""Opening a database the way the store needs it, and telling what went wrong when it fails.

:func:`create_db_engine` builds the SQLAlchemy engine for a URL: SQLite in WAL mode with
``synchronous=FULL`` and a busy timeout, or PostgreSQL through psycopg 3; read-only when asked
(SQLite's ``mode=ro``, PostgreSQL's read-only transactions), so an operator's command works
while another process holds the write lock, or on a file it cannot write.

:func:`translate` turns what a database driver raises into the engine's own errors, naming the
cause and the database (never a password): a lock held past the timeout is
:class:`~kci_engine.errors.StoreBusy` (retry it), a full disk, a read-only file, a missing
directory, a file that is not a database or an unreachable server is a
:class:`~kci_engine.errors.StoreError` (fix it first).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection, Engine

from ..errors import ConfigurationError, EngineError, StoreBusy, StoreError

#: The execution option that makes SQLite's BEGIN an IMMEDIATE one (a write transaction).
WRITE_OPTION = "kci_write"
#: How long a writer waits for SQLite's write lock before :class:`StoreBusy`.
BUSY_TIMEOUT_S = 30.0

_READ_ONLY = (
    "it is read-only (file permissions or a read-only mount); a command that only reads opens "
    "it read-only itself"
)
_CANNOT_OPEN = "cannot open it: its directory does not exist or cannot be written"
#: SQLite's messages (lower case) and what they mean for an operator.
_SQLITE_CAUSES: tuple[tuple[str, str], ...] = (
    ("database or disk is full", "the disk is full"),
    ("attempt to write a readonly database", _READ_ONLY),
    ("unable to open database file", _CANNOT_OPEN),
    ("file is not a database", "it is not a SQLite database"),
    ("file is encrypted or is not a database", "it is not a SQLite database"),
    ("disk i/o error", "a disk I/O error (the file may have been deleted or its disk removed)"),
    ("readonly database", "it is read-only"),
)
_BUSY = ("database is locked", "database table is locked", "database schema is locked")


def is_memory(url: sa.engine.URL) -> bool:
    """Whether ``url`` names an in-memory SQLite database (``sqlite://``, ``:memory:``)."""
    database = url.database or ""
    return url.get_backend_name() == "sqlite" and (
        database in ("", ":memory:") or "mode=memory" in str(url)
    )


def database_name(url: sa.engine.URL) -> str:
    """How errors name the database: a SQLite file's path, or the URL without its password."""
    path = sqlite_path(url)
    return str(path) if path is not None else url.render_as_string(hide_password=True)


def sqlite_path(url: sa.engine.URL) -> Path | None:
    """The file of a SQLite URL (also of the ``file:...?mode=ro`` form a read-only store
    uses), or ``None`` for another database or an in-memory one."""
    if url.get_backend_name() != "sqlite" or is_memory(url):
        return None
    database = url.database or ""
    if database.startswith("file:") and url.query.get("uri") == "true":
        database = unquote(database[len("file:") :].partition("?")[0])
    return Path(database).absolute()


def parse_url(url: str) -> sa.engine.URL:
    """``url`` parsed.

    Raises:
        ConfigurationError: the URL is malformed or names an unsupported database.
    """
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"database URL {url!r} is malformed: {exc}") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigurationError(
            f"database URL {parsed.render_as_string(hide_password=True)!r}: only sqlite:/// and "
            "postgresql+psycopg:// are supported"
        )
    return parsed


def create_db_engine(
    url: str,
    *,
    echo: bool = False,
    read_only: bool = False,
    persistent: bool = False,
    busy_timeout_s: float = BUSY_TIMEOUT_S,
) -> Engine:
    """A SQLAlchemy engine for ``url``, configured the way the store needs it.

    Args:
        url: ``sqlite:///path.db`` or ``postgresql+psycopg://...``.
        echo: log every statement (SQLAlchemy's ``echo``).
        read_only: open the database for reading only: SQLite with ``mode=ro`` (no write lock
            is ever taken, and the file need not be writable), PostgreSQL in read-only
            transactions. The database must exist.
        persistent: refuse an in-memory SQLite database (a command that works on the database
            other processes use needs a file).
        busy_timeout_s: how long a SQLite writer waits for the write lock before
            :class:`~kci_engine.errors.StoreBusy` (default 30 s).

    Raises:
        ConfigurationError: the URL is malformed, unsupported, or (``persistent``) in memory.
        StoreError: ``read_only`` and the SQLite file does not exist.
    """
    if not (isinstance(busy_timeout_s, int | float) and 0 <= busy_timeout_s <= 3600):
        raise ConfigurationError(
            f"busy_timeout_s must be 0 to 3600 seconds, not {busy_timeout_s!r}"
        )
    parsed = parse_url(url)
    shown = parsed.render_as_string(hide_password=True)
    if (persistent or read_only) and is_memory(parsed):
        raise ConfigurationError(
            f"database URL {shown!r} is an in-memory database, which no other process sees: "
            "give a database file (sqlite:///path.db) or a PostgreSQL URL"
        )
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite(parsed, echo=echo, read_only=read_only, busy_timeout_s=busy_timeout_s)
        # psycopg 3 is the driver the engine ships with, whatever the URL names.
        parsed = parsed.set(drivername="postgresql+psycopg")
        engine = sa.create_engine(parsed, echo=echo, pool_pre_ping=True)
        if read_only:
            _read_only_postgres(engine)
        return engine
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise ConfigurationError(f"database URL {shown!r} cannot be used: {exc}") from None


def _sqlite(url: sa.engine.URL, *, echo: bool, read_only: bool, busy_timeout_s: float) -> Engine:
    path = sqlite_path(url)
    if path is not None and path.is_dir():
        raise StoreError("it is a directory, not a database file", database=str(path))
    if read_only:
        assert path is not None
        if not path.exists():
            raise StoreError(
                "no such file (check the path; `kci-engine db upgrade` creates a database)",
                database=str(path),
            )
        url = url.set(database=f"file:{quote(str(path))}?{_read_only_mode(path)}")
        url = url.set(query={"uri": "true"})
    engine = sa.create_engine(url, echo=echo, connect_args={"timeout": busy_timeout_s})
    _configure_sqlite(engine, read_only=read_only, busy_timeout_s=busy_timeout_s)
    return engine


def _read_only_mode(path: Path) -> str:
    """SQLite's URI parameters for reading ``path`` without writing anything.

    A WAL database opened read-only needs its ``-shm`` file, which SQLite creates if it can. In
    a directory this process cannot write (a read-only mount, another user's directory) and
    with no ``-wal`` file (so no writer has the database open: a writer keeps both files while
    it does), the file is opened ``immutable``: no shared memory and no locks are needed.
    """
    wal = path.with_name(path.name + "-wal")
    if not os.access(path.parent, os.W_OK) and not wal.exists():
        return "mode=ro&immutable=1"
    return "mode=ro"


def _configure_sqlite(engine: Engine, *, read_only: bool, busy_timeout_s: float) -> None:
    @sa_event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the engine issues BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        try:
            if not read_only:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        finally:
            cursor.close()

    @sa_event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION, False) and not read_only
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _read_only_postgres(engine: Engine) -> None:
    @sa_event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        dbapi_connection.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        dbapi_connection.autocommit = autocommit


def translate(exc: BaseException, database: str) -> EngineError | None:
    """The engine's error for a database driver's ``exc`` (SQLAlchemy-wrapped or not), or
    ``None`` if it is not a database failure the engine knows how to name."""
    if isinstance(exc, EngineError):
        return None
    original = getattr(exc, "orig", None) or exc
    module = type(original).__module__.split(".")[0]
    if module not in ("sqlite3", "psycopg", "sqlalchemy"):
        return None
    message = _first_line(str(original))
    lower = message.lower()
    if any(busy in lower for busy in _BUSY) or "lock timeout" in lower:
        return StoreBusy(
            f"database {database}: another process held its write lock past the busy timeout; "
            "nothing was written, try again"
        )
    for needle, cause in _SQLITE_CAUSES:
        if needle in lower:
            return StoreError(cause, database=database)
    if module == "psycopg" and ("connection" in lower or "could not" in lower):
        return StoreError(f"cannot reach the server: {message}", database=database)
    if isinstance(original, sa.exc.OperationalError | sa.exc.DatabaseError):
        return StoreError(message, database=database)
    if type(original).__name__ in ("OperationalError", "DatabaseError", "InterfaceError"):
        return StoreError(message, database=database)
    return None


@contextmanager
def translated(database: str) -> Iterator[None]:
    """Run a block, raising what a database driver raises in it as the engine's own error."""
    try:
        yield
    except Exception as exc:
        error = translate(exc, database)
        if error is None:
            raise
        raise error from exc


def file_identity(path: Path | None) -> tuple[int, int] | None:
    """What tells a database file apart from one put in its place (device and inode)."""
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


_PASSWORD = re.compile(r"(password=)\S+", re.IGNORECASE)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown database error"
    return _PASSWORD.sub(r"\1***", line)[:300]
