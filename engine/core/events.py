"""The supplier actions the engine accepts, and the data that goes with them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, NamedTuple

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticSerializationError

from ..errors import InvalidEventData, shown
from .codes import CancellationReason, ProblemCode
from .records import RequestRef
from .wire import GatewayId, Name, SupplierCode, SupplierNote, Text, Value, dump_json


class Event(StrEnum):
    """A supplier action on an order. Each order type's chart says where it is allowed."""

    CREATE = "create"
    ACKNOWLEDGE = "acknowledge"
    ACKNOWLEDGED_IN_201 = "acknowledged_in_201"
    COMMITTED_IN_201 = "committed_in_201"
    REJECT = "reject"
    COMMIT = "commit"
    DELAY = "delay"
    RESUME = "resume"
    REQUEST_INFORMATION = "request_information"
    REQUEST_REAPPOINTMENT = "request_reappointment"
    REQUEST_RESUBMISSION = "request_resubmission"
    REAPPOINTED = "reappointed"
    UPDATE = "update"
    ADD_INFORMATION = "add_information"
    WARN = "warn"
    AMENDMENT_RECEIVED = "amendment_received"
    AMENDED_IN_201 = "amended_in_201"
    ACCEPT_AMENDMENT = "accept_amendment"
    REJECT_AMENDMENT = "reject_amendment"
    CANCELLATION_RECEIVED = "cancellation_received"
    CANCELLED_IN_201 = "cancelled_in_201"
    ACCEPT_CANCELLATION = "accept_cancellation"
    REJECT_CANCELLATION = "reject_cancellation"
    CANCEL = "cancel"
    COMPLETE = "complete"


class EventData(BaseModel):
    """What a supplier says with an event. Every field is optional; each event's rules say which
    it needs. Field names are accepted in snake_case or in the wire's camelCase.

    Attributes:
        event_id: the caller's id for this event; applying the same id again returns the KCIs
            it produced the first time and changes nothing.
        problem_code, text, supplier_codes: the KCI's problem description.
        supplier_notes: notes for the tenant (``{"note": ..., "type": "Engineer Note"}``),
            sent as the KCI's ``supplierNotes``.
        order: changes to the order, wire field names; each field is replaced whole and ``None``
            removes it (the gateway's amendment convention).
        service_characteristics: characteristics to set by name (``None`` removes one), e.g.
            ``{"SERVICE_ID": "SVC-1"}``, wherever the order type keeps them.
        amendment_id, amendment_reference: the amendment request concerned.
        cancellation_id, cancellation_reference, cancellation_reason: the cancellation request.
        resolves_request: on ``accept_amendment`` of an order that was PENDING, whether the
            amendment supplied what the supplier asked for (the order then leaves PENDING).
        issued_on: issuedOn for the KCI (default: now); never earlier than the order's last KCI.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        frozen=True,
    )

    event_id: Name | None = None
    problem_code: ProblemCode | None = None
    text: Text | None = None
    supplier_codes: Annotated[list[SupplierCode], Field(min_length=1)] | None = None
    supplier_notes: Annotated[list[SupplierNote], Field(min_length=1)] | None = None
    order: dict[Name, Any] | None = None
    service_characteristics: dict[Name, Value | None] | None = None
    amendment_id: GatewayId | None = None
    amendment_reference: Name | None = None
    cancellation_id: GatewayId | None = None
    cancellation_reference: Name | None = None
    cancellation_reason: CancellationReason | None = None
    resolves_request: bool = True
    issued_on: AwareDatetime | None = None

    @property
    def amendment(self) -> RequestRef | None:
        if self.amendment_id is None and self.amendment_reference is None:
            return None
        return RequestRef(self.amendment_id, self.amendment_reference)

    @property
    def cancellation(self) -> RequestRef | None:
        if self.cancellation_id is None and self.cancellation_reference is None:
            return None
        return RequestRef(self.cancellation_id, self.cancellation_reference)

    @property
    def changes_order(self) -> bool:
        return bool(self.order) or bool(self.service_characteristics)


NO_DATA = EventData()
#: The event-log name of a tenant-placed order's arrival from the gateway.
RECEIVED = "received"
#: The event-log name of an operator's correction of the order's data with a dead letter's repair
#: (``kci-engine outbox repair --order``): no status change, no KCI; its data is the correction.
REPAIRED = "repaired"


class EventEntry(NamedTuple):
    """One applied event, as the store's event log keeps it (events that sent no KCI too).

    Attributes:
        order_id: the order.
        event: the event's name (``received`` for a tenant-placed order's arrival).
        event_id: the caller's id for it, if one was given (makes it idempotent).
        status_before: the order's status before it (empty for the order's first entry).
        status_after: the order's status after it.
        kci_ids: the KCIs it produced, in sequence order.
        data: the event data as given.
        applied_at: when the engine applied it.
        chart_version: on an order's first entry, the version of the chart it was created
            under (:attr:`OrderTypeSpec.version`); the SQL store records it with the order.
    """

    order_id: str
    event: str
    event_id: str | None
    status_before: str
    status_after: str
    kci_ids: tuple[str, ...]
    data: EventData
    applied_at: datetime
    chart_version: str | None = None

    def data_json(self) -> dict[str, Any]:
        """The fields of the event data that were given, JSON-ready."""
        return self.data.model_dump(mode="json", exclude_unset=True)


_EVENTS: dict[str, Event] = {event.value: event for event in Event}


def parse_event(event: Event | str) -> Event:
    """The :class:`Event` named by ``event``.

    Raises:
        InvalidEventData: no such event.
    """
    found = _EVENTS.get(event) if isinstance(event, str) else None
    if found is None:
        known = ", ".join(e.value for e in Event)
        raise InvalidEventData(f"unknown event {shown(event)}; known events: {known}")
    return found


_VALIDATE = EventData.__pydantic_validator__.validate_python
_TO_JSON = EventData.__pydantic_serializer__.to_json


def given_json(data: EventData) -> str:
    """The fields of ``data`` that were given, as JSON text: ``model_dump_json(exclude_unset=
    True)``, without its Python wrapper (a store logs it for every event); for the data
    :func:`parse_event_data` validated last, the mapping it was given, encoded then."""
    if not data.__pydantic_fields_set__:
        return "{}"
    parsed, text = _LAST_GIVEN[0]
    if parsed is data:
        return text
    return _TO_JSON(data, exclude_unset=True).decode()


#: The event data validated last from a mapping, and that mapping's JSON text. Every event's
#: data is logged as JSON right after it is validated, and the caller's plain strings, numbers
#: and dicts encode in a third of the time the model takes (its enum members and nested models
#: go through Python); the text decodes to the same data, as it was validated from those very
#: values. The pair is replaced whole, so another thread never sees one's data with another's
#: text; data validated elsewhere is encoded from the model.
_LAST_GIVEN: list[tuple[EventData | None, str]] = [(None, "")]


def parse_event_data(data: EventData | Mapping[str, Any] | None) -> EventData:
    """Validate event data given as a mapping.

    Raises:
        InvalidEventData: naming every field that is wrong.
    """
    if data is None:
        return NO_DATA
    if isinstance(data, EventData):
        return data
    try:
        # The model's own validator: what model_validate calls, without its Python wrapper
        # (the data of every event applied from a mapping goes through here).
        parsed: EventData = _VALIDATE(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'data'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise InvalidEventData(f"invalid event data: {problems}") from None
    try:
        text = dump_json(data)
    except PydanticSerializationError:
        return parsed  # a value only the model encodes: given_json encodes the model
    _LAST_GIVEN[0] = (parsed, text)
    return parsed
