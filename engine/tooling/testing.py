"""Helpers for tests, the demo and benchmarks: sample orders, a steady clock, predictable ids,
and assertions about KCI streams. Suppliers can use them in their own test suites too."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any
from uuid import UUID

from .._facade import Engine
from ..core.codes import OrderType
from ..core.records import Kci
from ..orders import parse_kci
from ..store.base import Store

EPOCH = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class SteppingClock:
    """A clock that starts at ``start`` and moves ``step`` forward on every reading."""

    def __init__(self, start: datetime = EPOCH, step: timedelta = timedelta(seconds=1)) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> datetime:
        current = self.now
        self.now += self.step
        return current


def sequential_ids(prefix: int = 0) -> Callable[[], str]:
    """KCI ids that are valid UUIDs and count up: easy to read in test output."""
    counter = count(1)
    return lambda: str(UUID(int=(prefix << 64) | next(counter), version=4))


def test_engine(store: Store | None = None) -> Engine:
    """An engine with a stepping clock and sequential KCI ids."""
    return Engine(store, clock=SteppingClock(), new_id=sequential_ids())


test_engine.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def provide_order(order_id: int = 1001, tenant: str = "TENANT1", **extra: Any) -> dict[str, Any]:
    """A provide order as the gateway sends it on ``POST /service-orders``."""
    return {
        "id": order_id,
        "tenant": tenant,
        "orderType": "NEW",
        "address": {"id": "100023336956", "type": "UPRN"},
        "serviceOrderItem": {
            "serviceSpecification": {"id": "FTTP-900", "name": "FTTP 900/100"},
            "serviceCharacteristics": [{"name": "LINE_PROFILE", "value": "900"}],
        },
        "primaryContact": {"name": "Ann Example", "phoneNumber": "07700900123"},
        "appointmentReservationId": 77,
        **extra,
    }


def modify_order(order_id: int = 2001, tenant: str = "TENANT1", **extra: Any) -> dict[str, Any]:
    """A modify order: a new line profile for an existing service."""
    return {
        "id": order_id,
        "tenant": tenant,
        "serviceId": "SVC-EXISTING-1",
        "serviceCharacteristics": [{"name": "LINE_PROFILE", "value": "500"}],
        "primaryContact": {"name": "Bob Example"},
        **extra,
    }


def cease_order(order_id: int = 3001, tenant: str = "TENANT1", **extra: Any) -> dict[str, Any]:
    """A cease order for an existing service."""
    return {
        "id": order_id,
        "tenant": tenant,
        "serviceId": "SVC-EXISTING-2",
        "requestedCompletionDate": "2026-12-12",
        "primaryContact": {"name": "Cat Example"},
        **extra,
    }


def unsolicited_cease_order(
    reference: str = "UC-4001", status: str = "ACKNOWLEDGED", **extra: Any
) -> dict[str, Any]:
    """An unsolicited cease the supplier creates when another provider takes the line over."""
    return {
        "supplierOrderReference": reference,
        "tenant": "TENANT1",
        "status": status,
        "serviceId": "SVC-EXISTING-3",
        "reason": "CHANGE_OF_CP",
        "requestedCeaseDate": "2026-12-20T00:00:00.000Z",
        **extra,
    }


SAMPLE_ORDERS: dict[OrderType, Callable[..., dict[str, Any]]] = {
    OrderType.PROVIDE: provide_order,
    OrderType.MODIFY: modify_order,
    OrderType.CEASE: cease_order,
    OrderType.UNSOLICITED_CEASE: unsolicited_cease_order,
}

COMMIT_DATES = {
    "committedDate": "2026-12-01T08:00:00.000Z",
    "targetDate": "2026-12-01T08:00:00.000Z",
}


def assert_valid_stream(kcis: Sequence[Kci]) -> None:
    """Assert what must hold of one order's KCIs: sequence 1..n without gaps, issuedOn never
    going backwards, and every body valid under the whole contract."""
    numbers = [k.sequence_number for k in kcis]
    assert numbers == list(range(1, len(kcis) + 1)), f"sequence numbers {numbers}"
    issued = [k.issued_on for k in kcis]
    assert issued == sorted(issued), f"issuedOn went backwards: {issued}"
    for kci in kcis:
        parse_kci(kci.json())


def reason_codes(kcis: Iterable[Kci]) -> list[str]:
    """The reason codes of ``kcis``, in order."""
    return [k.reason_code.value for k in kcis]
