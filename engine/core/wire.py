"""Pydantic models of the ``POST /kcis`` body, serialising to the exact camelCase wire names.

This module holds what every order type shares: the envelope (:class:`KciBody`), the parts of an
order (contacts, address, appointment, characteristics), the fields every order has
(:class:`ServiceOrder`) and :func:`kci_model`, which builds an order type's KCI model from its
spec. Each order type's own order model lives with its spec in ``engine/orders/``; the union of
all KCI bodies and :func:`~kci_engine.orders.parse_kci` are in :mod:`kci_engine.orders`.

The body has no discriminator field: which order property is present (``provideServiceOrder``,
``ceaseServiceOrder`` ...) says what kind of order it carries. A body's validator applies every
rule of the contract tables that can be checked on one body alone
(:func:`~kci_engine.core.contract.check_kci` without history); a broken rule is reported as a
pydantic error of type ``kci_contract`` whose context names the wire field.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar
from uuid import UUID

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    WithJsonSchema,
    create_model,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError, to_json, to_jsonable_python

from ..errors import ContractViolation, MissingField
from .codes import AddressType, OrderStatus, ProblemCode, ReasonCode, TimeslotClassification
from .contract import check_kci

if TYPE_CHECKING:
    from .spec import OrderTypeSpec


def format_datetime(value: datetime) -> str:
    """Render a date-time the way the gateway's examples do: UTC, milliseconds, ``Z``.

    The last one rendered is remembered: an event renders its KCI's issuedOn, then the order
    row's last issuedOn, and at thousands of events a second consecutive KCIs share their
    millisecond. The pair is replaced whole, so threads never see one moment with another's
    text; equal moments (whatever their zone) render the same."""
    last = _LAST_RENDERED[0]
    if last[0] == value:
        return last[1]
    moment = value if value.tzinfo is UTC else value.astimezone(UTC)
    text = moment.isoformat(timespec="milliseconds")[:-6] + "Z"
    _LAST_RENDERED[0] = (value, text)
    return text


_LAST_RENDERED: list[tuple[datetime | None, str]] = [(None, "")]


WireDateTime = Annotated[
    AwareDatetime,
    PlainSerializer(format_datetime, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]
# --- Strings and ids the way the public API types them ----------------------------------------
# Every string has a maximum length, which also makes pydantic refuse text that is not valid
# Unicode (a lone surrogate, as ``json.loads('"\\ud800"')`` produces), and no string carries
# control characters (ANSI escapes, NUL) except line breaks and tabs in free text. Where the
# docs give a limit it is theirs (supplierCodes, tenant: 50); otherwise the bound is ours,
# stated in docs/contract.md ("Types and lengths").

#: Free text (``text``, ``notes``, a supplier note): the tenant's own text limit on the gateway.
TEXT_MAX = 1000
#: Identifiers, references and names (order ids, characteristic names, contact fields).
NAME_MAX = 200
#: The largest gateway id: the API types ids as integers >= 1; 64-bit signed is what the
#: gateway's and the supplier's databases store.
ID_MAX = 2**63 - 1
#: A single line: no control character at all.
LINE_PATTERN = r"^[^\x00-\x1f\x7f]*$"
#: Free text: line breaks and tabs, but no other control character.
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"

Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX, pattern=LINE_PATTERN)]
"""An identifier, reference or name: 1 to 200 characters on one line."""
Line = Annotated[str, Field(max_length=NAME_MAX, pattern=LINE_PATTERN)]
"""A short optional value on one line (a contact's email or phone number)."""
Text = Annotated[str, Field(min_length=1, max_length=TEXT_MAX, pattern=TEXT_PATTERN)]
"""Free text: 1 to 1000 characters, line breaks allowed."""
FreeText = Annotated[str, Field(max_length=TEXT_MAX, pattern=TEXT_PATTERN)]
"""Free text that may be empty (an order's notes, hazards, on-site restrictions)."""
Value = Annotated[str, Field(max_length=TEXT_MAX, pattern=LINE_PATTERN)]
"""A service characteristic's value."""
Tenant = Annotated[str, Field(min_length=1, max_length=50, pattern=LINE_PATTERN)]
"""The tenant's name: 1 to 50 characters (the Supplier API's limit)."""
SupplierCode = Annotated[str, Field(min_length=1, max_length=50, pattern=LINE_PATTERN)]
"""A supplier's own reason or problem code: 1 to 50 characters (the API's limit)."""
GatewayId = Annotated[int, Strict(), Field(ge=1, le=ID_MAX)]
"""A gateway id: an integer (never a boolean or a numeric string), 1 to 2**63 - 1."""


class WireModel(BaseModel):
    """Base of every wire model: camelCase aliases, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
    )

    def wire(self) -> dict[str, Any]:
        """The JSON-ready wire form: camelCase names, no unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def contract_error(field: str, message: str) -> PydanticCustomError:
    """A validation error for a broken contract rule, naming the wire field concerned."""
    return PydanticCustomError("kci_contract", "{field}: {rule}", {"field": field, "rule": message})


# --- Order parts ---------------------------------------------------------------------------------


class ServiceCharacteristic(WireModel):
    name: Name
    value: Value


class ServiceSpecification(WireModel):
    id: Name
    name: Name | None = None


class ServiceOrderItem(WireModel):
    service_specification: ServiceSpecification | None = None
    service_characteristics: list[ServiceCharacteristic] = Field(default_factory=list)


class Address(WireModel):
    id: Name
    type: AddressType
    additional_identifiers: list[dict[Name, Value | GatewayId | bool | None]] | None = None


class Contact(WireModel):
    name: Name
    email: Line | None = None
    phone_number: Line | None = None


class AppointmentTimeslot(WireModel):
    timeslot_start_date_time: WireDateTime
    timeslot_end_date_time: WireDateTime
    classification: TimeslotClassification | None = None
    standard: bool | None = None

    @model_validator(mode="after")
    def _ends_after_start(self) -> AppointmentTimeslot:
        if self.timeslot_end_date_time <= self.timeslot_start_date_time:
            raise contract_error(
                "appointmentTimeslot", "timeslotEndDateTime must be after timeslotStartDateTime"
            )
        return self


class SupplierNote(WireModel):
    """A note about the order for the tenant (``supplierNotes``; the tenant sees them as
    ``{note, type, created}``, e.g. type ``Engineer Note``)."""

    note: Text
    type: Name | None = None
    created: WireDateTime | None = None


# --- Orders --------------------------------------------------------------------------------------


class ServiceOrder(WireModel):
    """Fields every order type shares."""

    id: GatewayId | None = None
    tenant: Tenant | None = None
    supplier_order_reference: Name | None = None
    status: OrderStatus
    requested_completion_date: date | None = None
    committed_date: WireDateTime | None = None
    target_date: WireDateTime | None = None
    primary_contact: Contact | None = None
    secondary_contact: Contact | None = None
    notes: FreeText | None = None
    hazards: FreeText | None = None
    on_site_restrictions: FreeText | None = None
    service_order_amendment_id: GatewayId | None = None
    service_order_amendment_reference: Name | None = None
    service_order_cancellation_id: GatewayId | None = None
    service_order_cancellation_reference: Name | None = None

    @model_validator(mode="after")
    def _identified(self) -> ServiceOrder:
        if self.id is None and self.supplier_order_reference is None:
            raise contract_error(
                "id", "the order needs the gateway id and/or supplierOrderReference"
            )
        return self


class AppointedOrder(ServiceOrder):
    """Fields of the order types that can have an engineer appointment."""

    appointment_reservation_id: GatewayId | None = None
    appointment_reservation_reference: Name | None = None
    appointment_supplier_reference: Name | None = None
    appointment_timeslot: AppointmentTimeslot | None = None
    engineer_tasks: list[Text] | None = None


# --- The KCI body --------------------------------------------------------------------------------


class KciBody(WireModel):
    """The envelope every KCI shares; :func:`kci_model` adds the one order property."""

    spec: ClassVar[OrderTypeSpec]
    order_field: ClassVar[str]

    id: UUID
    sequence_number: Annotated[int, Field(ge=1)]
    issued_on: WireDateTime
    reason_code: ReasonCode
    problem_code: ProblemCode | None = None
    text: Text | None = None
    supplier_codes: Annotated[list[SupplierCode], Field(min_length=1)] | None = None
    supplier_notes: Annotated[list[SupplierNote], Field(min_length=1)] | None = None

    @property
    def order(self) -> ServiceOrder:
        """The order this KCI carries."""
        order: ServiceOrder = getattr(self, self.order_field)
        return order

    @model_validator(mode="after")
    def _contract(self) -> KciBody:
        try:
            check_kci(
                self.spec,
                self.reason_code,
                self.order.model_dump(mode="json", by_alias=True, exclude_none=True),
                problem_code=self.problem_code,
                text=self.text,
                supplier_codes=self.supplier_codes,
                supplier_notes=self.supplier_notes,
            )
        except MissingField as exc:
            raise contract_error(exc.field, exc.why) from None
        except ContractViolation as exc:
            field, _, rule = exc.rule.partition(": ")
            raise contract_error(field, rule) from None
        return self


def kci_model(spec: OrderTypeSpec) -> type[KciBody]:
    """The KCI body model of an order type: the envelope plus its order property
    (``provideServiceOrder``: :attr:`OrderTypeSpec.order_model`), named ``<Type>Kci``."""
    field = _snake(spec.kci_property)
    name = "".join(part.title() for part in spec.order_type.value.split("_")) + "Kci"
    model: type[KciBody] = create_model(
        name,
        __base__=KciBody,
        __module__=spec.order_model.__module__,
        **{field: (spec.order_model, ...)},  # type: ignore[call-overload]
    )
    model.spec = spec
    model.order_field = field
    return model


def _snake(camel: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)


def dump_json(value: Any) -> str:
    """Compact, key-stable JSON of a wire body (what goes on the wire and into the outbox), or of
    any other value: the text pydantic_core's ``to_json`` makes, which for what wire bodies hold
    (strings, integers, booleans, null, lists, objects; no floats) is also what
    ``json.dumps(body, separators=(",", ":"), ensure_ascii=False)`` makes.

    Encoded by orjson (decision S22), a third of ``to_json``'s time for a KCI body and a
    fifteenth of ``json.dumps``' (a body, and in the SQL store the order's document, are
    encoded on every event). What orjson would encode differently goes through pydantic_core:
    datetimes and dataclasses, and what it does not know (``Decimal``, pydantic models), by way
    of ``to_jsonable_python``; what it refuses outright (keys that are not strings, integers
    beyond 64 bits), whole. Returned as text: orjson's bytes keep the whole buffer they were
    written in (4 KB at least), which a kept body must not.

    Raises:
        PydanticSerializationError: a value neither can encode.
    """
    try:
        encoded = orjson.dumps(value, default=to_jsonable_python, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        encoded = to_json(value)
    return encoded.decode()


_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
