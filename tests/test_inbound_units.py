"""The Supplier API's parts on their own: the service's refusals and rarer paths (on the memory
store, no HTTP), the ledgers, the authenticators and settings, the decisions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from kci_engine import Event
from kci_engine.errors import ConfigurationError, RequestAnswered, StoreBusy
from kci_engine.inbound import (
    Acknowledge,
    AnswerLater,
    Apply,
    BasicAuth,
    BearerTokens,
    Later,
    Reject,
    SupplierApi,
)
from kci_engine.inbound.auth import AnyOf, ServeSettings, load_serve_settings
from kci_engine.inbound.server import ServeConfig
from kci_engine.store.inbound import (
    Answered,
    MemoryLedger,
    ledger_for,
    owed_kcis,
)
from kci_engine.tooling.testing import provide_order, test_engine

H = {"X-Request-ID": "r", "X-Conversation-ID": "c", "Tenant": "TENANT1"}


class Fixed:
    """Logic returning fixed decisions (anything, for the tests of bad logic)."""

    def __init__(self, order: Any = None, request: Any = None) -> None:
        self.order = order if order is not None else Later()
        self.request = request if request is not None else Later()

    def decide_order(self, request: Any) -> Any:
        return self.order

    def decide_amendment(self, request: Any) -> Any:
        return self.request

    def decide_cancellation(self, request: Any) -> Any:
        return self.request


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def test_logic_that_returns_no_decision_is_500_and_writes_nothing() -> None:
    api = SupplierApi(test_engine(), Fixed(order="yes"))
    reply = api.create_order(H, body(provide_order(1)))
    assert reply.status == 500
    assert reply.body is not None
    assert "not a decision" in reply.body["messages"][0]
    assert api.answered("TENANT1", "order", 1) is None


def test_an_order_created_outside_the_api_is_422_not_a_second_order() -> None:
    engine = test_engine()
    engine.accept_order("provide", provide_order(1))
    reply = SupplierApi(engine, Fixed()).create_order(H, body(provide_order(1)))
    assert reply.status == 422
    assert reply.body is not None
    assert reply.body["messages"] == ["order TENANT1:1 already exists"]


def test_a_request_overtaken_inside_its_transaction_becomes_the_machines_422() -> None:
    """The order moves between the read the decision was made on and the write: the engine
    refuses the event inside the transaction, and that refusal is the answer."""
    engine = test_engine()
    order_id = engine.accept_order("provide", provide_order(1))
    engine.apply(order_id, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S"}})

    class Overtaken(Fixed):
        def decide_cancellation(self, request: Any) -> Any:
            engine.apply(order_id, Event.CANCEL, {"text": "Withdrawn", "problem_code": "OTHER"})
            return Apply("C-1")

    api = SupplierApi(engine, Overtaken())
    cancel = {"id": 9, "orderId": 1, "reasonCode": "CUSTOMER_CHANGED_MIND"}
    reply = api.cancel_order(H, body(cancel))
    assert reply.status == 422
    assert reply.body is not None
    assert "not allowed in status CANCELLED" in reply.body["messages"][0]
    answered = api.answered("TENANT1", "cancellation", 9)
    assert answered is not None
    assert answered.status_code == 422
    assert api.cancel_order(H, body(cancel)).body == reply.body  # and it is kept


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({**H, "X-Request-ID": "two\nlines"}, "header X-Request-ID"),
        ({**H, "x-conversation-id": ""}, "header X-Conversation-ID"),
    ],
)
def test_header_values_are_checked(headers: dict[str, str], says: str) -> None:
    reply = SupplierApi(test_engine(), Fixed()).create_order(headers, body(provide_order(1)))
    assert reply.status == 400
    assert reply.body is not None
    assert reply.body["messages"][0].startswith(says)


@pytest.mark.parametrize(
    ("value", "status", "says"),
    [
        ({**provide_order(1), "tenant": "A:B"}, 422, "tenant: must be 1 to 50 characters"),
        ({**provide_order(1), "tenant": "x" * 51}, 422, "tenant: must be 1 to 50 characters"),
        ({**provide_order(1), "orderType": 7}, 422, "orderType 7"),
        ({**provide_order(1), "id": True}, 422, "id: must be a whole number"),
        ({**provide_order(1), "id": 0}, 422, "id: must be a whole number"),
    ],
)
def test_create_values_are_checked(value: dict[str, Any], status: int, says: str) -> None:
    headers = {k: v for k, v in H.items() if k != "Tenant"}  # optional on a create
    reply = SupplierApi(test_engine(), Fixed()).create_order(headers, body(value))
    assert reply.status == status
    assert reply.body is not None
    assert reply.body["messages"][0].startswith(says)


def _acknowledged(**logic: Any) -> SupplierApi:
    api = SupplierApi(test_engine(), Fixed(order=Acknowledge("S-1"), **logic))
    assert api.create_order(H, body(provide_order(1))).status == 201
    return api


@pytest.mark.parametrize(
    ("amendment", "status", "says"),
    [
        ({"id": 5, "orderId": 1}, 422, "the amendment changes nothing"),
        ({"id": 5, "orderId": 1, "colour": "blue"}, 422, "order.colour: not a field"),
        ({"id": 5, "orderId": 1, "supplierOrderReference": "S-2", "notes": "x"}, 422,
         "supplierOrderReference 'S-2' is not the reference of order 1"),
        ({"id": 5, "orderId": 2, "notes": "x"}, 404, "Order 2 of tenant TENANT1 is not known"),
        ({"id": 5, "notes": "x"}, 400, "orderId: required"),
    ],
)  # fmt: skip
def test_amendments_are_checked(amendment: dict[str, Any], status: int, says: str) -> None:
    reply = _acknowledged().amend_order(H, body(amendment))
    assert reply.status == status
    assert reply.body is not None
    assert reply.body["messages"][0].startswith(says)


def test_an_amendment_emptying_a_field_removes_it() -> None:
    api = _acknowledged(request=Apply("A-1"))
    reply = api.amend_order(H, body({"id": 5, "orderId": 1, "appointmentReservationId": ""}))
    assert reply.status == 201
    assert "appointmentReservationId" not in api.engine.order("TENANT1:1").document


@pytest.mark.parametrize(
    ("cancellation", "status", "says"),
    [
        ({"id": 9, "orderId": 1}, 400, "reasonCode: required"),
        ({"id": 9, "orderId": 1, "reasonCode": "lower"}, 422, "reasonCode: must match"),
        ({"id": 9, "orderId": 1, "reasonCode": "A" * 31}, 422, "reasonCode: must match"),
        ({"id": 9, "orderId": 1, "reasonCode": "NO_AUTHORISATION"}, 422,
         "reasonCode NO_AUTHORISATION is not a reason to cancel this order"),
    ],
)  # fmt: skip
def test_cancellations_are_checked(cancellation: dict[str, Any], status: int, says: str) -> None:
    reply = _acknowledged().cancel_order(H, body(cancellation))
    assert reply.status == status
    assert reply.body is not None
    assert reply.body["messages"][0].startswith(says)


def test_point_of_no_return_statuses_are_checked() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown statuses \['LATE'\]"):
        SupplierApi(test_engine(), Fixed(), no_cancellation_in={"LATE"})


def test_a_busy_store_is_not_answered_again() -> None:
    api = _acknowledged()

    def busy(*args: Any) -> Any:
        raise StoreBusy("database busy")

    api._answer_once = busy  # type: ignore[method-assign]
    with pytest.raises(StoreBusy):
        api.amend_order(H, body({"id": 5, "orderId": 1, "notes": "x"}))


def test_memory_ledger_keeps_one_answer_per_key_and_forgets_a_failed_one() -> None:
    ledger = MemoryLedger()
    now = datetime.now(UTC)
    first = Answered("T", "order", 1, "f", "T:1", 202, None, "ACKNOWLEDGED or ORDER_REJECTED", now)
    with pytest.raises(RuntimeError), ledger.recording(first):
        raise RuntimeError("the engine refused")
    assert ledger.find("T", "order", 1) is None
    with ledger.recording(first):
        pass
    with pytest.raises(RequestAnswered), ledger.recording(first):
        pass  # pragma: no cover - never entered
    assert ledger.open_debts() == [first]
    # The order is gone (another store): nothing is owed for it, and nothing marked.
    assert owed_kcis(ledger, test_engine().store) == []
    ledger.settle(first, now)
    assert ledger.open_debts() == []


def test_a_store_of_another_kind_has_no_ledger() -> None:
    with pytest.raises(ConfigurationError, match="SqlStore or a MemoryStore"):
        ledger_for(object())  # type: ignore[arg-type]


def test_settings_build_the_authenticators(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KCI_SERVE_BEARER_TOKENS", "KCI_SERVE_BASIC_USER", "KCI_SERVE_BASIC_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    assert load_serve_settings().authenticator() is None
    monkeypatch.setenv("KCI_SERVE_BEARER_TOKENS", "a, b")
    bearer = load_serve_settings().authenticator()
    assert isinstance(bearer, BearerTokens)
    assert bearer({"authorization": "Bearer b"})
    monkeypatch.setenv("KCI_SERVE_BASIC_USER", "gw")
    monkeypatch.setenv("KCI_SERVE_BASIC_PASSWORD", "pw")
    both = load_serve_settings().authenticator()
    assert isinstance(both, AnyOf)
    assert "pw" not in repr(both) + repr(ServeSettings())
    with pytest.raises(ConfigurationError, match="user"):
        BasicAuth("a:b", "pw")
    with pytest.raises(ConfigurationError, match="token"):
        BearerTokens([""])
    with pytest.raises(ConfigurationError, match="at least one"):
        AnyOf()


def test_serve_config_checks_the_port() -> None:
    for port in (-1, 70000, True):
        with pytest.raises(ConfigurationError, match="port"):
            ServeConfig(port=port, allow_anonymous=True)  # type: ignore[arg-type]


def test_decisions_read_well() -> None:
    assert Reject("a", "b") == Reject("a", "b")
    assert Reject() != Reject("a")
    assert len({Reject("a"), Reject("a")}) == 1
    assert repr(Reject("a")) == "Reject('a',)"
    assert Reject().reasons == ("The supplier rejected the request",)
    logic = AnswerLater()
    for decide in (logic.decide_order, logic.decide_amendment, logic.decide_cancellation):
        assert decide(None) == Later()  # type: ignore[arg-type]


def test_a_201_create_that_breaks_the_contract_is_500_and_writes_nothing() -> None:
    from kci_engine.inbound import Commit

    api = SupplierApi(test_engine(), Fixed(order=Commit("S-1", "2026-12-01T08:00:00.000Z", "soon")))
    reply = api.create_order(H, body(provide_order(1)))
    assert reply.status == 500
    assert reply.body is not None
    assert "breaks the contract" in reply.body["messages"][0]
    assert api.answered("TENANT1", "order", 1) is None
    assert list(api.engine.store.order_ids()) == []


def test_commit_dates_may_be_datetimes() -> None:
    from kci_engine.inbound import Commit

    day = datetime(2026, 12, 10, 9, tzinfo=UTC)
    api = SupplierApi(test_engine(), Fixed(order=Commit("S-1", day, day)))
    reply = api.create_order(H, body(provide_order(1)))
    assert reply.status == 201
    assert reply.body is not None
    assert reply.body["committedDate"] == reply.body["targetDate"] == "2026-12-10T09:00:00.000Z"
