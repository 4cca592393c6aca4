"""Random conversations with the Supplier API: creates, amendments and cancellations (new and
retried) interleaved with the supplier's own work (paying the 202s' debts, committing,
delaying, completing, cancelling), with the decisions of the logic drawn at random.

After every step: each answer agreed with the order's machine at the time it was given (a 202
only where the chart allows the request's ``*_received`` event, a 201 only where it allows its
``*_in_201`` event, a 422 from the machine without asking the logic), a retry got the first
answer, and the KCIs never contradict an answer (the sandbox's southbound checker is the
oracle). At the end the back office pays every debt and nothing is owed any more."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from kci_engine.core.events import Event
from kci_engine.errors import EngineError
from kci_engine.inbound import (
    Acknowledge,
    Apply,
    Commit,
    Later,
    Reject,
    Reply,
    SupplierApi,
)
from kci_engine.orders import SPECS
from kci_engine.tooling.demo_supplier import answer_owed
from kci_engine.tooling.sandbox.southbound import Sent, Southbound
from kci_engine.tooling.testing import COMMIT_DATES, provide_order, test_engine

H = {"X-Request-ID": "r", "X-Conversation-ID": "c", "Tenant": "TENANT1"}
ORDERS = st.integers(1, 3)
ORDER_DECISIONS = st.sampled_from(
    [
        Acknowledge("S"),
        Commit("S", COMMIT_DATES["committedDate"], COMMIT_DATES["targetDate"]),
        Later(),
        Reject("No"),
    ]
)
REQUEST_DECISIONS = st.sampled_from([Apply("R"), Later(), Reject("No")])
RETRY = st.sampled_from([False, False, False, True])
#: Supplier events with the data they need, tried on an order whatever its status.
WORK: dict[Event, dict[str, Any]] = {
    Event.COMMIT: {"order": COMMIT_DATES},
    Event.DELAY: {"problem_code": "NETWORK_ISSUE"},
    Event.RESUME: {},
    Event.ADD_INFORMATION: {"service_characteristics": {"SERVICE_ID": "SVC-1"}},
    Event.COMPLETE: {},
    Event.CANCEL: {"problem_code": "OTHER", "text": "Withdrawn"},
    Event.REQUEST_INFORMATION: {"problem_code": "INFORMATION_REQUIRED", "text": "Which door?"},
}


class Logic:
    def __init__(self) -> None:
        self.next: Any = Later()
        self.asked = 0

    def decide_order(self, request: Any) -> Any:
        self.asked += 1
        return self.next

    def decide_amendment(self, request: Any) -> Any:
        self.asked += 1
        return self.next

    def decide_cancellation(self, request: Any) -> Any:
        self.asked += 1
        return self.next


class Conversations(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = test_engine()
        self.logic = Logic()
        self.api = SupplierApi(self.engine, self.logic)
        self.sent: list[Sent] = []
        self.answers: dict[tuple[str, int], tuple[dict[str, Any], Reply]] = {}
        self.checker = Southbound("http://127.0.0.1:1", orders=1)
        self.ids = 0

    def _status(self, gid: int) -> str | None:
        try:
            return self.engine.order(f"TENANT1:{gid}").status
        except EngineError:
            return None

    def _send(self, kind: str, body: dict[str, Any], gid: int, decision: Any) -> None:
        key = (kind, body["id"])
        before = self._status(gid)
        asked = self.logic.asked
        self.logic.next = decision
        call = {
            "order": self.api.create_order,
            "amendment": self.api.amend_order,
            "cancellation": self.api.cancel_order,
        }[kind]
        reply = call(H, json.dumps(body).encode())
        if key in self.answers:
            first_body, first = self.answers[key]
            if first_body == body:
                assert (reply.status, reply.body) == (first.status, first.body), "a retry differs"
            else:
                assert reply.status == 422
            return
        if reply.status in (400, 404):
            return  # not kept: they follow from the request alone (decisions I3)
        self.answers[key] = (body, reply)
        self.sent.append(Sent(kind, body["id"], gid, reply.status, reply.body))
        if kind == "order" or before is None:
            return
        spec = SPECS[self.engine.order(f"TENANT1:{gid}").order_type]
        allowed = spec.allowed(before)
        received = Event.AMENDMENT_RECEIVED if kind == "amendment" else Event.CANCELLATION_RECEIVED
        at_once = Event.AMENDED_IN_201 if kind == "amendment" else Event.CANCELLED_IN_201
        if reply.status == 202:
            assert received in allowed, f"202 to a {kind} in {before}"
        if reply.status == 201:
            assert at_once in allowed, f"201 to a {kind} in {before}"
        if received not in allowed and at_once not in allowed:
            assert reply.status == 422, f"{kind} in {before} answered {reply.status}"
            assert self.logic.asked == asked, "the logic was asked where the machine said no"

    @rule(gid=ORDERS, decision=ORDER_DECISIONS)
    def create(self, gid: int, decision: Any) -> None:
        self._send("order", provide_order(gid), gid, decision)

    @rule(gid=ORDERS, decision=REQUEST_DECISIONS, retry=RETRY)
    def amend(self, gid: int, decision: Any, retry: bool) -> None:
        if not retry:
            self.ids += 1
        body = {"id": 100 + self.ids, "orderId": gid, "notes": f"Note {self.ids}"}
        self._send("amendment", body, gid, decision)

    @rule(gid=ORDERS, decision=REQUEST_DECISIONS, retry=RETRY)
    def cancel(self, gid: int, decision: Any, retry: bool) -> None:
        if not retry:
            self.ids += 1
        body = {"id": 200 + self.ids, "orderId": gid, "reasonCode": "CUSTOMER_CHANGED_MIND"}
        self._send("cancellation", body, gid, decision)

    @rule()
    def back_office(self) -> None:
        answer_owed(self.api)

    @rule(gid=ORDERS, final=st.booleans())
    def finish(self, gid: int, final: bool) -> None:
        """Take an order to the end of its life (completed or withdrawn), where it can."""
        for event in (
            (Event.COMMIT, Event.ADD_INFORMATION, Event.COMPLETE) if final else (Event.CANCEL,)
        ):
            self.supplier_work(gid, event)

    @rule(gid=ORDERS, event=st.sampled_from(sorted(WORK)))
    def supplier_work(self, gid: int, event: Event) -> None:
        with contextlib.suppress(EngineError):  # not allowed now, or no such order
            self.engine.apply(f"TENANT1:{gid}", event, WORK[event])

    def _timeline(self, key: str) -> list[dict[str, Any]]:
        try:
            return [kci.body for kci in self.engine.kcis(key)]
        except EngineError:
            return []

    @invariant()
    def kcis_never_contradict_an_answer(self) -> None:
        problems, _ = self.checker.check(self.sent, self._timeline)
        assert problems == []

    def teardown(self) -> None:
        while answer_owed(self.api):
            pass
        problems, owed = self.checker.check(self.sent, self._timeline)
        assert (problems, owed) == ([], [])
        assert self.api.owed() == []


Conversations.TestCase.settings = settings(
    derandomize=True,
    max_examples=120,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestConversations = Conversations.TestCase
