"""An in-memory store: for tests, the demo and embedding where durability is not needed.

An order's KCIs and event-log entries are kept as flat rows in one list each: a KCI as seven
values side by side (:data:`_KCI_WIDTH`), an entry as seven (:data:`_ENTRY_WIDTH`), their bodies
and data as JSON text, rebuilt when read. Strings, numbers, None and datetimes are objects
CPython's cyclic garbage collector never tracks, and appending them to a list allocates no new
container: keeping an event costs the collector nothing. (A tuple per KCI and per entry was
tracked when made, and every 700 of them set off a collection: about a sixteenth of an event's
cost with 10,000 orders, and more memory.)

An order's record is kept as a tuple of its fields (its lists as tuples, its requests as pairs),
with its document beside it: the tuple replaces the one before, so it adds nothing to collect.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from ..core.codes import OrderStatus, OrderType, ReasonCode
from ..core.events import EventData, EventEntry, given_json
from ..core.records import Kci, OrderRecord, RequestRef
from ..core.wire import dump_json
from ..errors import ConcurrencyConflict, OrderExists, OrderNotFound

#: A KCI's row in its order's list, this many values: id, sequence number, reason code, status,
#: issuedOn, body JSON, event.
_KCI_WIDTH = 7
#: An event-log entry's row, this many values: event, event id, status before and after, KCI
#: ids (a single id as its string, otherwise a tuple), data JSON, applied at.
_ENTRY_WIDTH = 7
#: Rows of one order, side by side in one list (only strings, numbers, None, datetimes and
#: tuples of strings).
_Rows = list[Any]
#: A stored request reference: id, reference.
_StoredRef = tuple[int | None, str | None]
#: A stored order record without its document: order type, status, return stack, amendments,
#: cancellation, next sequence number, last issuedOn, version, conversation id. Plain values
#: only (the order type as its string), so the collector stops tracking it.
_StoredOrder = tuple[
    str,
    str,
    tuple[str, ...],
    tuple[_StoredRef, ...],
    _StoredRef | None,
    int,
    datetime | None,
    int,
    str | None,
]
_VERSION = 7  # the version's place in a _StoredOrder


class MemoryStore:
    """Keeps orders, KCIs and the event log in dicts. Not shared between processes."""

    def __init__(self) -> None:
        self._orders: dict[str, _StoredOrder] = {}
        self._documents: dict[str, dict[str, Any]] = {}
        self._kcis: dict[str, _Rows] = {}
        self._events: dict[str, _Rows] = {}
        #: (order id, event id) -> where in the order's KCI rows that event's KCIs are.
        self._applied: dict[tuple[str, str], range] = {}

    def create(self, record: OrderRecord, kcis: Sequence[Kci], entry: EventEntry) -> None:
        if record.order_id in self._orders:
            raise OrderExists(record.order_id)
        rows = _kci_rows(kcis)
        logged = _entry_row(entry)
        record.version = 1
        self._orders[record.order_id] = _kept(record)
        self._documents[record.order_id] = _shared(record.document)
        self._kcis[record.order_id] = rows
        self._events[record.order_id] = list(logged)
        self._remember(entry, 0, len(rows))

    def load(self, order_id: str) -> OrderRecord:
        try:
            kept = self._orders[order_id]
        except KeyError:
            raise OrderNotFound(order_id) from None
        return _record(order_id, kept, self._documents[order_id])

    def save(self, record: OrderRecord, kcis: Sequence[Kci], entry: EventEntry) -> None:
        order_id = record.order_id
        stored = self._orders.get(order_id)
        if stored is None:
            raise OrderNotFound(order_id)
        if stored[_VERSION] != record.version:
            raise ConcurrencyConflict(
                f"order {order_id} changed since it was loaded "
                f"(version {record.version}, now {stored[_VERSION]})",
                order_id=order_id,
            )
        if entry.event_id is not None and (order_id, entry.event_id) in self._applied:
            raise ConcurrencyConflict(
                f"order {order_id}: event id {entry.event_id!r} was applied meanwhile",
                order_id=order_id,
            )
        # Encoded before anything changes: a body that cannot be encoded changes nothing.
        new = _kci_rows(kcis)
        logged = _entry_row(entry)
        record.version += 1
        self._orders[order_id] = _kept(record)
        self._documents[order_id] = record.document
        rows = self._kcis[order_id]
        first = len(rows)
        if new:
            rows += new
        self._events[order_id] += logged
        if entry.event_id is not None:
            self._remember(entry, first, len(rows))

    def _remember(self, entry: EventEntry, first: int, stop: int) -> None:
        if entry.event_id is not None:
            self._applied[(entry.order_id, entry.event_id)] = range(first, stop, _KCI_WIDTH)

    def applied(self, order_id: str, event_id: str) -> list[Kci] | None:
        found = self._applied.get((order_id, event_id))
        if found is None:
            return None
        rows = self._kcis[order_id]
        return [_kci(order_id, rows, at) for at in found]

    def events(self, order_id: str) -> list[EventEntry]:
        try:
            rows = self._events[order_id]
        except KeyError:
            raise OrderNotFound(order_id) from None
        return [_entry(order_id, rows, at) for at in range(0, len(rows), _ENTRY_WIDTH)]

    def kcis(self, order_id: str) -> list[Kci]:
        try:
            rows = self._kcis[order_id]
        except KeyError:
            raise OrderNotFound(order_id) from None
        return [_kci(order_id, rows, at) for at in range(0, len(rows), _KCI_WIDTH)]

    @contextmanager
    def batch(self) -> Iterator[None]:
        saved = (
            dict(self._orders),
            dict(self._documents),
            {order_id: len(rows) for order_id, rows in self._kcis.items()},
            {order_id: len(rows) for order_id, rows in self._events.items()},
            dict(self._applied),
        )
        try:
            yield
        except BaseException:
            orders, documents, kci_counts, event_counts, applied = saved
            self._orders = orders
            self._documents = documents
            self._kcis = {k: self._kcis[k][:n] for k, n in kci_counts.items()}
            self._events = {k: self._events[k][:n] for k, n in event_counts.items()}
            self._applied = applied
            raise

    def order_ids(self) -> Iterator[str]:
        return iter(list(self._orders))


def _kept(record: OrderRecord) -> _StoredOrder:
    status, amendments, cancellation = record.status, record.amendments, record.cancellation
    return (
        record.order_type._value_,
        # Not an OrderStatus member (a new order's initial status is one): a plain string.
        status if type(status) is str else sys.intern(str(status)),
        tuple(record.return_stack),
        tuple([(r.id, r.reference) for r in amendments]) if amendments else (),
        None if cancellation is None else (cancellation.id, cancellation.reference),
        record.next_sequence,
        record.last_issued_on,
        record.version,
        record.conversation_id,
    )


def _record(order_id: str, kept: _StoredOrder, document: dict[str, Any]) -> OrderRecord:
    order_type, status, stack, amendments, cancellation, sequence, issued_on, version, cid = kept
    return OrderRecord(
        order_id,
        _ORDER_TYPES[order_type],
        status,
        document,  # documents are replaced, never changed in place
        list(stack),
        [RequestRef(*ref) for ref in amendments] if amendments else [],
        None if cancellation is None else RequestRef(*cancellation),
        sequence,
        issued_on,
        version,
        cid,
    )


_ORDER_TYPES = {order_type.value: order_type for order_type in OrderType}


def _kci_rows(kcis: Sequence[Kci]) -> _Rows:
    rows: _Rows = []
    for kci in kcis:
        rows += (
            kci.kci_id,
            kci.sequence_number,
            kci.reason_code._value_,
            kci.status._value_,
            kci.issued_on,
            dump_json(kci.body),  # decodes to an equal body; Kci.json() encodes it for the wire
            kci.event,
        )
    return rows


def _kci(order_id: str, rows: _Rows, at: int) -> Kci:
    kci_id, number, reason, status, issued_on, body, event = rows[at : at + _KCI_WIDTH]
    return Kci(
        kci_id,
        order_id,
        number,
        ReasonCode(reason),
        OrderStatus(status),
        issued_on,
        json.loads(body),
        event,
    )


def _entry_row(entry: EventEntry) -> tuple[Any, ...]:
    ids = entry.kci_ids
    return (
        entry.event,
        entry.event_id,
        entry.status_before,
        entry.status_after,
        ids[0] if len(ids) == 1 else ids,  # a one-id tuple would be a container to collect
        _shared(given_json(entry.data)),
        entry.applied_at,
    )


def _shared(value: Any) -> Any:
    """``value`` with its short strings interned: the same codes, names and flags recur in every
    order (about a fifth of a kept order's memory). Values are equal, only shared."""
    if type(value) is str:  # not a subclass (an enum member): sys.intern takes str only
        return sys.intern(value) if len(value) <= _SHORT else value
    if isinstance(value, dict):
        return {key: _shared(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shared(item) for item in value]
    return value


_SHORT = 40


def _entry(order_id: str, rows: _Rows, at: int) -> EventEntry:
    event, event_id, before, after, ids, data, applied_at = rows[at : at + _ENTRY_WIDTH]
    return EventEntry(
        order_id,
        event,
        event_id,
        before,
        after,
        (ids,) if isinstance(ids, str) else ids,
        EventData.model_validate_json(data),
        applied_at,
    )
