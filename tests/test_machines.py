"""Every transition of every chart, driven through the engine; and the chart structure checks.

The edge test is parametrized over ``SPECS[t].edges``, so a transition added to a chart is
driven automatically; if no known path leads to its source (with the return stack its condition
needs), the test fails and says so.
"""

from __future__ import annotations

from typing import Any

import pytest
from kci_engine._facade import Engine
from kci_engine.core._lifecycle import Firing, return_target
from kci_engine.core.chart import (
    NEW,
    RETURN,
    RETURN_RESOLVED,
    Chart,
    Edge,
    State,
    Step,
    When,
    check_structure,
    expand,
    final,
    waiting,
)
from kci_engine.core.codes import OrderStatus, OrderType, ReasonCode
from kci_engine.core.events import Event, EventData
from kci_engine.core.records import OrderRecord
from kci_engine.errors import ChartError, EventNotAllowed
from kci_engine.orders import SPECS
from kci_engine.tooling.testing import (
    COMMIT_DATES,
    EPOCH,
    SAMPLE_ORDERS,
    assert_valid_stream,
    sequential_ids,
    unsolicited_cease_order,
)

S = OrderStatus
E = Event
P, C, M, U = OrderType.PROVIDE, OrderType.CEASE, OrderType.MODIFY, OrderType.UNSOLICITED_CEASE
FIRST_AMENDMENT = 501

#: How to reach each status of a tenant-placed order from SENT_TO_SUPPLIER; each waiting status
#: is entered from IN_PROGRESS, so its return stack is [IN_PROGRESS].
TENANT_REACH: dict[str, tuple[Event, ...]] = {
    S.SENT_TO_SUPPLIER: (),
    S.ACKNOWLEDGED: (E.ACKNOWLEDGE,),
    S.IN_PROGRESS: (E.ACKNOWLEDGE, E.COMMIT),
    S.HELD: (E.ACKNOWLEDGE, E.COMMIT, E.DELAY),
    S.PENDING: (E.ACKNOWLEDGE, E.COMMIT, E.REQUEST_INFORMATION),
    S.PENDING_AMENDMENT: (E.ACKNOWLEDGE, E.COMMIT, E.AMENDMENT_RECEIVED),
    S.PENDING_CANCELLATION: (E.ACKNOWLEDGE, E.COMMIT, E.CANCELLATION_RECEIVED),
}
#: The same for an unsolicited cease, from its creation as ACKNOWLEDGED.
UNSOLICITED_REACH: dict[str, tuple[Event, ...]] = {
    S.ACKNOWLEDGED: (),
    S.IN_PROGRESS: (E.COMMIT,),
    S.HELD: (E.COMMIT, E.DELAY),
    S.PENDING_CANCELLATION: (E.COMMIT, E.CANCELLATION_RECEIVED),
}
#: The event that enters each waiting status (and pushes the status it came from).
ENTER: dict[str, Event] = {
    S.HELD: E.DELAY,
    S.PENDING: E.REQUEST_INFORMATION,
    S.PENDING_AMENDMENT: E.AMENDMENT_RECEIVED,
    S.PENDING_CANCELLATION: E.CANCELLATION_RECEIVED,
}
NEW_APPOINTMENT = {
    "appointmentTimeslot": {
        "timeslotStartDateTime": "2026-12-03T08:00:00.000Z",
        "timeslotEndDateTime": "2026-12-03T13:00:00.000Z",
    },
    "appointmentSupplierReference": "APPT-2",
    "targetDate": "2026-12-03T13:00:00.000Z",
}
REFERENCE = {"supplierOrderReference": "SUP-1"}


def event_data(order_type: OrderType, event: Event, amendment: int) -> dict[str, Any]:
    """Valid data for ``event`` on an order of ``order_type`` in any status that allows it.
    ``amendment`` is the id of the amendment an amendment event names."""
    characteristics = order_type in (P, M)
    table: dict[Event, dict[str, Any]] = {
        E.ACKNOWLEDGE: {"order": REFERENCE},
        E.ACKNOWLEDGED_IN_201: {"order": REFERENCE},
        E.COMMITTED_IN_201: {"order": {**REFERENCE, **COMMIT_DATES}},
        E.REJECT: {"problem_code": "INVALID_REQUEST", "text": "Not on our network"},
        E.COMMIT: {"order": COMMIT_DATES},
        E.DELAY: {"problem_code": "NETWORK_ISSUE"},
        E.RESUME: {},
        E.REQUEST_INFORMATION: {"problem_code": "INFORMATION_REQUIRED", "text": "Need a floor"},
        E.REQUEST_REAPPOINTMENT: {"problem_code": "ACCESS_ISSUE"},
        E.REQUEST_RESUBMISSION: {"problem_code": "INVALID_REQUEST", "text": "Resubmit"},
        E.REAPPOINTED: {"order": NEW_APPOINTMENT},
        E.UPDATE: {"order": {"notes": "Engineer booked"}},
        E.ADD_INFORMATION: (
            {"service_characteristics": {"ONT_REFERENCE": "ONT-7"}}
            if characteristics
            else {"order": {"hazards": "Dog on site"}}
        ),
        E.WARN: {"problem_code": "NETWORK_ISSUE", "text": "Node maintenance"},
        E.AMENDMENT_RECEIVED: {"amendment_id": amendment},
        E.AMENDED_IN_201: {"order": {"notes": "Amended at once"}},
        E.ACCEPT_AMENDMENT: {"amendment_id": amendment, "order": {"notes": "Amended"}},
        E.REJECT_AMENDMENT: {
            "amendment_id": amendment,
            "problem_code": "INVALID_REQUEST",
            "text": "Cannot amend",
        },
        E.CANCELLATION_RECEIVED: {
            "cancellation_id": 901,
            "cancellation_reason": (
                "NO_AUTHORISATION" if order_type is U else "CUSTOMER_CHANGED_MIND"
            ),
        },
        E.CANCELLED_IN_201: {
            "cancellation_id": 902,
            "cancellation_reason": (
                "NO_AUTHORISATION" if order_type is U else "CUSTOMER_CHANGED_MIND"
            ),
        },
        E.ACCEPT_CANCELLATION: {"cancellation_id": 901, "problem_code": "CUSTOMER_CHANGED_MIND"},
        E.REJECT_CANCELLATION: {
            "cancellation_id": 901,
            "problem_code": "OTHER",
            "text": "Past the point of no return",
        },
        E.CANCEL: {"problem_code": "CAPACITY_ISSUE", "text": "No fibre route"},
        E.COMPLETE: (
            {"service_characteristics": {"SERVICE_ID": "SVC-NEW"}} if order_type is P else {}
        ),
    }
    return table[event]


def reach(order_type: OrderType) -> dict[str, tuple[Event, ...]]:
    return UNSOLICITED_REACH if order_type is U else TENANT_REACH


def path_to(order_type: OrderType, edge: Edge) -> tuple[tuple[Event, ...], dict[str, Any]]:
    """Events that bring an order to ``edge.source`` with the return stack the edge's condition
    asks for, and any extra data the edge's own event needs."""
    label = edge.condition_label
    paths = reach(order_type)
    if label is None:
        return paths[edge.source], {}
    if label == "other amendments in flight":
        return (*paths[edge.source], E.AMENDMENT_RECEIVED), {}
    if label.startswith("was "):
        was = label.removeprefix("was ")
        enter = ENTER[edge.source]
        if enter in SPECS[order_type].allowed(was):
            path = (*paths[was], enter)
            resolved = was != S.PENDING
        else:  # the status is reached back through PENDING, whose request the answer resolved
            path = (*paths[was], ENTER[S.PENDING], enter)
            resolved = True
        extra: dict[str, Any] = (
            {"resolves_request": resolved} if edge.step.event is E.ACCEPT_AMENDMENT else {}
        )
        if was == S.SENT_TO_SUPPLIER:  # leaving it acknowledges the order
            extra["order"] = REFERENCE
        return path, extra
    pytest.fail(f"no known path to {edge.source} for condition {label!r} of {edge}")


def start(engine: Engine, order_type: OrderType, status: str = S.ACKNOWLEDGED) -> str:
    if order_type is U:
        dates = COMMIT_DATES if status == S.IN_PROGRESS else {}
        engine.create_unsolicited_cease(unsolicited_cease_order(status=status, **dates))
        return "UC-4001"
    return engine.accept_order(order_type, SAMPLE_ORDERS[order_type]())


def drive(engine: Engine, order_type: OrderType, order_id: str, events: tuple[Event, ...]) -> None:
    amendments = 0
    for event in events:
        if event is E.AMENDMENT_RECEIVED:
            amendments += 1
        engine.apply(order_id, event, event_data(order_type, event, 500 + amendments))


def edge_id(order_type: OrderType, edge: Edge) -> str:
    condition = f"[{edge.condition_label}]" if edge.condition_label else ""
    return f"{order_type.value}:{edge.step.event.value}:{edge.source}->{edge.dest}{condition}"


ALL_EDGES = [
    pytest.param(order_type, edge, id=edge_id(order_type, edge))
    for order_type, spec in SPECS.items()
    for edge in spec.edges
]


@pytest.mark.parametrize(("order_type", "edge"), ALL_EDGES)
def test_every_edge_moves_to_its_destination_and_sends_its_reason_code(
    engine: Engine, order_type: OrderType, edge: Edge
) -> None:
    if edge.step.event is E.CREATE:
        was = (edge.condition_label or "").removeprefix("order.status = ")
        order_id = "UC-4001"
        kcis = engine.create_unsolicited_cease(
            unsolicited_cease_order(status=was, **(COMMIT_DATES if was == S.IN_PROGRESS else {}))
        )
    else:
        events, extra = path_to(order_type, edge)
        order_id = start(engine, order_type)
        drive(engine, order_type, order_id, events)
        assert engine.order(order_id).status == edge.source
        amendment = FIRST_AMENDMENT  # the one an answer names; a new one gets the next id
        if edge.step.event is E.AMENDMENT_RECEIVED:
            amendment += events.count(E.AMENDMENT_RECEIVED)
        data = {**event_data(order_type, edge.step.event, amendment), **extra}
        kcis = engine.apply(order_id, edge.step.event, data)

    record = engine.order(order_id)
    assert record.status == edge.dest
    if edge.step.reason is None:
        assert kcis == []
    else:
        [kci] = kcis
        assert kci.reason_code is edge.step.reason
        assert kci.status == edge.dest
        assert kci.body[SPECS[order_type].kci_property]["status"] == edge.dest
        assert kci.event == edge.step.event.value
    assert_valid_stream(engine.kcis(order_id))
    dest = SPECS[order_type].chart.state(edge.dest)
    assert dest is not None
    if dest.final:
        assert (record.return_stack, record.amendments, record.cancellation) == ([], [], None)
    assert bool(record.return_stack) is dest.waiting  # the stack is empty exactly when not waiting


def test_the_edge_parametrization_covers_every_step_of_every_chart() -> None:
    for order_type, spec in SPECS.items():
        steps = {edge.step for edge in spec.edges}
        assert steps == set(spec.chart.steps), order_type


@pytest.mark.parametrize("order_type", list(OrderType))
def test_every_non_final_state_allows_an_event_and_no_final_state_does(
    order_type: OrderType,
) -> None:
    spec = SPECS[order_type]
    for state in spec.chart.states:
        assert bool(spec.allowed(state.name)) is (not state.final), state


@pytest.mark.parametrize("order_type", list(OrderType))
def test_finality_and_waiting_are_marked_on_the_charts(order_type: OrderType) -> None:
    chart = SPECS[order_type].chart
    assert chart.finals <= {S.REJECTED, S.CANCELLED, S.COMPLETED}
    assert {S.CANCELLED, S.COMPLETED} <= chart.finals
    assert chart.waits <= {S.HELD, S.PENDING, S.PENDING_AMENDMENT, S.PENDING_CANCELLATION}
    assert {s.name for s in chart.states if s.resolvable} <= {S.PENDING}


def test_allowed_is_empty_for_a_status_the_chart_does_not_know() -> None:
    assert SPECS[P].allowed("NO_SUCH_STATUS") == frozenset()
    assert SPECS[U].allowed(S.PENDING) == frozenset()


def test_internal_edges_keep_the_status_and_others_move_it() -> None:
    for spec in SPECS.values():
        for edge in spec.edges:
            assert edge.internal is (edge.step.dest is None)
            if edge.internal:
                assert edge.dest == edge.source


# --- The charts against lifecycles.md -----------------------------------------------------------

_NON_FINAL = {
    S.SENT_TO_SUPPLIER,
    S.ACKNOWLEDGED,
    S.IN_PROGRESS,
    S.HELD,
    S.PENDING,
    S.PENDING_AMENDMENT,
    S.PENDING_CANCELLATION,
}
#: lifecycles.md's "from" column for the tenant-placed orders. Where the engine reads "any
#: non-final" as "any non-final except PENDING_CANCELLATION" (one cancellation at a time, and a
#: CANCELLED KCI while a tenant's request is in flight must answer it), or except
#: SENT_TO_SUPPLIER (a status only the gateway sets, which no KCI may carry: decisions L19), the
#: set says so; ``commit`` also ends a delay that began before commitment (L18).
TENANT_SOURCES: dict[Event, set[str]] = {
    E.ACKNOWLEDGE: {S.SENT_TO_SUPPLIER},
    E.ACKNOWLEDGED_IN_201: {S.SENT_TO_SUPPLIER},
    E.COMMITTED_IN_201: {S.SENT_TO_SUPPLIER},
    E.REJECT: {S.SENT_TO_SUPPLIER},
    E.COMMIT: {S.ACKNOWLEDGED, S.HELD},
    E.DELAY: {S.ACKNOWLEDGED, S.IN_PROGRESS},
    E.RESUME: {S.HELD},
    E.REQUEST_INFORMATION: {S.ACKNOWLEDGED, S.IN_PROGRESS, S.HELD},
    E.REQUEST_REAPPOINTMENT: {S.ACKNOWLEDGED, S.IN_PROGRESS, S.HELD},
    E.REQUEST_RESUBMISSION: {S.ACKNOWLEDGED, S.IN_PROGRESS, S.PENDING},
    E.REAPPOINTED: {S.ACKNOWLEDGED, S.IN_PROGRESS, S.HELD, S.PENDING},
    E.UPDATE: _NON_FINAL - {S.SENT_TO_SUPPLIER},
    E.ADD_INFORMATION: _NON_FINAL - {S.SENT_TO_SUPPLIER},
    E.WARN: _NON_FINAL - {S.SENT_TO_SUPPLIER},
    E.AMENDMENT_RECEIVED: {S.ACKNOWLEDGED, S.IN_PROGRESS, S.PENDING, S.PENDING_AMENDMENT},
    E.AMENDED_IN_201: {S.ACKNOWLEDGED, S.IN_PROGRESS, S.PENDING_AMENDMENT},
    E.ACCEPT_AMENDMENT: {S.PENDING_AMENDMENT},
    E.REJECT_AMENDMENT: {S.PENDING_AMENDMENT},
    E.CANCELLATION_RECEIVED: _NON_FINAL - {S.PENDING_CANCELLATION},
    E.CANCELLED_IN_201: _NON_FINAL - {S.PENDING_CANCELLATION},
    E.ACCEPT_CANCELLATION: {S.PENDING_CANCELLATION},
    E.REJECT_CANCELLATION: {S.PENDING_CANCELLATION},
    E.CANCEL: _NON_FINAL - {S.PENDING_CANCELLATION},
    E.COMPLETE: {S.IN_PROGRESS},
}
#: Fixed destinations and reason codes from the same table (events that return are checked by
#: the edge test above).
TENANT_MOVES: dict[Event, tuple[str | None, ReasonCode | None]] = {
    E.ACKNOWLEDGE: (S.ACKNOWLEDGED, ReasonCode.ACKNOWLEDGED),
    E.ACKNOWLEDGED_IN_201: (S.ACKNOWLEDGED, None),
    E.COMMITTED_IN_201: (S.IN_PROGRESS, None),
    E.REJECT: (S.REJECTED, ReasonCode.ORDER_REJECTED),
    E.COMMIT: (S.IN_PROGRESS, ReasonCode.COMMITTED),
    E.DELAY: (S.HELD, ReasonCode.DELAY),
    E.REQUEST_INFORMATION: (S.PENDING, ReasonCode.INFORMATION_REQUIRED),
    E.REQUEST_REAPPOINTMENT: (S.PENDING, ReasonCode.REAPPOINT),
    E.REQUEST_RESUBMISSION: (S.PENDING, ReasonCode.RESUBMIT),
    E.UPDATE: (None, ReasonCode.UPDATE),
    E.ADD_INFORMATION: (None, ReasonCode.ADDITIONAL),
    E.WARN: (None, ReasonCode.WARNING),
    E.AMENDMENT_RECEIVED: (S.PENDING_AMENDMENT, None),
    E.AMENDED_IN_201: (None, None),
    E.CANCELLATION_RECEIVED: (S.PENDING_CANCELLATION, None),
    E.CANCELLED_IN_201: (S.CANCELLED, None),
    E.ACCEPT_CANCELLATION: (S.CANCELLED, ReasonCode.CANCELLED),
    E.CANCEL: (S.CANCELLED, ReasonCode.CANCELLED),
    E.COMPLETE: (S.COMPLETED, ReasonCode.COMPLETED),
}
_APPOINTMENT_EVENTS = {E.REQUEST_REAPPOINTMENT, E.REAPPOINTED}


def _sources(order_type: OrderType) -> dict[Event, set[str]]:
    found: dict[Event, set[str]] = {}
    for edge in SPECS[order_type].edges:
        found.setdefault(edge.step.event, set()).add(edge.source)
    return found


@pytest.mark.parametrize("order_type", [P, M, C])
def test_tenant_charts_allow_each_event_where_lifecycles_md_says(order_type: OrderType) -> None:
    expected = {
        event: sources
        for event, sources in TENANT_SOURCES.items()
        if order_type is not C or event not in _APPOINTMENT_EVENTS
    }
    assert _sources(order_type) == expected


@pytest.mark.parametrize("order_type", [P, M, C])
def test_tenant_charts_move_and_report_as_lifecycles_md_says(order_type: OrderType) -> None:
    for edge in SPECS[order_type].edges:
        if edge.step.event not in TENANT_MOVES or edge.condition_label is not None:
            continue
        dest, reason = TENANT_MOVES[edge.step.event]
        assert (edge.dest, edge.step.reason) == (dest or edge.source, reason), edge


def test_unsolicited_cease_chart_has_no_amendments_and_creates_with_created() -> None:
    sources = _sources(U)
    assert not {E.AMENDMENT_RECEIVED, E.ACCEPT_AMENDMENT, E.REJECT_AMENDMENT} & sources.keys()
    assert not {E.ACKNOWLEDGE, E.REJECT, E.REQUEST_INFORMATION, E.REAPPOINTED} & sources.keys()
    assert sources[E.CREATE] == {NEW}
    assert sources[E.COMMIT] == {S.ACKNOWLEDGED, S.HELD}
    assert sources[E.COMPLETE] == {S.IN_PROGRESS}
    creates = {e.dest: e.step.reason for e in SPECS[U].edges if e.step.event is E.CREATE}
    assert creates == {S.ACKNOWLEDGED: ReasonCode.CREATED, S.IN_PROGRESS: ReasonCode.CREATED}


# --- Returns and the stack ----------------------------------------------------------------------

_RESUME = Step(E.RESUME, (S.HELD,), RETURN, ReasonCode.RESUMED)
_ACCEPT = Step(E.ACCEPT_AMENDMENT, (S.PENDING_AMENDMENT,), RETURN_RESOLVED, ReasonCode.AMENDED)
_CHART = SPECS[P].chart


@pytest.mark.parametrize(
    ("step", "stack", "resolves", "expected"),
    [
        (_RESUME, [], True, ("", 0)),
        (_RESUME, [S.IN_PROGRESS], True, (S.IN_PROGRESS, 1)),
        (_RESUME, [S.ACKNOWLEDGED, S.PENDING], True, (S.PENDING, 1)),
        (_ACCEPT, [S.IN_PROGRESS, S.PENDING], True, (S.IN_PROGRESS, 2)),
        (_ACCEPT, [S.IN_PROGRESS, S.PENDING], False, (S.PENDING, 1)),
        (_ACCEPT, [S.IN_PROGRESS, S.HELD, S.PENDING], True, (S.HELD, 2)),
        (_ACCEPT, [S.PENDING], True, (S.PENDING, 1)),
        (_ACCEPT, [S.ACKNOWLEDGED], True, (S.ACKNOWLEDGED, 1)),
    ],
)
def test_return_target_pops_one_status_or_two_when_the_answer_resolves_pending(
    step: Step, stack: list[str], resolves: bool, expected: tuple[str, int]
) -> None:
    assert return_target(_CHART, step, stack, resolves) == expected


def test_an_event_no_edge_takes_for_this_history_is_not_allowed_saying_why() -> None:
    record = OrderRecord("T:1", P, S.HELD, {"id": 1, "tenant": "T", "status": "HELD"})
    firing = Firing(SPECS[P], record, E.RESUME, EventData(), EPOCH, sequential_ids())
    with pytest.raises(EventNotAllowed) as info:
        SPECS[P].machine.fire(firing)
    assert "for this order: it applies when was IN_PROGRESS or was ACKNOWLEDGED" in str(info.value)
    assert "and it is not" in str(info.value)
    assert "resume" not in info.value.allowed
    assert (info.value.order_id, info.value.status, info.value.event) == ("T:1", "HELD", "resume")
    assert (record.status, firing.kcis) == (S.HELD, [])


def test_commit_out_of_a_delay_that_began_after_commitment_is_not_allowed(engine: Engine) -> None:
    order_id = start(engine, P)
    drive(engine, P, order_id, (E.ACKNOWLEDGE, E.COMMIT, E.DELAY))
    with pytest.raises(EventNotAllowed) as info:
        engine.apply(order_id, E.COMMIT, {"order": COMMIT_DATES})
    assert "applies when was ACKNOWLEDGED, and this order was IN_PROGRESS" in str(info.value)
    assert engine.order(order_id).status == S.HELD


# --- Structure checks ---------------------------------------------------------------------------

_DONE = Step(E.COMPLETE, (S.IN_PROGRESS,), S.COMPLETED, ReasonCode.COMPLETED)
_START = Step(E.COMMIT, (S.ACKNOWLEDGED,), S.IN_PROGRESS, ReasonCode.COMMITTED)
_BASIC = (State(S.ACKNOWLEDGED), State(S.IN_PROGRESS), final(S.COMPLETED))


def chart(states: tuple[State, ...], *steps: Step, initial: str = S.ACKNOWLEDGED) -> Chart:
    return Chart(OrderType.CEASE, initial, states, steps)


def build(candidate: Chart) -> tuple[Edge, ...]:
    edges = tuple(expand(candidate))
    check_structure(candidate, edges)
    return edges


def test_a_well_formed_chart_builds() -> None:
    edges = build(chart(_BASIC, _START, _DONE))
    assert [(e.source, e.dest) for e in edges] == [
        (S.ACKNOWLEDGED, S.IN_PROGRESS),
        (S.IN_PROGRESS, S.COMPLETED),
    ]


_HELD = (*_BASIC, waiting(S.HELD))
_SYNC_COMMIT = Step(
    E.COMMITTED_IN_201, (S.ACKNOWLEDGED,), S.IN_PROGRESS, None, told_by_gateway=True
)


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        pytest.param(
            chart(_BASIC, _START, _DONE, initial=S.HELD),
            "cease: initial state HELD is not one of its states",
            id="missing-initial",
        ),
        pytest.param(
            chart((State(S.ACKNOWLEDGED), final(S.COMPLETED)), _START, _DONE),
            "uses undeclared state IN_PROGRESS",
            id="undeclared-state",
        ),
        pytest.param(
            chart(_BASIC, _START, _DONE, Step(E.UPDATE, (S.COMPLETED,), None, ReasonCode.UPDATE)),
            "final state COMPLETED has an exit (update)",
            id="exit-from-final",
        ),
        pytest.param(
            chart(_HELD, _START, _DONE),
            "unreachable states",
            id="unreachable",
        ),
        pytest.param(
            chart(
                (State(S.ACKNOWLEDGED), State(S.IN_PROGRESS)),
                _START,
                Step(E.DELAY, (S.IN_PROGRESS,), S.ACKNOWLEDGED, ReasonCode.UPDATE),
            ),
            "cease: no final state",
            id="no-final",
        ),
        pytest.param(
            chart(_HELD, _START, _DONE, Step(E.DELAY, (S.ACKNOWLEDGED,), S.HELD, ReasonCode.DELAY)),
            "states that can never reach a final state",
            id="trap",
        ),
        pytest.param(
            chart(_HELD, _START, _DONE, Step(E.RESUME, (S.IN_PROGRESS,), RETURN, None)),
            "returns from IN_PROGRESS, which is not a waiting state",
            id="return-from-a-working-state",
        ),
        pytest.param(
            chart(
                _HELD,
                _START,
                _DONE,
                Step(E.DELAY, (S.ACKNOWLEDGED,), S.HELD, ReasonCode.DELAY),
                _RESUME,
            ),
            "resume from HELD can return nowhere its KCI may go",
            id="return-only-where-the-contract-refuses",
        ),
        pytest.param(
            chart(_BASIC, _START, _DONE, Step(E.WARN, (S.ACKNOWLEDGED,), None, ReasonCode.CREATED)),
            "warn sends CREATED, which is never sent on this type",
            id="reason-not-sent-on-the-type",
        ),
        pytest.param(
            chart(
                _BASIC,
                _START,
                _DONE,
                Step(E.UPDATE, (S.ACKNOWLEDGED,), S.IN_PROGRESS, ReasonCode.DELAY),
            ),
            "update from ACKNOWLEDGED would send DELAY with status IN_PROGRESS",
            id="status-the-kci-may-not-carry",
        ),
        pytest.param(
            chart(
                (State(S.SENT_TO_SUPPLIER), *_BASIC),
                Step(E.ACKNOWLEDGE, (S.SENT_TO_SUPPLIER,), S.ACKNOWLEDGED, ReasonCode.ACKNOWLEDGED),
                Step(E.UPDATE, (S.SENT_TO_SUPPLIER,), None, ReasonCode.UPDATE),
                _START,
                _DONE,
                initial=S.SENT_TO_SUPPLIER,
            ),
            "update from SENT_TO_SUPPLIER would send UPDATE with status SENT_TO_SUPPLIER",
            id="a-status-only-the-gateway-sets",
        ),
        pytest.param(
            chart(
                _BASIC,
                _START,
                _DONE,
                Step(
                    E.COMMITTED_IN_201, (S.ACKNOWLEDGED,), S.IN_PROGRESS, None, told_by_gateway=True
                ),
                Step(E.REAPPOINTED, (S.IN_PROGRESS,), S.ACKNOWLEDGED, ReasonCode.REAPPOINTED),
            ),
            "committed_in_201 (a synchronous answer) is allowed in ACKNOWLEDGED, which",
            id="synchronous-answer-after-a-kci",
        ),
    ],
)
def test_a_malformed_chart_is_refused_when_it_is_built(broken: Chart, message: str) -> None:
    with pytest.raises(ChartError) as info:
        build(broken)
    assert message in str(info.value)
    if "reach" in message:
        assert "HELD" in str(info.value)


def test_return_edges_go_where_the_wait_was_entered_from_and_the_kci_may_go() -> None:
    edges = build(
        chart(
            _HELD,
            _START,
            _DONE,
            Step(E.DELAY, (S.ACKNOWLEDGED, S.IN_PROGRESS), S.HELD, ReasonCode.DELAY),
            _RESUME,
            Step(E.REAPPOINTED, (S.HELD,), RETURN, ReasonCode.REAPPOINTED),
        )
    )
    resumes = [(e.dest, e.condition_label) for e in edges if e.step is _RESUME]
    assert resumes == [(S.IN_PROGRESS, "was IN_PROGRESS")]  # a RESUMED KCI carries IN_PROGRESS
    reappoints = [(e.dest, e.back_to) for e in edges if e.step.event is E.REAPPOINTED]
    assert reappoints == [(S.ACKNOWLEDGED, S.ACKNOWLEDGED), (S.IN_PROGRESS, S.IN_PROGRESS)]


def test_a_quiet_condition_decides_between_steps_of_the_same_event() -> None:
    always = When("always", lambda firing: True)
    step = Step(E.UPDATE, (S.ACKNOWLEDGED,), None, ReasonCode.UPDATE, when=always)
    edges = build(chart(_BASIC, _START, _DONE, step))
    [edge] = [e for e in edges if e.step is step]
    assert edge.condition is always
    assert edge.condition_label == "always"
