"""Contract tests of the Supplier API over real HTTP: uvicorn on 127.0.0.1, a real database
(SQLite file; PostgreSQL for the races), the documented example bodies, and malformed,
unknown-order, wrong-status, duplicate and racing requests. Each answer is checked against the
docs (status, body, error shape) and against the engine's state."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from kci_engine import Engine, Event
from kci_engine.errors import ConfigurationError, OrderNotFound, RequestRefused
from kci_engine.inbound import (
    Acknowledge,
    AmendmentRequest,
    Apply,
    BasicAuth,
    BearerTokens,
    CancellationRequest,
    Commit,
    Later,
    OrderDecision,
    OrderRequest,
    Reject,
    RequestDecision,
    ServeConfig,
    SupplierApi,
    create_app,
    running_server,
)
from kci_engine.inbound.auth import AnyOf
from kci_engine.store.inbound import SqlLedger
from kci_engine.store.sql import SqlStore
from kci_engine.tooling.testing import COMMIT_DATES, provide_order

TOKEN = "s3cret-token"
HEADERS = {
    "X-Request-ID": "req-1",
    "X-Conversation-ID": "conv-1",
    "Tenant": "TENANT1",
    "Authorization": f"Bearer {TOKEN}",
}

#: The documented examples (docs.thefibrecafe.net, Supplier API 1.15: handleCreateOrder,
#: handleAmendOrder, handleCancelOrder), as far as the pages show them.
JOHN = {"name": "John Smith", "email": "john@smith.com", "phoneNumber": "01234 567890"}
CREATE_EXAMPLE: dict[str, Any] = {
    "id": 123,
    "orderType": "NEW",
    "tenant": "TENANT1",
    "address": {"id": "200004033694", "type": "UPRN"},
    "serviceOrderItem": {
        "serviceSpecification": {"id": "ftthl2r"},
        "serviceCharacteristics": [{"name": "ENNI_ID", "value": "1"}],
    },
    "primaryContact": JOHN,
    "secondaryContact": JOHN,
    "appointmentReservationId": 234,
}
AMEND_EXAMPLE: dict[str, Any] = {
    "id": 234,
    "orderId": 123,
    "serviceCharacteristics": [{"name": "ENNI_ID", "value": "1"}],
    "primaryContact": JOHN,
    "secondaryContact": JOHN,
    "appointmentReservationId": 345,
    "appointmentReservationReference": "A234X",
    "requestedCompletionDate": "2022-01-10",
    "engineerTasks": ["TEST_SINGLE_DEVICE"],
    "hazards": "string",
    "onSiteRestrictions": "string",
}
CANCEL_EXAMPLE: dict[str, Any] = {"id": 345, "orderId": 123, "reasonCode": "CUSTOMER_CHANGED_MIND"}
CANCEL_201_EXAMPLE: dict[str, Any] = {
    "supplierReference": "A123-1",
    "id": 345,
    "orderId": 123,
    "reasonCode": "CUSTOMER_CHANGED_MIND",
}


@dataclass
class Scripted:
    """Supplier logic answering from tables keyed by gateway id (default: later)."""

    orders: dict[int, OrderDecision] = field(default_factory=dict)
    amendments: dict[int, RequestDecision] = field(default_factory=dict)
    cancellations: dict[int, RequestDecision] = field(default_factory=dict)
    asked: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def decide_order(self, request: OrderRequest) -> OrderDecision:
        with self.lock:
            self.asked.append(request.gateway_id)
        return self.orders.get(request.gateway_id, Later())

    def decide_amendment(self, request: AmendmentRequest) -> RequestDecision:
        with self.lock:
            self.asked.append(request.gateway_id)
        return self.amendments.get(request.gateway_id, Later())

    def decide_cancellation(self, request: CancellationRequest) -> RequestDecision:
        with self.lock:
            self.asked.append(request.gateway_id)
        return self.cancellations.get(request.gateway_id, Later())


@dataclass
class Served:
    url: str
    api: SupplierApi
    logic: Scripted
    engine: Engine
    client: httpx.Client

    def post(self, path: str, body: Any, **headers: str) -> httpx.Response:
        sent = {**HEADERS, **headers}
        sent = {k: v for k, v in sent.items() if v != ""}
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post(self.url + path, content=content, headers=sent)


def _serve(url: str, **api_options: Any) -> Iterator[Served]:
    logic = Scripted()
    with SqlStore(url) as store:
        engine = Engine(store)
        api = SupplierApi(engine, logic, **api_options)
        config = ServeConfig(port=0, auth=BearerTokens([TOKEN]))
        with running_server(api, config) as handle, httpx.Client(timeout=30) as client:
            yield Served(handle.base_url, api, logic, engine, client)


@pytest.fixture
def served(sqlite_url: str) -> Iterator[Served]:
    yield from _serve(sqlite_url, no_cancellation_in={"COMPLETED"})


def error_shape(response: httpx.Response, status: int, code: str) -> list[str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"uuid", "code", "messages"}
    assert body["code"] == code
    assert isinstance(body["uuid"], str)
    assert len(body["uuid"]) == 36
    assert body["messages"]
    assert all(isinstance(m, str) for m in body["messages"])
    return list(body["messages"])


# --- create --------------------------------------------------------------------------------------


def test_the_documented_create_answered_201_acknowledged_sends_no_kci(served: Served) -> None:
    served.logic.orders[123] = Acknowledge("A123X")
    response = served.post("/service-orders", CREATE_EXAMPLE)
    assert response.status_code == 201
    body = response.json()
    assert body["supplierOrderReference"] == "A123X"
    assert body["status"] == "ACKNOWLEDGED"
    assert {k: body[k] for k in CREATE_EXAMPLE} == CREATE_EXAMPLE  # the order, echoed whole
    order = served.engine.order("TENANT1:123")
    assert order.status == "ACKNOWLEDGED"
    assert order.conversation_id == "conv-1"
    assert served.engine.kcis("TENANT1:123") == []
    assert served.api.owed() == []
    # The first KCI the supplier sends is still number 1, and never an ACKNOWLEDGED.
    assert Event.ACKNOWLEDGE not in served.engine.allowed_events("TENANT1:123")
    [kci] = served.engine.apply("TENANT1:123", Event.COMMIT, {"order": COMMIT_DATES})
    assert (kci.sequence_number, kci.reason_code) == (1, "COMMITTED")


def test_create_answered_201_in_progress_carries_the_dates(served: Served) -> None:
    served.logic.orders[124] = Commit(
        "A124X", COMMIT_DATES["committedDate"], COMMIT_DATES["targetDate"]
    )
    response = served.post("/service-orders", {**CREATE_EXAMPLE, "id": 124})
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "IN_PROGRESS"
    assert body["committedDate"] == COMMIT_DATES["committedDate"]
    assert body["targetDate"] == COMMIT_DATES["targetDate"]
    assert served.engine.order("TENANT1:124").status == "IN_PROGRESS"
    assert served.engine.kcis("TENANT1:124") == []


def test_create_answered_202_owes_an_acknowledgement_until_one_is_sent(served: Served) -> None:
    response = served.post("/service-orders", CREATE_EXAMPLE)
    assert response.status_code == 202
    assert response.content == b""
    assert served.engine.order("TENANT1:123").status == "SENT_TO_SUPPLIER"
    [owed] = served.api.owed()
    assert (owed.kind, owed.gateway_id, owed.order_id, owed.owes) == (
        "order",
        123,
        "TENANT1:123",
        "ACKNOWLEDGED or ORDER_REJECTED",
    )
    [kci] = served.engine.apply(
        "TENANT1:123", Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "A123X"}}
    )
    assert (kci.sequence_number, kci.reason_code) == (1, "ACKNOWLEDGED")
    assert served.api.owed() == []


def test_create_rejected_by_the_logic_is_422_with_its_reasons_and_records_no_order(
    served: Served,
) -> None:
    served.logic.orders[123] = Reject("UPRN 200004033694 is not within our coverage area")
    response = served.post("/service-orders", CREATE_EXAMPLE)
    assert error_shape(response, 422, "INVALID_REQUEST") == [
        "UPRN 200004033694 is not within our coverage area"
    ]
    with pytest.raises(OrderNotFound):
        served.engine.order("TENANT1:123")


@pytest.mark.parametrize(
    ("change", "status", "code", "says"),
    [
        ({"X-Request-ID": ""}, 400, "MALFORMED_REQUEST", "X-Request-ID: required header missing"),
        (
            {"X-Conversation-ID": ""},
            400,
            "MALFORMED_REQUEST",
            "X-Conversation-ID: required header missing",
        ),
        ({"Tenant": "OTHER"}, 422, "INVALID_REQUEST", "Tenant header 'OTHER'"),
    ],
)
def test_create_headers(
    served: Served, change: dict[str, str], status: int, code: str, says: str
) -> None:
    response = served.post("/service-orders", CREATE_EXAMPLE, **change)
    assert error_shape(response, status, code)[0].startswith(says)
    assert served.logic.asked == []


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", 400, "the body is not JSON"),
        (b"[1, 2]", 400, "the body is a JSON list, not an object"),
        ({k: v for k, v in CREATE_EXAMPLE.items() if k != "orderType"}, 400, "orderType: required"),
        ({k: v for k, v in CREATE_EXAMPLE.items() if k != "id"}, 400, "id: required"),
        ({k: v for k, v in CREATE_EXAMPLE.items() if k != "tenant"}, 400, "tenant: required"),
        ({**CREATE_EXAMPLE, "id": "123"}, 422, "id: must be a whole number"),
        (
            {**CREATE_EXAMPLE, "orderType": "UNSOLICITED_CEASE"},
            422,
            "orderType 'UNSOLICITED_CEASE'",
        ),
        ({**CREATE_EXAMPLE, "address": {"id": "1", "type": "POSTCODE"}}, 422, "address.type"),
        ({**CREATE_EXAMPLE, "status": "ACKNOWLEDGED"}, 422, "status: set by the supplier"),
        ({**CREATE_EXAMPLE, "colour": "blue"}, 422, "colour: Extra inputs are not permitted"),
    ],
)
def test_malformed_and_invalid_creates(served: Served, body: Any, status: int, says: str) -> None:
    response = served.post("/service-orders", body)
    code = "MALFORMED_REQUEST" if status == 400 else "INVALID_REQUEST"
    assert any(m.startswith(says) for m in error_shape(response, status, code))
    assert served.logic.asked == []


def test_a_missing_mandatory_field_of_the_order_is_400(served: Served) -> None:
    body = {k: v for k, v in CREATE_EXAMPLE.items() if k != "primaryContact"}
    body["primaryContact"] = {"email": "a@b.c"}  # a contact without its name
    assert error_shape(served.post("/service-orders", body), 400, "MALFORMED_REQUEST")


def test_cease_and_modify_orders_are_created_by_order_type(served: Served) -> None:
    cease = {"id": 301, "orderType": "CEASE", "tenant": "TENANT1", "serviceId": "S12345",
             "requestedCompletionDate": "2024-04-12"}  # fmt: skip
    modify = {"id": 302, "orderType": "MODIFY", "tenant": "TENANT1", "serviceId": "S12345",
              "serviceCharacteristics": [{"name": "LINE_PROFILE", "value": "900"}]}  # fmt: skip
    assert served.post("/service-orders", cease).status_code == 202
    assert served.post("/service-orders", modify).status_code == 202
    assert served.engine.order("TENANT1:301").order_type == "cease"
    assert served.engine.order("TENANT1:302").order_type == "modify"


# --- amend and cancel ----------------------------------------------------------------------------


def _acknowledged(served: Served, gateway_id: int = 123) -> str:
    served.logic.orders[gateway_id] = Acknowledge(f"A{gateway_id}X")
    assert served.post("/service-orders", {**CREATE_EXAMPLE, "id": gateway_id}).status_code == 201
    return f"TENANT1:{gateway_id}"


def test_the_documented_amendment_answered_201_applies_it_and_sends_no_kci(served: Served) -> None:
    order_id = _acknowledged(served)
    served.logic.amendments[234] = Apply("123-1")
    response = served.post("/service-order-amendments", AMEND_EXAMPLE)
    assert response.status_code == 201
    assert response.json() == {"supplierReference": "123-1", **AMEND_EXAMPLE}
    order = served.engine.order(order_id)
    assert order.status == "ACKNOWLEDGED"
    assert order.document["appointmentReservationId"] == 345
    assert order.document["requestedCompletionDate"] == "2022-01-10"
    assert order.document["engineerTasks"] == ["TEST_SINGLE_DEVICE"]
    assert order.document["serviceOrderItem"]["serviceSpecification"] == {"id": "ftthl2r"}
    assert served.engine.kcis(order_id) == []
    assert [e.event for e in served.engine.events(order_id)][-1] == "amended_in_201"


def test_an_amendment_changes_only_the_parts_of_a_contact_it_gives(served: Served) -> None:
    order_id = _acknowledged(served)
    served.logic.amendments[235] = Apply("123-2")
    body = {"id": 235, "orderId": 123, "primaryContact": {"phoneNumber": "07700 900999"}}
    assert served.post("/service-order-amendments", body).status_code == 201
    assert served.engine.order(order_id).document["primaryContact"] == {
        "name": "John Smith",
        "email": "john@smith.com",
        "phoneNumber": "07700 900999",
    }


def test_an_amendment_answered_202_owes_amended_or_rejected(served: Served) -> None:
    order_id = _acknowledged(served)
    response = served.post("/service-order-amendments", AMEND_EXAMPLE)
    assert response.status_code == 202
    assert served.engine.order(order_id).status == "PENDING_AMENDMENT"
    [owed] = served.api.owed()
    assert (owed.kind, owed.gateway_id, owed.owes) == (
        "amendment",
        234,
        "AMENDED or AMENDMENT_REJECTED",
    )
    # The back office accepts it later: the changes the amendment asked for, applied then.
    [kci] = served.api.accept_amendment("TENANT1", 234, {"text": "Engineer rebooked"})
    assert kci.reason_code == "AMENDED"
    order = kci.body["provideServiceOrder"]
    assert order["serviceOrderAmendmentId"] == 234
    assert order["appointmentReservationReference"] == "A234X"
    assert order["engineerTasks"] == ["TEST_SINGLE_DEVICE"]
    assert kci.body["text"] == "Engineer rebooked"
    assert served.api.owed() == []
    with pytest.raises(RequestRefused, match="no amendment 999"):
        served.api.accept_amendment("TENANT1", 999)


def test_the_documented_cancellation_answered_201_cancels_and_sends_no_kci(served: Served) -> None:
    order_id = _acknowledged(served)
    served.logic.cancellations[345] = Apply("A123-1")
    response = served.post("/service-order-cancellations", CANCEL_EXAMPLE)
    assert response.status_code == 201
    assert response.json() == CANCEL_201_EXAMPLE
    assert served.engine.order(order_id).status == "CANCELLED"
    assert served.engine.kcis(order_id) == []


def test_a_cancellation_answered_202_owes_cancelled_or_rejected(served: Served) -> None:
    order_id = _acknowledged(served)
    assert served.post("/service-order-cancellations", CANCEL_EXAMPLE).status_code == 202
    assert served.engine.order(order_id).status == "PENDING_CANCELLATION"
    assert [o.owes for o in served.api.owed()] == ["CANCELLED or CANCELLATION_REJECTED"]
    [kci] = served.engine.apply(
        order_id,
        Event.REJECT_CANCELLATION,
        {"cancellation_id": 345, "problem_code": "OTHER", "text": "Engineer on site"},
    )
    assert (kci.reason_code, kci.status) == ("CANCELLATION_REJECTED", "ACKNOWLEDGED")
    assert served.api.owed() == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/service-order-amendments", AMEND_EXAMPLE),
        ("/service-order-cancellations", CANCEL_EXAMPLE),
    ],
)
def test_a_request_for_an_unknown_order_is_404(served: Served, path: str, body: Any) -> None:
    messages = error_shape(served.post(path, body), 404, "NOT_FOUND")
    assert messages == ["Order 123 of tenant TENANT1 is not known"]
    _acknowledged(served)  # another tenant's order of that id is not this tenant's
    assert served.post(path, body, Tenant="TENANT2").status_code == 404


@pytest.mark.parametrize("path", ["/service-order-amendments", "/service-order-cancellations"])
def test_amend_and_cancel_need_the_tenant_header(served: Served, path: str) -> None:
    messages = error_shape(served.post(path, CANCEL_EXAMPLE, Tenant=""), 400, "MALFORMED_REQUEST")
    assert messages == ["Tenant: required header missing"]


def test_wrong_status_requests_are_422_from_the_machine_without_asking_the_logic(
    served: Served,
) -> None:
    order_id = _acknowledged(served)
    served.engine.apply(order_id, Event.COMMIT, {"order": COMMIT_DATES})
    served.engine.apply(
        order_id,
        Event.ADD_INFORMATION,
        {"service_characteristics": {"SERVICE_ID": "SVC-1"}},
    )
    served.engine.apply(order_id, Event.COMPLETE)
    served.logic.asked.clear()
    amend = error_shape(
        served.post("/service-order-amendments", AMEND_EXAMPLE), 422, "INVALID_REQUEST"
    )
    assert amend == ["Order 123 is COMPLETED: it can no longer be amended"]
    cancel = error_shape(
        served.post("/service-order-cancellations", CANCEL_EXAMPLE), 422, "INVALID_REQUEST"
    )
    assert cancel == ["Order 123 is COMPLETED: it can no longer be cancelled"]
    assert served.logic.asked == []


def test_an_unsolicited_cease_cannot_be_amended_and_takes_its_own_reasons(served: Served) -> None:
    served.engine.create_unsolicited_cease(
        {
            "supplierOrderReference": "UC-9",
            "tenant": "TENANT1",
            "status": "ACKNOWLEDGED",
            "serviceId": "S1",
            "reason": "CHANGE_OF_CP",
            "requestedCeaseDate": "2026-12-20T00:00:00.000Z",
        }
    )
    named = {"orderId": 9, "supplierOrderReference": "UC-9"}
    amend = served.post("/service-order-amendments", {"id": 1, **named, "notes": "x"})
    assert error_shape(amend, 422, "INVALID_REQUEST") == [
        "Order 9 is an unsolicited cease, which cannot be amended"
    ]
    wrong = served.post(
        "/service-order-cancellations", {"id": 2, **named, "reasonCode": "CUSTOMER_CHANGED_MIND"}
    )
    assert error_shape(wrong, 422, "INVALID_REQUEST")[0].startswith(
        "reasonCode CUSTOMER_CHANGED_MIND is not a reason to cancel this order"
    )
    served.logic.cancellations[3] = Apply("UC-9-C")
    right = served.post(
        "/service-order-cancellations", {"id": 3, **named, "reasonCode": "NO_AUTHORISATION"}
    )
    assert right.status_code == 201
    assert served.engine.order("UC-9").status == "CANCELLED"


def test_a_201_the_status_does_not_allow_is_500_and_writes_nothing(served: Served) -> None:
    order_id = _acknowledged(served)
    served.engine.apply(
        order_id,
        Event.REQUEST_INFORMATION,
        {"problem_code": "INFORMATION_REQUIRED", "text": "Which entrance?"},
    )
    served.logic.amendments[234] = Apply("123-1")  # not possible in PENDING (decisions L22)
    assert error_shape(
        served.post("/service-order-amendments", AMEND_EXAMPLE), 500, "SUPPLIER_FAULT"
    )
    assert served.engine.order(order_id).status == "PENDING"
    served.logic.amendments[234] = Later()  # fixed logic: the retry is answered afresh
    assert served.post("/service-order-amendments", AMEND_EXAMPLE).status_code == 202


# --- idempotency ---------------------------------------------------------------------------------


@pytest.mark.parametrize("decision", [Acknowledge("A123X"), Later(), Reject("No capacity")])
def test_a_retried_create_gets_the_same_answer_and_creates_nothing(
    served: Served, decision: OrderDecision
) -> None:
    served.logic.orders[123] = decision
    first = served.post("/service-orders", CREATE_EXAMPLE)
    again = served.post("/service-orders", CREATE_EXAMPLE, **{"X-Request-ID": "req-2"})
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert served.logic.asked == [123]  # decided once
    if first.status_code != 422:
        assert len(served.engine.events("TENANT1:123")) == 1  # received (with the 201 answer)


def test_a_retried_amendment_and_cancellation_get_the_same_answers(served: Served) -> None:
    order_id = _acknowledged(served)
    served.logic.amendments[234] = Apply("123-1")
    first = served.post("/service-order-amendments", AMEND_EXAMPLE)
    assert served.post("/service-order-amendments", AMEND_EXAMPLE).content == first.content
    assert served.post("/service-order-cancellations", CANCEL_EXAMPLE).status_code == 202
    again = served.post("/service-order-cancellations", CANCEL_EXAMPLE)
    assert again.status_code == 202  # not 422 "a cancellation is in progress"
    events = [e.event for e in served.engine.events(order_id)]
    assert events.count("amended_in_201") == 1
    assert events.count("cancellation_received") == 1


def test_the_same_id_with_another_body_is_refused(served: Served) -> None:
    assert served.post("/service-orders", CREATE_EXAMPLE).status_code == 202
    other = served.post("/service-orders", {**CREATE_EXAMPLE, "hazards": "Dog"})
    assert error_shape(other, 422, "INVALID_REQUEST") == [
        "order id 123 was already used for a different request; each request needs its own id"
    ]


def _race(served: Served, path: str, body: Any, copies: int = 8) -> list[httpx.Response]:
    """``copies`` of one request sent at once."""
    return _at_once(served, path, [body] * copies)


def _at_once(served: Served, path: str, bodies: list[Any]) -> list[httpx.Response]:
    """Each body sent by its own client, all released together; the answers in body order."""
    barrier = threading.Barrier(len(bodies))
    answers: dict[int, httpx.Response] = {}

    def send(n: int) -> None:
        with httpx.Client(timeout=30) as client:
            barrier.wait()
            answers[n] = client.post(
                served.url + path,
                content=json.dumps(bodies[n]).encode(),
                headers={**HEADERS, "X-Request-ID": f"race-{n}"},
            )

    threads = [threading.Thread(target=send, args=(n,)) for n in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return [answers[n] for n in range(len(bodies))]


def test_racing_copies_of_one_request_get_one_answer_on_every_backend(db_url: str) -> None:
    for served in _serve(db_url):
        served.logic.orders[123] = Acknowledge("A123X")
        creates = _race(served, "/service-orders", CREATE_EXAMPLE)
        assert {(r.status_code, r.content) for r in creates} == {(201, creates[0].content)}
        served.logic.amendments[234] = Apply("123-1")
        amends = _race(served, "/service-order-amendments", AMEND_EXAMPLE)
        assert {(r.status_code, r.content) for r in amends} == {(201, amends[0].content)}
        cancels = _race(served, "/service-order-cancellations", CANCEL_EXAMPLE)
        assert {(r.status_code, r.content) for r in cancels} == {(202, b"")}
        events = [e.event for e in served.engine.events("TENANT1:123")]
        assert events == [
            "received",
            "amended_in_201",
            "cancellation_received",
        ]
        assert isinstance(served.api.ledger, SqlLedger)
        assert len(served.api.owed()) == 1


# --- transport: auth, paths, methods -------------------------------------------------------------


def test_requests_without_valid_credentials_are_401(served: Served) -> None:
    for authorization in ("", "Bearer wrong", f"Basic {TOKEN}", "Bearer"):
        response = served.post("/service-orders", CREATE_EXAMPLE, Authorization=authorization)
        assert error_shape(response, 401, "NOT_AUTHORISED")
        assert "Bearer" in response.headers["WWW-Authenticate"]
    assert served.logic.asked == []


def test_basic_credentials_and_either_kind(sqlite_url: str) -> None:
    basic = BasicAuth("gateway", "pa:ss")
    both = AnyOf(basic, BearerTokens([TOKEN]))
    good = "Basic " + base64.b64encode(b"gateway:pa:ss").decode()
    bad = "Basic " + base64.b64encode(b"gateway:nope").decode()
    assert basic({"authorization": good})
    assert not basic({"authorization": bad})
    assert not basic({"authorization": "Basic %%%"})
    assert both({"authorization": f"Bearer {TOKEN}"})
    assert both({"authorization": good})
    assert "pa:ss" not in repr(basic) + repr(both)
    with SqlStore(sqlite_url) as store:
        api = SupplierApi(Engine(store), Scripted())
        config = ServeConfig(port=0, auth=basic)
        with running_server(api, config) as handle:
            sent = {**HEADERS, "Authorization": good}
            ok = httpx.post(handle.base_url + "/service-orders", json=CREATE_EXAMPLE, headers=sent)
            assert ok.status_code == 202


def test_no_authentication_only_on_loopback_and_when_asked() -> None:
    with pytest.raises(ConfigurationError, match="no credentials"):
        ServeConfig(port=0)
    with pytest.raises(ConfigurationError, match="not loopback"):
        ServeConfig(host="0.0.0.0", port=0, allow_anonymous=True)
    ServeConfig(host="127.0.0.1", port=0, allow_anonymous=True)
    with pytest.raises(ConfigurationError, match="authenticator"):
        create_app(SupplierApi(Engine(), Scripted()), auth=None)


def test_paths_methods_and_ethernet_answer_in_the_error_shape(served: Served) -> None:
    assert error_shape(served.post("/service-orderz", {}), 404, "NOT_FOUND")
    get = served.client.get(served.url + "/service-orders", headers=HEADERS)
    assert error_shape(get, 405, "MALFORMED_REQUEST")
    ethernet = served.post("/ethernet/service-orders", {"id": 1})
    assert error_shape(ethernet, 501, "NOT_IMPLEMENTED")


def test_a_body_too_large_is_413(served: Served) -> None:
    body = {**CREATE_EXAMPLE, "notes": "x" * 1_100_000}
    assert error_shape(served.post("/service-orders", body), 413, "MALFORMED_REQUEST")


def test_log_lines_trace_the_request_and_never_show_credentials(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="kci_engine")
    served.post("/service-orders", CREATE_EXAMPLE)
    served.post("/service-orders", CREATE_EXAMPLE, Authorization="Bearer leaked-guess")
    assert "answered 202 (X-Request-ID 'req-1', X-Conversation-ID 'conv-1'" in caplog.text
    assert TOKEN not in caplog.text
    assert "leaked-guess" not in caplog.text


def test_provide_order_helper_is_accepted_as_a_create(served: Served) -> None:
    assert served.post("/service-orders", provide_order(555)).status_code == 202


def test_different_requests_racing_on_one_order_are_all_answered(db_url: str) -> None:
    """Eight amendments of one order at once (distinct ids): each is answered (201 or 202, as
    the logic says), none fails for having lost the race for the order's row."""
    for served in _serve(db_url):
        order_id = _acknowledged(served)
        for n in range(8):
            served.logic.amendments[500 + n] = Apply(f"123-{n}") if n % 2 else Later()
        bodies = [{"id": 500 + n, "orderId": 123, "notes": f"Note {n}"} for n in range(8)]
        answers = _at_once(served, "/service-order-amendments", bodies)
        assert [r.status_code for r in answers] == [201 if n % 2 else 202 for n in range(8)]
        record = served.engine.order(order_id)
        assert record.status == "PENDING_AMENDMENT"
        assert sorted(ref.id for ref in record.amendments) == [500, 502, 504, 506]
        events = [e.event for e in served.engine.events(order_id)]
        assert events.count("amended_in_201") == 4
        assert events.count("amendment_received") == 4


def test_a_running_server_marks_the_debts_the_engine_has_paid(sqlite_url: str) -> None:
    with SqlStore(sqlite_url) as store:
        api = SupplierApi(Engine(store), Scripted())
        config = ServeConfig(port=0, auth=BearerTokens([TOKEN]), settle_every_s=0.02)
        with running_server(api, config) as handle:
            sent = httpx.post(
                handle.base_url + "/service-orders", json=CREATE_EXAMPLE, headers=HEADERS
            )
            assert sent.status_code == 202
            api.engine.apply(
                "TENANT1:123", Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "A"}}
            )
            deadline = time.monotonic() + 10
            while (answered := api.answered("TENANT1", "order", 123)) is not None and (
                answered.settled_at is None and time.monotonic() < deadline
            ):
                time.sleep(0.01)
            assert answered is not None
            assert answered.settled_at is not None
            assert api.ledger.open_debts() == []
    with pytest.raises(ConfigurationError, match="settle_every_s"):
        ServeConfig(port=0, allow_anonymous=True, settle_every_s=0)
