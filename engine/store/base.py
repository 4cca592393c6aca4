"""The store interface: what the engine needs from a backend, and nothing more.

A backend keeps, per order, the :class:`OrderRecord`, its KCIs (the outbox) and the log of
events applied to it. ``create`` and ``save`` write the record, its new KCIs and the event's log
entry atomically: all land or none does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from ..core.events import EventEntry
from ..core.records import Kci, OrderRecord


@runtime_checkable
class Store(Protocol):
    """A place to keep orders and their KCIs."""

    def create(self, record: OrderRecord, kcis: Sequence[Kci], entry: EventEntry) -> None:
        """Store a new order, the KCIs its creation produced and the creating event's entry.

        Raises:
            OrderExists: an order with ``record.order_id`` is already stored.
        """
        ...

    def load(self, order_id: str) -> OrderRecord:
        """A copy of the order's record: changing its fields changes nothing stored. Its
        ``document`` may be shared with the store and with KCI bodies: the engine replaces
        documents, never edits them in place, and so must every caller (or deep-copy it first,
        as :meth:`Engine.order` does).

        Raises:
            OrderNotFound: no such order.
        """
        ...

    def save(self, record: OrderRecord, kcis: Sequence[Kci], entry: EventEntry) -> None:
        """Store the changed ``record`` (whose ``version`` is the one it was loaded at), the KCIs
        the event produced and its log entry (whose ``event_id``, if any, makes it idempotent).

        On success ``record.version`` is bumped and the store may keep ``record`` itself: the
        caller hands it over and must not change it afterwards.

        Raises:
            ConcurrencyConflict: the stored version is no longer the one loaded, or the same
                event id was applied meanwhile.
        """
        ...

    def applied(self, order_id: str, event_id: str) -> list[Kci] | None:
        """The KCIs an already-applied event produced, or ``None`` if it was never applied."""
        ...

    def events(self, order_id: str) -> list[EventEntry]:
        """The order's event log, oldest first.

        Raises:
            OrderNotFound: no such order.
        """
        ...

    def kcis(self, order_id: str) -> list[Kci]:
        """The order's KCIs in sequence order.

        Raises:
            OrderNotFound: no such order.
        """
        ...

    def batch(self) -> AbstractContextManager[None]:
        """A context in which every create and save joins one transaction: all of them land
        when the context exits normally, none if it exits with an exception."""
        ...

    def order_ids(self) -> Iterator[str]:
        """The ids of every stored order, in the order they were created."""
        ...


@runtime_checkable
class Prefetching(Protocol):
    """A store that can read many orders ahead inside a batch (optional: a store without it
    loads each order when it is needed)."""

    def prefetch(self, order_ids: Iterable[str]) -> None:
        """Inside :meth:`Store.batch`: read these orders now, for the batch's coming loads."""
        ...
