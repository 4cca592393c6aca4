"""Reconciliation: what each tenant was last told against what is true now, and why they differ.

For each order, the tenant's view is built from the event log and the outbox: every event the
gateway told the tenant of itself (the order's arrival, a synchronous 201 answer, a request it
answered with a 202) and every KCI the gateway accepted, in order, up to the first KCI not yet
accepted (the dispatcher delivers an order's KCIs in sequence, so nothing after it has been
seen). That view's status and key dates (committedDate, targetDate) are held against the order's
current state. An order is out of step when they differ, or when the tenant is waiting for an
answer the supplier owes; each record says why:

- ``in flight``: a KCI is queued and has not been tried yet;
- ``undelivered``: a KCI has been tried and not accepted (the dispatcher is retrying);
- ``dead-lettered``: a KCI was given up on (``kci-engine outbox retry`` after fixing the cause);
- ``owed``: the order waits in a status whose answer is a KCI the supplier has not sent;
- ``unexplained``: none of the above (a database changed by hand).

Read-only, a page of orders at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from ..core.codes import OrderType
from ..core.events import REPAIRED
from ..core.spec import OrderTypeSpec
from ..errors import ConfigurationError
from ..orders import SPECS
from ..store.sql import SqlStore
from ..store.tables import DeliveryState
from ._facts import at_ms, entered_at, iso, owing
from ._scan import PAGE, StoredOrder, scan

__all__ = [
    "DATES",
    "Reconciliation",
    "Snapshot",
    "Why",
    "out_of_step_for",
    "reconcile",
    "reconcile_order",
]

#: The order dates a tenant plans by, compared as well as the status.
DATES = ("committedDate", "targetDate")


class Why(StrEnum):
    """Why the tenant's view and the order's state differ."""

    IN_FLIGHT = "in flight"
    UNDELIVERED = "undelivered"
    DEAD_LETTERED = "dead-lettered"
    OWED = "owed"
    UNEXPLAINED = "unexplained"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An order's status and key dates, as told or as they are.

    Attributes:
        status: the status (``None``: the tenant has been told nothing yet).
        dates: committedDate and targetDate (wire strings; absent ones left out).
        sequence_number: the last KCI in it (``None``: none).
    """

    status: str | None
    dates: Mapping[str, str]
    sequence_number: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "dates": dict(self.dates),
            "sequence_number": self.sequence_number,
        }


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """One order out of step.

    Attributes:
        order_id: the order.
        order_type: its type.
        told: what the tenant was last told (the last KCI the gateway accepted, or what the
            gateway told them itself).
        actual: the order's current state (its last KCI produced, delivered or not).
        why: the reasons, most serious first.
        since: since when it has been out of step.
        waiting: KCIs not yet accepted by the gateway.
        detail: the first waiting KCI's state and error, or what is owed.
    """

    order_id: str
    order_type: str
    told: Snapshot
    actual: Snapshot
    why: tuple[Why, ...]
    since: datetime
    waiting: int
    detail: str

    def age(self, now: datetime) -> timedelta:
        """How long it has been out of step at ``now``."""
        return now - self.since

    @property
    def differs(self) -> bool:
        """Whether the status or a key date the tenant knows differs from the truth."""
        return self.told.status != self.actual.status or self.told.dates != self.actual.dates

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "order_type": self.order_type,
            "told": self.told.to_json(),
            "actual": self.actual.to_json(),
            "differs": self.differs,
            "why": [w.value for w in self.why],
            "since": iso(self.since),
            "age_s": int(self.age(now).total_seconds()),
            "waiting": self.waiting,
            "detail": self.detail,
        }


def reconcile(
    store: SqlStore,
    *,
    specs: Mapping[OrderType, OrderTypeSpec] = SPECS,
    page: int = PAGE,
) -> Iterator[Reconciliation]:
    """Every order whose tenant's view is out of step with its state, in order-id order.

    Raises:
        StoreError: the database cannot be read.
    """
    for stored in scan(store, page=page, origins=True):
        found = reconcile_order(stored, specs[OrderType(stored.row["order_type"])])
        if found is not None:
            yield found


def reconcile_order(stored: StoredOrder, spec: OrderTypeSpec) -> Reconciliation | None:
    """One order's reconciliation, or ``None`` when the tenant's view is the truth."""
    rows = {kci["kci_id"]: kci for kci in stored.outbox}
    told_status: str | None = None
    last_accepted: Mapping[str, Any] | None = None
    for event in stored.events:
        if event["event"] == REPAIRED:
            continue  # an operator's correction: nothing the tenant was told
        kci_ids = json.loads(event["kci_ids"])
        if not kci_ids:
            # The gateway told the tenant of this itself: the order arrived, a 201 answered it,
            # or a request was taken with a 202.
            told_status = event["status_after"]
            continue
        delivered = [rows[k] for k in kci_ids if k in rows]
        accepted = [r for r in delivered if r["delivery_state"] == DeliveryState.DELIVERED]
        if accepted:
            last_accepted = accepted[-1]
            told_status = last_accepted["status"]
        if len(accepted) < len(kci_ids):
            break  # nothing after an undelivered KCI has been seen
    told_dates: dict[str, str] = {}
    told_sequence: int | None = None
    if last_accepted is not None:  # only its body is read: the dates it carried
        told_dates = _dates(_order_of(spec, json.loads(last_accepted["body"])))
        told_sequence = last_accepted["sequence_number"]
    elif stored.origin is not None:  # what the order said when the gateway sent it
        told_dates = _dates(json.loads(stored.origin["document"]))
    row = stored.row
    document = json.loads(row["document"])
    sequence = row["next_sequence"] - 1
    actual = Snapshot(row["status"], _dates(document), sequence or None)
    told = Snapshot(told_status, told_dates, told_sequence)
    waiting = [r for r in stored.outbox if r["delivery_state"] != DeliveryState.DELIVERED]
    why: list[Why] = []
    since: list[datetime] = []
    detail = ""
    if waiting:
        first = waiting[0]
        states = {r["delivery_state"] for r in waiting}
        if DeliveryState.DEAD in states:
            why.append(Why.DEAD_LETTERED)
        if any(r["delivery_state"] == DeliveryState.PENDING and r["attempts"] for r in waiting):
            why.append(Why.UNDELIVERED)
        if any(r["delivery_state"] == DeliveryState.PENDING and not r["attempts"] for r in waiting):
            why.append(Why.IN_FLIGHT)
        since.append(at_ms(first["created_at_ms"]))
        error = f": {first['last_error']}" if first["last_error"] else ""
        detail = (
            f"KCI #{first['sequence_number']} {first['reason_code']} {first['delivery_state']} "
            f"after {first['attempts']} attempt(s){error}"
        )
    if row["status"] in owing(spec):
        why.append(Why.OWED)
        entered = entered_at(stored, row["status"])
        since.append(entered)
        detail = detail or f"the tenant waits for the supplier's answer in {row['status']}"
    if (told.status != actual.status or told.dates != actual.dates) and not why:
        why.append(Why.UNEXPLAINED)
        since.append(at_ms(row["updated_at_ms"]))
        detail = "no KCI explains it (was the database changed by hand?)"
    if not why:
        return None
    return Reconciliation(
        order_id=stored.order_id,
        order_type=spec.order_type.value,
        told=told,
        actual=actual,
        why=tuple(why),
        since=min(since),
        waiting=len(waiting),
        detail=detail,
    )


def out_of_step_for(found: Reconciliation, now: datetime, threshold: timedelta) -> bool:
    """Whether ``found`` has been out of step for longer than ``threshold`` at ``now``."""
    if now.tzinfo is None:
        raise ConfigurationError(f"now {now.isoformat()} has no timezone")
    return found.age(now.astimezone(UTC)) > threshold


def _order_of(spec: OrderTypeSpec, body: Mapping[str, Any]) -> Mapping[str, Any]:
    order = body.get(spec.kci_property)
    return order if isinstance(order, Mapping) else {}


def _dates(order: Mapping[str, Any]) -> dict[str, str]:
    return {name: str(order[name]) for name in DATES if order.get(name) is not None}
