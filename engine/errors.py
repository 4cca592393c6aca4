"""The one exception tree of kci-engine: every error the package raises is an :class:`EngineError`.

Users catch these, never ``transitions.MachineError``, ``pydantic.ValidationError``,
``sqlalchemy`` or ``httpx`` errors: foreign errors are translated where they cross into the engine.

    EngineError
    ├── RefusedEvent                 an event was refused; nothing was written or sent
    │   ├── EventNotAllowed          the event is not allowed in the order's status (or history)
    │   ├── ContractViolation        the KCI it would send breaks the Fibre Cafe contract
    │   │   └── MissingField         a field the contract requires is missing
    │   └── InvalidEventData         the event's data is malformed (wrong type, unknown field)
    ├── InvalidOrder                 an order document is malformed
    ├── OrderNotFound
    ├── OrderExists
    ├── ConcurrencyConflict          another writer changed the order first (retry it)
    │   └── StoreBusy                the database stayed locked or busy (retry it)
    ├── StoreError                   the database failed: names the cause and the database
    │   └── SchemaOutdated           the database's schema is older than this engine
    ├── ConfigurationError           a setting is missing or malformed
    ├── RequestRefused               a Supplier API request is malformed, unknown or not possible
    ├── RequestAnswered              a Supplier API request with this id was answered already
    ├── DecisionNotAllowed           the supplier logic chose an answer the order's status refuses
    ├── ChartError                   an order-type chart is malformed (found when it is defined)
    ├── DeliveryError                delivery to the gateway cannot go on
    │   ├── CredentialsRejected      the gateway refused the client credentials or the token
    │   └── GatewayUnavailable       no usable answer now (no token, no answer in time): retried
    ├── ScenarioError                a scenario file is malformed (FILE:LINE: field: message)
    ├── ScenarioFailed               a scenario's replay differed from what its file says
    └── GenerationError              the scenario generator cannot reach or break part of a chart

Every error that concerns an order carries ``order_id``, and where relevant ``status`` and
``event``, as attributes as well as in its message.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

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


def _refused_at(order_id: str | None, status: str | None, event: str | None) -> str:
    return f"order {order_id}: event '{event}' in status {status} refused: " if event else ""


class RefusedEvent(EngineError):
    """An event was refused. The order, its KCI stream and the store are unchanged."""


class EventNotAllowed(RefusedEvent):
    """The event is not allowed in the order's current status, or (``why``) not for this
    order's history (a delay that began before the order was committed cannot be RESUMED)."""

    def __init__(
        self,
        *,
        order_id: str,
        status: str,
        event: str,
        allowed: Iterable[str],
        why: str | None = None,
    ) -> None:
        self.allowed = tuple(sorted(allowed))
        self.why = why
        listed = ", ".join(self.allowed) if self.allowed else "none (the status is final)"
        because = f" for this order: {why}" if why else ""
        super().__init__(
            f"order {order_id}: event '{event}' is not allowed in status {status}{because}; "
            f"allowed events: {listed}",
            order_id=order_id,
            status=status,
            event=event,
        )


class ContractViolation(RefusedEvent):
    """The KCI the event would produce breaks a rule of the Fibre Cafe contract; ``rule`` says
    which, starting with the wire field concerned where there is one."""

    def __init__(
        self,
        rule: str,
        *,
        order_id: str | None = None,
        status: str | None = None,
        event: str | None = None,
    ) -> None:
        self.rule = rule
        super().__init__(
            f"{_refused_at(order_id, status, event)}{rule}",
            order_id=order_id,
            status=status,
            event=event,
        )

    def at(self, *, order_id: str, status: str, event: str) -> ContractViolation:
        """The same violation, told of an order's event."""
        return ContractViolation(self.rule, order_id=order_id, status=status, event=event)


class MissingField(ContractViolation):
    """A field the contract requires for this event is missing; ``why`` says why it must be
    there."""

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
        self.why = why
        super().__init__(
            f"{field} is required: {why}", order_id=order_id, status=status, event=event
        )

    def at(self, *, order_id: str, status: str, event: str) -> MissingField:
        return MissingField(self.field, self.why, order_id=order_id, status=status, event=event)


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
    """Another writer changed the order between this writer's read and its commit; applying
    the event again (``Engine(conflict_retries=...)``) is safe."""


class StoreBusy(ConcurrencyConflict):
    """The database stayed locked or busy for longer than its timeout (another process holds its
    write lock): nothing was written, and trying again later is safe."""


class StoreError(EngineError):
    """The database failed in a way retrying will not fix: it cannot be opened or reached, its
    disk is full, it is read-only, it is not a database, or it was replaced. ``database`` names
    it (a file path, or the URL without its password), ``cause`` says what happened."""

    def __init__(self, cause: str, *, database: str, order_id: str | None = None) -> None:
        self.cause = cause
        self.database = database
        super().__init__(f"database {database}: {cause}", order_id=order_id)


class SchemaOutdated(StoreError):
    """The database's schema is older than this engine's (or absent): run
    ``kci-engine db upgrade``; commands that only read never upgrade it themselves."""


class ConfigurationError(EngineError):
    """A configuration value is missing or malformed."""


class RequestRefused(EngineError):
    """A Supplier API request is malformed (400), names no order the supplier has (404) or is
    not possible (422); ``http_status`` and ``messages`` are the answer's."""

    def __init__(self, http_status: int, *messages: str, order_id: str | None = None) -> None:
        super().__init__("; ".join(messages), order_id=order_id)
        self.http_status = http_status
        self.messages = messages


class RequestAnswered(EngineError):
    """A Supplier API request with this tenant, kind and gateway id was answered already (by a
    retry of it that raced this one): the first answer stands and is given again."""


class DecisionNotAllowed(EngineError):
    """The supplier's logic chose an answer the order's status does not allow (a 201 to an
    amendment while the order is PENDING): a bug in the logic, answered 500 and written nowhere."""


class ChartError(EngineError):
    """An order-type chart is malformed (found when it is defined, at import time)."""


class DeliveryError(EngineError):
    """Delivery cannot go on (e.g. the gateway rejects the credentials)."""


class CredentialsRejected(DeliveryError):
    """The gateway refused the client credentials or the token: fix the configuration."""


class GatewayUnavailable(DeliveryError):
    """No usable answer from the gateway or its token endpoint now (refused connection, no
    complete answer within the total timeout, no token): the dispatcher tries the KCI again."""


class Problem(NamedTuple):
    """One mistake in a scenario file: its line (0 if unknown), field and what is wrong."""

    line: int
    field: str
    message: str


class ScenarioError(EngineError):
    """A scenario file is malformed. The message has one line per problem,
    ``FILE:LINE: field: message``; ``line`` and ``field`` are those of the first."""

    def __init__(self, path: str, problems: Sequence[Problem]) -> None:
        self.path = path
        self.problems = list(problems)
        self.line = self.problems[0].line
        self.field = self.problems[0].field
        super().__init__(
            "\n".join(
                f"{path}:{p.line}: {p.field + ': ' if p.field else ''}{p.message}"
                for p in self.problems
            )
        )


class ScenarioFailed(EngineError):
    """A scenario's replay differed from what its file says; the message is the readable diff."""


class GenerationError(EngineError):
    """The scenario generator cannot reach or break part of a chart: the model needs teaching."""
