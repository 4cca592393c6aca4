"""The durable store: orders, the KCI outbox and the event log in SQLite or PostgreSQL.

Each event is one transaction: the order row is updated only if its ``version`` is still the one
the engine read (``UPDATE ... WHERE version = :read``), and the KCI rows and the event's log entry
are inserted in the same transaction. So the state change and its KCIs commit together or not at
all, and a writer that lost a race gets :class:`ConcurrencyConflict` instead of a duplicate or
skipped sequence number: sequence numbers come from the order row's counter, bumped under the row
lock the UPDATE takes (PostgreSQL) or the database write lock (SQLite), never from a global
auto-increment.

SQLite runs in WAL mode with ``synchronous=FULL``: a commit returns only once the WAL is on disk,
so a KCI the engine handed back survives a power cut (see docs/decisions.md for the cost). Write
transactions start with ``BEGIN IMMEDIATE``, so two writers queue on the lock (``busy_timeout``)
instead of failing to upgrade a read lock.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from pydantic_core import from_json
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..core.codes import OrderStatus, OrderType, ReasonCode
from ..core.events import EventData, EventEntry, given_json
from ..core.records import Kci, OrderRecord, RequestRef
from ..core.wire import dump_json, format_datetime
from ..errors import (
    ConcurrencyConflict,
    ConfigurationError,
    OrderExists,
    OrderNotFound,
    SchemaOutdated,
    StoreError,
    shown,
)
from .db import (
    BUSY_TIMEOUT_S,
    WRITE_OPTION,
    create_db_engine,
    database_name,
    file_identity,
    sqlite_path,
    translate,
    translated,
)
from .origin import INSERT_ORIGIN, origin_row
from .tables import EVENTS, ORDERS, OUTBOX, DeliveryState

if TYPE_CHECKING:  # psycopg is installed only with the postgres extra
    from .prepared import Prepared

__all__ = ["DEFAULT_URL", "OutboxEntry", "SqlStore", "create_db_engine", "now_ms"]

DEFAULT_URL = "sqlite:///kci-engine.db"
#: Orders whose decoded record a SQLite store keeps by default (see ``record_cache``).
DEFAULT_RECORD_CACHE = 10_000


def now_ms() -> int:
    """Milliseconds since the epoch (the unit of every time column the engine compares)."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A KCI as the outbox holds it, with its delivery progress."""

    kci: Kci
    delivery_state: str
    attempts: int
    next_attempt_at_ms: int
    last_error: str | None
    delivered_at_ms: int | None


# --- statements ----------------------------------------------------------------------------------
# Each statement is written once, in SQLAlchemy Core. A joined view executes it through the
# caller's session; the store's own hot path runs its compiled SQL on a DBAPI connection.

Statement = sa.Select[Any] | sa.Update | sa.Insert
_T = TypeVar("_T")
_B = sa.bindparam
_LOAD = ORDERS.select().where(ORDERS.c.order_id == _B("k_order_id"))
_UPDATE = (
    ORDERS.update()
    .where(ORDERS.c.order_id == _B("k_order_id"))
    .where(ORDERS.c.version == _B("k_version"))
    .values({c.name: _B(c.name) for c in ORDERS.c if c.name not in ("order_id", "created_at_ms")})
)
_VERSION_OF = sa.select(ORDERS.c.version).where(ORDERS.c.order_id == _B("k_order_id"))
_EXISTS = sa.select(ORDERS.c.order_id).where(ORDERS.c.order_id == _B("k_order_id"))
_EVENTS_OF = EVENTS.select().where(EVENTS.c.order_id == _B("k_order_id")).order_by(EVENTS.c.seq)
_OUTBOX_OF = (
    OUTBOX.select().where(OUTBOX.c.order_id == _B("k_order_id")).order_by(OUTBOX.c.sequence_number)
)
#: The sizes of a prefetch statement's ``IN`` list (a shorter list repeats its last id).
_PREFETCH_SIZES = (8, 64, 500)


@functools.cache
def _load_many(size: int) -> sa.Select[Any]:
    """The rows of ``size`` orders (parameters ``k0`` ... ``k{size-1}``)."""
    wanted: sa.Select[Any] = ORDERS.select().where(
        ORDERS.c.order_id.in_([_B(f"k{i}") for i in range(size)])
    )
    return wanted


@functools.cache
def _versions_of(size: int) -> sa.Select[Any]:
    """The versions of ``size`` orders (parameters ``k0`` ... ``k{size-1}``)."""
    wanted: sa.Select[Any] = sa.select(ORDERS.c.order_id, ORDERS.c.version).where(
        ORDERS.c.order_id.in_([_B(f"k{i}") for i in range(size)])
    )
    return wanted


def _padded(keys: list[str]) -> Iterator[dict[str, str]]:
    """The parameters of ``keys`` for ``_load_many``/``_versions_of``: at most the largest of
    _PREFETCH_SIZES at a time, each chunk padded with its last key to one of those sizes (a
    few statement shapes, not hundreds)."""
    for start in range(0, len(keys), _PREFETCH_SIZES[-1]):
        chunk = keys[start : start + _PREFETCH_SIZES[-1]]
        size = next(size for size in _PREFETCH_SIZES if size >= len(chunk))
        chunk += chunk[-1:] * (size - len(chunk))
        yield {f"k{i}": key for i, key in enumerate(chunk)}


_INSERT_ORDER = ORDERS.insert().values({c.name: _B(c.name) for c in ORDERS.c})
_INSERT_KCI = OUTBOX.insert().values(
    {c.name: _B(c.name) for c in OUTBOX.c if c.name not in ("last_error", "delivered_at_ms")}
)
_INSERT_EVENT = EVENTS.insert().values({c.name: _B(c.name) for c in EVENTS.c if c.name != "seq"})
_APPLIED = (
    sa.select(EVENTS.c.kci_ids)
    .where(EVENTS.c.order_id == _B("k_order_id"))
    .where(EVENTS.c.event_id == _B("k_event_id"))
)


class _Compiled:
    """A statement compiled for one dialect: its SQL and how to pass its parameters."""

    def __init__(self, statement: sa.ClauseElement, dialect: sa.Dialect) -> None:
        compiled: Any = statement.compile(dialect=dialect)  # a SQLCompiler
        self.sql = compiled.string
        self.names: tuple[str, ...] | None = (
            tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
        )
        self.columns: tuple[str, ...] = tuple(
            c.name for c in getattr(statement, "selected_columns", ())
        )
        # Literals written into the statement (e.g. a delivery state) are bound parameters too.
        self.literals = {
            name: compiled.params[name]
            for bind, name in compiled.bind_names.items()
            if not bind.required
        }
        # Positional parameters picked out of the values dict at C speed (a 1-tuple for one).
        names = self.names or ()
        self._pick: Callable[[dict[str, Any]], Any] = (
            itemgetter(*names) if len(names) > 1 else lambda values: (values[names[0]],)
        )

    def params(self, values: dict[str, Any]) -> Any:
        if self.literals:
            values = {**self.literals, **values}
        return values if self.names is None else self._pick(values)


class _Runner(ABC):
    """Runs the store's statements on one connection, within one transaction at a time."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        #: Inside a batch: the records this transaction saved, with their document's JSON
        #: (the rows are locked by the batch's transaction, so they are current).
        self.kept: dict[str, tuple[OrderRecord, str]] = {}
        #: Inside a batch: order rows read ahead by :meth:`SqlStore.prefetch`, each taken by
        #: the first load of its order.
        self.fetched: dict[str, dict[str, Any]] = {}

    @abstractmethod
    def flush(self) -> None:
        """Write what this runner deferred, if it defers any."""

    @abstractmethod
    def run(self, statement: Statement, values: dict[str, Any]) -> int:
        """Execute ``statement``; the number of rows it changed."""

    @abstractmethod
    def rows(
        self, statement: Statement, values: dict[str, Any], *, tuples: bool = False
    ) -> list[Any]:
        """Execute a select; its rows as dicts keyed by column name (``tuples``: as tuples)."""

    def value(self, statement: Statement, order_id: str) -> Any:
        """The first column of ``statement``'s first row for the order (None without one)."""
        found = self.rows(statement, {"k_order_id": order_id}, tuples=True)
        return found[0][0] if found else None

    def write(self, statement: Statement, values: tuple[Any, ...]) -> int:
        """Execute one of an event's writes (:data:`_WRITES`) with its values in the order of
        its parameters; the number of rows it changed."""
        return self.run(statement, dict(zip(_WRITES[statement], values, strict=True)))


class _DirectRunner(_Runner):
    """The hot path: compiled SQL on this thread's DBAPI connection, no ORM, no pool trips.
    Its statements share one cursor (the transaction's, or one made on first use).

    A SQLite batch's runner defers the writes of each saved event (:meth:`defer`) and sends
    them with ``executemany``, a few hundred at a time: the batch holds the database's write
    lock, so no other writer can come between, and any other statement, and the batch's end,
    flushes them first, so every statement sees every write made before it."""

    #: Deferred events sent at once (bounds the memory a long batch holds: about 2 MB). A
    #: thousand-event batch goes in one ``executemany`` per table (x1.04 CPU against 256).
    FLUSH_AT = 1024

    def __init__(self, store: SqlStore, dbapi: Any, cursor: Any = None) -> None:
        super().__init__(store)
        self.dbapi = dbapi
        self.cursor = cursor
        self.updates: list[Any] = []
        self.inserted_kcis: list[Any] = []
        self.inserted_events: list[Any] = []
        #: ``(order_id, event_id)`` of the deferred events that have an event id.
        self.deferred_ids: set[tuple[str, str]] = set()

    def defer(
        self,
        update: tuple[Any, ...],
        kcis: list[tuple[Any, ...]],
        event: tuple[Any, ...],
        event_id: str | None,
    ) -> None:
        """Queue one saved event's UPDATE and INSERTs (see the class's note), their values in
        the order of their parameters (:data:`_WRITES`)."""
        self.updates.append(update)
        self.inserted_kcis += kcis
        self.inserted_events.append(event)
        if event_id is not None:
            self.deferred_ids.add((event[0], event_id))
        if len(self.updates) >= self.FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        if not self.updates:
            return
        updates, kcis, events = self.updates, self.inserted_kcis, self.inserted_events
        self.updates, self.inserted_kcis, self.inserted_events = [], [], []
        self.deferred_ids.clear()
        store = self.store
        cursor = self._cursor()
        try:
            cursor.executemany(store._positional(_UPDATE), updates)
            if cursor.rowcount != len(updates):
                raise ConcurrencyConflict(
                    f"{len(updates) - cursor.rowcount} of the batch's orders changed since they "
                    "were read; nothing of the batch was kept"
                )
            if kcis:
                cursor.executemany(store._positional(_INSERT_KCI), kcis)
            cursor.executemany(store._positional(_INSERT_EVENT), events)
        except (store._integrity_error, IntegrityError) as exc:
            raise ConcurrencyConflict(
                "a batch's KCI sequence number or event id was already stored "
                f"({type(exc).__name__}); nothing of the batch was kept"
            ) from None

    def _cursor(self) -> Any:
        if self.cursor is None:
            self.cursor = self.dbapi.cursor()
        return self.cursor

    def close(self) -> None:
        if self.cursor is not None:
            with suppress(Exception):  # closing a cursor of a failed connection
                self.cursor.close()
            self.cursor = None

    def run(self, statement: Statement, values: dict[str, Any]) -> int:
        if self.updates:
            self.flush()
        compiled = self.store._compiled(statement)
        cursor = self._cursor()
        cursor.execute(compiled.sql, compiled.params(values))
        return int(cursor.rowcount)

    def write(self, statement: Statement, values: tuple[Any, ...]) -> int:
        if self.store.dialect != "sqlite":  # psycopg's compiled statements take names
            return super().write(statement, values)
        if self.updates:
            self.flush()
        cursor = self._cursor()
        cursor.execute(self.store._positional(statement), values)
        return int(cursor.rowcount)

    def rows(
        self,
        statement: Statement,
        values: dict[str, Any],
        *,
        tuples: bool = False,
        flush: bool = True,
    ) -> list[Any]:
        """Execute a select; ``flush=False`` for one that no deferred write can change."""
        if flush and self.updates:
            self.flush()
        compiled = self.store._compiled(statement)
        cursor = self._cursor()
        cursor.execute(compiled.sql, compiled.params(values))
        if tuples:
            return cursor.fetchall()  # type: ignore[no-any-return]
        return [dict(zip(compiled.columns, row, strict=True)) for row in cursor.fetchall()]


# --- PostgreSQL: an event's writes in one statement ------------------------------------------

_SET = tuple(c.name for c in ORDERS.c if c.name not in ("order_id", "created_at_ms"))
_KCI_COLUMNS = tuple(c.name for c in OUTBOX.c if c.name not in ("last_error", "delivered_at_ms"))
_EVENT_COLUMNS = tuple(c.name for c in EVENTS.c if c.name != "seq")
#: An event's writes, each with the names of its parameters in the order its values are given
#: (to :meth:`_Runner.write`, and on PostgreSQL to the one statement of ``_in_one_sql``).
_WRITES: dict[Statement, tuple[str, ...]] = {
    _UPDATE: (*_SET, "k_order_id", "k_version"),
    _INSERT_KCI: _KCI_COLUMNS,
    _INSERT_EVENT: _EVENT_COLUMNS,
}
_IN_ONE: dict[int, str] = {}


def _placeholders(table: sa.Table, columns: tuple[str, ...]) -> str:
    """Typed placeholders (``%s::bigint``, ``%s::text``): a select list's parameters have no
    column to take their type from. Strings are never cast to a bounded type, which would
    truncate; the column's own type checks the length on insert."""
    dialect = _postgresql_dialect()
    casts = []
    for name in columns:
        kind: Any = table.c[name].type
        if isinstance(kind, sa.types.TypeDecorator):  # sqlmodel's AutoString: a String
            kind = kind.impl
        if isinstance(kind, sa.Integer):
            casts.append("%s::bigint")
        elif isinstance(kind, sa.String):
            casts.append("%s::text")
        else:
            casts.append(f"%s::{kind.compile(dialect=dialect)}")
    return ", ".join(casts)


@functools.cache
def _postgresql_dialect() -> sa.Dialect:
    from sqlalchemy.dialects import postgresql

    dialect: sa.Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return dialect


def _in_one_sql(kci_count: int) -> str:
    """One PostgreSQL statement for an event: the order row's versioned UPDATE, and, only if it
    matched, the KCI rows and the log entry (data-modifying CTEs run exactly once, all in the
    statement's transaction). Its row count is 1 if the order was saved, 0 if the version
    moved on (and then nothing was written)."""
    found = _IN_ONE.get(kci_count)
    if found is not None:
        return found
    sets = ", ".join(f"{name} = %s" for name in _SET)
    parts = [
        f"WITH saved AS (UPDATE {ORDERS.name} SET {sets} "
        f"WHERE order_id = %s AND version = %s RETURNING 1)"
    ]
    kcis = ", ".join(_KCI_COLUMNS)
    for n in range(kci_count):
        parts.append(
            f", kci_{n} AS (INSERT INTO {OUTBOX.name} ({kcis}) "
            f"SELECT {_placeholders(OUTBOX, _KCI_COLUMNS)} FROM saved)"
        )
    parts.append(
        f" INSERT INTO {EVENTS.name} ({', '.join(_EVENT_COLUMNS)}) "
        f"SELECT {_placeholders(EVENTS, _EVENT_COLUMNS)} FROM saved"
    )
    sql = _IN_ONE[kci_count] = "".join(parts)
    return sql


def _save_in_one(
    runner: _DirectRunner,
    update: tuple[Any, ...],
    kcis: list[tuple[Any, ...]],
    event: tuple[Any, ...],
) -> bool:
    """Save an event on PostgreSQL in one statement; whether the order row matched."""
    params: list[Any] = [*update]
    for values in kcis:
        params += values
    params += event
    prepared = runner.store._prepared(runner.dbapi)
    if prepared is not None:
        result = prepared.run(f"kci_save_{len(kcis)}", _in_one_sql(len(kcis)), params)
        return int(result.command_tuples or 0) == 1
    cursor = runner._cursor()
    cursor.execute(_in_one_sql(len(kcis)), params)
    return int(cursor.rowcount) == 1


_LOAD_COLUMNS = tuple(c.name for c in ORDERS.c)
_LOAD_SQL = f"SELECT {', '.join(_LOAD_COLUMNS)} FROM {ORDERS.name} WHERE order_id = %s"


def _load_rows(runner: _Runner, order_id: str) -> list[dict[str, Any]]:
    """The order's row (or none), on PostgreSQL as a prepared statement (store.prepared)."""
    prepared = runner.store._prepared(runner.dbapi) if isinstance(runner, _DirectRunner) else None
    if prepared is None:
        return runner.rows(_LOAD, {"k_order_id": order_id})
    row = prepared.first_row(prepared.run("kci_load", _LOAD_SQL, (order_id,)))
    return [] if row is None else [dict(zip(_LOAD_COLUMNS, row, strict=True))]


class _SessionRunner(_Runner):
    """A joined view: the same statements through the caller's SQLAlchemy connection."""

    def __init__(self, store: SqlStore, conn: Connection) -> None:
        super().__init__(store)
        self.conn = conn

    def flush(self) -> None:
        """Nothing to write: a session's statements run as they come."""

    def run(self, statement: Statement, values: dict[str, Any]) -> int:
        return int(self.conn.execute(statement, values).rowcount)

    def rows(
        self, statement: Statement, values: dict[str, Any], *, tuples: bool = False
    ) -> list[Any]:
        result = self.conn.execute(statement, values)
        if tuples:
            return [tuple(row) for row in result]
        return [dict(row._mapping) for row in result]


class _Records:
    """The decoded records of the orders this store wrote last, each as committed, with
    its document's JSON: a load compares the row's ``version`` alone and, when it is still the
    one kept, copies the record instead of reading and decoding the whole row.

    Only committed states are kept (after the commit, never from inside a transaction that may
    still roll back), and every writer of an order row bumps its ``version`` (the engine's own
    all do; so must any other), so a record whose version matches is the row's content. The
    least recently written are dropped beyond ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[str, tuple[OrderRecord, str]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, order_id: str) -> tuple[OrderRecord, str] | None:
        return self.entries.get(order_id)

    def keep(self, kept: Iterable[tuple[OrderRecord, str]]) -> None:
        """Remember these committed records (each not to be changed from now on)."""
        entries = self.entries
        with self.lock:
            for entry in kept:
                key = entry[0].order_id
                entries[key] = entry
                entries.move_to_end(key)
            while len(entries) > self.size:
                entries.popitem(last=False)

    def drop(self, order_id: str) -> None:
        with self.lock:
            self.entries.pop(order_id, None)


class SqlStore:
    """Orders, the outbox and the event log in a SQL database (SQLite or PostgreSQL).

    Each thread that uses the store gets one database connection of its own, kept for the
    store's life (:meth:`close` releases them). Processes do not share a store: each worker
    process builds its own.

    Args:
        url: a SQLAlchemy URL, ``sqlite:///path.db`` or ``postgresql+psycopg://...``.
        db: an existing SQLAlchemy engine instead of a URL (the store's ``db``).
        migrate: bring the schema up to date (Alembic ``upgrade head``) before first use.
        read_only: open the database for reading only, without migrating it (an operator's
            command: it works while another process holds the write lock, and on a file it
            cannot write); the database must exist and its schema be current.
        persistent: refuse an in-memory database (what another process must see).
        busy_timeout_s: how long a SQLite writer waits for another process's write lock before
            :class:`~kci_engine.errors.StoreBusy` (default 30 s).
        record_cache: on SQLite, how many orders' decoded records to keep (default 10,000; 0
            keeps none): loading a kept order reads only its row's ``version`` (see
            docs/decisions.md S19). Every writer of an order row must bump its ``version``, as
            the engine's own writers do.

    A store is a context manager, like ``httpx.Client`` and SQLAlchemy's ``Session``: leaving
    the block closes its connections.

    Raises:
        ConfigurationError: the URL is malformed, unsupported, or in memory when it may not be.
        StoreError: the database cannot be opened or reached, or is not a database.
        SchemaOutdated: ``read_only`` and the schema is older than this engine.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        db: Engine | None = None,
        migrate: bool = True,
        read_only: bool = False,
        persistent: bool = False,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        record_cache: int = DEFAULT_RECORD_CACHE,
    ) -> None:
        if isinstance(record_cache, bool) or not isinstance(record_cache, int) or record_cache < 0:
            raise ConfigurationError(
                f"record_cache must be an integer >= 0, not {shown(record_cache)}"
            )
        self.db = (
            db
            if db is not None
            else create_db_engine(
                url, read_only=read_only, persistent=persistent, busy_timeout_s=busy_timeout_s
            )
        )
        self.read_only = read_only
        self._dialect = str(self.db.dialect.name)
        self.database = database_name(self.db.url)
        self._path = sqlite_path(self.db.url)
        self._session: Session | None = None
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._statements: dict[int, _Compiled] = {}
        self._write_sql: dict[int, str] = {}
        dbapi: Any = self.db.dialect.dbapi
        self._integrity_error: type[Exception] = dbapi.IntegrityError
        with translated(self.database):
            if read_only:
                self._require_current_schema()
            elif migrate:
                from .migrate import upgrade

                upgrade(self.db)
        self._identity = file_identity(self._path)
        self._records = (
            _Records(record_cache) if record_cache and self.dialect == "sqlite" else None
        )

    def _require_current_schema(self) -> None:
        from .migrate import current, head

        found = current(self.db)
        if found != head():
            have = "has no kci-engine tables" if found is None else f"has schema {found}"
            raise SchemaOutdated(
                f"it {have}; this engine needs {head()}: run `kci-engine db upgrade` "
                "(or check the URL)",
                database=self.database,
            )

    def verify(self) -> None:
        """Check that the database file is still the one this store opened: a long-lived worker
        calls it so it stops, rather than going on unseen on a deleted file while new KCIs go
        into a new one.

        Raises:
            StoreError: the file was deleted or replaced.
        """
        if self._path is None or self._identity is None:
            return
        now = file_identity(self._path)
        if now is None:
            raise StoreError(
                "the database file was deleted while this process had it open",
                database=self.database,
            )
        if now != self._identity:
            raise StoreError(
                "the database file was replaced by another file while this process had it open",
                database=self.database,
            )

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._dialect

    def joined(self, session: Session) -> SqlStore:
        """A view of this store that works inside the caller's session and transaction.

        Its writes go through ``session``'s connection and are neither committed nor rolled back:
        the caller's business writes and the KCIs commit together when the caller commits.
        """
        view = SqlStore.__new__(SqlStore)
        view.__dict__.update(self.__dict__)
        view._session = session
        return view

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqlStore({self.db.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        """Close this store's connections (a joined view's session belongs to the caller)."""
        if self._session is not None:
            return
        with self._lock:
            for dbapi in self._connections:
                dbapi.close()
            self._connections.clear()
        self._local = threading.local()
        self.db.dispose()

    def _compiled(self, statement: Statement) -> _Compiled:
        found = self._statements.get(id(statement))
        if found is None:
            found = self._statements[id(statement)] = _Compiled(statement, self.db.dialect)
        return found

    def _positional(self, statement: Statement) -> str:
        """The SQLite SQL of one of an event's writes (:data:`_WRITES`), whose values are
        given as a tuple in the order of its parameters."""
        found = self._write_sql.get(id(statement))
        if found is None:
            compiled = self._compiled(statement)
            if compiled.names != _WRITES[statement]:  # pragma: no cover - a schema change
                raise RuntimeError(f"parameters {compiled.names} are not {_WRITES[statement]}")
            found = self._write_sql[id(statement)] = compiled.sql
        return found

    # --- transactions --------------------------------------------------------------------------

    def _dbapi(self) -> Any:
        dbapi = getattr(self._local, "dbapi", None)
        if dbapi is None:
            with translated(self.database):
                dbapi = self.db.raw_connection()
            if self.dialect == "postgresql":
                driver: Any = dbapi.driver_connection
                driver.autocommit = True  # the store issues BEGIN itself
            self._local.dbapi = dbapi
            with self._lock:
                self._connections.append(dbapi)
        return dbapi

    def _discard(self) -> None:
        """Throw this thread's connection away after a failure (the next use opens another)."""
        dbapi = getattr(self._local, "dbapi", None)
        self._local.dbapi = None
        if dbapi is not None:
            with self._lock:
                if dbapi in self._connections:
                    self._connections.remove(dbapi)
            with suppress(Exception):  # the connection is being thrown away anyway
                dbapi.invalidate()

    @contextmanager
    def batch(self) -> Iterator[None]:
        if self._session is not None or getattr(self._local, "batch", None) is not None:
            yield  # the caller's transaction, or an enclosing batch, already holds everything
            return
        with self.writing() as runner:
            self._local.batch = runner
            try:
                yield
                runner.flush()
            finally:
                self._local.batch = None
        if self._records is not None:  # committed: what the batch saved is the rows' content
            self._records.keep(runner.kept.values())

    def prefetch(self, order_ids: Iterable[str]) -> None:
        """Inside :meth:`batch`: read these orders' rows now, a few hundred to a statement,
        for the batch's coming loads (outside a batch, or for orders already read, nothing).
        A row read ahead is as current as one read at its load: on SQLite the batch holds the
        write lock; on PostgreSQL the versioned UPDATE still catches a concurrent writer, and
        the engine's retry then loads the order afresh."""
        batch = self._batch()
        if batch is None:
            return
        kept, fetched = batch.kept, batch.fetched
        wanted = [
            key
            for key in dict.fromkeys(order_ids)
            if isinstance(key, str) and key not in kept and key not in fetched
        ]
        records = self._cache()
        if records is not None:  # kept records still at their row's version need no more
            known = [key for key in wanted if records.get(key) is not None]
            for params in _padded(known):
                for key, version in batch.rows(_versions_of(len(params)), params, tuples=True):
                    entry = records.get(key)
                    if entry is not None and entry[0].version == version:
                        kept[key] = entry
            wanted = [key for key in wanted if key not in kept]
        for params in _padded(wanted):
            found = batch.rows(_load_many(len(params)), params)
            fetched.update((row["order_id"], row) for row in found)

    def _instrumented(self) -> bool:
        """Whether someone watches the statements: ``echo``, or listeners on SQLAlchemy's cursor
        events (OpenTelemetry's SQLAlchemy instrumentation, your own). The hot path then runs
        its statements through a SQLAlchemy connection, which fires the events, instead of on
        the DBAPI connection directly (about 40 µs a statement more; decisions S9)."""
        dispatch: Any = self.db.dispatch
        return bool(self.db.echo or dispatch.before_cursor_execute or dispatch.after_cursor_execute)

    @contextmanager
    def _instrumented_transaction(self, *, write: bool) -> Iterator[_Runner]:
        with translated(self.database), self.db.connect() as conn:
            conn = conn.execution_options(**{WRITE_OPTION: write})  # SQLite: BEGIN IMMEDIATE
            with conn.begin():
                yield _SessionRunner(self, conn)

    @contextmanager
    def reading(self) -> Iterator[_Runner]:
        """A runner for reads (each statement atomic on its own), on this thread's connection;
        inside :meth:`batch` or a joined session, theirs. What the database raises comes out as
        the engine's own errors (:mod:`~kci_engine.store.db`)."""
        if self._session is not None:
            yield _SessionRunner(self, self._session.connection())
            return
        batch = getattr(self._local, "batch", None)
        if batch is not None:
            yield batch
            return
        if self._instrumented():
            with self._instrumented_transaction(write=False) as runner:
                yield runner
            return
        runner = self._direct_reader()
        try:
            yield runner
        except Exception as exc:
            self._read_failed(runner, exc)
            raise
        self._read_done(runner)

    def _read(self, read: Callable[[_Runner], _T]) -> _T:
        """``read(runner)`` as in :meth:`reading`, without a context manager's cost
        where no batch, session or instrumentation is in the way (the hot path's reads; each
        about 4 µs less)."""
        if (
            self._session is not None
            or getattr(self._local, "batch", None) is not None
            or self._instrumented()
        ):
            with self.reading() as runner:
                return read(runner)
        direct = self._direct_reader()
        try:
            found = read(direct)
        except Exception as exc:
            self._read_failed(direct, exc)
            raise
        self._read_done(direct)
        return found

    def _direct_reader(self) -> _DirectRunner:
        """A runner on this thread's connection, in autocommit (each read is atomic). On
        PostgreSQL the thread's reads share one cursor (a psycopg cursor holds nothing on the
        server between statements); a SQLite cursor is closed after each read
        (:meth:`_read_done`), lest a statement left unfinished keep its read snapshot open."""
        dbapi = self._dbapi()
        if self.dialect == "postgresql":
            return _DirectRunner(self, dbapi, self._read_cursor(dbapi))
        return _DirectRunner(self, dbapi)

    def _read_done(self, runner: _DirectRunner) -> None:
        if self.dialect != "postgresql":
            runner.close()

    def _read_failed(self, runner: _DirectRunner, exc: Exception) -> None:
        """After ``runner``'s read raised ``exc``: its cursor is closed; a database's failure
        is raised as the engine's own error (and the connection thrown away), anything else
        returns for the caller to re-raise."""
        runner.close()
        self._local.cursor = None
        self._raise_translated(exc)

    def _raise_translated(self, exc: Exception) -> None:
        """Raise the engine's own error for a database failure ``exc``, the connection thrown
        away first; return (for the caller to re-raise) if ``exc`` is not one."""
        error = translate(exc, self.database)
        if error is None:
            return
        self._discard()  # nothing may touch the connection now
        raise error from exc

    def _prepared(self, dbapi: Any) -> Prepared | None:
        """This thread's prepared statements on PostgreSQL's ``dbapi`` connection (None on
        SQLite, or where psycopg's ``prepare_threshold`` is None: see store.prepared)."""
        cached = getattr(self._local, "prepared", None)
        if cached is not None and cached[0] is dbapi:
            return cached[1]  # type: ignore[no-any-return]
        found = None
        if self.dialect == "postgresql" and dbapi.driver_connection.prepare_threshold is not None:
            from .prepared import Prepared

            found = Prepared(dbapi.driver_connection)
        self._local.prepared = (dbapi, found)
        return found

    def _read_cursor(self, dbapi: Any) -> Any:
        cached = getattr(self._local, "cursor", None)
        if cached is None or cached[0] is not dbapi:
            cached = self._local.cursor = (dbapi, dbapi.cursor())
        return cached[1]

    @contextmanager
    def writing(self, *, durable: bool = True) -> Iterator[_Runner]:
        """One write transaction: committed when the block ends, rolled back if it raises.
        ``durable=False`` (SQLite only) commits without waiting for the disk: for delivery
        bookkeeping, whose loss in a power cut only means a KCI is sent again, identically.

        Raises:
            StoreBusy: the write lock stayed taken past the timeout (nothing was written).
            StoreError: the database failed (disk full, read-only, deleted).
        """
        if self._session is not None:
            yield _SessionRunner(self, self._session.connection())
            return
        batch = getattr(self._local, "batch", None)
        if batch is not None:
            yield batch
            return
        if self._instrumented():
            with self._instrumented_transaction(write=True) as runner:
                yield runner
            return
        dbapi = self._dbapi()
        sqlite = self._dialect == "sqlite"
        relaxed = not durable and sqlite
        try:
            cursor = dbapi.cursor()
            runner = _DirectRunner(self, dbapi, cursor)
            try:
                if relaxed:
                    cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("BEGIN IMMEDIATE" if sqlite else "BEGIN")
                try:
                    yield runner
                except BaseException:
                    with suppress(Exception):  # a failed connection rolls back by itself
                        cursor.execute("ROLLBACK")
                    raise
                cursor.execute("COMMIT")
            finally:
                if relaxed:
                    with suppress(Exception):
                        cursor.execute("PRAGMA synchronous=FULL")
                with suppress(Exception):  # a cursor of a failed connection
                    cursor.close()
        except Exception as exc:
            self._raise_translated(exc)  # after the cursor is closed
            raise

    def release_connection(self) -> None:
        """Give this thread's connection back to the pool (call it before a worker thread
        ends, or it keeps the connection until :meth:`close`)."""
        dbapi = getattr(self._local, "dbapi", None)
        if dbapi is None:
            return
        self._local.dbapi = None
        self._local.cursor = None
        with self._lock:
            if dbapi in self._connections:
                self._connections.remove(dbapi)
        if self.dialect == "postgresql":
            driver: Any = dbapi.driver_connection
            driver.autocommit = False  # as SQLAlchemy expects of a pooled connection
        dbapi.close()

    # --- the Store interface -------------------------------------------------------------------

    def create(self, record: OrderRecord, kcis: Sequence[Kci], entry: EventEntry) -> None:
        now = now_ms()
        document = dump_json(record.document)
        row = dict(zip(_SET, _order_values(record, now, document, 1), strict=True))
        row["order_id"] = record.order_id
        row["created_at_ms"] = now
        kci_rows = _kci_rows(kcis, now)
        try:
            with self.writing() as runner:
                runner.run(_INSERT_ORDER, row)
                if entry.chart_version is not None:  # how it began, for `history replay`
                    runner.run(INSERT_ORIGIN, origin_row(record, entry))
                for values in kci_rows:
                    runner.write(_INSERT_KCI, values)
                runner.write(_INSERT_EVENT, _event_values(entry))
        except (self._integrity_error, IntegrityError):
            raise OrderExists(record.order_id) from None
        record.version = 1
        batch = self._batch()
        if batch is not None:
            batch.kept[record.order_id] = (record.copy(), document)
        elif (records := self._cache()) is not None:
            records.keep([(record.copy(), document)])  # committed

    def load(self, order_id: str) -> OrderRecord:
        batch = self._batch()
        kept = None if batch is None else batch.kept.get(order_id)
        if kept is not None:  # saved earlier in this batch: its row is locked and unchanged since
            return self._handed(kept)
        records = self._cache()
        entry = None if records is None else records.get(order_id)
        if batch is not None:  # what reading() would give, without its context manager
            row = batch.fetched.pop(order_id, None)
            if row is None and entry is not None and self._current(batch, entry):
                return self._handed(entry)
            rows = [row] if row is not None else batch.rows(_LOAD, {"k_order_id": order_id})
        else:
            if entry is not None and self._version(order_id) == entry[0].version:
                return self._handed(entry)
            rows = self._read(lambda runner: _load_rows(runner, order_id))
        if not rows:
            raise OrderNotFound(order_id)
        record = _record(rows[0])
        self._local.loaded = (record.document, rows[0]["document"])
        return record

    def _version(self, order_id: str) -> Any:
        """The order row's version (None without a row), read on its own outside a batch: on
        SQLite straight on the driver's connection (one row, read to the end, so no statement
        is left holding a snapshot), about 8 µs less than a runner's read."""
        if self.dialect != "sqlite" or self._session is not None or self._instrumented():
            return self._read(lambda runner: runner.value(_VERSION_OF, order_id))
        try:
            rows = (
                self._dbapi()
                .driver_connection.execute(self._compiled(_VERSION_OF).sql, (order_id,))
                .fetchall()
            )
        except Exception as exc:
            self._raise_translated(exc)
            raise
        return rows[0][0] if rows else None

    @staticmethod
    def _current(runner: _Runner, kept: tuple[OrderRecord, str]) -> bool:
        """Whether the order's row is still at the version of its kept record."""
        record = kept[0]
        return bool(runner.value(_VERSION_OF, record.order_id) == record.version)

    def _handed(self, kept: tuple[OrderRecord, str]) -> OrderRecord:
        """A working copy of a kept record, its document's JSON remembered for the save."""
        self._local.loaded = (kept[0].document, kept[1])
        return kept[0].copy()

    def _cache(self) -> _Records | None:
        """The kept records, unless this is a joined view (whose writes the caller commits)."""
        return self._records if self._session is None else None

    def _batch(self) -> _Runner | None:
        """The runner of this thread's open batch, if any (never for a joined view)."""
        return None if self._session is not None else getattr(self._local, "batch", None)

    def _document_json(self, document: dict[str, Any]) -> str:
        """The JSON of ``document``: the text it was loaded with when the document is the one
        last loaded on this thread (documents are replaced, never changed in place), else a new
        encoding."""
        loaded = getattr(self._local, "loaded", None)
        if loaded is not None and loaded[0] is document:
            return loaded[1]  # type: ignore[no-any-return]
        return dump_json(document)

    def save(self, record: OrderRecord, kcis: Sequence[Kci], entry: EventEntry) -> None:
        now = now_ms()
        loaded = record.version
        document = self._document_json(record.document)
        # The writes' values in the order of their parameters: the versioned UPDATE's (WHERE
        # order_id and the version read last), the KCIs' and the log entry's.
        update = (*_order_values(record, now, document, loaded + 1), record.order_id, loaded)
        kci_rows = _kci_rows(kcis, now)
        event = _event_values(entry)
        batch = self._batch()
        if batch is not None:
            batch.kept.pop(record.order_id, None)  # until this save has succeeded

        def write(runner: _Runner) -> bool:
            """The event's writes on ``runner``; whether the order row was still at ``loaded``."""
            if self.dialect == "postgresql" and isinstance(runner, _DirectRunner):
                return _save_in_one(runner, update, kci_rows, event)
            if runner is batch and isinstance(runner, _DirectRunner):
                runner.defer(update, kci_rows, event, entry.event_id)
                return True  # the versioned UPDATE is checked when the batch sends it
            if runner.write(_UPDATE, update) != 1:
                return False
            for values in kci_rows:
                runner.write(_INSERT_KCI, values)
            runner.write(_INSERT_EVENT, event)
            return True

        try:
            # On PostgreSQL the event is one statement (its own transaction, or the batch's):
            # one round trip instead of BEGIN, UPDATE, INSERTs and COMMIT. In a batch, the
            # batch's runner is used as it is.
            if batch is not None:
                saved = write(batch)
            elif self.dialect == "postgresql":
                saved = self._read(write)
            else:
                with self.writing() as runner:
                    saved = write(runner)
            if not saved:
                if self._records is not None:
                    self._records.drop(record.order_id)
                raise ConcurrencyConflict(
                    f"order {record.order_id} changed since it was read (version {loaded})",
                    order_id=record.order_id,
                )
        except (self._integrity_error, IntegrityError) as exc:
            raise ConcurrencyConflict(
                f"order {record.order_id}: a concurrent writer stored the same KCI sequence "
                f"number or event id first ({type(exc).__name__})",
                order_id=record.order_id,
            ) from None
        record.version = loaded + 1
        if batch is not None:
            batch.kept[record.order_id] = (record, document)
        elif (records := self._cache()) is not None:
            records.keep([(record, document)])  # committed

    def applied(self, order_id: str, event_id: str) -> list[Kci] | None:
        with self.reading() as runner:
            values = {"k_order_id": order_id, "k_event_id": event_id}
            if (
                isinstance(runner, _DirectRunner)
                and (order_id, event_id) not in runner.deferred_ids
            ):
                found = runner.rows(_APPLIED, values, flush=False)  # not among the deferred
            else:
                found = runner.rows(_APPLIED, values)
        if not found:
            return None
        wanted = set(json.loads(found[0]["kci_ids"]))
        if not wanted:
            return []
        return [kci for kci in self.kcis(order_id) if kci.kci_id in wanted]

    # --- reading back and operations -----------------------------------------------------------

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A SQLAlchemy connection for operational (not hot-path) queries: the joined session's,
        or a new one; what the database raises comes out as the engine's own errors."""
        if self._session is not None:
            yield self._session.connection()
            return
        with translated(self.database), self.db.connect() as conn:
            yield conn

    def events(self, order_id: str) -> list[EventEntry]:
        return [_entry(row) for row in self._of_order(_EVENTS_OF, order_id)]

    def kcis(self, order_id: str) -> list[Kci]:
        return [entry.kci for entry in self.outbox(order_id)]

    def outbox(self, order_id: str) -> list[OutboxEntry]:
        """The order's KCIs with their delivery progress, in sequence order.

        Raises:
            OrderNotFound: no such order.
        """
        return [_outbox_entry(row) for row in self._of_order(_OUTBOX_OF, order_id)]

    def _of_order(self, statement: Statement, order_id: str) -> list[dict[str, Any]]:
        """The rows ``statement`` selects for an order, read as the hot path reads (inside a
        batch: on its connection, which sees what the batch wrote so far).

        Raises:
            OrderNotFound: no such order.
        """
        values = {"k_order_id": order_id}
        with self.reading() as runner:
            if not runner.rows(_EXISTS, values):
                raise OrderNotFound(order_id)
            return runner.rows(statement, values)

    def order_ids(self) -> Iterator[str]:
        with self.connection() as conn:
            rows = conn.execute(
                sa.select(ORDERS.c.order_id).order_by(ORDERS.c.created_at_ms, ORDERS.c.order_id)
            ).all()
        return iter([row[0] for row in rows])

    @staticmethod
    def _require(conn: Connection, order_id: str) -> None:
        found = conn.execute(
            sa.select(ORDERS.c.order_id).where(ORDERS.c.order_id == order_id)
        ).first()
        if found is None:
            raise OrderNotFound(order_id)

    def outbox_status(self) -> dict[str, Any]:
        """Counts per delivery state and the age of the oldest undelivered KCI."""
        with self.connection() as conn:
            counts: dict[str, int] = {
                state: int(count)
                for state, count in conn.execute(
                    sa.select(OUTBOX.c.delivery_state, sa.func.count()).group_by(
                        OUTBOX.c.delivery_state
                    )
                ).tuples()
            }
            oldest = conn.execute(
                sa.select(sa.func.min(OUTBOX.c.created_at_ms)).where(
                    OUTBOX.c.delivery_state != DeliveryState.DELIVERED
                )
            ).scalar()
        states = (DeliveryState.PENDING, DeliveryState.DELIVERED, DeliveryState.DEAD)
        return {
            "counts": {state: int(counts.get(state, 0)) for state in states},
            "oldest_undelivered_age_s": None
            if oldest is None
            else round((now_ms() - int(oldest)) / 1000, 3),
        }


# --- row <-> record ------------------------------------------------------------------------------


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


#: ``requests`` of an order with no open amendment or cancellation (most orders, most events).
_NO_REQUESTS = json.dumps({"amendments": [], "cancellation": None})
_ORDER_TYPES = {order_type.value: order_type for order_type in OrderType}


def _order_values(record: OrderRecord, now: int, document: str, version: int) -> tuple[Any, ...]:
    """The order row's columns an event sets (:data:`_SET`, in its order); ``document`` is the
    document's JSON."""
    requests = (
        _NO_REQUESTS
        if not record.amendments and record.cancellation is None
        else json.dumps(
            {
                "amendments": [ref.to_json() for ref in record.amendments],
                "cancellation": None
                if record.cancellation is None
                else record.cancellation.to_json(),
            }
        )
    )
    last = record.last_issued_on
    return (
        record.order_type._value_,
        str(record.status),
        dump_json([str(s) for s in record.return_stack]) if record.return_stack else "[]",
        requests,
        document,
        record.next_sequence,
        None if last is None else format_datetime(last),
        version,
        record.conversation_id,
        now,
    )


def _kci_rows(kcis: Sequence[Kci], now: int) -> list[tuple[Any, ...]]:
    """The outbox rows of ``kcis`` (:data:`_KCI_COLUMNS`, in its order), pending delivery. Each
    body is encoded whole (reusing the order document's text as a prefix saved time with
    pydantic_core's encoder; with orjson it costs more: 1.44 µs against 0.98)."""
    return [
        (
            kci.kci_id,
            kci.order_id,
            kci.sequence_number,
            kci.reason_code._value_,
            kci.status._value_,
            kci.event,
            kci.body["issuedOn"],
            dump_json(kci.body),
            DeliveryState.PENDING,
            0,
            now,
            now,
        )
        for kci in kcis
    ]


def _event_values(entry: EventEntry) -> tuple[Any, ...]:
    """The log entry's row (:data:`_EVENT_COLUMNS`, in its order)."""
    return (
        entry.order_id,
        entry.event_id,
        entry.event,
        entry.status_before,
        entry.status_after,
        dump_json(list(entry.kci_ids)) if entry.kci_ids else "[]",
        given_json(entry.data),
        _ms(entry.applied_at),
    )


def _record(row: Any) -> OrderRecord:
    text = row["requests"]
    requests = {} if text == _NO_REQUESTS else json.loads(text)
    cancellation = requests.get("cancellation")
    last = row["last_issued_on"]
    stack = row["return_stack"]
    return OrderRecord(
        order_id=row["order_id"],
        order_type=_ORDER_TYPES[row["order_type"]],
        status=row["status"],
        document=from_json(row["document"]),  # pydantic_core: about twice json.loads' speed
        return_stack=[] if stack == "[]" else json.loads(stack),
        amendments=[RequestRef.from_json(ref) for ref in requests.get("amendments", [])],
        cancellation=None if cancellation is None else RequestRef.from_json(cancellation),
        next_sequence=row["next_sequence"],
        last_issued_on=None if last is None else datetime.fromisoformat(last),
        version=row["version"],
        conversation_id=row["conversation_id"],
    )


def _kci(row: Any) -> Kci:
    return Kci(
        kci_id=row["kci_id"],
        order_id=row["order_id"],
        sequence_number=row["sequence_number"],
        reason_code=ReasonCode(row["reason_code"]),
        status=OrderStatus(row["status"]),
        issued_on=datetime.fromisoformat(row["issued_on"]),
        body=json.loads(row["body"]),
        event=row["event"],
    )


def _outbox_entry(row: Any) -> OutboxEntry:
    return OutboxEntry(
        kci=_kci(row),
        delivery_state=row["delivery_state"],
        attempts=row["attempts"],
        next_attempt_at_ms=row["next_attempt_at_ms"],
        last_error=row["last_error"],
        delivered_at_ms=row["delivered_at_ms"],
    )


def _entry(row: Any) -> EventEntry:
    return EventEntry(
        order_id=row["order_id"],
        event=row["event"],
        event_id=row["event_id"],
        status_before=row["status_before"],
        status_after=row["status_after"],
        kci_ids=tuple(json.loads(row["kci_ids"])),
        data=EventData.model_validate(json.loads(row["data"])),
        applied_at=datetime.fromtimestamp(row["applied_at_ms"] / 1000, UTC),
    )
