"""Random lifecycles: event sequences, valid and invalid, on orders of every type, with the
invariants every lifecycle keeps checked after every step.

The invariants: each order's KCIs are numbered 1..n without gaps and never go back in time; a
refused event sends nothing and changes nothing; the problemCode rules hold on every KCI; a provide
order is never COMPLETED without SERVICE_ID (a modify or cease without serviceId); a final status
refuses every event and never sends again. Seeds are fixed (``derandomize``) and sizes bounded, so
the test is repeatable and takes a few seconds.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from kci_engine.core.codes import OrderType, ProblemCode, ReasonCode
from kci_engine.core.contract import PROBLEM_CODES, REASONS, Need
from kci_engine.core.events import Event, parse_event_data
from kci_engine.core.records import Kci
from kci_engine.errors import EventNotAllowed, InvalidEventData, RefusedEvent
from kci_engine.orders import SPECS
from kci_engine.tooling.scenarios.generate import State, choose, valid_data
from kci_engine.tooling.testing import COMMIT_DATES, SAMPLE_ORDERS, assert_valid_stream, test_engine

U = OrderType.UNSOLICITED_CEASE
MAX_ORDERS = 3
SHAPES = ("valid", "valid", "valid", "empty", "drop one field", "another problem code")


def check_kci(order_type: OrderType, kci: Kci) -> None:
    """The one-KCI invariants: problemCode rules, and what a completion must carry."""
    body = kci.body
    code = body.get("problemCode")
    reason = kci.reason_code
    rule = REASONS[reason]
    if rule.problem_code is Need.REQUIRED:
        assert code is not None, f"{reason} without problemCode"
    if rule.problem_code is Need.FORBIDDEN:
        assert code is None, f"problemCode on {reason}"
    if code == ProblemCode.OTHER:
        assert body.get("text") or body.get("supplierCodes"), "OTHER without text"
    if code is not None and rule.situation is not None:
        allowed = PROBLEM_CODES[ProblemCode(code)]
        assert allowed is None or rule.situation in allowed, f"{code} on {reason}"
    spec = SPECS[order_type]
    order = body[spec.kci_property]
    assert order["status"] == kci.status
    assert order["status"] != "SENT_TO_SUPPLIER", "a KCI carrying a status only the gateway sets"
    if reason is ReasonCode.COMPLETED and order_type is OrderType.PROVIDE:
        assert spec.characteristic(order, "SERVICE_ID"), "COMPLETED without SERVICE_ID"
    elif reason is ReasonCode.COMPLETED and order_type is not U:
        assert order.get("serviceId"), "COMPLETED without serviceId"


def _parses(payload: dict[str, Any]) -> bool:
    try:
        parse_event_data(payload)
    except InvalidEventData:
        return False
    return True


class Lifecycles(RuleBasedStateMachine):
    """Orders of every type, driven by random events with valid, missing or wrong data."""

    orders = Bundle("orders")

    def __init__(self) -> None:
        super().__init__()
        self.engine = test_engine()
        self.types: dict[str, OrderType] = {}
        self.final_kcis: dict[str, int] = {}
        self.count = 0
        self.touched: str | None = None

    @precondition(lambda self: len(self.types) < MAX_ORDERS)
    @rule(
        target=orders,
        order_type=st.sampled_from(list(OrderType)),
        answer=st.sampled_from([None, None, "ACKNOWLEDGED", "IN_PROGRESS"]),
    )
    def new_order(self, order_type: OrderType, answer: str | None) -> str:
        self.count += 1
        dates = COMMIT_DATES if answer == "IN_PROGRESS" else {}
        if order_type is U:
            order = SAMPLE_ORDERS[U](f"UC-{self.count}", status=answer or "ACKNOWLEDGED", **dates)
            [created] = self.engine.create_unsolicited_cease(order)
            order_id = created.order_id
        else:
            reference = {"supplierOrderReference": f"SUP-{self.count}"} if answer else {}
            order = SAMPLE_ORDERS[order_type](self.count, **reference, **dates)
            order_id = self.engine.accept_order(order_type, order, answered_with=answer)
        self.types[order_id] = order_type
        self.touched = order_id
        return order_id

    @rule(order_id=orders, event=st.sampled_from(list(Event)), data=st.data())
    def any_event(self, order_id: str, event: Event, data: st.DataObject) -> None:
        self._apply(order_id, event, data)

    @rule(order_id=orders, data=st.data())
    def an_allowed_event(self, order_id: str, data: st.DataObject) -> None:
        allowed = self.engine.allowed_events(order_id)
        if allowed:
            self._apply(order_id, data.draw(st.sampled_from(allowed)), data)

    @rule(order_id=orders, data=st.data())
    def another_allowed_event(self, order_id: str, data: st.DataObject) -> None:
        """Twice the weight for allowed events, so lifecycles get deep enough to finish."""
        self.an_allowed_event(order_id, data)

    @rule(order_id=orders, data=st.data())
    def complete(self, order_id: str, data: st.DataObject) -> None:
        """Completion is where SERVICE_ID matters: try it more often than chance would."""
        self._apply(order_id, Event.COMPLETE, data)

    def _apply(self, order_id: str, event: Event, data: st.DataObject) -> None:
        order_type = self.types[order_id]
        self.touched = order_id
        payload = self._payload(order_id, order_type, event, data)
        before = self.engine.order(order_id)
        kcis_before = self.engine.kcis(order_id)
        try:
            produced = self.engine.apply(order_id, event, payload)
        except RefusedEvent as exc:
            refused: RefusedEvent | None = exc
        else:
            refused = None
        if refused is not None:
            after = self.engine.order(order_id)
            assert self.engine.kcis(order_id) == kcis_before, "a refused event sent a KCI"
            assert (after.status, after.document, after.next_sequence, after.version) == (
                before.status,
                before.document,
                before.next_sequence,
                before.version,
            ), "a refused event changed the order"
            if before.status in SPECS[order_type].chart.finals:  # not allowed, unless malformed
                expected = EventNotAllowed if _parses(payload) else InvalidEventData
                assert type(refused) is expected, refused
            return
        assert before.status not in SPECS[order_type].chart.finals, f"{event} in {before.status}"
        assert [k.sequence_number for k in produced] == list(
            range(before.next_sequence, before.next_sequence + len(produced))
        )

    def _payload(
        self, order_id: str, order_type: OrderType, event: Event, data: st.DataObject
    ) -> dict[str, Any]:
        record = self.engine.order(order_id)
        state = State(
            record.status,
            stack=tuple(record.return_stack),
            amendments=tuple(a.id for a in record.amendments if a.id is not None),
            cancellation=record.cancellation.id if record.cancellation else None,
            count=len(self.engine.events(order_id)) + self.count * 100,
        )
        if event is Event.CREATE:
            return {}
        resolves = data.draw(st.booleans())
        spec = SPECS[order_type]
        edge = choose(order_type, state, event, resolves) or next(
            (e for e in spec.edges if e.step.event is event), None
        )
        if edge is None:
            return {}
        payload = valid_data(spec, edge, state, resolves, record.document)
        shape = data.draw(st.sampled_from(SHAPES))
        if shape == "empty":
            return {}
        if shape == "drop one field" and payload:
            payload.pop(data.draw(st.sampled_from(sorted(payload))))
        elif shape == "another problem code":
            payload["problem_code"] = data.draw(st.sampled_from(list(ProblemCode)))
        return payload

    @invariant()
    def every_stream_keeps_the_contract(self) -> None:
        """Checked on the order the last step touched: no other order changed."""
        if self.touched is None:
            return
        order_id, order_type = self.touched, self.types[self.touched]
        kcis = self.engine.kcis(order_id)
        assert_valid_stream(kcis)
        for kci in kcis:
            check_kci(order_type, kci)
        if self.engine.is_final(order_id):
            frozen = self.final_kcis.setdefault(order_id, len(kcis))
            assert len(kcis) == frozen, "a KCI after the final status"
            assert self.engine.allowed_events(order_id) == []


SETTINGS = settings(
    derandomize=True,
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
Lifecycles.TestCase.settings = SETTINGS
TestLifecycles = Lifecycles.TestCase


def test_the_invariants_catch_a_completion_without_service_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the completion rule taken off the order types, the random walk finds a COMPLETED
    without SERVICE_ID (or serviceId)."""
    for spec in SPECS.values():
        monkeypatch.setattr(spec, "completion", None)
    # More examples than the invariant test runs: it stops at the first broken one.
    quick = settings(SETTINGS, max_examples=400, phases=[Phase.generate], print_blob=False)
    with pytest.raises(AssertionError, match=r"COMPLETED without (SERVICE_ID|serviceId)"):
        run_state_machine_as_test(Lifecycles, settings=quick)
