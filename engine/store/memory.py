"""An in-memory store: for tests, the demo and embedding where durability is not needed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ..core.events import EventEntry
from ..core.records import Kci, OrderRecord
from ..errors import ConcurrencyConflict, OrderExists, OrderNotFound


class MemoryStore:
    """Keeps orders, KCIs and the event log in dicts. Not shared between processes."""

    def __init__(self) -> None:
        self._records: dict[str, OrderRecord] = {}
        self._kcis: dict[str, list[Kci]] = {}
        self._events: dict[str, list[EventEntry]] = {}
        self._applied: dict[tuple[str, str], list[Kci]] = {}

    def create(self, record: OrderRecord, kcis: Sequence[Kci], entry: EventEntry) -> None:
        if record.order_id in self._records:
            raise OrderExists(record.order_id)
        record.version = 1
        self._records[record.order_id] = record.copy()
        self._kcis[record.order_id] = list(kcis)
        self._events[record.order_id] = [entry]
        self._remember(entry, kcis)

    def load(self, order_id: str) -> OrderRecord:
        try:
            return self._records[order_id].copy()
        except KeyError:
            raise OrderNotFound(order_id) from None

    def save(self, record: OrderRecord, kcis: Sequence[Kci], entry: EventEntry) -> None:
        stored = self._records.get(record.order_id)
        if stored is None:
            raise OrderNotFound(record.order_id)
        if stored.version != record.version:
            raise ConcurrencyConflict(
                f"order {record.order_id} changed since it was loaded "
                f"(version {record.version}, now {stored.version})",
                order_id=record.order_id,
            )
        if entry.event_id is not None and (record.order_id, entry.event_id) in self._applied:
            raise ConcurrencyConflict(
                f"order {record.order_id}: event id {entry.event_id!r} was applied meanwhile",
                order_id=record.order_id,
            )
        record.version += 1
        self._records[record.order_id] = record  # the caller hands it over (see Store.save)
        self._kcis[record.order_id].extend(kcis)
        self._events[record.order_id].append(entry)
        self._remember(entry, kcis)

    def _remember(self, entry: EventEntry, kcis: Sequence[Kci]) -> None:
        if entry.event_id is not None:
            self._applied[(entry.order_id, entry.event_id)] = list(kcis)

    def applied(self, order_id: str, event_id: str) -> list[Kci] | None:
        found = self._applied.get((order_id, event_id))
        return None if found is None else list(found)

    def events(self, order_id: str) -> list[EventEntry]:
        try:
            return list(self._events[order_id])
        except KeyError:
            raise OrderNotFound(order_id) from None

    def kcis(self, order_id: str) -> list[Kci]:
        try:
            return list(self._kcis[order_id])
        except KeyError:
            raise OrderNotFound(order_id) from None

    @contextmanager
    def batch(self) -> Iterator[None]:
        saved = (
            dict(self._records),
            {order_id: len(kcis) for order_id, kcis in self._kcis.items()},
            {order_id: len(events) for order_id, events in self._events.items()},
            dict(self._applied),
        )
        try:
            yield
        except BaseException:
            records, kci_counts, event_counts, applied = saved
            self._records = records
            self._kcis = {k: self._kcis[k][:n] for k, n in kci_counts.items()}
            self._events = {k: self._events[k][:n] for k, n in event_counts.items()}
            self._applied = applied
            raise

    def order_ids(self) -> Iterator[str]:
        return iter(list(self._records))
