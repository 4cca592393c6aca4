"""An in-memory store: for tests, the demo and embedding where durability is not needed.

KCIs and event-log entries are kept as tuples of strings, numbers and datetimes, their bodies and
data as JSON text, and rebuilt when read: CPython's cyclic garbage collector does not track such
tuples, so keeping a million of them costs no collector time (live dicts would be scanned on
every full collection: about a third of an event's cost with 10,000 orders).

An order's record is kept the same way, as a tuple of its fields (its lists as tuples, its
requests as pairs), with its document beside it: a kept ``OrderRecord`` and its two lists were
three new containers per event that lived on into the oldest generation, and the collector's
time grew with them (about a tenth of an event's cost).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from pydantic_core import to_json

from ..core.codes import OrderStatus, OrderType, ReasonCode
from ..core.events import EventData, EventEntry, given_json
from ..core.records import Kci, OrderRecord, RequestRef
from ..errors import ConcurrencyConflict, OrderExists, OrderNotFound

#: A stored KCI: id, order id, sequence number, reason code, status, issuedOn, body JSON (UTF-8),
#: event.
_StoredKci = tuple[str, str, int, str, str, datetime, bytes, str]
#: A stored log entry: order id, event, event id, status before and after, KCI ids, data JSON,
#: applied at.
_StoredEntry = tuple[str, str, str | None, str, str, tuple[str, ...], str, datetime]
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
        self._kcis: dict[str, list[_StoredKci]] = {}
        self._events: dict[str, list[_StoredEntry]] = {}
        self._applied: dict[tuple[str, str], tuple[_StoredKci, ...]] = {}

    def create(self, record: OrderRecord, kcis: Sequence[Kci], entry: EventEntry) -> None:
        if record.order_id in self._orders:
            raise OrderExists(record.order_id)
        stored = _stored(kcis)
        record.version = 1
        self._orders[record.order_id] = _kept(record)
        self._documents[record.order_id] = _shared(record.document)
        self._kcis[record.order_id] = list(stored)
        self._events[record.order_id] = [_stored_entry(entry)]
        self._remember(entry, stored)

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
        new = _stored(kcis)
        logged = _stored_entry(entry)
        record.version += 1
        self._orders[order_id] = _kept(record)
        self._documents[order_id] = record.document
        if new:
            self._kcis[order_id].extend(new)
        self._events[order_id].append(logged)
        if entry.event_id is not None:
            self._remember(entry, new)

    def _remember(self, entry: EventEntry, kcis: tuple[_StoredKci, ...]) -> None:
        if entry.event_id is not None:
            self._applied[(entry.order_id, entry.event_id)] = kcis

    def applied(self, order_id: str, event_id: str) -> list[Kci] | None:
        found = self._applied.get((order_id, event_id))
        return None if found is None else [_kci(kci) for kci in found]

    def events(self, order_id: str) -> list[EventEntry]:
        try:
            return [_entry(entry) for entry in self._events[order_id]]
        except KeyError:
            raise OrderNotFound(order_id) from None

    def kcis(self, order_id: str) -> list[Kci]:
        try:
            return [_kci(kci) for kci in self._kcis[order_id]]
        except KeyError:
            raise OrderNotFound(order_id) from None

    @contextmanager
    def batch(self) -> Iterator[None]:
        saved = (
            dict(self._orders),
            dict(self._documents),
            {order_id: len(kcis) for order_id, kcis in self._kcis.items()},
            {order_id: len(events) for order_id, events in self._events.items()},
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


def _stored(kcis: Sequence[Kci]) -> tuple[_StoredKci, ...]:
    return tuple(
        [
            (
                kci.kci_id,
                kci.order_id,
                kci.sequence_number,
                kci.reason_code._value_,
                kci.status._value_,
                kci.issued_on,
                to_json(kci.body),  # decodes to an equal body; Kci.json() encodes it for the wire
                kci.event,
            )
            for kci in kcis
        ]
    )


def _kci(stored: _StoredKci) -> Kci:
    kci_id, order_id, number, reason, status, issued_on, body, event = stored
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


def _stored_entry(entry: EventEntry) -> _StoredEntry:
    return (
        entry.order_id,
        entry.event,
        entry.event_id,
        entry.status_before,
        entry.status_after,
        entry.kci_ids,
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


def _entry(stored: _StoredEntry) -> EventEntry:
    order_id, event, event_id, before, after, kci_ids, data, applied_at = stored
    return EventEntry(
        order_id,
        event,
        event_id,
        before,
        after,
        kci_ids,
        EventData.model_validate_json(data),
        applied_at,
    )
