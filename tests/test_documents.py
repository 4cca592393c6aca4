"""Order documents: whole-order validation, and field-by-field changes in the gateway's style."""

from __future__ import annotations

from typing import Any

import pytest
from kci_engine.core._documents import ENGINE_OWNED, IMMUTABLE, apply_changes, validate_order
from kci_engine.core.codes import OrderType
from kci_engine.core.spec import OrderTypeSpec
from kci_engine.errors import InvalidEventData, InvalidOrder
from kci_engine.orders import SPECS
from kci_engine.orders.modify import ModifyServiceOrder
from kci_engine.tooling.testing import (
    cease_order,
    modify_order,
    provide_order,
    unsolicited_cease_order,
)

P, C, M, U = (
    SPECS[t]
    for t in (OrderType.PROVIDE, OrderType.CEASE, OrderType.MODIFY, OrderType.UNSOLICITED_CEASE)
)


def document(order_type: OrderTypeSpec, **extra: Any) -> dict[str, Any]:
    samples = {P: provide_order, C: cease_order, M: modify_order}
    if order_type is U:
        return validate_order(U, unsolicited_cease_order(**extra))
    return validate_order(order_type, {**samples[order_type](**extra), "status": "IN_PROGRESS"})


# --- validate_order ------------------------------------------------------------------------------


def test_validate_order_returns_the_canonical_wire_form() -> None:
    order = {
        **provide_order(),
        "status": "ACKNOWLEDGED",
        "target_date": "2026-12-01T09:00:00+01:00",
        "notes": None,
    }
    validated = validate_order(P, order)
    assert validated["targetDate"] == "2026-12-01T08:00:00.000Z"
    assert "target_date" not in validated
    assert "notes" not in validated
    assert validated["serviceOrderItem"]["serviceCharacteristics"] == [
        {"name": "LINE_PROFILE", "value": "900"}
    ]


def test_validate_order_takes_a_pydantic_model() -> None:
    model = ModifyServiceOrder.model_validate({**modify_order(), "status": "HELD"})
    assert validate_order(M, model) == validate_order(M, {**modify_order(), "status": "HELD"})


def test_validate_order_names_every_wrong_field() -> None:
    order = {**provide_order(), "status": "ACKNOWLEDGED", "address": {"id": "1"}, "colour": 1}
    with pytest.raises(InvalidOrder) as info:
        validate_order(P, order)
    message = str(info.value)
    assert message.startswith("invalid provide order: ")
    assert "address.type: Field required" in message
    assert "colour: Extra inputs are not permitted" in message


@pytest.mark.parametrize(
    ("order_type", "order", "field"),
    [
        (P, {"id": 1, "tenant": "T"}, "status"),
        (C, {"tenant": "T", "status": "HELD"}, "id: the order needs the gateway id"),
        (U, {**unsolicited_cease_order(), "reason": "MOVING_HOUSE"}, "reason"),
        (U, {**unsolicited_cease_order(), "requestedCeaseDate": "2026-12-20"}, "requestedCease"),
        (M, {**modify_order(), "status": "HELD", "serviceCharacteristics": [{"name": ""}]},
         "serviceCharacteristics.0.name"),
    ],
)  # fmt: skip
def test_validate_order_refuses_an_invalid_order_naming_the_field(
    order_type: OrderTypeSpec, order: dict[str, Any], field: str
) -> None:
    with pytest.raises(
        InvalidOrder, match=f"invalid {order_type.order_type.value} order: .*{field}"
    ):
        validate_order(order_type, order)


def test_a_cease_order_has_no_characteristics_or_appointment_fields() -> None:
    for field in ("serviceCharacteristics", "appointmentTimeslot", "serviceOrderItem"):
        with pytest.raises(InvalidOrder, match=f"{field}: Extra inputs"):
            validate_order(C, {**cease_order(), "status": "HELD", field: []})


# --- apply_changes -------------------------------------------------------------------------------


def test_changes_make_a_new_document_and_leave_the_old_one_alone() -> None:
    old = document(P)
    frozen = {**old}
    new = apply_changes(P, old, {"notes": "Gate code 1234"})
    assert new["notes"] == "Gate code 1234"
    assert old == frozen
    assert new is not old


def test_no_changes_give_an_equal_copy() -> None:
    old = document(M)
    assert apply_changes(M, old, None) == old
    assert apply_changes(M, old, {}, {}) == old


def test_none_removes_a_field_and_removing_an_absent_one_is_harmless() -> None:
    old = document(M, notes="Ring twice")
    new = apply_changes(M, old, {"notes": None, "hazards": None})
    assert "notes" not in new
    assert "hazards" not in new
    assert new == {k: v for k, v in old.items() if k != "notes"}


def test_arrays_are_replaced_whole() -> None:
    old = document(
        M,
        serviceCharacteristics=[
            {"name": "LINE_PROFILE", "value": "500"},
            {"name": "CARE_LEVEL", "value": "1"},
        ],
        engineerTasks=["INSTALL_ROUTER", "ADDITIONAL_CABLING"],
    )
    new = apply_changes(
        M,
        old,
        {
            "serviceCharacteristics": [{"name": "LINE_PROFILE", "value": "900"}],
            "engineerTasks": ["TEST_SINGLE_DEVICE"],
        },
    )
    assert new["serviceCharacteristics"] == [{"name": "LINE_PROFILE", "value": "900"}]
    assert new["engineerTasks"] == ["TEST_SINGLE_DEVICE"]


def test_objects_are_replaced_whole_and_normalised() -> None:
    new = apply_changes(
        P,
        document(P),
        {
            "address": {"id": "NAD-1", "type": "NAD"},
            "appointmentTimeslot": {
                "timeslotStartDateTime": "2026-12-03T09:00:00+01:00",
                "timeslotEndDateTime": "2026-12-03T13:00:00Z",
                "classification": "WEEKDAY_AM",
            },
        },
    )
    assert new["address"] == {"id": "NAD-1", "type": "NAD"}
    assert new["appointmentTimeslot"] == {
        "timeslotStartDateTime": "2026-12-03T08:00:00.000Z",
        "timeslotEndDateTime": "2026-12-03T13:00:00.000Z",
        "classification": "WEEKDAY_AM",
    }


def test_provide_characteristics_are_upserted_inside_the_order_item() -> None:
    old = document(P)
    new = apply_changes(P, old, None, {"SERVICE_ID": "SVC-1", "LINE_PROFILE": "1000"})
    item = new["serviceOrderItem"]
    assert item["serviceCharacteristics"] == [
        {"name": "LINE_PROFILE", "value": "1000"},
        {"name": "SERVICE_ID", "value": "SVC-1"},
    ]
    assert item["serviceSpecification"] == {"id": "FTTP-900", "name": "FTTP 900/100"}
    assert old["serviceOrderItem"]["serviceCharacteristics"] == [
        {"name": "LINE_PROFILE", "value": "900"}
    ]


def test_a_provide_order_without_an_item_gets_one_for_its_characteristics() -> None:
    old = document(P)
    del old["serviceOrderItem"]
    new = apply_changes(P, old, None, {"SERVICE_ID": "SVC-1"})
    assert new["serviceOrderItem"] == {
        "serviceCharacteristics": [{"name": "SERVICE_ID", "value": "SVC-1"}]
    }


def test_modify_characteristics_are_upserted_and_removed_at_the_top_level() -> None:
    old = document(
        M, serviceCharacteristics=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    )
    new = apply_changes(M, old, None, {"A": None, "C": "3", "GONE": None})
    assert new["serviceCharacteristics"] == [
        {"name": "B", "value": "2"},
        {"name": "C", "value": "3"},
    ]


def test_order_changes_apply_before_characteristics() -> None:
    new = apply_changes(
        M,
        document(M),
        {"serviceCharacteristics": [{"name": "X", "value": "1"}]},
        {"Y": "2"},
    )
    assert new["serviceCharacteristics"] == [
        {"name": "X", "value": "1"},
        {"name": "Y", "value": "2"},
    ]


@pytest.mark.parametrize("order_type", [C, U])
def test_cease_orders_carry_no_characteristics(order_type: OrderTypeSpec) -> None:
    with pytest.raises(InvalidEventData) as info:
        apply_changes(order_type, document(order_type), None, {"SERVICE_ID": "S"})
    assert str(info.value) == (
        f"service_characteristics: a {order_type.order_type.value} order carries no service "
        "characteristics"
    )


@pytest.mark.parametrize(
    ("characteristics", "message"),
    [
        ({"": "x"}, "service_characteristics: a characteristic needs a name"),
        ({"SERVICE_ID": 5}, "service_characteristics.SERVICE_ID: values are strings, got int"),
    ],
)
def test_malformed_characteristics_are_refused(
    characteristics: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidEventData) as info:
        apply_changes(P, document(P), None, characteristics)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("order_type", "changes", "message"),
    [
        (P, {"colour": "red"}, "order.colour: not a field of a provide order"),
        (C, {"serviceCharacteristics": []}, "order.serviceCharacteristics: not a field of a cease"),
        (U, {"appointmentTimeslot": None}, "order.appointmentTimeslot: not a field"),
        (P, {"status": "COMPLETED"}, "order.status: set by the engine, not by event data"),
        (M, {"serviceOrderCancellationId": 3}, "order.serviceOrderCancellationId: set by the"),
        (P, {"id": 1002}, "order.id: identifies the order and cannot change"),
        (P, {"id": None}, "order.id: identifies the order and cannot change"),
        (C, {"tenant": "OTHER"}, "order.tenant: identifies the order"),
        (U, {"supplierOrderReference": "UC-2"}, "order.supplierOrderReference: identifies"),
        (U, {"serviceId": None}, "order.serviceId: required on a unsolicited_cease order"),
        (P, {"targetDate": "soon"}, "order.targetDate: Input should be a valid datetime"),
        (P, {"targetDate": "2026-12-01T08:00:00"}, "order.targetDate: Input should have timezone"),
        (P, {"address": {"id": "1", "type": "POSTCODE"}}, "order.address.type: Input should be"),
        (M, {"serviceCharacteristics": [{"value": "1"}]},
         "order.serviceCharacteristics.0.name: Field required"),
        (P, {"appointmentReservationId": 0}, "order.appointmentReservationId: Input should be"),
    ],
)  # fmt: skip
def test_a_bad_change_is_refused_naming_the_order_field(
    order_type: OrderTypeSpec, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidEventData) as info:
        apply_changes(order_type, document(order_type), changes)
    assert str(info.value).startswith(message)


def test_an_identifying_field_may_be_restated_or_set_for_the_first_time() -> None:
    old = document(P)
    assert "supplierOrderReference" not in old
    new = apply_changes(P, old, {"id": 1001, "tenant": "TENANT1", "supplierOrderReference": "S-1"})
    assert new["supplierOrderReference"] == "S-1"
    with pytest.raises(InvalidEventData, match="supplierOrderReference: identifies"):
        apply_changes(P, new, {"supplierOrderReference": "S-2"})


def test_a_document_left_without_any_identifier_is_refused() -> None:
    with pytest.raises(InvalidEventData, match=r"order\.id: the order needs its id and/or"):
        apply_changes(C, {"status": "HELD", "serviceId": "S"}, {"notes": "x"})


def test_the_engine_owned_and_immutable_fields() -> None:
    assert {
        "status",
        "serviceOrderAmendmentId",
        "serviceOrderAmendmentReference",
        "serviceOrderCancellationId",
        "serviceOrderCancellationReference",
    } == ENGINE_OWNED
    assert {"id", "tenant", "supplierOrderReference"} == IMMUTABLE
