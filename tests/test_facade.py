"""The Engine facade: accepting orders, applying events, idempotency, time, and nested waits."""

from __future__ import annotations

import gc
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import pytest
from kci_engine import Engine, Event, EventData, OrderStatus, OrderType, ProblemCode, ReasonCode
from kci_engine._facade import new_kci_id
from kci_engine.core.events import EventEntry, given_json, parse_event_data
from kci_engine.core.records import Kci, OrderRecord
from kci_engine.errors import (
    ConcurrencyConflict,
    ConfigurationError,
    EventNotAllowed,
    InvalidOrder,
    MissingField,
    OrderExists,
    OrderNotFound,
)
from kci_engine.orders import SPECS
from kci_engine.orders.provide import ProvideServiceOrder
from kci_engine.store import MemoryStore
from kci_engine.tooling.testing import (
    COMMIT_DATES,
    EPOCH,
    SteppingClock,
    assert_valid_stream,
    cease_order,
    modify_order,
    provide_order,
    reason_codes,
    sequential_ids,
    unsolicited_cease_order,
)

from tests.forking import drawn_in_child

S = OrderStatus
E = Event
R = ReasonCode
REF = {"order": {"supplierOrderReference": "SUP-1"}}
PC = {"problem_code": "NETWORK_ISSUE"}
INFO = {"problem_code": "INFORMATION_REQUIRED", "text": "Which floor?"}


def in_progress(engine: Engine, order_type: OrderType = OrderType.PROVIDE, **order: Any) -> str:
    """A tenant-placed order acknowledged and committed by KCI (sequence numbers 1 and 2)."""
    sample = {"provide": provide_order, "modify": modify_order, "cease": cease_order}
    order_id = engine.accept_order(order_type, sample[order_type.value](**order))
    engine.apply(order_id, E.ACKNOWLEDGE, REF)
    engine.apply(order_id, E.COMMIT, {"order": COMMIT_DATES})
    return order_id


REQUEST_REFERENCES = {
    "serviceOrderAmendmentId",
    "serviceOrderAmendmentReference",
    "serviceOrderCancellationId",
    "serviceOrderCancellationReference",
}


def order_of(kci: Kci) -> dict[str, Any]:
    return next(kci.body[s.kci_property] for s in SPECS.values() if s.kci_property in kci.body)


# --- Accepting orders ----------------------------------------------------------------------------


def test_accept_order_keys_the_order_as_tenant_colon_id(engine: Engine) -> None:
    order_id = engine.accept_order(OrderType.PROVIDE, provide_order(1234, tenant="ACME"))
    assert order_id == "ACME:1234"
    record = engine.order(order_id)
    assert (record.status, record.order_type, record.next_sequence) == (
        S.SENT_TO_SUPPLIER,
        OrderType.PROVIDE,
        1,
    )
    assert record.document["status"] == "SENT_TO_SUPPLIER"
    assert engine.kcis(order_id) == []


def test_accept_order_takes_an_explicit_order_id_and_conversation_id(engine: Engine) -> None:
    order_id = engine.accept_order(
        "cease", cease_order(), order_id="my-key", conversation_id="conv-1"
    )
    assert order_id == "my-key"
    assert engine.order("my-key").conversation_id == "conv-1"
    with pytest.raises(OrderNotFound):
        engine.order("TENANT1:3001")


def test_an_order_without_tenant_is_keyed_by_its_supplier_reference(engine: Engine) -> None:
    order = {**modify_order(supplierOrderReference="SUP-77")}
    del order["tenant"]
    assert engine.accept_order("modify", order) == "SUP-77"


def test_an_order_without_a_key_is_refused(engine: Engine) -> None:
    order = {**modify_order()}
    del order["tenant"]
    with pytest.raises(InvalidOrder, match="give order_id, or an order with tenant and id"):
        engine.accept_order("modify", order)


def test_the_status_the_gateway_sent_is_replaced_by_sent_to_supplier(engine: Engine) -> None:
    order_id = engine.accept_order("provide", provide_order(status="RECEIVED_BY_GATEWAY"))
    assert engine.order(order_id).document["status"] == "SENT_TO_SUPPLIER"


def test_accept_order_takes_a_pydantic_order_model(engine: Engine) -> None:
    model = ProvideServiceOrder.model_validate({**provide_order(), "status": "ACKNOWLEDGED"})
    order_id = engine.accept_order(OrderType.PROVIDE, model)
    document = engine.order(order_id).document
    assert document["status"] == "SENT_TO_SUPPLIER"
    assert document["address"] == {"id": "100023336956", "type": "UPRN"}


def test_a_duplicate_order_is_refused(engine: Engine) -> None:
    order_id = engine.accept_order("provide", provide_order())
    engine.apply(order_id, E.ACKNOWLEDGE, REF)
    with pytest.raises(OrderExists) as info:
        engine.accept_order("provide", provide_order())
    assert info.value.order_id == order_id
    assert "already exists" in str(info.value)
    assert engine.order(order_id).status == S.ACKNOWLEDGED


def test_an_unsolicited_cease_cannot_be_accepted_as_a_tenant_order(engine: Engine) -> None:
    with pytest.raises(InvalidOrder, match="create_unsolicited_cease"):
        engine.accept_order(OrderType.UNSOLICITED_CEASE, unsolicited_cease_order())
    assert list(engine.store.order_ids()) == []


def test_an_unknown_order_type_is_refused_listing_the_known_ones(engine: Engine) -> None:
    with pytest.raises(InvalidOrder) as info:
        engine.accept_order("migrate", provide_order())
    assert "unknown order type 'migrate'" in str(info.value)
    assert "provide, cease, modify, unsolicited_cease" in str(info.value)


@pytest.mark.parametrize(
    ("order", "field"),
    [
        (provide_order(address={"id": "1", "type": "POSTCODE"}), "address.type"),
        (provide_order(colour="red"), "colour"),
        (provide_order(order_id=0), "id"),
        (provide_order(appointmentReservationId="seventy"), "appointmentReservationId"),
        (provide_order(targetDate="2026-12-01T08:00:00"), "targetDate"),
    ],
)
def test_an_invalid_order_is_refused_naming_the_field(
    engine: Engine, order: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidOrder) as info:
        engine.accept_order("provide", order)
    assert f"invalid provide order: {field}:" in str(info.value)
    assert list(engine.store.order_ids()) == []


@pytest.mark.parametrize("order", [["id", 1], "order", 42])
def test_an_order_that_is_not_a_mapping_is_refused(engine: Engine, order: Any) -> None:
    with pytest.raises(InvalidOrder, match="an order is a mapping or a pydantic model"):
        engine.accept_order("provide", order)


def test_an_order_carrying_engine_owned_fields_is_refused(engine: Engine) -> None:
    with pytest.raises(InvalidOrder, match="serviceOrderAmendmentId"):
        engine.accept_order("provide", provide_order(serviceOrderAmendmentId=4))


# --- Synchronous 201 answers ---------------------------------------------------------------------


def test_a_201_acknowledged_answer_sends_no_kci_and_the_first_kci_is_number_1(
    engine: Engine,
) -> None:
    order_id = engine.accept_order(
        "provide", provide_order(supplierOrderReference="SUP-1"), answered_with="ACKNOWLEDGED"
    )
    record = engine.order(order_id)
    assert (record.status, record.next_sequence, record.last_issued_on) == (
        S.ACKNOWLEDGED,
        1,
        None,
    )
    assert engine.kcis(order_id) == []
    [kci] = engine.apply(order_id, E.COMMIT, {"order": COMMIT_DATES})
    assert (kci.sequence_number, kci.reason_code) == (1, R.COMMITTED)
    assert E.ACKNOWLEDGE not in engine.allowed_events(order_id)


def test_a_201_in_progress_answer_sends_no_kci_and_the_first_kci_is_number_1(
    engine: Engine,
) -> None:
    order = cease_order(supplierOrderReference="SUP-3", **COMMIT_DATES)
    order_id = engine.accept_order("cease", order, answered_with=S.IN_PROGRESS)
    assert engine.order(order_id).status == S.IN_PROGRESS
    assert engine.kcis(order_id) == []
    [kci] = engine.apply(order_id, E.DELAY, PC)
    assert (kci.sequence_number, kci.reason_code, kci.status) == (1, R.DELAY, S.HELD)
    [kci] = engine.apply(order_id, E.RESUME)
    assert (kci.sequence_number, kci.status) == (2, S.IN_PROGRESS)


def test_acknowledged_in_201_applied_as_an_event_before_any_kci_sends_nothing(
    engine: Engine,
) -> None:
    order_id = engine.accept_order("modify", modify_order())
    assert engine.apply(order_id, E.ACKNOWLEDGED_IN_201, REF) == []
    assert engine.order(order_id).status == S.ACKNOWLEDGED
    assert engine.order(order_id).document["supplierOrderReference"] == "SUP-1"


# --- Unsolicited ceases --------------------------------------------------------------------------


def test_create_unsolicited_cease_sends_created_as_number_1(engine: Engine) -> None:
    [kci] = engine.create_unsolicited_cease(unsolicited_cease_order(), conversation_id="c-9")
    assert (kci.sequence_number, kci.reason_code, kci.status) == (1, R.CREATED, S.ACKNOWLEDGED)
    assert kci.order_id == "UC-4001"
    assert kci.body["unsolicitedCeaseServiceOrder"]["serviceId"] == "SVC-EXISTING-3"
    record = engine.order("UC-4001")
    assert (record.status, record.next_sequence, record.conversation_id) == (
        S.ACKNOWLEDGED,
        2,
        "c-9",
    )
    assert engine.kcis("UC-4001") == [kci]


def test_create_unsolicited_cease_in_progress_carries_the_dates(engine: Engine) -> None:
    [kci] = engine.create_unsolicited_cease(
        unsolicited_cease_order(status="IN_PROGRESS", **COMMIT_DATES), order_id="uc-key"
    )
    assert kci.status == S.IN_PROGRESS
    assert kci.order_id == "uc-key"
    assert (
        kci.body["unsolicitedCeaseServiceOrder"]["committedDate"] == COMMIT_DATES["committedDate"]
    )


def test_a_duplicate_unsolicited_cease_is_refused(engine: Engine) -> None:
    engine.create_unsolicited_cease(unsolicited_cease_order())
    with pytest.raises(OrderExists):
        engine.create_unsolicited_cease(unsolicited_cease_order())
    assert len(engine.kcis("UC-4001")) == 1


@pytest.mark.parametrize(
    ("drop", "field"), [("serviceId", "serviceId"), ("supplierOrderReference", "supplier")]
)
def test_an_invalid_unsolicited_cease_is_refused(engine: Engine, drop: str, field: str) -> None:
    order = unsolicited_cease_order()
    del order[drop]
    with pytest.raises(InvalidOrder, match=f"invalid unsolicited_cease order: {field}"):
        engine.create_unsolicited_cease(order)


# --- Idempotency ---------------------------------------------------------------------------------


def test_an_event_applied_again_with_its_event_id_returns_the_same_kcis_and_writes_nothing(
    engine: Engine,
) -> None:
    order_id = engine.accept_order("provide", provide_order())
    first = engine.apply(order_id, E.ACKNOWLEDGE, {**REF, "event_id": "ev-1"})
    before = engine.order(order_id)
    log = len(engine.events(order_id))
    again = engine.apply(order_id, E.ACKNOWLEDGE, {**REF, "event_id": "ev-1"})
    assert again == first
    assert [k.kci_id for k in again] == [k.kci_id for k in first]
    after = engine.order(order_id)
    assert (after.version, after.next_sequence, after.status) == (
        before.version,
        before.next_sequence,
        S.ACKNOWLEDGED,
    )
    assert engine.kcis(order_id) == first
    assert len(engine.events(order_id)) == log


def test_a_repeated_event_id_returns_the_first_result_even_if_the_event_is_now_refused(
    engine: Engine,
) -> None:
    order_id = in_progress(engine)
    first = engine.apply(order_id, E.DELAY, {**PC, "event_id": "delay-1"})
    engine.apply(order_id, E.RESUME)
    assert engine.apply(order_id, E.DELAY, {**PC, "event_id": "delay-1"}) == first
    assert engine.order(order_id).status == S.IN_PROGRESS


def test_a_repeated_event_id_of_an_event_without_kci_changes_nothing(engine: Engine) -> None:
    order_id = in_progress(engine)
    data = {"amendment_id": 5, "event_id": "amd-5"}
    assert engine.apply(order_id, E.AMENDMENT_RECEIVED, data) == []
    assert engine.apply(order_id, E.AMENDMENT_RECEIVED, data) == []
    assert [a.id for a in engine.order(order_id).amendments] == [5]


def test_event_ids_are_scoped_to_their_order(engine: Engine) -> None:
    first = in_progress(engine)
    second = in_progress(engine, order_id=1002)
    [a] = engine.apply(first, E.WARN, {**PC, "event_id": "same"})
    [b] = engine.apply(second, E.WARN, {**PC, "event_id": "same"})
    assert (a.order_id, b.order_id) == (first, second)
    assert a.kci_id != b.kci_id


def test_accept_order_with_a_seen_event_id_returns_the_key_and_writes_nothing(
    engine: Engine,
) -> None:
    order_id = engine.accept_order("provide", provide_order(), event_id="create-1")
    engine.apply(order_id, E.ACKNOWLEDGE, REF)
    assert engine.accept_order("provide", provide_order(), event_id="create-1") == order_id
    assert engine.order(order_id).status == S.ACKNOWLEDGED


def test_create_unsolicited_cease_with_a_seen_event_id_returns_the_same_kcis(
    engine: Engine,
) -> None:
    first = engine.create_unsolicited_cease(unsolicited_cease_order(), event_id="uc-1")
    again = engine.create_unsolicited_cease(unsolicited_cease_order(), event_id="uc-1")
    assert again == first
    assert engine.kcis("UC-4001") == first


def test_an_event_id_used_by_a_refused_event_can_be_used_again(engine: Engine) -> None:
    order_id = in_progress(engine)
    with pytest.raises(MissingField, match="problemCode is required"):
        engine.apply(order_id, E.DELAY, {"event_id": "d-1"})
    [kci] = engine.apply(order_id, E.DELAY, {**PC, "event_id": "d-1"})
    assert kci.reason_code == R.DELAY


# --- Reading orders ------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["order", "kcis", "allowed_events", "events"])
def test_reading_an_unknown_order_is_order_not_found(engine: Engine, call: str) -> None:
    with pytest.raises(OrderNotFound) as info:
        getattr(engine, call)("TENANT1:404")
    assert info.value.order_id == "TENANT1:404"


@pytest.mark.parametrize(
    ("status_events", "allowed"),
    [
        (
            [],
            [
                "acknowledge",
                "acknowledged_in_201",
                "cancel",
                "cancellation_received",
                "cancelled_in_201",
                "committed_in_201",
                "reject",
            ],
        ),
        (
            [(E.ACKNOWLEDGE, REF), (E.COMMIT, {"order": COMMIT_DATES}), (E.DELAY, PC)],
            [
                "add_information",
                "cancel",
                "cancellation_received",
                "cancelled_in_201",
                "commit",
                "reappointed",
                "request_information",
                "request_reappointment",
                "resume",
                "update",
                "warn",
            ],
        ),
    ],
)
def test_allowed_events_lists_the_events_of_the_current_status_sorted(
    engine: Engine, status_events: list[tuple[Event, dict[str, Any]]], allowed: list[str]
) -> None:
    order_id = engine.accept_order("provide", provide_order())
    for event, data in status_events:
        engine.apply(order_id, event, data)
    assert [e.value for e in engine.allowed_events(order_id)] == allowed


def test_an_order_record_reports_whether_it_is_final(engine: Engine) -> None:
    order_id = in_progress(engine)
    assert engine.is_final(order_id) is False
    engine.apply(order_id, E.CANCEL, {"problem_code": "CAPACITY_ISSUE", "text": "No route"})
    assert engine.is_final(order_id) is True


# --- Time ----------------------------------------------------------------------------------------


class BackwardsClock:
    """A clock that goes back an hour on every reading."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)

    def __call__(self) -> datetime:
        current = self.now
        self.now -= timedelta(hours=1)
        return current


def test_issued_on_never_goes_backwards_when_the_clock_does() -> None:
    engine = Engine(clock=BackwardsClock(), new_id=sequential_ids())
    order_id = engine.accept_order("provide", provide_order())
    engine.apply(order_id, E.ACKNOWLEDGE, REF)
    engine.apply(order_id, E.COMMIT, {"order": COMMIT_DATES})
    engine.apply(order_id, E.WARN, PC)
    kcis = engine.kcis(order_id)
    assert_valid_stream(kcis)
    first = kcis[0].body["issuedOn"]
    assert first.endswith(":00:00.123Z")
    assert [k.body["issuedOn"] for k in kcis] == [first] * 3


def test_issued_on_is_the_clock_in_utc_to_the_millisecond() -> None:
    moment = datetime(2026, 11, 23, 10, 0, 0, 987654, tzinfo=UTC).astimezone()
    engine = Engine(clock=lambda: moment, new_id=sequential_ids())
    order_id = engine.accept_order("provide", provide_order())
    [kci] = engine.apply(order_id, E.ACKNOWLEDGE, REF)
    assert kci.issued_on == datetime(2026, 11, 23, 10, 0, 0, 987000, tzinfo=UTC)
    assert kci.body["issuedOn"] == "2026-11-23T10:00:00.987Z"


def test_a_given_issued_on_is_used_for_the_kci(engine: Engine) -> None:
    order_id = in_progress(engine)
    # A few minutes ahead of the engine's clock (2026-11-23T09:00Z): within the allowed skew.
    [kci] = engine.apply(order_id, E.WARN, {**PC, "issued_on": "2026-11-23T10:03:00+01:00"})
    assert kci.body["issuedOn"] == "2026-11-23T09:03:00.000Z"
    later = engine.apply(order_id, E.UPDATE, {"order": {"notes": "x"}})
    assert later[0].issued_on == kci.issued_on  # the stepping clock is behind: clamped


def test_the_default_engine_uses_utc_now_and_uuid_ids() -> None:
    engine = Engine()
    order_id = engine.accept_order("provide", provide_order())
    before = datetime.now(UTC) - timedelta(seconds=1)
    [kci] = engine.apply(order_id, E.ACKNOWLEDGE, REF)
    assert before <= kci.issued_on <= datetime.now(UTC)
    assert_valid_stream([kci])
    [other] = engine.apply(order_id, E.WARN, PC)
    assert other.kci_id != kci.kci_id


# --- Nested waits and the return stack -----------------------------------------------------------


def held_then_pending_amendment(engine: Engine) -> str:
    """IN_PROGRESS -> HELD -> PENDING -> PENDING_AMENDMENT (amendment 7 in flight)."""
    order_id = in_progress(engine)
    engine.apply(order_id, E.DELAY, PC)
    engine.apply(order_id, E.REQUEST_INFORMATION, INFO)
    engine.apply(order_id, E.AMENDMENT_RECEIVED, {"amendment_id": 7})
    record = engine.order(order_id)
    assert record.status == S.PENDING_AMENDMENT
    assert record.return_stack == [S.IN_PROGRESS, S.HELD, S.PENDING]
    return order_id


def test_an_amendment_that_resolves_the_request_unwinds_past_pending(engine: Engine) -> None:
    order_id = held_then_pending_amendment(engine)
    [kci] = engine.apply(order_id, E.ACCEPT_AMENDMENT, {"amendment_id": 7})
    assert (kci.reason_code, kci.status) == (R.AMENDED, S.HELD)
    assert engine.order(order_id).return_stack == [S.IN_PROGRESS]
    [kci] = engine.apply(order_id, E.RESUME)
    assert kci.status == S.IN_PROGRESS
    assert engine.order(order_id).return_stack == []


def test_an_amendment_that_does_not_resolve_the_request_returns_to_pending(
    engine: Engine,
) -> None:
    order_id = held_then_pending_amendment(engine)
    [kci] = engine.apply(
        order_id, E.ACCEPT_AMENDMENT, {"amendment_id": 7, "resolves_request": False}
    )
    assert kci.status == S.PENDING
    assert engine.order(order_id).return_stack == [S.IN_PROGRESS, S.HELD]
    [kci] = engine.apply(
        order_id,
        E.REAPPOINTED,
        {
            "order": {
                "appointmentSupplierReference": "APPT-3",
                "targetDate": "2026-12-05T08:00:00Z",
            }
        },
    )
    assert kci.status == S.HELD
    assert engine.order(order_id).return_stack == [S.IN_PROGRESS]


def test_a_rejected_amendment_returns_to_the_status_it_interrupted(engine: Engine) -> None:
    order_id = held_then_pending_amendment(engine)
    [kci] = engine.apply(
        order_id,
        E.REJECT_AMENDMENT,
        {"amendment_id": 7, "problem_code": "INVALID_REQUEST", "text": "No such floor"},
    )
    assert (kci.reason_code, kci.status) == (R.AMENDMENT_REJECTED, S.PENDING)
    assert engine.order(order_id).return_stack == [S.IN_PROGRESS, S.HELD]


def test_several_amendments_keep_pending_amendment_until_the_last_is_answered(
    engine: Engine,
) -> None:
    order_id = in_progress(engine)
    engine.apply(order_id, E.AMENDMENT_RECEIVED, {"amendment_id": 1})
    engine.apply(order_id, E.AMENDMENT_RECEIVED, {"amendment_reference": "A-2"})
    engine.apply(order_id, E.AMENDMENT_RECEIVED, {"amendment_id": 3, "amendment_reference": "A-3"})
    assert engine.order(order_id).return_stack == [S.IN_PROGRESS]

    [kci] = engine.apply(order_id, E.ACCEPT_AMENDMENT, {"amendment_reference": "A-2"})
    assert (kci.reason_code, kci.status) == (R.AMENDED, S.PENDING_AMENDMENT)
    rejected = {"problem_code": "INVALID_REQUEST", "text": "Superseded"}
    [kci] = engine.apply(order_id, E.REJECT_AMENDMENT, {"amendment_id": 1, **rejected})
    assert (kci.reason_code, kci.status) == (R.AMENDMENT_REJECTED, S.PENDING_AMENDMENT)
    assert [(a.id, a.reference) for a in engine.order(order_id).amendments] == [(3, "A-3")]

    [kci] = engine.apply(order_id, E.ACCEPT_AMENDMENT, {"amendment_id": 3})
    assert (kci.reason_code, kci.status) == (R.AMENDED, S.IN_PROGRESS)
    record = engine.order(order_id)
    assert (record.amendments, record.return_stack) == ([], [])
    assert_valid_stream(engine.kcis(order_id))


def test_a_cancellation_rejected_during_an_amendment_returns_to_pending_amendment(
    engine: Engine,
) -> None:
    order_id = in_progress(engine, OrderType.MODIFY)
    engine.apply(order_id, E.AMENDMENT_RECEIVED, {"amendment_id": 4})
    engine.apply(
        order_id,
        E.CANCELLATION_RECEIVED,
        {"cancellation_id": 9, "cancellation_reason": "NO_LONGER_REQUIRED"},
    )
    record = engine.order(order_id)
    assert record.status == S.PENDING_CANCELLATION
    assert record.return_stack == [S.IN_PROGRESS, S.PENDING_AMENDMENT]
    assert E.ACCEPT_AMENDMENT not in engine.allowed_events(order_id)

    [kci] = engine.apply(
        order_id,
        E.REJECT_CANCELLATION,
        {"cancellation_id": 9, "problem_code": "OTHER", "text": "Already on site"},
    )
    assert (kci.reason_code, kci.status) == (R.CANCELLATION_REJECTED, S.PENDING_AMENDMENT)
    assert engine.order(order_id).cancellation is None
    [kci] = engine.apply(order_id, E.ACCEPT_AMENDMENT, {"amendment_id": 4})
    assert kci.status == S.IN_PROGRESS
    assert engine.order(order_id).return_stack == []


def test_an_accepted_cancellation_ends_every_wait(engine: Engine) -> None:
    order_id = held_then_pending_amendment(engine)
    engine.apply(order_id, E.CANCELLATION_RECEIVED, {"cancellation_reference": "C-1"})
    [kci] = engine.apply(
        order_id,
        E.ACCEPT_CANCELLATION,
        {"cancellation_reference": "C-1", "problem_code": "CUSTOMER_CHANGED_MIND"},
    )
    assert (kci.reason_code, kci.status) == (R.CANCELLED, S.CANCELLED)
    assert kci.body["provideServiceOrder"]["serviceOrderCancellationReference"] == "C-1"
    record = engine.order(order_id)
    assert (record.return_stack, record.amendments, record.cancellation) == ([], [], None)


# --- What every KCI carries ----------------------------------------------------------------------


def test_every_kci_carries_the_latest_full_order(engine: Engine) -> None:
    order_id = engine.accept_order("provide", provide_order())
    engine.apply(order_id, E.ACKNOWLEDGE, REF)
    engine.apply(order_id, E.UPDATE, {"order": {"notes": "Gate code 1234"}})
    engine.apply(order_id, E.COMMIT, {"order": COMMIT_DATES})
    engine.apply(order_id, E.ADD_INFORMATION, {"service_characteristics": {"SERVICE_ID": "S-9"}})
    engine.apply(order_id, E.DELAY, PC)
    engine.apply(order_id, E.RESUME)
    engine.apply(order_id, E.COMPLETE)
    kcis = engine.kcis(order_id)
    assert reason_codes(kcis) == [
        "ACKNOWLEDGED",
        "UPDATE",
        "COMMITTED",
        "ADDITIONAL",
        "DELAY",
        "RESUMED",
        "COMPLETED",
    ]
    assert_valid_stream(kcis)
    for kci in kcis:
        order = order_of(kci)
        assert order["supplierOrderReference"] == "SUP-1"
        assert order["primaryContact"] == {"name": "Ann Example", "phoneNumber": "07700900123"}
        assert order["status"] == kci.status
    for kci in kcis[1:]:
        assert order_of(kci)["notes"] == "Gate code 1234"
    for kci in kcis[3:]:
        assert {"name": "SERVICE_ID", "value": "S-9"} in order_of(kci)["serviceOrderItem"][
            "serviceCharacteristics"
        ]
        assert order_of(kci)["committedDate"] == COMMIT_DATES["committedDate"]
    assert order_of(kcis[-1]) == {**engine.order(order_id).document}


def test_removing_a_field_removes_it_from_later_kcis(engine: Engine) -> None:
    order_id = in_progress(engine, OrderType.MODIFY, notes="Ring twice")
    assert order_of(engine.kcis(order_id)[-1])["notes"] == "Ring twice"
    engine.apply(order_id, E.UPDATE, {"order": {"notes": None}})
    engine.apply(order_id, E.WARN, PC)
    assert all("notes" not in order_of(k) for k in engine.kcis(order_id)[2:])


def test_request_references_appear_on_the_result_kci_only(engine: Engine) -> None:
    order_id = in_progress(engine)
    engine.apply(order_id, E.AMENDMENT_RECEIVED, {"amendment_id": 12})
    [amended] = engine.apply(
        order_id, E.ACCEPT_AMENDMENT, {"amendment_id": 12, "order": {"notes": "Floor 2"}}
    )
    engine.apply(order_id, E.CANCELLATION_RECEIVED, {"cancellation_reference": "C-5"})
    [refused] = engine.apply(
        order_id,
        E.REJECT_CANCELLATION,
        {"cancellation_reference": "C-5", "problem_code": "OTHER", "text": "Too late"},
    )
    [later] = engine.apply(order_id, E.WARN, PC)

    assert order_of(amended)["serviceOrderAmendmentId"] == 12
    assert order_of(amended)["notes"] == "Floor 2"
    assert order_of(refused)["serviceOrderCancellationReference"] == "C-5"
    assert "serviceOrderAmendmentId" not in order_of(refused)
    for kci in (later, *engine.kcis(order_id)[:2]):
        assert not REQUEST_REFERENCES & order_of(kci).keys()
    assert not REQUEST_REFERENCES & engine.order(order_id).document.keys()


def test_a_result_kci_names_the_request_as_it_was_received(engine: Engine) -> None:
    """Answering by id alone still sends the reference the request came with."""
    order_id = in_progress(engine)
    engine.apply(order_id, E.AMENDMENT_RECEIVED, {"amendment_id": 8, "amendment_reference": "A-8"})
    [kci] = engine.apply(order_id, E.ACCEPT_AMENDMENT, {"amendment_id": 8})
    order = order_of(kci)
    assert (order["serviceOrderAmendmentId"], order["serviceOrderAmendmentReference"]) == (
        8,
        "A-8",
    )


def test_kcis_carry_the_order_id_event_and_a_valid_json_body(engine: Engine) -> None:
    order_id = in_progress(engine, OrderType.CEASE)
    [kci] = engine.apply(order_id, E.COMPLETE)
    assert (kci.order_id, kci.event, kci.reason_code, kci.status) == (
        order_id,
        "complete",
        R.COMPLETED,
        S.COMPLETED,
    )
    assert kci.json().startswith('{"id":"')
    assert '"reasonCode":"COMPLETED"' in kci.json()
    assert_valid_stream(engine.kcis(order_id))


def test_the_stepping_clock_and_sequential_ids_make_runs_reproducible() -> None:
    clock = SteppingClock(EPOCH, timedelta(seconds=2))
    assert [clock(), clock()] == [EPOCH, EPOCH + timedelta(seconds=2)]
    ids = sequential_ids()
    assert [ids(), ids()] == [
        "00000000-0000-4000-8000-000000000001",
        "00000000-0000-4000-8000-000000000002",
    ]


def test_apply_takes_event_data_as_a_model(engine: Engine) -> None:
    order_id = in_progress(engine)
    [kci] = engine.apply(order_id, E.WARN, EventData(problem_code=ProblemCode.SITE_UNSAFE))
    assert kci.body["problemCode"] == "SITE_UNSAFE"


def test_the_log_reads_back_the_data_an_event_was_applied_with_in_either_spelling(
    engine: Engine,
) -> None:
    order_id = in_progress(engine)
    engine.apply(order_id, E.WARN, {"problemCode": "NETWORK_ISSUE", "text": "Storm"})
    engine.apply(order_id, E.UPDATE, {"order": {"notes": "Booked"}, "supplier_codes": ["X1"]})
    warned, updated = engine.events(order_id)[-2:]
    assert warned.data == EventData(problem_code=ProblemCode.NETWORK_ISSUE, text="Storm")
    assert updated.data_json() == {"order": {"notes": "Booked"}, "supplier_codes": ["X1"]}


def test_given_json_is_the_mapping_just_validated_or_else_the_models() -> None:
    """The data validated last is logged as the JSON of the mapping it came from (cheaper to
    encode, and it decodes to the same data); any other data is encoded from the model."""
    parsed = parse_event_data({"problemCode": "NETWORK_ISSUE", "text": "Storm"})
    assert given_json(parsed) == '{"problemCode":"NETWORK_ISSUE","text":"Storm"}'
    assert EventData.model_validate_json(given_json(parsed)) == parsed
    parse_event_data({"text": "Another event's"})
    assert given_json(parsed) == '{"problem_code":"NETWORK_ISSUE","text":"Storm"}'
    proxied = parse_event_data(MappingProxyType({"text": "Storm"}))  # orjson refuses a proxy
    assert given_json(proxied) == '{"text":"Storm"}'
    assert given_json(parse_event_data({})) == "{}"


# --- Concurrent writers --------------------------------------------------------------------------


class RacingStore(MemoryStore):
    """A store on which another writer commits just before the next save."""

    def __init__(self) -> None:
        super().__init__()
        self.race: Callable[[], object] | None = None

    def save(self, record: OrderRecord, kcis: Sequence[Kci], entry: EventEntry) -> None:
        race, self.race = self.race, None
        if race is not None:
            race()
        super().save(record, kcis, entry)


def racing(retries: int) -> tuple[Engine, RacingStore, str]:
    store = RacingStore()
    engine = Engine(store, clock=SteppingClock(), new_id=sequential_ids(), conflict_retries=retries)
    order_id = in_progress(engine)
    other = Engine(store, clock=SteppingClock(EPOCH + timedelta(hours=1)), new_id=sequential_ids(9))
    store.race = lambda: other.apply(order_id, E.UPDATE, {"order": {"notes": "Other writer"}})
    return engine, store, order_id


def test_a_conflicting_write_is_retried_on_the_new_version_when_retries_are_allowed() -> None:
    engine, _, order_id = racing(retries=1)
    [kci] = engine.apply(order_id, E.WARN, PC)
    assert kci.sequence_number == 4
    assert order_of(kci)["notes"] == "Other writer"
    assert reason_codes(engine.kcis(order_id)) == ["ACKNOWLEDGED", "COMMITTED", "UPDATE", "WARNING"]
    assert_valid_stream(engine.kcis(order_id))


def test_a_conflicting_write_is_refused_without_retries_and_writes_nothing() -> None:
    engine, _, order_id = racing(retries=0)
    with pytest.raises(ConcurrencyConflict) as info:
        engine.apply(order_id, E.WARN, PC)
    assert info.value.order_id == order_id
    assert reason_codes(engine.kcis(order_id)) == ["ACKNOWLEDGED", "COMMITTED", "UPDATE"]
    assert engine.order(order_id).version == 4


def test_a_negative_retry_count_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="conflict_retries must be >= 0, not -1"):
        Engine(conflict_retries=-1)


# --- KCI ids and batches ---------------------------------------------------------------------


def _random_bits(kci_id: str) -> int:
    return uuid.UUID(kci_id).int & ((1 << 80) - 1) & ~(0xC << 60)


def test_the_default_kci_id_is_a_time_ordered_version_7_uuid() -> None:
    before = time.time_ns() // 1_000_000
    first = new_kci_id()
    time.sleep(0.003)
    second = new_kci_id()
    after = time.time_ns() // 1_000_000
    for kci_id in (first, second):
        parsed = uuid.UUID(kci_id)
        assert str(parsed) == kci_id  # canonical: lower-case hex, dashes in place
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        assert before <= parsed.int >> 80 <= after  # the Unix time in milliseconds
    assert first < second  # a later millisecond sorts later, as the outbox index wants
    many = [new_kci_id() for _ in range(5000)]  # several entropy pools' worth
    assert len(set(many)) == 5000
    assert len({_random_bits(i) for i in many}) == 5000


def test_kci_ids_drawn_by_threads_never_repeat() -> None:
    drawn: list[list[str]] = [[] for _ in range(4)]

    def draw(into: list[str]) -> None:
        into.extend(new_kci_id() for _ in range(3000))

    threads = [threading.Thread(target=draw, args=(into,)) for into in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({i for ids in drawn for i in ids}) == 12_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_repeats_its_parents_kci_ids() -> None:
    new_kci_id()  # the parent's pool of random bytes is drawn and part used
    child = drawn_in_child(new_kci_id, 50)
    parent = [new_kci_id() for _ in range(50)]
    assert len(child) == 50
    assert not {_random_bits(i) for i in child} & {_random_bits(i) for i in parent}


def test_a_batch_runs_without_cyclic_collection_and_restores_the_collector() -> None:
    seen: list[bool] = []

    def clock() -> datetime:
        seen.append(gc.isenabled())
        return datetime.now(UTC)

    engine = Engine(clock=clock)
    order_id = engine.accept_order(OrderType.PROVIDE, provide_order())
    seen.clear()
    assert gc.isenabled()
    engine.apply_batch(
        [(order_id, E.ACKNOWLEDGE, REF), (order_id, E.COMMIT, {"order": COMMIT_DATES})]
    )
    assert seen == [False, False]
    assert gc.isenabled()
    with pytest.raises(EventNotAllowed):  # a refused batch restores it too
        engine.apply_batch([(order_id, E.ACKNOWLEDGE, REF)])
    assert gc.isenabled()
    gc.disable()  # switched off by the application: left off
    try:
        engine.apply_batch([(order_id, E.WARN, {"problem_code": "NETWORK_ISSUE"})])
        assert not gc.isenabled()
    finally:
        gc.enable()
