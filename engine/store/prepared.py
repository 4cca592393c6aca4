"""PostgreSQL's statements of every event, prepared once per connection and run on libpq.

Every event on PostgreSQL reads its order row and then writes the event in one statement
(:func:`~kci_engine.store.sql._in_one_sql`). Through a psycopg cursor each statement cost about
65 µs of client CPU in Python-level bookkeeping (query conversion, the automatic
prepared-statement cache, the wait generator): with the engine's own work, more than a raw
psycopg loop spends on the five statements of its transaction. Here each statement is prepared
once per connection under a name of our own and run with psycopg's ``PGconn.exec_prepared``:
psycopg's Transformer still adapts the parameters and the row (in C, the same types as a cursor,
a NUL character refused rather than truncated), libpq still talks to the server, and the GIL is
released while it waits. What the server reports is raised as psycopg's own exception for it
(a unique violation is still an ``IntegrityError``), so the store translates it as before.

A connection whose ``prepare_threshold`` is ``None`` (the psycopg setting for a pooler that
cannot keep prepared statements) is left to the cursor.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from psycopg import errors
from psycopg.adapt import PyFormat, Transformer
from psycopg.pq import ConnStatus, ExecStatus, TransactionStatus

__all__ = ["Prepared"]

_DONE = (ExecStatus.COMMAND_OK, ExecStatus.TUPLES_OK)
_PLACEHOLDER = re.compile(r"%s")


def numbered(sql: str) -> bytes:
    """``sql`` with its ``%s`` placeholders numbered as the server wants them (``$1``, ...)."""
    count = iter(range(1, 1 << 16))
    return _PLACEHOLDER.sub(lambda _: f"${next(count)}", sql).encode()


class Prepared:
    """One psycopg connection's prepared statements, each prepared when first run.

    Args:
        driver: the psycopg connection (autocommit, or in a transaction the caller began).
    """

    def __init__(self, driver: Any) -> None:
        self._pgconn = driver.pgconn
        self._adapt = Transformer(driver)
        self._encoding: str = driver.info.encoding
        self._names: set[str] = set()
        self._formats: dict[int, list[PyFormat]] = {}

    def run(self, name: str, sql: str, params: Sequence[Any]) -> Any:
        """Run the statement ``sql`` (``%s`` placeholders), prepared as ``name``; its result.

        Raises:
            psycopg.Error: what the server or the connection reported, as psycopg raises it.
        """
        key = name.encode()
        if name not in self._names:
            self._check(self._pgconn.prepare(key, numbered(sql)))
            self._names.add(name)
        formats = self._formats.get(len(params))
        if formats is None:
            formats = self._formats[len(params)] = [PyFormat.TEXT] * len(params)
        values = self._adapt.dump_sequence(params, formats)
        try:
            return self._check(self._pgconn.exec_prepared(key, values))
        except errors.InvalidSqlStatementName:
            # DISCARD ALL (a pooler's reset) dropped it; inside a transaction, which the error
            # aborted, the caller's retry starts over.
            if self._pgconn.transaction_status != TransactionStatus.IDLE:
                raise
            self._names.clear()
            self._check(self._pgconn.prepare(key, numbered(sql)))
            self._names.add(name)
            return self._check(self._pgconn.exec_prepared(key, values))

    def first_row(self, result: Any) -> tuple[Any, ...] | None:
        """The first row of ``result`` as Python values (psycopg's loaders), if it has one."""
        if not result.ntuples:
            return None
        self._adapt.set_pgresult(result)
        row: tuple[Any, ...] = self._adapt.load_row(0, tuple)
        return row

    def _check(self, result: Any) -> Any:
        if result.status in _DONE:
            return result
        if self._pgconn.status == ConnStatus.BAD:  # as psycopg raises a lost connection
            raise errors.OperationalError(self._pgconn.get_error_message(self._encoding))
        raise errors.error_from_result(result, encoding=self._encoding)
