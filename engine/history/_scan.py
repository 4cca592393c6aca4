"""Reading every order with its event log and outbox, a chunk at a time, in constant memory.

The three commands that look back over the database (``history replay``, ``jeopardy``,
``reconcile``) read the same thing: each order's row, its origin, its events and its KCIs. They
read it by keyset pages of order ids (``order_id > last ... LIMIT n``), each page in one read
transaction, so memory stays bounded by the page size whatever the database holds, every backend
does the same (no server-side cursors), and an order is always seen whole: its row, its events
and its KCIs from one snapshot. Nothing is written.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..errors import ConfigurationError
from ..store.sql import SqlStore
from ..store.tables import EVENTS, ORDERS, ORIGINS, OUTBOX, REPAIRS

#: Orders read per page: big enough that the round trips do not dominate, small enough that a
#: page of orders with long histories stays a few megabytes.
PAGE = 500


@dataclass(slots=True)
class StoredOrder:
    """One order as the database holds it: rows as dicts keyed by column name."""

    row: dict[str, Any]
    origin: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    #: operators' repairs of its dead letters (``kci_repair``, oldest first), read with origins
    repairs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def order_id(self) -> str:
        return str(self.row["order_id"])


def scan(
    store: SqlStore,
    *,
    order_ids: Iterable[str] | None = None,
    since_ms: int | None = None,
    page: int = PAGE,
    events: bool = True,
    outbox: bool = True,
    origins: bool = False,
) -> Iterator[StoredOrder]:
    """Every order (or those in ``order_ids``; or those changed at or after ``since_ms``), in
    order-id order, with the parts asked for.

    Raises:
        ConfigurationError: ``page`` is not a positive integer.
        StoreError: the database cannot be read.
    """
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise ConfigurationError(f"page must be a positive integer, not {page!r}")
    wanted = None if order_ids is None else sorted(set(order_ids))
    last: str | None = None
    position = 0
    while True:
        query = sa.select(ORDERS).order_by(ORDERS.c.order_id).limit(page)
        if wanted is not None:
            chunk_ids: Sequence[str] = wanted[position : position + page]
            position += page
            if not chunk_ids:
                return
            query = query.where(ORDERS.c.order_id.in_(chunk_ids))
        elif last is not None:
            query = query.where(ORDERS.c.order_id > last)
        if since_ms is not None:
            query = query.where(ORDERS.c.updated_at_ms >= since_ms)
        with store.connection() as conn, conn.begin():
            rows = [dict(r._mapping) for r in conn.execute(query)]
            if not rows:
                if wanted is not None:
                    continue
                return
            found = {row["order_id"]: StoredOrder(row) for row in rows}
            ids = list(found)
            if origins:
                for r in conn.execute(sa.select(ORIGINS).where(ORIGINS.c.order_id.in_(ids))):
                    found[r.order_id].origin = dict(r._mapping)
                repairs = sa.select(REPAIRS).where(REPAIRS.c.order_id.in_(ids))
                for r in conn.execute(repairs.order_by(REPAIRS.c.seq)):
                    found[r.order_id].repairs.append(dict(r._mapping))
            for wanted_part, table, order, attribute in (
                (events, EVENTS, EVENTS.c.seq, "events"),
                (outbox, OUTBOX, OUTBOX.c.sequence_number, "outbox"),
            ):
                if not wanted_part:
                    continue
                query_part = (
                    sa.select(table)
                    .where(table.c.order_id.in_(ids))
                    .order_by(table.c.order_id, order)
                )
                for order_id, group in _grouped(conn.execute(query_part)).items():
                    setattr(found[order_id], attribute, group)
        yield from found.values()
        last = rows[-1]["order_id"]


def count(
    store: SqlStore, *, order_ids: Iterable[str] | None = None, since_ms: int | None = None
) -> int:
    """How many orders :func:`scan` would yield, or (given ``order_ids``) at most (for a
    progress bar)."""
    if order_ids is not None:
        return len(set(order_ids))  # at most; one IN list of every id could pass SQLite's limit
    query = sa.select(sa.func.count()).select_from(ORDERS)
    if since_ms is not None:
        query = query.where(ORDERS.c.updated_at_ms >= since_ms)
    with store.connection() as conn:
        return int(conn.execute(query).scalar() or 0)


def _grouped(result: Iterable[Any]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in result:
        groups[r.order_id].append(dict(r._mapping))
    return groups
