"""The scenario file format, as pydantic models: what a supplier writes to describe a lifecycle.

A scenario is one order's life told from the supplier's side: the order as the gateway sent it
(or, for an unsolicited cease, as the supplier creates it), then the supplier's events in order,
each with what the engine must answer: the KCIs it sends, or the refusal it raises. Every model
refuses unknown keys (``extra="forbid"``): a misspelt expectation must fail loudly, never be
skipped, or a scenario would pass while checking nothing. docs/scenarios.md describes the format.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from ...core.codes import OrderStatus, OrderType, ProblemCode, ReasonCode
from ...core.events import Event, EventData
from ...orders import SPECS

#: The typed errors a scenario may expect; the replay matches the exact class, not a subclass.
ErrorName = Literal[
    "EventNotAllowed",
    "ContractViolation",
    "MissingField",
    "InvalidEventData",
    "InvalidOrder",
    "OrderExists",
    "OrderNotFound",
]
Timestamp = AwareDatetime
#: When a scenario starts if its start gives no ``at``, and the gap before a step without one.
DEFAULT_START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
STEP_GAP = timedelta(minutes=1)
NonEmpty = Annotated[str, Field(min_length=1)]


#: The pydantic error type of a rule across fields (see :func:`FieldProblem`).
FIELD_PROBLEM = "scenario_field"


def FieldProblem(path: tuple[str | int, ...], message: str) -> PydanticCustomError:  # noqa: N802
    """A rule across fields, broken at ``path`` (relative to the model that raises it); the
    loader adds the path to pydantic's location so the error points at the right line."""
    return PydanticCustomError(FIELD_PROBLEM, "{message}", {"message": message, "path": path})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExpectedKci(_Strict):
    """One KCI the author expects, in sequence. Only the keys given are compared; a key given as
    ``null`` asserts that the field is absent from the body (e.g. ``problem_code: null``).

    Attributes:
        reason: the reasonCode (always compared).
        status: the status of the order the KCI carries.
        sequence: the sequenceNumber.
        problem_code, text, supplier_codes, supplier_notes, issued_on: the body fields of
            those names (notes in wire form: ``note``, ``type``, ``created``).
        order: fields of the order object the author cares about (wire names); each is compared
            whole, date-times as instants.
        characteristics: service characteristics by name, wherever the order type keeps them.
    """

    reason: ReasonCode
    status: OrderStatus | None = None
    sequence: Annotated[int, Field(ge=1)] | None = None
    problem_code: ProblemCode | None = None
    text: str | None = None
    supplier_codes: list[str] | None = None
    supplier_notes: list[dict[str, Any]] | None = None
    issued_on: Timestamp | None = None
    order: dict[str, Any] | None = None
    characteristics: dict[str, str | None] | None = None

    def checked(self) -> set[str]:
        """The keys the author gave (``reason`` always)."""
        return self.model_fields_set | {"reason"}


class ExpectedRefusal(_Strict):
    """The refusal the author expects instead of KCIs.

    Attributes:
        error: the error class name, matched exactly (``ContractViolation`` does not match a
            ``MissingField``, which says more).
        field: for ``MissingField``, the field it names.
        rule: a fragment of the contract rule a ``ContractViolation`` or ``MissingField`` states.
        message: a fragment of the error message, for any error.
        allowed: for ``EventNotAllowed``, exactly the events it lists as allowed.
    """

    error: ErrorName
    field: NonEmpty | None = None
    rule: NonEmpty | None = None
    message: NonEmpty | None = None
    allowed: list[Event] | None = None

    @model_validator(mode="after")
    def _fits_the_error(self) -> ExpectedRefusal:
        if self.field is not None and self.error != "MissingField":
            raise FieldProblem(("field",), "only a MissingField names a field")
        if self.rule is not None and self.error not in ("MissingField", "ContractViolation"):
            raise FieldProblem(("rule",), "only a ContractViolation or MissingField states a rule")
        if self.allowed is not None and self.error != "EventNotAllowed":
            raise FieldProblem(("allowed",), "only an EventNotAllowed lists allowed events")
        return self


class Expectation(_Strict):
    """What one step (or the start) must produce: KCIs, or a refusal, never both."""

    expect: list[ExpectedKci] | None = None
    refused: ExpectedRefusal | None = None
    order_status: OrderStatus | None = None

    @model_validator(mode="after")
    def _one_outcome(self) -> Expectation:
        if self.expect is not None and self.refused is not None:
            raise FieldProblem(
                ("refused",), "give expect (the KCIs) or refused (the error), not both"
            )
        return self


class Start(Expectation):
    """How the order begins: accepted from the gateway, or created by the supplier.

    Attributes:
        at: the engine's clock when it begins (default 2026-11-23T09:00:00Z).
        answered_with: a tenant-placed order's synchronous 201 status (ACKNOWLEDGED or
            IN_PROGRESS): recorded without a KCI.
        conversation_id: the create request's X-Conversation-ID.
        order_id: the engine's key for the order (default: its own).
        expect: for an unsolicited cease, its CREATED KCI (tenant-placed orders send none).
    """

    at: Timestamp | None = None
    answered_with: Literal["ACKNOWLEDGED", "IN_PROGRESS"] | None = None
    conversation_id: NonEmpty | None = None
    order_id: NonEmpty | None = None


class ScenarioStep(Expectation):
    """One supplier event and what the engine must answer.

    Attributes:
        event: the supplier action.
        at: the engine's clock for the step: the issuedOn of the KCIs it sends (default: one
            minute after the previous step). Never earlier than the step before.
        data: the event's data, snake_case or camelCase as :class:`EventData` takes it.
        expect: the KCIs it sends, in order (``[]``: none).
        refused: the refusal it must raise instead.
        order_status: the order's status after the step.
    """

    event: Event
    at: Timestamp | None = None
    data: EventData = EventData()

    @model_validator(mode="after")
    def _says_what_happens(self) -> ScenarioStep:
        if self.expect is None and self.refused is None:
            raise FieldProblem(
                (), "say what the step produces: expect (its KCIs, [] for none) or refused"
            )
        return self


class Scenario(_Strict):
    """A whole lifecycle: the order, how it starts, and its steps.

    Attributes:
        title: what the lifecycle shows, in a line.
        order_type: provide, modify, cease or unsolicited_cease.
        order: the order in wire form (camelCase), as the gateway sends it or, for an
            unsolicited cease, as the supplier creates it.
        start: how it begins (optional for a tenant-placed order).
        steps: the supplier's events, in order.
    """

    title: NonEmpty
    order_type: OrderType
    order: dict[str, Any]
    start: Start = Start()
    steps: list[ScenarioStep] = []

    @model_validator(mode="after")
    def _coherent(self) -> Scenario:
        unsolicited = not SPECS[self.order_type].placed_by_tenant
        if unsolicited and self.start.answered_with is not None:
            raise FieldProblem(
                ("start", "answered_with"), "an unsolicited cease has no synchronous 201 answer"
            )
        if unsolicited and self.start.expect is None and self.start.refused is None:
            raise FieldProblem(("start",), "say what creating the unsolicited cease sends (expect)")
        if self.start.refused is not None and self.steps:
            raise FieldProblem(("steps",), "the start is refused, so no step can follow")
        previous = self.start.at or DEFAULT_START
        for index, step in enumerate(self.steps):
            if step.at is not None and step.at < previous:
                raise FieldProblem(
                    ("steps", index, "at"),
                    f"{step.at.isoformat()} is earlier than the step before "
                    f"({previous.isoformat()}); a step without at comes a minute after the last",
                )
            previous = step.at or previous + STEP_GAP
        return self

    def timeline(self) -> list[datetime]:
        """The clock at the start and at each step (a step without ``at`` comes a minute after
        the one before), so a replay gives the same issuedOn on every run."""
        moments = [self.start.at or DEFAULT_START]
        for step in self.steps:
            moments.append(step.at or moments[-1] + STEP_GAP)
        return moments
