"""The store interface: what the engine needs from a backend, and nothing more.

A backend keeps, per order, the :class:`OrderRecord` and its KCIs (the outbox), and the ids of
the events already applied. ``create`` and ``save`` write the record and its new KCIs
atomically: both land or neither does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

from engine.records import Kci, OrderRecord


@runtime_checkable
class Store(Protocol):
    """A place to keep orders and their KCIs."""

    def create(self, record: OrderRecord, kcis: Sequence[Kci], event_id: str | None) -> None:
        """Store a new order and the KCIs its creation produced.

        Raises:
            OrderExists: an order with ``record.order_id`` is already stored.
        """
        ...

    def load(self, order_id: str) -> OrderRecord:
        """A private copy of the order's record; changing it changes nothing stored.

        Raises:
            OrderNotFound: no such order.
        """
        ...

    def save(self, record: OrderRecord, kcis: Sequence[Kci], event_id: str | None) -> None:
        """Store the changed ``record`` (whose ``version`` is the one it was loaded at) and the
        KCIs the event produced, and remember ``event_id`` with them.

        On success ``record.version`` is bumped and the store may keep ``record`` itself: the
        caller hands it over and must not change it afterwards.

        Raises:
            ConcurrencyConflict: the stored version is no longer the one loaded.
        """
        ...

    def applied(self, order_id: str, event_id: str) -> list[Kci] | None:
        """The KCIs an already-applied event produced, or ``None`` if it was never applied."""
        ...

    def kcis(self, order_id: str) -> list[Kci]:
        """The order's KCIs in sequence order.

        Raises:
            OrderNotFound: no such order.
        """
        ...

    def order_ids(self) -> Iterator[str]:
        """The ids of every stored order, in the order they were created."""
        ...
