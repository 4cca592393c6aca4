"""An in-memory store: for tests, the demo and embedding where durability is not needed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from engine.errors import ConcurrencyConflict, OrderExists, OrderNotFound
from engine.records import Kci, OrderRecord


class MemoryStore:
    """Keeps orders, KCIs and applied event ids in dicts. Not shared between processes."""

    def __init__(self) -> None:
        self._records: dict[str, OrderRecord] = {}
        self._kcis: dict[str, list[Kci]] = {}
        self._events: dict[tuple[str, str], list[Kci]] = {}

    def create(self, record: OrderRecord, kcis: Sequence[Kci], event_id: str | None) -> None:
        if record.order_id in self._records:
            raise OrderExists(record.order_id)
        record.version = 1
        self._records[record.order_id] = record.copy()
        self._kcis[record.order_id] = list(kcis)
        if event_id is not None:
            self._events[(record.order_id, event_id)] = list(kcis)

    def load(self, order_id: str) -> OrderRecord:
        try:
            return self._records[order_id].copy()
        except KeyError:
            raise OrderNotFound(order_id) from None

    def save(self, record: OrderRecord, kcis: Sequence[Kci], event_id: str | None) -> None:
        stored = self._records.get(record.order_id)
        if stored is None:
            raise OrderNotFound(record.order_id)
        if stored.version != record.version:
            raise ConcurrencyConflict(
                f"order {record.order_id} changed since it was loaded "
                f"(version {record.version}, now {stored.version})",
                order_id=record.order_id,
            )
        record.version += 1
        self._records[record.order_id] = record  # the caller hands it over (see Store.save)
        self._kcis[record.order_id].extend(kcis)
        if event_id is not None:
            self._events[(record.order_id, event_id)] = list(kcis)

    def applied(self, order_id: str, event_id: str) -> list[Kci] | None:
        found = self._events.get((order_id, event_id))
        return None if found is None else list(found)

    def kcis(self, order_id: str) -> list[Kci]:
        try:
            return list(self._kcis[order_id])
        except KeyError:
            raise OrderNotFound(order_id) from None

    def order_ids(self) -> Iterator[str]:
        return iter(list(self._records))
