"""Pydantic models of the ``POST /kcis`` body, serialising to the exact camelCase wire names.

The body has no discriminator field: which order property is present (``provideServiceOrder``,
``ceaseServiceOrder``, ``modifyServiceOrder`` or ``unsolicitedCeaseServiceOrder``) says what kind
of order it carries. The validators enforce every rule of the contract that can be checked on one
body alone (problemCode, text, dates, status, request references, SERVICE_ID); the state machines
add the rules that need the order's history (committedDate never changes, the reference names a
request in flight, sequence numbers and issuedOn never go backwards).

A broken rule is reported as a pydantic error of type ``kci_contract`` whose context names the
wire field, so the engine can turn it into a :class:`~engine.errors.MissingField`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Any, ClassVar
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    TypeAdapter,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from .codes import (
    AMENDMENT_RESULTS,
    PROBLEM_CODE_FORBIDDEN,
    PROBLEM_CODE_REQUIRED,
    REASON_SITUATION,
    REASON_STATUSES,
    TEXT_REQUIRED,
    AddressType,
    OrderStatus,
    OrderType,
    ProblemCode,
    ProvideOrderType,
    ReasonCode,
    TimeslotClassification,
    UnsolicitedCeaseReason,
    problem_code_allowed,
)

#: Property of the KCI body that carries the order, per order type. The unsolicited-cease name
#: was not visible in the public docs; it is chosen by analogy (see docs/decisions.md).
ORDER_PROPERTY: dict[OrderType, str] = {
    OrderType.PROVIDE: "provideServiceOrder",
    OrderType.CEASE: "ceaseServiceOrder",
    OrderType.MODIFY: "modifyServiceOrder",
    OrderType.UNSOLICITED_CEASE: "unsolicitedCeaseServiceOrder",
}

SERVICE_ID = "SERVICE_ID"


def format_datetime(value: datetime) -> str:
    """Render a date-time the way the gateway's examples do: UTC, milliseconds, ``Z``."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="milliseconds")[:-6] + "Z"


WireDateTime = Annotated[
    AwareDatetime,
    PlainSerializer(format_datetime, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]
Text = Annotated[str, Field(min_length=1)]
SupplierCode = Annotated[str, Field(min_length=1, max_length=50)]


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
    name: Text
    value: str


class ServiceSpecification(WireModel):
    id: Text
    name: str | None = None


class ServiceOrderItem(WireModel):
    service_specification: ServiceSpecification | None = None
    service_characteristics: list[ServiceCharacteristic] = Field(default_factory=list)


class Address(WireModel):
    id: Text
    type: AddressType
    additional_identifiers: list[dict[str, Any]] | None = None


class Contact(WireModel):
    name: Text
    email: str | None = None
    phone_number: str | None = None


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


# --- Orders --------------------------------------------------------------------------------------


class ServiceOrder(WireModel):
    """Fields every order type shares."""

    id: Annotated[int, Field(ge=1)] | None = None
    tenant: Annotated[str, Field(min_length=1, max_length=50)] | None = None
    supplier_order_reference: Text | None = None
    status: OrderStatus
    requested_completion_date: date | None = None
    committed_date: WireDateTime | None = None
    target_date: WireDateTime | None = None
    primary_contact: Contact | None = None
    secondary_contact: Contact | None = None
    notes: str | None = None
    hazards: str | None = None
    on_site_restrictions: str | None = None
    service_order_amendment_id: Annotated[int, Field(ge=1)] | None = None
    service_order_amendment_reference: Text | None = None
    service_order_cancellation_id: Annotated[int, Field(ge=1)] | None = None
    service_order_cancellation_reference: Text | None = None

    @model_validator(mode="after")
    def _identified(self) -> ServiceOrder:
        if self.id is None and self.supplier_order_reference is None:
            raise contract_error(
                "id", "the order needs the gateway id and/or supplierOrderReference"
            )
        return self


class AppointedOrder(ServiceOrder):
    """Fields of the order types that can have an engineer appointment."""

    appointment_reservation_id: Annotated[int, Field(ge=1)] | None = None
    appointment_reservation_reference: str | None = None
    appointment_supplier_reference: str | None = None
    appointment_timeslot: AppointmentTimeslot | None = None
    engineer_tasks: list[Text] | None = None


class ProvideServiceOrder(AppointedOrder):
    order_type: ProvideOrderType | None = None
    address: Address | None = None
    service_order_item: ServiceOrderItem | None = None


class ModifyServiceOrder(AppointedOrder):
    service_id: Text | None = None
    service_characteristics: list[ServiceCharacteristic] | None = None


class CeaseServiceOrder(ServiceOrder):
    service_id: Text | None = None


class UnsolicitedCeaseServiceOrder(ServiceOrder):
    supplier_order_reference: Text
    service_id: Text
    reason: UnsolicitedCeaseReason
    requested_cease_date: WireDateTime


ORDER_MODELS: dict[OrderType, type[ServiceOrder]] = {
    OrderType.PROVIDE: ProvideServiceOrder,
    OrderType.CEASE: CeaseServiceOrder,
    OrderType.MODIFY: ModifyServiceOrder,
    OrderType.UNSOLICITED_CEASE: UnsolicitedCeaseServiceOrder,
}


# --- The KCI body --------------------------------------------------------------------------------


class KciBody(WireModel):
    """The envelope every KCI shares; subclasses add the one order property."""

    order_type: ClassVar[OrderType]

    id: UUID
    sequence_number: Annotated[int, Field(ge=1)]
    issued_on: WireDateTime
    reason_code: ReasonCode
    problem_code: ProblemCode | None = None
    text: Text | None = None
    supplier_codes: Annotated[list[SupplierCode], Field(min_length=1)] | None = None

    @property
    def order(self) -> ServiceOrder:
        """The order this KCI carries."""
        raise AssertionError("KciBody is abstract")  # every concrete subclass overrides it

    @model_validator(mode="after")
    def _contract(self) -> KciBody:
        try:
            check_contract(
                self.order_type,
                self.reason_code,
                self.order.model_dump(mode="json", by_alias=True, exclude_none=True),
                problem_code=self.problem_code,
                text=self.text,
                supplier_codes=self.supplier_codes,
            )
        except ContractRuleError as exc:
            raise contract_error(exc.field, exc.rule) from None
        return self


class ProvideKci(KciBody):
    order_type: ClassVar[OrderType] = OrderType.PROVIDE
    provide_service_order: ProvideServiceOrder

    @property
    def order(self) -> ProvideServiceOrder:
        return self.provide_service_order


class CeaseKci(KciBody):
    order_type: ClassVar[OrderType] = OrderType.CEASE
    cease_service_order: CeaseServiceOrder

    @property
    def order(self) -> CeaseServiceOrder:
        return self.cease_service_order


class ModifyKci(KciBody):
    order_type: ClassVar[OrderType] = OrderType.MODIFY
    modify_service_order: ModifyServiceOrder

    @property
    def order(self) -> ModifyServiceOrder:
        return self.modify_service_order


class UnsolicitedCeaseKci(KciBody):
    order_type: ClassVar[OrderType] = OrderType.UNSOLICITED_CEASE
    unsolicited_cease_service_order: UnsolicitedCeaseServiceOrder

    @property
    def order(self) -> UnsolicitedCeaseServiceOrder:
        return self.unsolicited_cease_service_order


KCI_MODELS: dict[OrderType, type[KciBody]] = {
    OrderType.PROVIDE: ProvideKci,
    OrderType.CEASE: CeaseKci,
    OrderType.MODIFY: ModifyKci,
    OrderType.UNSOLICITED_CEASE: UnsolicitedCeaseKci,
}


_ORDER_KEYS: dict[str, str] = {}
for _type, _prop in ORDER_PROPERTY.items():
    _ORDER_KEYS[_prop] = _type.value
    _ORDER_KEYS[re.sub(r"(?<!^)([A-Z])", r"_\1", _prop).lower()] = _type.value


def _which_order(value: Any) -> str | None:
    """The discriminator: which order property the body carries."""
    if isinstance(value, dict):
        keys = value.keys()
    elif isinstance(value, BaseModel):
        keys = type(value).model_fields.keys()
    else:
        return None  # not an object: pydantic reports it as such
    for key in keys:
        tag = _ORDER_KEYS.get(key)
        if tag is not None:
            return tag
    return None


AnyKci = Annotated[
    Annotated[ProvideKci, Tag(OrderType.PROVIDE.value)]
    | Annotated[CeaseKci, Tag(OrderType.CEASE.value)]
    | Annotated[ModifyKci, Tag(OrderType.MODIFY.value)]
    | Annotated[UnsolicitedCeaseKci, Tag(OrderType.UNSOLICITED_CEASE.value)],
    Discriminator(
        _which_order,
        custom_error_type="kci_order_missing",
        custom_error_message="the body carries none of " + ", ".join(ORDER_PROPERTY.values()),
    ),
]

KCI_ADAPTER: TypeAdapter[AnyKci] = TypeAdapter(AnyKci)


def parse_kci(data: bytes | str | dict[str, Any]) -> KciBody:
    """Validate a KCI body (JSON text or a decoded object) against the whole contract.

    Raises:
        pydantic.ValidationError: naming each field that is wrong.
    """
    if isinstance(data, bytes | str):
        return KCI_ADAPTER.validate_json(data)
    return KCI_ADAPTER.validate_python(data)


def kci_json_schema() -> dict[str, Any]:
    """The JSON Schema of the ``POST /kcis`` body as the engine sends it."""
    schema = KCI_ADAPTER.json_schema(mode="serialization", by_alias=True)
    schema["title"] = "Fibre Cafe Supplier Updates API: POST /kcis body (as sent by kci-engine)"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def dump_json(body: dict[str, Any]) -> str:
    """Compact, key-stable JSON of a wire body (what goes on the wire and into the outbox)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


# --- The rules -----------------------------------------------------------------------------------

_NOT_ON_UNSOLICITED = AMENDMENT_RESULTS | {
    ReasonCode.ACKNOWLEDGED,
    ReasonCode.ORDER_REJECTED,
    ReasonCode.INFORMATION_REQUIRED,
    ReasonCode.REAPPOINT,
    ReasonCode.REAPPOINTED,
    ReasonCode.RESUBMIT,
}


class ContractRuleError(ValueError):
    """A KCI breaks one rule of the contract; ``field`` is the wire field concerned."""

    def __init__(self, field: str, rule: str, *, missing: bool = True) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule
        self.missing = missing


def check_contract(
    order_type: OrderType,
    reason: ReasonCode,
    order: Mapping[str, Any],
    *,
    problem_code: ProblemCode | None = None,
    text: str | None = None,
    supplier_codes: Sequence[str] | None = None,
) -> None:
    """Check every one-body rule of the contract on a KCI given in wire form.

    ``order`` is the order object as sent (camelCase keys, absent or ``None`` for unset fields).

    Raises:
        ContractRuleError: for the first rule broken, naming the wire field.
    """
    _check_problem_code(reason, problem_code, text, supplier_codes)
    if reason in TEXT_REQUIRED and not text:
        raise ContractRuleError("text", f"a {reason} KCI must say in text what is needed or why")
    status = order.get("status")
    if status not in REASON_STATUSES[reason]:
        allowed = ", ".join(sorted(REASON_STATUSES[reason]))
        raise ContractRuleError(
            "status", f"a {reason} KCI carries status {allowed}, not {status}", missing=False
        )
    unsolicited = order_type is OrderType.UNSOLICITED_CEASE
    if reason is ReasonCode.CREATED and not unsolicited:
        raise ContractRuleError(
            "reasonCode", "CREATED is sent only for an unsolicited cease", missing=False
        )
    if unsolicited and reason in _NOT_ON_UNSOLICITED:
        raise ContractRuleError(
            "reasonCode", f"{reason} is never sent on an unsolicited cease", missing=False
        )
    if reason is ReasonCode.COMMITTED or (
        reason is ReasonCode.CREATED and status == OrderStatus.IN_PROGRESS
    ):
        for field in ("committedDate", "targetDate"):
            if order.get(field) is None:
                raise ContractRuleError(field, f"a {reason} KCI for a committed order carries it")
    if reason in AMENDMENT_RESULTS and not _has_reference(order, "serviceOrderAmendment"):
        raise ContractRuleError(
            "serviceOrderAmendmentId",
            f"{reason} must reference the amendment (serviceOrderAmendmentId and/or "
            "serviceOrderAmendmentReference)",
        )
    if reason is ReasonCode.CANCELLATION_REJECTED and not _has_reference(
        order, "serviceOrderCancellation"
    ):
        raise ContractRuleError(
            "serviceOrderCancellationId",
            f"{reason} must reference the cancellation (serviceOrderCancellationId and/or "
            "serviceOrderCancellationReference)",
        )
    if (
        reason is ReasonCode.REAPPOINTED
        and order.get("appointmentTimeslot") is None
        and order.get("appointmentSupplierReference") is None
    ):
        raise ContractRuleError(
            "appointmentTimeslot",
            "REAPPOINTED carries the new appointmentTimeslot and/or appointmentSupplierReference",
        )
    if reason is ReasonCode.COMPLETED:
        _check_completion(order_type, order)


def _has_reference(order: Mapping[str, Any], prefix: str) -> bool:
    return order.get(prefix + "Id") is not None or order.get(prefix + "Reference") is not None


def _check_problem_code(
    reason: ReasonCode,
    code: ProblemCode | None,
    text: str | None,
    supplier_codes: Sequence[str] | None,
) -> None:
    if code is None:
        if reason in PROBLEM_CODE_REQUIRED:
            raise ContractRuleError("problemCode", f"a {reason} KCI must carry a problemCode")
        return
    if reason in PROBLEM_CODE_FORBIDDEN:
        raise ContractRuleError(
            "problemCode", f"a happy-path {reason} KCI carries no problemCode", missing=False
        )
    if code is ProblemCode.OTHER and not text and not supplier_codes:
        raise ContractRuleError("text", "problemCode OTHER must come with text or supplierCodes")
    if not problem_code_allowed(code, reason):
        raise ContractRuleError(
            "problemCode",
            f"{code} is not a {REASON_SITUATION[reason].value} problem code, so it cannot "
            f"go on a {reason} KCI",
            missing=False,
        )


def characteristic(order_type: OrderType, order: Mapping[str, Any], name: str) -> str | None:
    """The value of the service characteristic ``name`` on a wire-form order, if any."""
    if order_type is OrderType.PROVIDE:
        items = (order.get("serviceOrderItem") or {}).get("serviceCharacteristics") or ()
    else:
        items = order.get("serviceCharacteristics") or ()
    for item in items:
        if item.get("name") == name:
            value: str = item.get("value")
            return value
    return None


def _check_completion(order_type: OrderType, order: Mapping[str, Any]) -> None:
    if order_type is OrderType.PROVIDE:
        if not characteristic(order_type, order, SERVICE_ID):
            raise ContractRuleError(
                "serviceOrderItem.serviceCharacteristics",
                "a provide order carries the SERVICE_ID service characteristic before it completes",
            )
    elif order_type is not OrderType.UNSOLICITED_CEASE and not order.get("serviceId"):
        raise ContractRuleError("serviceId", f"a completed {order_type} order names its serviceId")
