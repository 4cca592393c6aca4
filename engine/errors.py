"""The one exception tree of kci-engine.

Users catch these, never ``transitions.MachineError``, ``pydantic.ValidationError``,
``sqlalchemy`` or ``httpx`` errors: foreign errors are translated where they cross into the engine.

    EngineError
    ├── RefusedEvent                 an event was refused; nothing was written or sent
    │   ├── EventNotAllowed          the event is not allowed in the order's current status
    │   ├── ContractViolation        the KCI it would send breaks the Fibre Cafe contract
    │   │   └── MissingField         a field the contract requires is missing
    │   └── InvalidEventData         the event's data is malformed (wrong type, unknown field)
    ├── InvalidOrder                 an order document is malformed
    ├── OrderNotFound
    ├── OrderExists
    ├── ConcurrencyConflict          another writer changed the order first
    └── ConfigurationError           a setting is missing or malformed

Every error that concerns an order carries ``order_id``, and where relevant ``status`` and
``event``, as attributes as well as in its message.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from typing import Any

_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother = 3, 60, 60
_SHOWN.maxlist = _SHOWN.maxdict = _SHOWN.maxtuple = 4


def shown(value: Any) -> str:
    """A bounded repr of a caller's bad value for an error message: short, and safe for values
    nested arbitrarily deep (plain ``repr`` recurses and can hit the recursion limit)."""
    return _SHOWN.repr(value)


class EngineError(Exception):
    """Base class of every error kci-engine raises."""

    def __init__(
        self,
        message: str,
        *,
        order_id: str | None = None,
        status: str | None = None,
        event: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.order_id = order_id
        self.status = status
        self.event = event


class RefusedEvent(EngineError):
    """An event was refused. The order, its KCI stream and the store are unchanged."""


class EventNotAllowed(RefusedEvent):
    """The event is not allowed in the order's current status."""

    def __init__(self, *, order_id: str, status: str, event: str, allowed: Iterable[str]) -> None:
        self.allowed = tuple(sorted(allowed))
        listed = ", ".join(self.allowed) if self.allowed else "none (the status is final)"
        super().__init__(
            f"order {order_id}: event '{event}' is not allowed in status {status}; "
            f"allowed events: {listed}",
            order_id=order_id,
            status=status,
            event=event,
        )


class ContractViolation(RefusedEvent):
    """The KCI the event would produce breaks a rule of the Fibre Cafe contract."""

    def __init__(
        self,
        rule: str,
        *,
        order_id: str | None = None,
        status: str | None = None,
        event: str | None = None,
    ) -> None:
        self.rule = rule
        where = f"order {order_id}: event '{event}' in status {status} refused: " if event else ""
        super().__init__(f"{where}{rule}", order_id=order_id, status=status, event=event)


class MissingField(ContractViolation):
    """A field the contract requires for this event is missing."""

    def __init__(
        self,
        field: str,
        why: str,
        *,
        order_id: str | None = None,
        status: str | None = None,
        event: str | None = None,
    ) -> None:
        self.field = field
        super().__init__(
            f"{field} is required: {why}", order_id=order_id, status=status, event=event
        )


class InvalidEventData(RefusedEvent):
    """The data given with an event is malformed."""


class InvalidOrder(EngineError):
    """An order document is malformed (wrong field, wrong type, missing identifier)."""


class OrderNotFound(EngineError):
    """No order with this id is known to the store."""

    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id} not found", order_id=order_id)


class OrderExists(EngineError):
    """An order with this id was already accepted."""

    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id} already exists", order_id=order_id)


class ConcurrencyConflict(EngineError):
    """Another writer changed the order between this writer's read and its commit."""


class ConfigurationError(EngineError):
    """A configuration value is missing or malformed."""
