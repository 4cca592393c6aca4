"""The POST /kcis body: pydantic models, the one-body contract rules, parsing and the schema."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID

import pytest
from click.testing import CliRunner
from kci_engine.cli import main
from kci_engine.core.codes import OrderType, ProblemCode, ReasonCode
from kci_engine.core.contract import check_kci
from kci_engine.core.wire import dump_json, format_datetime
from kci_engine.errors import ContractViolation, MissingField
from kci_engine.orders import SPECS, kci_json_schema, parse_kci
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError, to_json

P, C, M, U = (
    OrderType.PROVIDE,
    OrderType.CEASE,
    OrderType.MODIFY,
    OrderType.UNSOLICITED_CEASE,
)
R = ReasonCode
KCI_MODELS = {t: spec.kci_model for t, spec in SPECS.items()}
ORDER_PROPERTY = {t: spec.kci_property for t, spec in SPECS.items()}
ProvideKci, CeaseKci, ModifyKci, UnsolicitedCeaseKci = (KCI_MODELS[t] for t in (P, C, M, U))
KCI_ID = "00000000-0000-4000-8000-000000000001"
ISSUED = "2026-11-23T09:00:00.000Z"
DATES = {"committedDate": "2026-12-01T08:00:00.000Z", "targetDate": "2026-12-02T08:00:00.000Z"}
SLOT = {
    "timeslotStartDateTime": "2026-12-03T08:00:00.000Z",
    "timeslotEndDateTime": "2026-12-03T13:00:00.000Z",
}
SERVICE_ID_ITEM = {"serviceCharacteristics": [{"name": "SERVICE_ID", "value": "SVC-9"}]}

BASE_ORDERS: dict[OrderType, dict[str, Any]] = {
    P: {"id": 1001, "tenant": "TENANT1", "supplierOrderReference": "SUP-1001"},
    C: {
        "id": 3001,
        "tenant": "TENANT1",
        "supplierOrderReference": "SUP-3001",
        "serviceId": "SVC-2",
    },
    M: {
        "id": 2001,
        "tenant": "TENANT1",
        "supplierOrderReference": "SUP-2001",
        "serviceId": "SVC-1",
    },
    U: {
        "supplierOrderReference": "UC-1",
        "serviceId": "SVC-3",
        "reason": "CHANGE_OF_CP",
        "requestedCeaseDate": "2026-12-20T00:00:00.000Z",
    },
}


def kci_body(
    order_type: OrderType,
    reason: ReasonCode,
    status: str,
    order: dict[str, Any] | None = None,
    **envelope: Any,
) -> dict[str, Any]:
    """A KCI body in wire form: the base order of ``order_type`` with ``order`` merged in (a
    committed order has its dates unless ``order`` removes them with ``None``)."""
    dates = DATES if status == "IN_PROGRESS" else {}
    merged = {**BASE_ORDERS[order_type], **dates, "status": status, **copy.deepcopy(order or {})}
    return {
        "id": KCI_ID,
        "sequenceNumber": 1,
        "issuedOn": ISSUED,
        "reasonCode": reason.value,
        **envelope,
        ORDER_PROPERTY[order_type]: {k: v for k, v in merged.items() if v is not None},
    }


def contract_fields(exc: ValidationError) -> list[str]:
    """The wire fields named by the ``kci_contract`` errors of ``exc``."""
    return [e["ctx"]["field"] for e in exc.errors() if e["type"] == "kci_contract"]


PC = {"problemCode": "NETWORK_ISSUE"}
PC_TEXT = {"problemCode": "NETWORK_ISSUE", "text": "Why"}
AMD = {"serviceOrderAmendmentId": 501}
CAN = {"serviceOrderCancellationId": 901}

#: One valid body per reason code (and per order type where the rules differ).
VALID: list[tuple[OrderType, ReasonCode, str, dict[str, Any], dict[str, Any]]] = [
    (U, R.CREATED, "ACKNOWLEDGED", {}, {}),
    (U, R.CREATED, "IN_PROGRESS", DATES, {}),
    (P, R.ACKNOWLEDGED, "ACKNOWLEDGED", {}, {}),
    (P, R.COMMITTED, "IN_PROGRESS", DATES, {}),
    (U, R.COMMITTED, "IN_PROGRESS", DATES, {}),
    (P, R.UPDATE, "ACKNOWLEDGED", {}, {}),
    (P, R.UPDATE, "PENDING_CANCELLATION", {}, {"text": "Notes changed"}),
    (P, R.ADDITIONAL, "IN_PROGRESS", {"serviceOrderItem": SERVICE_ID_ITEM}, {}),
    (P, R.WARNING, "IN_PROGRESS", {}, PC),
    (P, R.WARNING, "IN_PROGRESS", {}, {"problemCode": "OTHER", "text": "Roadworks"}),
    (P, R.WARNING, "IN_PROGRESS", {}, {"problemCode": "OTHER", "supplierCodes": ["RW-1"]}),
    (P, R.DELAY, "HELD", {}, {"problemCode": "WAYLEAVE_ISSUE"}),
    (P, R.RESUMED, "IN_PROGRESS", {}, {}),
    (P, R.INFORMATION_REQUIRED, "PENDING", {}, {"problemCode": "COST_ISSUE", "text": "Band"}),
    (P, R.REAPPOINT, "PENDING", {}, {"problemCode": "ACCESS_ISSUE"}),
    (P, R.REAPPOINTED, "IN_PROGRESS", {"appointmentTimeslot": SLOT}, {}),
    (M, R.REAPPOINTED, "HELD", {"appointmentSupplierReference": "APPT-1"}, {}),
    (P, R.RESUBMIT, "PENDING", {}, PC_TEXT),
    (P, R.AMENDED, "IN_PROGRESS", AMD, {}),
    (P, R.AMENDED, "PENDING_AMENDMENT", {"serviceOrderAmendmentReference": "A-1"}, {}),
    (M, R.AMENDMENT_REJECTED, "PENDING", AMD, PC_TEXT),
    (P, R.CANCELLED, "CANCELLED", {}, {"problemCode": "CAPACITY_ISSUE"}),
    (C, R.CANCELLED, "CANCELLED", CAN, {"problemCode": "CUSTOMER_CHANGED_MIND"}),
    (U, R.CANCELLED, "CANCELLED", CAN, {"problemCode": "NO_LONGER_REQUIRED"}),
    (C, R.CANCELLATION_REJECTED, "IN_PROGRESS", CAN, PC_TEXT),
    (
        P,
        R.CANCELLATION_REJECTED,
        "ACKNOWLEDGED",
        {"serviceOrderCancellationReference": "C-1"},
        PC_TEXT,
    ),
    (P, R.ORDER_REJECTED, "REJECTED", {}, {"problemCode": "INVALID_REQUEST", "text": "No"}),
    (P, R.COMPLETED, "COMPLETED", {"serviceOrderItem": SERVICE_ID_ITEM}, {}),
    (M, R.COMPLETED, "COMPLETED", {}, {}),
    (C, R.COMPLETED, "COMPLETED", {}, {}),
    (U, R.COMPLETED, "COMPLETED", {}, {}),
]


def test_valid_bodies_cover_every_reason_code_and_order_type() -> None:
    assert {case[1] for case in VALID} == set(ReasonCode)
    assert {case[0] for case in VALID} == set(OrderType)


@pytest.mark.parametrize(
    ("order_type", "reason", "status", "order", "envelope"),
    VALID,
    ids=[f"{c[0].value}-{c[1].value}-{c[2]}" for c in VALID],
)
def test_a_body_obeying_the_contract_parses_to_its_order_type_model(
    order_type: OrderType,
    reason: ReasonCode,
    status: str,
    order: dict[str, Any],
    envelope: dict[str, Any],
) -> None:
    body = kci_body(order_type, reason, status, order, **envelope)
    kci = parse_kci(body)
    assert isinstance(kci, KCI_MODELS[order_type])
    assert kci.spec is SPECS[order_type]
    assert kci.reason_code is reason
    assert kci.order.status == status
    assert kci.wire() == body
    check_kci(
        SPECS[order_type],
        reason,
        body[ORDER_PROPERTY[order_type]],
        problem_code=ProblemCode(envelope["problemCode"]) if "problemCode" in envelope else None,
        text=envelope.get("text"),
        supplier_codes=envelope.get("supplierCodes"),
    )


def refused(
    case: str,
    order_type: OrderType,
    reason: ReasonCode,
    status: str,
    field: str,
    order: dict[str, Any] | None = None,
    *,
    missing: bool = True,
    **envelope: Any,
) -> Any:
    """A body breaking one rule, the wire field it must be refused on, and whether the field is
    reported as missing (rather than present but wrong)."""
    return pytest.param(order_type, reason, status, order or {}, envelope, field, missing, id=case)


_NEEDS_PROBLEM_CODE = [
    (R.WARNING, "IN_PROGRESS", {}),
    (R.DELAY, "HELD", {}),
    (R.REAPPOINT, "PENDING", {}),
    (R.CANCELLED, "CANCELLED", {}),
    (R.INFORMATION_REQUIRED, "PENDING", {}),
    (R.ORDER_REJECTED, "REJECTED", {}),
    (R.AMENDMENT_REJECTED, "IN_PROGRESS", AMD),
    (R.CANCELLATION_REJECTED, "IN_PROGRESS", CAN),
    (R.RESUBMIT, "PENDING", {}),
]
_NEEDS_TEXT = [
    (R.INFORMATION_REQUIRED, "PENDING", {}),
    (R.ORDER_REJECTED, "REJECTED", {}),
    (R.AMENDMENT_REJECTED, "IN_PROGRESS", AMD),
    (R.CANCELLATION_REJECTED, "IN_PROGRESS", CAN),
    (R.RESUBMIT, "PENDING", {}),
]
_LINE_PROFILE_ONLY = {
    "serviceOrderItem": {"serviceCharacteristics": [{"name": "LINE_PROFILE", "value": "9"}]}
}

REFUSED = [
    *[
        refused(f"{r.value}-needs-problemCode", P, r, s, "problemCode", o, text="Why")
        for r, s, o in _NEEDS_PROBLEM_CODE
    ],
    *[
        refused(f"{r.value}-needs-text", P, r, s, "text", o, problemCode="NETWORK_ISSUE")
        for r, s, o in _NEEDS_TEXT
    ],
    refused("OTHER-needs-text-or-codes", P, R.WARNING, "HELD", "text", problemCode="OTHER"),
    refused(
        "ACKNOWLEDGED-has-no-problemCode",
        P,
        R.ACKNOWLEDGED,
        "ACKNOWLEDGED",
        "problemCode",
        missing=False,
        problemCode="NETWORK_ISSUE",
    ),
    refused(
        "COMPLETED-has-no-problemCode",
        M,
        R.COMPLETED,
        "COMPLETED",
        "problemCode",
        missing=False,
        problemCode="NETWORK_ISSUE",
    ),
    refused(
        "DELAY-needs-a-Delay-code",
        P,
        R.DELAY,
        "HELD",
        "problemCode",
        missing=False,
        problemCode="CAPACITY_ISSUE",
    ),
    refused(
        "REAPPOINT-needs-a-Reappoint-code",
        P,
        R.REAPPOINT,
        "PENDING",
        "problemCode",
        missing=False,
        problemCode="APPOINTMENT_NOT_REQUIRED",
    ),
    refused(
        "CANCELLED-needs-a-Cancel-code",
        P,
        R.CANCELLED,
        "CANCELLED",
        "problemCode",
        missing=False,
        problemCode="INFORMATION_REQUIRED",
    ),
    refused(
        "INFORMATION_REQUIRED-needs-an-Inform-code",
        P,
        R.INFORMATION_REQUIRED,
        "PENDING",
        "problemCode",
        missing=False,
        problemCode="ACCESS_ISSUE",
        text="Why",
    ),
    refused(
        "COMMITTED-carries-IN_PROGRESS",
        P,
        R.COMMITTED,
        "ACKNOWLEDGED",
        "status",
        DATES,
        missing=False,
    ),
    refused("DELAY-carries-HELD", P, R.DELAY, "IN_PROGRESS", "status", missing=False, **PC),
    refused("COMPLETED-carries-COMPLETED", M, R.COMPLETED, "IN_PROGRESS", "status", missing=False),
    refused("UPDATE-never-final", P, R.UPDATE, "COMPLETED", "status", missing=False),
    refused(
        "UPDATE-never-SENT_TO_SUPPLIER-the-gateways-status",
        P,
        R.UPDATE,
        "SENT_TO_SUPPLIER",
        "status",
        missing=False,
    ),
    refused(
        "CANCELLATION_REJECTED-never-SENT_TO_SUPPLIER",
        P,
        R.CANCELLATION_REJECTED,
        "SENT_TO_SUPPLIER",
        "status",
        CAN,
        missing=False,
        **PC_TEXT,
    ),
    refused("RESUMED-carries-IN_PROGRESS", P, R.RESUMED, "ACKNOWLEDGED", "status", missing=False),
    refused(
        "ACKNOWLEDGED-carries-supplierOrderReference",
        M,
        R.ACKNOWLEDGED,
        "ACKNOWLEDGED",
        "supplierOrderReference",
        {"supplierOrderReference": None},
    ),
    refused(
        "IN_PROGRESS-carries-targetDate",
        C,
        R.UPDATE,
        "IN_PROGRESS",
        "targetDate",
        {"targetDate": None},
    ),
    refused(
        "AMENDED-never-SENT_TO_SUPPLIER",
        P,
        R.AMENDED,
        "SENT_TO_SUPPLIER",
        "status",
        AMD,
        missing=False,
    ),
    refused(
        "CREATED-only-on-unsolicited-cease",
        P,
        R.CREATED,
        "ACKNOWLEDGED",
        "reasonCode",
        missing=False,
    ),
    refused(
        "no-ACKNOWLEDGED-on-unsolicited-cease",
        U,
        R.ACKNOWLEDGED,
        "ACKNOWLEDGED",
        "reasonCode",
        missing=False,
    ),
    refused(
        "no-AMENDED-on-unsolicited-cease",
        U,
        R.AMENDED,
        "IN_PROGRESS",
        "reasonCode",
        AMD,
        missing=False,
    ),
    refused(
        "no-REAPPOINT-on-unsolicited-cease",
        U,
        R.REAPPOINT,
        "PENDING",
        "reasonCode",
        missing=False,
        **PC,
    ),
    refused(
        "COMMITTED-needs-committedDate",
        P,
        R.COMMITTED,
        "IN_PROGRESS",
        "committedDate",
        {"committedDate": None},
    ),
    refused(
        "COMMITTED-needs-targetDate",
        P,
        R.COMMITTED,
        "IN_PROGRESS",
        "targetDate",
        {"targetDate": None},
    ),
    refused(
        "CREATED-IN_PROGRESS-needs-dates",
        U,
        R.CREATED,
        "IN_PROGRESS",
        "committedDate",
        {"committedDate": None, "targetDate": None},
    ),
    refused(
        "AMENDED-references-the-amendment", P, R.AMENDED, "IN_PROGRESS", "serviceOrderAmendmentId"
    ),
    refused(
        "AMENDMENT_REJECTED-references-the-amendment",
        P,
        R.AMENDMENT_REJECTED,
        "IN_PROGRESS",
        "serviceOrderAmendmentId",
        **PC_TEXT,
    ),
    refused(
        "CANCELLATION_REJECTED-references-the-cancellation",
        P,
        R.CANCELLATION_REJECTED,
        "HELD",
        "serviceOrderCancellationId",
        **PC_TEXT,
    ),
    refused(
        "REAPPOINTED-carries-the-appointment",
        P,
        R.REAPPOINTED,
        "IN_PROGRESS",
        "appointmentTimeslot",
    ),
    refused(
        "provide-COMPLETED-needs-SERVICE_ID",
        P,
        R.COMPLETED,
        "COMPLETED",
        "serviceOrderItem.serviceCharacteristics",
        _LINE_PROFILE_ONLY,
    ),
    refused(
        "provide-COMPLETED-without-an-item",
        P,
        R.COMPLETED,
        "COMPLETED",
        "serviceOrderItem.serviceCharacteristics",
    ),
]
_MISSING_SERVICE_ID = [
    ("modify-COMPLETED-needs-serviceId", M),
    ("cease-COMPLETED-needs-serviceId", C),
]


@pytest.mark.parametrize(
    ("order_type", "reason", "status", "order", "envelope", "field", "missing"), REFUSED
)
def test_a_body_breaking_a_rule_is_refused_naming_the_field(
    order_type: OrderType,
    reason: ReasonCode,
    status: str,
    order: dict[str, Any],
    envelope: dict[str, Any],
    field: str,
    missing: bool,
) -> None:
    body = kci_body(order_type, reason, status, order, **envelope)
    with pytest.raises(ValidationError) as info:
        parse_kci(body)
    assert contract_fields(info.value) == [field]
    with pytest.raises(ContractViolation) as rule:
        check_kci(
            SPECS[order_type],
            reason,
            body[ORDER_PROPERTY[order_type]],
            problem_code=ProblemCode(envelope["problemCode"])
            if "problemCode" in envelope
            else None,
            text=envelope.get("text"),
            supplier_codes=envelope.get("supplierCodes"),
        )
    assert isinstance(rule.value, MissingField) is missing
    if isinstance(rule.value, MissingField):
        assert rule.value.field == field
        assert rule.value.rule.startswith(f"{field} is required: ")
    else:
        assert rule.value.rule.startswith(f"{field}: ")


@pytest.mark.parametrize(("case", "order_type"), _MISSING_SERVICE_ID)
def test_a_completed_modify_or_cease_order_names_its_service_id(
    case: str, order_type: OrderType
) -> None:
    body = kci_body(order_type, R.COMPLETED, "COMPLETED")
    del body[ORDER_PROPERTY[order_type]]["serviceId"]
    with pytest.raises(ValidationError) as info:
        parse_kci(body)
    assert contract_fields(info.value) == ["serviceId"]
    assert f"a completed {order_type.value} order names its serviceId" in str(info.value)


def test_an_order_without_id_or_supplier_reference_is_refused_naming_id() -> None:
    body = kci_body(P, R.UPDATE, "IN_PROGRESS")
    del body["provideServiceOrder"]["id"]
    del body["provideServiceOrder"]["supplierOrderReference"]
    with pytest.raises(ValidationError) as info:
        parse_kci(body)
    assert contract_fields(info.value) == ["id"]
    assert info.value.errors()[0]["loc"] == ("provide", "provideServiceOrder")


def test_an_order_identified_by_supplier_reference_alone_is_accepted() -> None:
    body = kci_body(P, R.UPDATE, "IN_PROGRESS")
    del body["provideServiceOrder"]["id"]
    assert parse_kci(body).order.supplier_order_reference == "SUP-1001"


def test_an_appointment_that_ends_before_it_starts_is_refused() -> None:
    slot = {**SLOT, "timeslotEndDateTime": SLOT["timeslotStartDateTime"]}
    body = kci_body(P, R.REAPPOINTED, "IN_PROGRESS", {"appointmentTimeslot": slot})
    with pytest.raises(ValidationError) as info:
        parse_kci(body)
    assert contract_fields(info.value) == ["appointmentTimeslot"]


@pytest.mark.parametrize(
    ("where", "path"),
    [("envelope", ()), ("order", ("provideServiceOrder",)), ("item", ("provideServiceOrder",))],
)
def test_unknown_fields_are_forbidden_at_every_level(where: str, path: tuple[str, ...]) -> None:
    body = kci_body(P, R.UPDATE, "IN_PROGRESS", {"serviceOrderItem": SERVICE_ID_ITEM})
    target: dict[str, Any] = body
    for key in path:
        target = target[key]
    if where == "item":
        target = target["serviceOrderItem"]
    target["supplierRemarks"] = []
    with pytest.raises(ValidationError) as info:
        parse_kci(body)
    [error] = info.value.errors()
    assert error["type"] == "extra_forbidden"
    assert error["loc"][-1] == "supplierRemarks"


@pytest.mark.parametrize(
    ("field", "order"),
    [("issuedOn", False), ("committedDate", True), ("targetDate", True)],
)
def test_timezone_naive_datetimes_are_refused(field: str, order: bool) -> None:
    body = kci_body(P, R.COMMITTED, "IN_PROGRESS", DATES)
    (body["provideServiceOrder"] if order else body)[field] = "2026-12-01T08:00:00"
    with pytest.raises(ValidationError) as info:
        parse_kci(body)
    [error] = info.value.errors()
    assert error["type"] == "timezone_aware"
    assert error["loc"][-1] == field


@pytest.mark.parametrize(
    ("field", "value", "error_type"),
    [
        ("id", "not-a-uuid", "uuid_parsing"),
        ("sequenceNumber", 0, "greater_than_equal"),
        ("reasonCode", "ACKNOWLEDGE", "enum"),
        ("problemCode", "DOG_ON_SITE", "enum"),
        ("supplierCodes", [], "too_short"),
        ("supplierCodes", ["X" * 51], "string_too_long"),
        ("text", "", "string_too_short"),
        ("supplierNotes", [], "too_short"),
        ("supplierNotes", [{"type": "Engineer Note"}], "missing"),
        ("supplierNotes", [{"note": "x", "colour": "red"}], "extra_forbidden"),
    ],
)
def test_malformed_envelope_fields_are_refused(field: str, value: Any, error_type: str) -> None:
    body = kci_body(P, R.UPDATE, "IN_PROGRESS", **{field: value})
    with pytest.raises(ValidationError) as info:
        parse_kci(body)
    assert error_type in [e["type"] for e in info.value.errors()]
    assert field in [e["loc"][1] for e in info.value.errors() if len(e["loc"]) > 1]


def test_a_body_without_an_order_property_gets_the_discriminator_error() -> None:
    body = kci_body(P, R.UPDATE, "IN_PROGRESS")
    del body["provideServiceOrder"]
    with pytest.raises(ValidationError) as info:
        parse_kci(body)
    [error] = info.value.errors()
    assert error["type"] == "kci_order_missing"
    for prop in ORDER_PROPERTY.values():
        assert prop in error["msg"]


@pytest.mark.parametrize("data", ["[1]", "42", b'"text"'])
def test_a_body_that_is_not_a_json_object_is_a_validation_error(data: str | bytes) -> None:
    with pytest.raises(ValidationError):
        parse_kci(data)


@pytest.mark.parametrize("order_type", list(OrderType))
def test_each_order_property_selects_its_model(order_type: OrderType) -> None:
    status = "IN_PROGRESS"
    kci = parse_kci(kci_body(order_type, R.UPDATE, status))
    assert type(kci) is KCI_MODELS[order_type]
    assert kci.order is getattr(
        kci,
        {P: "provide", C: "cease", M: "modify", U: "unsolicited_cease"}[order_type]
        + "_service_order",
    )


def test_kci_models_map_each_order_type_to_its_wire_property() -> None:
    assert ORDER_PROPERTY == {
        P: "provideServiceOrder",
        C: "ceaseServiceOrder",
        M: "modifyServiceOrder",
        U: "unsolicitedCeaseServiceOrder",
    }
    assert [model.__name__ for model in KCI_MODELS.values()] == [
        "ProvideKci",
        "CeaseKci",
        "ModifyKci",
        "UnsolicitedCeaseKci",
    ]


def test_snake_case_input_serialises_to_camel_case_wire_names() -> None:
    kci = ProvideKci.model_validate(
        {
            "id": KCI_ID,
            "sequence_number": 3,
            "issued_on": datetime(
                2026, 11, 23, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1))
            ),
            "reason_code": "COMMITTED",
            "provide_service_order": {
                "id": 1001,
                "tenant": "T",
                "supplier_order_reference": "SUP-1",
                "status": "IN_PROGRESS",
                "committed_date": DATES["committedDate"],
                "target_date": DATES["targetDate"],
                "service_order_item": {"service_characteristics": [{"name": "A", "value": "1"}]},
            },
        }
    )
    assert kci.wire() == {
        "id": KCI_ID,
        "sequenceNumber": 3,
        "issuedOn": "2026-11-23T09:00:00.123Z",
        "reasonCode": "COMMITTED",
        "provideServiceOrder": {
            "id": 1001,
            "tenant": "T",
            "supplierOrderReference": "SUP-1",
            "status": "IN_PROGRESS",
            "committedDate": "2026-12-01T08:00:00.000Z",
            "targetDate": "2026-12-02T08:00:00.000Z",
            "serviceOrderItem": {"serviceCharacteristics": [{"name": "A", "value": "1"}]},
        },
    }


def test_a_snake_case_order_property_is_recognised_by_the_discriminator() -> None:
    body = kci_body(C, R.UPDATE, "HELD")
    body["cease_service_order"] = body.pop("ceaseServiceOrder")
    assert isinstance(parse_kci(body), CeaseKci)


@pytest.mark.parametrize("as_type", [str, bytes])
def test_parse_kci_accepts_json_text_and_bytes(as_type: type) -> None:
    body = kci_body(M, R.DELAY, "HELD", problemCode="NETWORK_ISSUE")
    text = json.dumps(body)
    kci = parse_kci(text.encode() if as_type is bytes else text)
    assert isinstance(kci, ModifyKci)
    assert kci.wire() == body


def test_the_wire_form_omits_unset_optional_fields() -> None:
    wire = parse_kci(kci_body(P, R.ACKNOWLEDGED, "ACKNOWLEDGED")).wire()
    assert "problemCode" not in wire
    assert "text" not in wire
    assert "supplierNotes" not in wire
    assert set(wire["provideServiceOrder"]) == {"id", "tenant", "supplierOrderReference", "status"}


def test_format_datetime_renders_utc_with_milliseconds_and_z() -> None:
    moment = datetime(2026, 11, 23, 10, 0, 0, 987654, tzinfo=timezone(timedelta(hours=1)))
    assert format_datetime(moment) == "2026-11-23T09:00:00.987Z"
    assert format_datetime(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000Z"


def test_dump_json_is_compact_and_keeps_non_ascii() -> None:
    assert dump_json({"a": 1, "text": "café"}) == '{"a":1,"text":"café"}'


def test_dump_json_writes_what_json_dumps_writes_for_wire_values() -> None:
    """Stored and sent bodies keep the text json.dumps gave them (escapes, non-ASCII, numbers)."""
    body = {
        "text": 'café \u2028 \x7f \x00 \x1f \n\t\r\b\f " \\ / 😀 \ue000',
        "numbers": [1, -2, 2**62, 0],
        "flags": [True, False, None],
        "nested": {"a": [{"b": "é"}], "empty": {}, "list": []},
    }
    assert dump_json(body) == json.dumps(body, separators=(",", ":"), ensure_ascii=False)


class _Colour(StrEnum):
    RED = "red"


@dataclass
class _Point:
    x: int
    y: int


class _Note(BaseModel):
    note: str
    type: str = "Engineer Note"


@pytest.mark.parametrize(
    "value",
    [
        {"at": datetime(2026, 11, 23, 9, 0, 0, 123456, tzinfo=UTC)},
        {"at": datetime(2026, 11, 23, 9, 0, tzinfo=timezone(timedelta(hours=1)))},
        {"naive": datetime(2026, 11, 23, 9, 0), "day": date(2026, 11, 23)},
        {"amount": Decimal("12.50"), "id": UUID(int=7), "colour": _Colour.RED},
        {"point": _Point(1, 2), "note": _Note(note="Booked")},
        {1: "key not a string", "big": 2**70, "negative": -(2**65)},
        [{"nested": [{"deeper": {"x": [1, None, True]}}]}],
    ],
    ids=[
        "utc",
        "offset",
        "naive-and-date",
        "decimal-uuid-enum",
        "dataclass-model",
        "keys-ints",
        "nested",
    ],
)
def test_dump_json_writes_what_pydantic_core_writes(value: Any) -> None:
    """orjson encodes; whatever it would write differently goes through pydantic_core, so the
    text is the same as before it was used (stored bodies compare and decode the same)."""
    assert dump_json(value) == to_json(value).decode()


def test_dump_json_refuses_what_neither_encoder_knows() -> None:
    with pytest.raises(PydanticSerializationError):
        dump_json({"thing": object()})


@pytest.mark.parametrize(
    ("order_type", "order", "value"),
    [
        (P, {"serviceOrderItem": SERVICE_ID_ITEM}, "SVC-9"),
        (P, {}, None),
        (P, {"serviceOrderItem": {}}, None),
        (M, {"serviceCharacteristics": [{"name": "SERVICE_ID", "value": "SVC-M"}]}, "SVC-M"),
        (M, {"serviceCharacteristics": [{"name": "LINE_PROFILE", "value": "1"}]}, None),
        (C, {}, None),
    ],
)
def test_characteristic_reads_where_each_order_type_keeps_them(
    order_type: OrderType, order: dict[str, Any], value: str | None
) -> None:
    assert SPECS[order_type].characteristic(order, "SERVICE_ID") == value


def test_schema_offers_the_four_order_properties_as_one_of() -> None:
    schema = kci_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "POST /kcis" in schema["title"]
    variants = [schema["$defs"][ref["$ref"].rsplit("/", 1)[1]] for ref in schema["oneOf"]]
    props = {prop for v in variants for prop in v["properties"] if prop in ORDER_PROPERTY.values()}
    assert props == set(ORDER_PROPERTY.values())
    for variant in variants:
        assert variant["additionalProperties"] is False
        assert {"id", "sequenceNumber", "issuedOn", "reasonCode"} <= set(variant["required"])
        [order_prop] = [p for p in variant["required"] if p in ORDER_PROPERTY.values()]
        assert order_prop in variant["properties"]


def test_schema_uses_wire_enum_spellings() -> None:
    defs = kci_json_schema()["$defs"]
    assert defs["ReasonCode"]["enum"] == [r.value for r in ReasonCode]
    assert len(defs["ProblemCode"]["enum"]) == 28


def test_cli_schema_prints_the_json_schema() -> None:
    result = CliRunner().invoke(main, ["schema", "--indent", "0"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json.loads(json.dumps(kci_json_schema(), sort_keys=True))
    assert "\n" not in result.output.strip()


def test_supplier_notes_go_on_any_kci_in_wire_form() -> None:
    notes = [{"note": "Ladder needed", "type": "Engineer Note", "created": ISSUED}]
    body = kci_body(P, R.COMPLETED, "COMPLETED", {"serviceOrderItem": SERVICE_ID_ITEM})
    body["supplierNotes"] = notes
    assert parse_kci(body).wire()["supplierNotes"] == notes
