"""Every guard refusal: the typed error, its context, and nothing changed or sent.

Each refusal is applied to an order in a known state; the test then checks the error's type (and
``field`` for a :class:`MissingField`), that it names the order, status and event, and that the
order record, its KCI stream and its event log are exactly as they were.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from kci_engine._facade import Engine
from kci_engine.core.codes import OrderStatus, OrderType
from kci_engine.core.events import Event
from kci_engine.errors import (
    ContractViolation,
    EventNotAllowed,
    InvalidEventData,
    InvalidOrder,
    MissingField,
    OrderNotFound,
    RefusedEvent,
)
from kci_engine.tooling.testing import (
    COMMIT_DATES,
    EPOCH,
    SAMPLE_ORDERS,
    cease_order,
    modify_order,
    provide_order,
    unsolicited_cease_order,
)

S = OrderStatus
E = Event
P, C, M, U = OrderType.PROVIDE, OrderType.CEASE, OrderType.MODIFY, OrderType.UNSOLICITED_CEASE
REF = {"order": {"supplierOrderReference": "SUP-1"}}
SLOT = {
    "timeslotStartDateTime": "2026-12-03T08:00:00.000Z",
    "timeslotEndDateTime": "2026-12-03T13:00:00.000Z",
}


def _complete(order_type: OrderType) -> dict[str, Any]:
    return {"service_characteristics": {"SERVICE_ID": "SVC-9"}} if order_type is P else {}


def _path(order_type: OrderType, status: str) -> list[tuple[Event, dict[str, Any]]]:
    """Events that bring a new order of ``order_type`` to ``status``. Waiting statuses are
    entered from IN_PROGRESS; PENDING_AMENDMENT has amendment 501 in flight, and
    PENDING_CANCELLATION has cancellation 901."""
    ack = [] if order_type is U else [(E.ACKNOWLEDGE, REF)]
    in_progress = [*ack, (E.COMMIT, {"order": COMMIT_DATES})]
    reason = "NO_AUTHORISATION" if order_type is U else "CUSTOMER_CHANGED_MIND"
    paths: dict[str, list[tuple[Event, dict[str, Any]]]] = {
        S.SENT_TO_SUPPLIER: [],
        S.ACKNOWLEDGED: ack,
        S.IN_PROGRESS: in_progress,
        S.HELD: [*in_progress, (E.DELAY, {"problem_code": "NETWORK_ISSUE"})],
        S.PENDING: [
            *in_progress,
            (E.REQUEST_INFORMATION, {"problem_code": "COST_ISSUE", "text": "Band too low"}),
        ],
        S.PENDING_AMENDMENT: [*in_progress, (E.AMENDMENT_RECEIVED, {"amendment_id": 501})],
        S.PENDING_CANCELLATION: [
            *in_progress,
            (E.CANCELLATION_RECEIVED, {"cancellation_id": 901, "cancellation_reason": reason}),
        ],
        S.REJECTED: [(E.REJECT, {"problem_code": "INVALID_REQUEST", "text": "Unknown address"})],
        S.CANCELLED: [*ack, (E.CANCEL, {"problem_code": "CAPACITY_ISSUE", "text": "No route"})],
        S.COMPLETED: [*in_progress, (E.COMPLETE, _complete(order_type))],
    }
    return paths[status]


def order_in(engine: Engine, order_type: OrderType, status: str, **order: Any) -> tuple[str, str]:
    """A new order of ``order_type`` brought to ``status``: its id and its status. Fields given
    as ``None`` are left out of the sample order."""
    document = {k: v for k, v in {**SAMPLE_ORDERS[order_type](), **order}.items() if v is not None}
    if order_type is U:
        engine.create_unsolicited_cease(document)
        order_id = str(document["supplierOrderReference"])
    else:
        order_id = engine.accept_order(order_type, document)
    for event, data in _path(order_type, status):
        engine.apply(order_id, event, data)
    record = engine.order(order_id)
    return order_id, record.status


def snapshot(engine: Engine, order_id: str) -> tuple[Any, ...]:
    """Everything a refused event must leave as it was."""
    r = engine.order(order_id)
    cancellation = None if r.cancellation is None else (r.cancellation.id, r.cancellation.reference)
    return (
        r.status,
        copy.deepcopy(r.document),
        list(r.return_stack),
        [(a.id, a.reference) for a in r.amendments],
        cancellation,
        r.next_sequence,
        r.last_issued_on,
        r.version,
        [k.json() for k in engine.kcis(order_id)],
        len(engine.events(order_id)),
    )


def refuse(
    engine: Engine,
    order_id: str,
    event: Event | str,
    data: Mapping[str, Any] | None,
    error: type[RefusedEvent],
) -> RefusedEvent:
    """Apply an event that must be refused with exactly ``error``; check nothing changed."""
    before = snapshot(engine, order_id)
    with pytest.raises(error) as info:
        engine.apply(order_id, event, data)
    assert type(info.value) is error, info.value
    assert snapshot(engine, order_id) == before
    return info.value


def assert_names(exc: RefusedEvent, order_id: str, status: str, event: str) -> None:
    assert (exc.order_id, exc.status, exc.event) == (order_id, status, event)
    message = str(exc)
    assert f"order {order_id}" in message
    assert f"'{event}'" in message


# --- Contract rules: MissingField and ContractViolation ------------------------------------------

Case = tuple[OrderType, str, Event, dict[str, Any], str]


def case(
    name: str,
    order_type: OrderType,
    status: str,
    event: Event,
    data: dict[str, Any],
    expect: str,
    **order: Any,
) -> Any:
    """A refusal: ``expect`` is the missing field's name (MissingField), or a fragment of the
    rule a ContractViolation states (written with a space)."""
    return pytest.param(order_type, status, event, data, expect, order, id=name)


PC = {"problem_code": "NETWORK_ISSUE"}
TXT = {"text": "Explained"}
MISSING = [
    case("provide-complete-needs-SERVICE_ID", P, S.IN_PROGRESS, E.COMPLETE, {},
         "serviceOrderItem.serviceCharacteristics"),
    case("modify-complete-needs-serviceId", M, S.IN_PROGRESS, E.COMPLETE, {}, "serviceId",
         serviceId=None),
    case("cease-complete-needs-serviceId", C, S.IN_PROGRESS, E.COMPLETE, {}, "serviceId",
         serviceId=None),
    case("delay-needs-problemCode", P, S.IN_PROGRESS, E.DELAY, TXT, "problemCode"),
    case("unsolicited-delay-needs-problemCode", U, S.IN_PROGRESS, E.DELAY, {}, "problemCode"),
    case("warn-needs-problemCode", C, S.HELD, E.WARN, TXT, "problemCode"),
    case("warn-OTHER-needs-text", P, S.IN_PROGRESS, E.WARN, {"problem_code": "OTHER"}, "text"),
    case("reject-needs-problemCode", P, S.SENT_TO_SUPPLIER, E.REJECT, TXT, "problemCode"),
    case("reject-needs-text", M, S.SENT_TO_SUPPLIER, E.REJECT, PC, "text"),
    case("request-information-needs-text", P, S.IN_PROGRESS, E.REQUEST_INFORMATION,
         {"problem_code": "COST_ISSUE"}, "text"),
    case("request-reappointment-needs-problemCode", M, S.HELD, E.REQUEST_REAPPOINTMENT, TXT,
         "problemCode"),
    case("request-resubmission-needs-problemCode", P, S.PENDING, E.REQUEST_RESUBMISSION, TXT,
         "problemCode"),
    case("commit-needs-committedDate", P, S.ACKNOWLEDGED, E.COMMIT, {}, "committedDate"),
    case("commit-needs-targetDate", C, S.ACKNOWLEDGED, E.COMMIT,
         {"order": {"committedDate": COMMIT_DATES["committedDate"]}}, "targetDate"),
    case("unsolicited-commit-needs-committedDate", U, S.ACKNOWLEDGED, E.COMMIT,
         {"order": {"targetDate": COMMIT_DATES["targetDate"]}}, "committedDate"),
    case("acknowledge-needs-supplierOrderReference", P, S.SENT_TO_SUPPLIER, E.ACKNOWLEDGE, {},
         "supplierOrderReference"),
    case("acknowledged-in-201-needs-supplierOrderReference", C, S.SENT_TO_SUPPLIER,
         E.ACKNOWLEDGED_IN_201, {}, "supplierOrderReference"),
    case("amendment-received-needs-a-reference", P, S.IN_PROGRESS, E.AMENDMENT_RECEIVED, {},
         "amendment_id"),
    case("accept-amendment-needs-a-reference", P, S.PENDING_AMENDMENT, E.ACCEPT_AMENDMENT, {},
         "amendment_id"),
    case("reject-amendment-needs-a-reference", M, S.PENDING_AMENDMENT, E.REJECT_AMENDMENT,
         {**PC, **TXT}, "amendment_id"),
    case("reject-amendment-needs-text", C, S.PENDING_AMENDMENT, E.REJECT_AMENDMENT,
         {"amendment_id": 501, **PC}, "text"),
    case("cancellation-received-needs-a-reference", C, S.HELD, E.CANCELLATION_RECEIVED,
         {"cancellation_reason": "OTHER"}, "cancellation_id"),
    case("accept-cancellation-needs-a-reference", P, S.PENDING_CANCELLATION,
         E.ACCEPT_CANCELLATION, {"problem_code": "CUSTOMER_CHANGED_MIND"}, "cancellation_id"),
    case("reject-cancellation-needs-a-reference", U, S.PENDING_CANCELLATION,
         E.REJECT_CANCELLATION, {**PC, **TXT}, "cancellation_id"),
    case("accept-cancellation-needs-problemCode", P, S.PENDING_CANCELLATION,
         E.ACCEPT_CANCELLATION, {"cancellation_id": 901}, "problemCode"),
    case("reject-cancellation-needs-text", M, S.PENDING_CANCELLATION, E.REJECT_CANCELLATION,
         {"cancellation_id": 901, **PC}, "text"),
    case("supplier-cancel-needs-text", P, S.IN_PROGRESS, E.CANCEL,
         {"problem_code": "CAPACITY_ISSUE"}, "text"),
    case("unsolicited-cancel-needs-text", U, S.HELD, E.CANCEL,
         {"problem_code": "CAPACITY_ISSUE"}, "text"),
    case("reappointed-needs-an-appointment", P, S.IN_PROGRESS, E.REAPPOINTED,
         {"order": {"targetDate": "2026-12-03T13:00:00.000Z"}}, "appointmentTimeslot"),
    case("reappointed-needs-targetDate", M, S.PENDING, E.REAPPOINTED,
         {"order": {"appointmentSupplierReference": "APPT-2"}}, "targetDate"),
    case("reappointed-needs-targetDate-with-a-timeslot", P, S.HELD, E.REAPPOINTED,
         {"order": {"appointmentTimeslot": SLOT}}, "targetDate"),
]  # fmt: skip

VIOLATIONS = [
    case("delay-with-a-non-Delay-code", P, S.IN_PROGRESS, E.DELAY,
         {"problem_code": "CAPACITY_ISSUE"}, "CAPACITY_ISSUE is not a Delay problem code"),
    case("reappoint-with-a-non-Reappoint-code", P, S.IN_PROGRESS, E.REQUEST_REAPPOINTMENT,
         {"problem_code": "APPOINTMENT_NOT_REQUIRED"}, "not a Reappoint problem code"),
    case("cancel-with-a-non-Cancel-code", C, S.IN_PROGRESS, E.CANCEL,
         {"problem_code": "INFORMATION_REQUIRED", **TXT}, "not a Cancel problem code"),
    case("accept-cancellation-with-a-non-Cancel-code", P, S.PENDING_CANCELLATION,
         E.ACCEPT_CANCELLATION, {"cancellation_id": 901, "problem_code": "INFORMATION_REQUIRED"},
         "not a Cancel problem code"),
    case("request-information-with-a-non-Inform-code", M, S.IN_PROGRESS, E.REQUEST_INFORMATION,
         {"problem_code": "ACCESS_ISSUE", **TXT}, "not a Inform problem code"),
    case("problemCode-on-a-happy-path-KCI", P, S.SENT_TO_SUPPLIER, E.ACKNOWLEDGE,
         {**REF, **PC}, "happy-path ACKNOWLEDGED KCI carries no problemCode"),
    case("problemCode-on-COMPLETED", C, S.IN_PROGRESS, E.COMPLETE, PC,
         "happy-path COMPLETED KCI carries no problemCode"),
    case("committedDate-changed-after-commit", P, S.IN_PROGRESS, E.UPDATE,
         {"order": {"committedDate": "2026-12-09T08:00:00.000Z"}},
         "committedDate is set once at COMMITTED"),
    case("committedDate-removed-after-commit", M, S.HELD, E.UPDATE,
         {"order": {"committedDate": None, "notes": "x"}}, "committedDate is set once"),
    case("committedDate-changed-by-reappointed", P, S.IN_PROGRESS, E.REAPPOINTED,
         {"order": {"appointmentSupplierReference": "A", "targetDate": "2026-12-09T08:00:00Z",
                    "committedDate": "2026-12-09T08:00:00Z"}}, "committedDate is set once"),
    case("amendment-not-in-flight", P, S.PENDING_AMENDMENT, E.ACCEPT_AMENDMENT,
         {"amendment_id": 999}, "amendment id 999 is not in flight (in flight: id 501)"),
    case("amendment-reference-not-in-flight", M, S.PENDING_AMENDMENT, E.REJECT_AMENDMENT,
         {"amendment_reference": "A-9", **PC, **TXT}, "amendment reference 'A-9' is not in flight"),
    case("duplicate-amendment", P, S.PENDING_AMENDMENT, E.AMENDMENT_RECEIVED,
         {"amendment_id": 501}, "amendment id 501 was already received"),
    case("cancellation-not-in-flight", P, S.PENDING_CANCELLATION, E.ACCEPT_CANCELLATION,
         {"cancellation_id": 902, "problem_code": "CUSTOMER_CHANGED_MIND"},
         "cancellation id 902 is not in flight (in flight: id 901)"),
    case("cancellation-reference-not-in-flight", C, S.PENDING_CANCELLATION,
         E.REJECT_CANCELLATION, {"cancellation_reference": "C-9", **PC, **TXT},
         "cancellation reference 'C-9' is not in flight"),
    case("unsolicited-reason-on-a-tenant-order", P, S.IN_PROGRESS, E.CANCELLATION_RECEIVED,
         {"cancellation_id": 901, "cancellation_reason": "NO_AUTHORISATION"},
         "NO_AUTHORISATION is not a cancellation reason for a tenant-placed order"),
    case("tenant-reason-on-an-unsolicited-cease", U, S.ACKNOWLEDGED, E.CANCELLATION_RECEIVED,
         {"cancellation_id": 901, "cancellation_reason": "CUSTOMER_CHANGED_MIND"},
         "CUSTOMER_CHANGED_MIND is not a cancellation reason for an unsolicited cease"),
    case("update-without-changes", P, S.IN_PROGRESS, E.UPDATE, {}, "nothing new for the tenant"),
    case("update-with-empty-changes", C, S.HELD, E.UPDATE, {"order": {}}, "nothing new"),
    case("update-restating-a-value", M, S.ACKNOWLEDGED, E.UPDATE,
         {"order": {"serviceId": "SVC-EXISTING-1"}}, "nothing new for the tenant"),
    case("update-removing-an-absent-field", P, S.PENDING, E.UPDATE, {"order": {"notes": None}},
         "nothing new for the tenant"),
    case("add-information-without-changes", U, S.IN_PROGRESS, E.ADD_INFORMATION, TXT,
         "nothing new for the tenant"),
    case("add-information-restating-a-characteristic", P, S.IN_PROGRESS, E.ADD_INFORMATION,
         {"service_characteristics": {"LINE_PROFILE": "900"}}, "nothing new for the tenant"),
]  # fmt: skip


@pytest.mark.parametrize(("order_type", "status", "event", "data", "field", "order"), MISSING)
def test_a_missing_field_is_refused_naming_it(
    engine: Engine,
    order_type: OrderType,
    status: str,
    event: Event,
    data: dict[str, Any],
    field: str,
    order: dict[str, Any],
) -> None:
    order_id, now = order_in(engine, order_type, status, **order)
    exc = refuse(engine, order_id, event, data, MissingField)
    assert isinstance(exc, MissingField)
    assert exc.field == field
    assert f"{field} is required" in str(exc)
    assert_names(exc, order_id, now, event.value)
    assert f"in status {now}" in str(exc)


@pytest.mark.parametrize(("order_type", "status", "event", "data", "rule", "order"), VIOLATIONS)
def test_a_contract_violation_is_refused_stating_the_rule(
    engine: Engine,
    order_type: OrderType,
    status: str,
    event: Event,
    data: dict[str, Any],
    rule: str,
    order: dict[str, Any],
) -> None:
    order_id, now = order_in(engine, order_type, status, **order)
    exc = refuse(engine, order_id, event, data, ContractViolation)
    assert rule in str(exc)
    assert_names(exc, order_id, now, event.value)
    assert f"in status {now}" in str(exc)


def test_issued_on_earlier_than_the_last_kci_is_refused(engine: Engine) -> None:
    order_id, _ = order_in(engine, P, S.IN_PROGRESS)
    last = engine.kcis(order_id)[-1].issued_on
    earlier = (last - timedelta(milliseconds=1)).isoformat()
    exc = refuse(engine, order_id, E.WARN, {**PC, "issued_on": earlier}, ContractViolation)
    assert "issuedOn 2026-11-23T09:00:01.999Z is earlier than the order's last KCI" in str(exc)
    assert "never goes backwards" in str(exc)
    assert_names(exc, order_id, S.IN_PROGRESS, "warn")


def test_issued_on_equal_to_the_last_kci_is_accepted(engine: Engine) -> None:
    order_id, _ = order_in(engine, P, S.IN_PROGRESS)
    last = engine.kcis(order_id)[-1].issued_on
    [kci] = engine.apply(order_id, E.WARN, {**PC, "issued_on": last.isoformat()})
    assert kci.issued_on == last


# --- Allowed counterparts of the rules above ---------------------------------------------------


def test_accept_amendment_may_change_the_committed_date(engine: Engine) -> None:
    """The tenant drives a committedDate change through an amendment."""
    order_id, _ = order_in(engine, P, S.PENDING_AMENDMENT)
    new_date = "2026-12-09T08:00:00.000Z"
    [kci] = engine.apply(
        order_id, E.ACCEPT_AMENDMENT, {"amendment_id": 501, "order": {"committedDate": new_date}}
    )
    assert kci.body["provideServiceOrder"]["committedDate"] == new_date
    assert engine.order(order_id).document["committedDate"] == new_date


def test_restating_the_committed_date_in_another_offset_is_not_a_change(engine: Engine) -> None:
    order_id, _ = order_in(engine, P, S.IN_PROGRESS)
    same_instant = "2026-12-01T09:00:00+01:00"
    [kci] = engine.apply(
        order_id, E.UPDATE, {"order": {"committedDate": same_instant, "notes": "Van booked"}}
    )
    assert kci.body["provideServiceOrder"]["committedDate"] == COMMIT_DATES["committedDate"]


def test_other_with_supplier_codes_instead_of_text_is_accepted(engine: Engine) -> None:
    order_id, _ = order_in(engine, M, S.IN_PROGRESS)
    [kci] = engine.apply(order_id, E.WARN, {"problem_code": "OTHER", "supplier_codes": ["RW-1"]})
    assert (kci.body["problemCode"], kci.body["supplierCodes"]) == ("OTHER", ["RW-1"])


def test_a_supplier_cancel_needs_no_cancellation_reference(engine: Engine) -> None:
    order_id, _ = order_in(engine, C, S.HELD)
    [kci] = engine.apply(order_id, E.CANCEL, {"problem_code": "CAPACITY_ISSUE", **TXT})
    assert kci.reason_code == "CANCELLED"
    assert "serviceOrderCancellationId" not in kci.body["ceaseServiceOrder"]


# --- Events not allowed -------------------------------------------------------------------------

_ANY_EVENT = [E.UPDATE, E.WARN, E.ADD_INFORMATION, E.CANCEL, E.COMPLETE, E.ACKNOWLEDGE, E.RESUME]


@pytest.mark.parametrize("event", _ANY_EVENT)
@pytest.mark.parametrize(
    ("order_type", "final"),
    [(P, S.REJECTED), (M, S.REJECTED), (C, S.CANCELLED), (P, S.COMPLETED), (U, S.COMPLETED),
     (U, S.CANCELLED)],
)  # fmt: skip
def test_a_final_status_accepts_no_event(
    engine: Engine, order_type: OrderType, final: str, event: Event
) -> None:
    order_id, now = order_in(engine, order_type, final)
    assert now == final
    data = {"order": {"notes": "late"}, **PC, **TXT} if event is not E.RESUME else {}
    exc = refuse(engine, order_id, event, data, EventNotAllowed)
    assert isinstance(exc, EventNotAllowed)
    assert exc.allowed == ()
    assert "allowed events: none (the status is final)" in str(exc)
    assert_names(exc, order_id, final, event.value)
    assert f"is not allowed in status {final}" in str(exc)
    assert engine.allowed_events(order_id) == []


@pytest.mark.parametrize(
    ("order_type", "status", "event", "listed"),
    [
        (P, S.SENT_TO_SUPPLIER, E.COMMIT, "acknowledge"),
        (P, S.IN_PROGRESS, E.ACKNOWLEDGE, "complete"),
        (C, S.IN_PROGRESS, E.REAPPOINTED, "delay"),
        (C, S.HELD, E.REQUEST_REAPPOINTMENT, "resume"),
        (U, S.IN_PROGRESS, E.AMENDMENT_RECEIVED, "cancellation_received"),
        (U, S.ACKNOWLEDGED, E.CREATE, "commit"),
        (P, S.ACKNOWLEDGED, E.CREATE, "commit"),
        (P, S.HELD, E.COMPLETE, "resume"),
        (P, S.PENDING_CANCELLATION, E.CANCEL, "accept_cancellation"),
        (P, S.PENDING_CANCELLATION, E.CANCELLATION_RECEIVED, "reject_cancellation"),
        (M, S.PENDING, E.DELAY, "request_resubmission"),
        (P, S.HELD, E.AMENDMENT_RECEIVED, "request_information"),
    ],
)
def test_an_event_the_status_does_not_allow_is_refused_listing_the_allowed_ones(
    engine: Engine, order_type: OrderType, status: str, event: Event, listed: str
) -> None:
    order_id, now = order_in(engine, order_type, status)
    exc = refuse(engine, order_id, event, {}, EventNotAllowed)
    assert isinstance(exc, EventNotAllowed)
    assert listed in exc.allowed
    assert event.value not in exc.allowed
    assert list(exc.allowed) == [e.value for e in engine.allowed_events(order_id)]
    assert f"allowed events: {', '.join(exc.allowed)}" in str(exc)
    assert_names(exc, order_id, now, event.value)


# --- Malformed event data ------------------------------------------------------------------------

INVALID = [
    case("problemCode-on-an-event-that-sends-no-KCI", P, S.IN_PROGRESS, E.AMENDMENT_RECEIVED,
         {"amendment_id": 7, **PC},
         "problem_code given, but event 'amendment_received' sends no KCI"),
    case("text-on-cancellation-received", C, S.IN_PROGRESS, E.CANCELLATION_RECEIVED,
         {"cancellation_id": 7, **TXT},
         "text given, but event 'cancellation_received' sends no KCI"),
    case("issued-on-on-acknowledged-in-201", P, S.SENT_TO_SUPPLIER, E.ACKNOWLEDGED_IN_201,
         {**REF, "issued_on": "2026-11-23T09:00:00Z"}, "issued_on given"),
    case("amendment-id-on-an-unrelated-event", P, S.IN_PROGRESS, E.UPDATE,
         {"amendment_id": 501, "order": {"notes": "x"}},
         "amendment_id is not used by event 'update'"),
    case("amendment-reference-on-cancel", M, S.IN_PROGRESS, E.CANCEL,
         {"amendment_reference": "A", "problem_code": "CAPACITY_ISSUE", **TXT},
         "amendment_reference is not used by event 'cancel'"),
    case("cancellation-id-on-warn", P, S.HELD, E.WARN, {"cancellation_id": 1, **PC},
         "cancellation_id is not used by event 'warn'"),
    case("cancellation-reason-on-accept-cancellation", P, S.PENDING_CANCELLATION,
         E.ACCEPT_CANCELLATION, {"cancellation_id": 901, "cancellation_reason": "OTHER",
                                 "problem_code": "CUSTOMER_CHANGED_MIND"},
         "cancellation_reason is not used by event 'accept_cancellation'"),
    case("resolves-request-on-reject-amendment", P, S.PENDING_AMENDMENT, E.REJECT_AMENDMENT,
         {"amendment_id": 501, "resolves_request": False, **PC, **TXT},
         "resolves_request is not used by event 'reject_amendment'"),
    case("order-change-to-status", P, S.IN_PROGRESS, E.UPDATE,
         {"order": {"status": "COMPLETED"}}, "order.status: set by the engine"),
    case("order-change-to-an-amendment-reference", M, S.IN_PROGRESS, E.UPDATE,
         {"order": {"serviceOrderAmendmentId": 5}},
         "order.serviceOrderAmendmentId: set by the engine"),
    case("order-change-to-id", P, S.IN_PROGRESS, E.UPDATE, {"order": {"id": 9999}},
         "order.id: identifies the order and cannot change"),
    case("order-change-to-supplier-reference", C, S.ACKNOWLEDGED, E.UPDATE,
         {"order": {"supplierOrderReference": "OTHER-REF"}},
         "order.supplierOrderReference: identifies the order"),
    case("order-change-to-an-unknown-field", P, S.IN_PROGRESS, E.UPDATE,
         {"order": {"colour": "red"}}, "order.colour: not a field of a provide order"),
    case("order-change-to-a-modify-only-field-on-a-cease", C, S.IN_PROGRESS, E.UPDATE,
         {"order": {"serviceCharacteristics": []}}, "order.serviceCharacteristics: not a field"),
    case("order-change-of-the-wrong-type", P, S.IN_PROGRESS, E.UPDATE,
         {"order": {"targetDate": "next tuesday"}}, "order.targetDate"),
    case("order-change-to-a-naive-date-time", M, S.IN_PROGRESS, E.UPDATE,
         {"order": {"targetDate": "2026-12-09T08:00:00"}}, "order.targetDate"),
    case("removing-a-required-field", U, S.IN_PROGRESS, E.UPDATE,
         {"order": {"requestedCeaseDate": None}}, "order.requestedCeaseDate: required"),
    case("characteristics-on-a-cease", C, S.IN_PROGRESS, E.ADD_INFORMATION,
         {"service_characteristics": {"SERVICE_ID": "S"}},
         "a cease order carries no service characteristics"),
    case("characteristics-on-an-unsolicited-cease", U, S.ACKNOWLEDGED, E.ADD_INFORMATION,
         {"service_characteristics": {"SERVICE_ID": "S"}}, "carries no service characteristics"),
]  # fmt: skip


@pytest.mark.parametrize(("order_type", "status", "event", "data", "says", "order"), INVALID)
def test_malformed_event_data_is_refused_naming_what_is_wrong(
    engine: Engine,
    order_type: OrderType,
    status: str,
    event: Event,
    data: dict[str, Any],
    says: str,
    order: dict[str, Any],
) -> None:
    order_id, now = order_in(engine, order_type, status, **order)
    exc = refuse(engine, order_id, event, data, InvalidEventData)
    assert says in str(exc)
    assert_names(exc, order_id, now, event.value)


@pytest.mark.parametrize(
    ("order_type", "status", "event", "data", "says", "order"),
    [INVALID[0], INVALID[3], INVALID[8]],
)
def test_malformed_event_data_message_names_the_status(
    engine: Engine,
    order_type: OrderType,
    status: str,
    event: Event,
    data: dict[str, Any],
    says: str,
    order: dict[str, Any],
) -> None:
    order_id, now = order_in(engine, order_type, status, **order)
    exc = refuse(engine, order_id, event, data, InvalidEventData)
    assert now in str(exc)


PARSE_ERRORS = [
    pytest.param("frobnicate", {}, "unknown event 'frobnicate'", id="unknown-event"),
    pytest.param("WARN", PC, "unknown event 'WARN'", id="event-names-are-lower-case"),
    pytest.param(E.WARN, {"problem_code": "DOG_ON_SITE"}, "problem_code: Input should be",
                 id="unknown-problem-code"),
    pytest.param(E.WARN, {**PC, "colour": "red"}, "colour: Extra inputs are not permitted",
                 id="unknown-field"),
    pytest.param(E.ACCEPT_AMENDMENT, {"amendment_id": "abc"}, "amendment_id: Input should be",
                 id="amendment-id-not-a-number"),
    pytest.param(E.ACCEPT_AMENDMENT, {"amendment_id": 0}, "amendment_id: Input should be",
                 id="amendment-id-below-one"),
    pytest.param(E.WARN, {**PC, "issued_on": "2026-11-23T09:00:00"}, "issued_on: Input should",
                 id="naive-issued-on"),
    pytest.param(E.WARN, {**PC, "text": ""}, "text: String should have at least 1 character",
                 id="empty-text"),
    pytest.param(E.WARN, {**PC, "supplier_codes": []}, "supplier_codes: List should have",
                 id="empty-supplier-codes"),
    pytest.param(E.UPDATE, {"order": ["notes"]}, "order: Input should be a valid dictionary",
                 id="order-not-a-mapping"),
    pytest.param(E.ADD_INFORMATION, {"service_characteristics": {"SERVICE_ID": 5}},
                 "service_characteristics.SERVICE_ID", id="characteristic-not-a-string"),
    pytest.param(E.WARN, "NETWORK_ISSUE", "invalid event data", id="data-not-a-mapping"),
]  # fmt: skip


@pytest.mark.parametrize(("event", "data", "says"), PARSE_ERRORS)
def test_an_unknown_event_or_malformed_data_is_refused_before_anything_runs(
    engine: Engine, event: Event | str, data: Any, says: str
) -> None:
    order_id, _ = order_in(engine, P, S.IN_PROGRESS)
    exc = refuse(engine, order_id, event, data, InvalidEventData)
    assert says in str(exc)


def test_the_unknown_event_error_lists_the_known_events(engine: Engine) -> None:
    order_id, _ = order_in(engine, P, S.IN_PROGRESS)
    exc = refuse(engine, order_id, "frobnicate", None, InvalidEventData)
    assert "known events: create, acknowledge," in str(exc)
    assert "complete" in str(exc)


@pytest.mark.parametrize(("event", "data", "says"), [PARSE_ERRORS[0], PARSE_ERRORS[3]])
def test_an_unknown_event_or_malformed_data_names_the_order(
    engine: Engine, event: Event | str, data: Any, says: str
) -> None:
    order_id, now = order_in(engine, P, S.IN_PROGRESS)
    exc = refuse(engine, order_id, event, data, InvalidEventData)
    assert_names(exc, order_id, now, str(event))


def test_an_event_on_an_unknown_order_is_order_not_found(engine: Engine) -> None:
    with pytest.raises(OrderNotFound) as info:
        engine.apply("TENANT1:404", E.WARN, PC)
    assert info.value.order_id == "TENANT1:404"
    assert "order TENANT1:404 not found" in str(info.value)


# --- Refusals when an order arrives ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("order_type", "order", "answered_with", "error", "says"),
    [
        pytest.param(P, provide_order(), "ACKNOWLEDGED", MissingField, "supplierOrderReference",
                     id="201-acknowledged-needs-supplierOrderReference"),
        pytest.param(M, modify_order(supplierOrderReference="S"), "IN_PROGRESS", MissingField,
                     "committedDate", id="201-in-progress-needs-dates"),
        pytest.param(C, cease_order(**COMMIT_DATES), "IN_PROGRESS", MissingField,
                     "supplierOrderReference", id="201-in-progress-needs-supplierOrderReference"),
        pytest.param(P, provide_order(), "HELD", InvalidEventData,
                     "a synchronous 201 answer carries ACKNOWLEDGED or IN_PROGRESS, not HELD",
                     id="201-with-another-status"),
    ],
)  # fmt: skip
def test_a_refused_synchronous_answer_stores_nothing(
    engine: Engine,
    order_type: OrderType,
    order: dict[str, Any],
    answered_with: str,
    error: type[RefusedEvent],
    says: str,
) -> None:
    with pytest.raises(error) as info:
        engine.accept_order(order_type, order, answered_with=answered_with)
    assert type(info.value) is error
    assert says in str(info.value)
    if isinstance(info.value, MissingField):
        assert info.value.field == says
        assert info.value.status == S.SENT_TO_SUPPLIER
    assert list(engine.store.order_ids()) == []
    with pytest.raises(OrderNotFound):
        engine.order(f"TENANT1:{order['id']}")


def test_a_wrong_synchronous_answer_names_the_order(engine: Engine) -> None:
    with pytest.raises(InvalidEventData) as info:
        engine.accept_order(P, provide_order(), answered_with="HELD")
    assert info.value.order_id == "TENANT1:1001"
    assert "TENANT1:1001" in str(info.value)


def test_an_unsolicited_cease_created_in_progress_without_dates_is_refused(
    engine: Engine,
) -> None:
    with pytest.raises(MissingField) as info:
        engine.create_unsolicited_cease(unsolicited_cease_order(status="IN_PROGRESS"))
    assert info.value.field == "committedDate"
    assert_names(info.value, "UC-4001", "NEW", "create")
    assert list(engine.store.order_ids()) == []


def test_an_unsolicited_cease_created_in_progress_without_target_date_is_refused(
    engine: Engine,
) -> None:
    order = unsolicited_cease_order(status="IN_PROGRESS", committedDate=EPOCH.isoformat())
    with pytest.raises(MissingField) as info:
        engine.create_unsolicited_cease(order)
    assert info.value.field == "targetDate"
    assert list(engine.store.order_ids()) == []


@pytest.mark.parametrize("status", ["HELD", "COMPLETED", "SENT_TO_SUPPLIER"])
def test_an_unsolicited_cease_created_in_another_status_is_refused(
    engine: Engine, status: str
) -> None:
    with pytest.raises((InvalidOrder, ContractViolation)) as info:
        engine.create_unsolicited_cease(unsolicited_cease_order(status=status))
    assert status in str(info.value)
    assert list(engine.store.order_ids()) == []


def test_reappointed_with_target_date_removed_is_refused(engine: Engine) -> None:
    order_id, _ = order_in(engine, P, S.IN_PROGRESS)
    exc = refuse(
        engine,
        order_id,
        E.REAPPOINTED,
        {"order": {"appointmentSupplierReference": "APPT-2", "targetDate": None}},
        MissingField,
    )
    assert isinstance(exc, MissingField)
    assert exc.field == "targetDate"


@pytest.mark.parametrize("event", [E.ACKNOWLEDGED_IN_201, E.COMMITTED_IN_201])
def test_a_synchronous_answer_after_the_first_kci_is_not_allowed(
    engine: Engine, event: Event
) -> None:
    """A 201 answer is given on the create request; the first KCI leaves SENT_TO_SUPPLIER (no
    KCI carries that gateway status), so the answer can no longer be recorded after it."""
    order_id, _ = order_in(engine, P, S.ACKNOWLEDGED)
    with pytest.raises(EventNotAllowed) as info:
        engine.apply(order_id, event, {"order": {**REF["order"], **COMMIT_DATES}})
    assert "acknowledged_in_201" not in info.value.allowed
