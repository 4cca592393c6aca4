"""Every transition of every chart, driven through the engine; and the chart structure checks.

The edge test is parametrized over ``MACHINES[t].edges``, so a transition added to a chart is
driven automatically; if no known path leads to its source (with the return stack its condition
needs), the test fails and says so.
"""

from __future__ import annotations

from typing import Any

import pytest
from kci_engine._facade import Engine
from kci_engine.core._lifecycle import run_step
from kci_engine.core._machine import (
    NEW,
    RETURN,
    RETURN_RESOLVED,
    Chart,
    ChartError,
    CompiledChart,
    Edge,
    Firing,
    Step,
    When,
    return_target,
)
from kci_engine.core.codes import FINAL_STATUSES, OrderStatus, OrderType, ReasonCode
from kci_engine.core.events import Event, EventData
from kci_engine.core.records import OrderRecord
from kci_engine.core.wire import ORDER_PROPERTY
from kci_engine.errors import EngineError
from kci_engine.orders import CHARTS, MACHINES
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
    label = edge.condition.label if edge.condition else None
    paths = reach(order_type)
    if label is None:
        return paths[edge.source], {}
    if label == "other amendments in flight":
        return (*paths[edge.source], E.AMENDMENT_RECEIVED), {}
    if label.startswith("was "):
        was = label.removeprefix("was ")
        enter = ENTER[edge.source]
        if enter in MACHINES[order_type].allowed(was):
            path = (*paths[was], enter)
            resolved = was != S.PENDING
        else:  # the status is reached back through PENDING, whose request the answer resolved
            path = (*paths[was], ENTER[S.PENDING], enter)
            resolved = True
        extra = {"resolves_request": resolved} if edge.step.event is E.ACCEPT_AMENDMENT else {}
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
    condition = f"[{edge.condition.label}]" if edge.condition else ""
    return f"{order_type.value}:{edge.step.event.value}:{edge.source}->{edge.dest}{condition}"


ALL_EDGES = [
    pytest.param(order_type, edge, id=edge_id(order_type, edge))
    for order_type, machine in MACHINES.items()
    for edge in machine.edges
]


@pytest.mark.parametrize(("order_type", "edge"), ALL_EDGES)
def test_every_edge_moves_to_its_destination_and_sends_its_reason_code(
    engine: Engine, order_type: OrderType, edge: Edge
) -> None:
    if edge.step.event is E.CREATE:
        was = edge.condition.label.removeprefix("order.status = ") if edge.condition else ""
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
        assert kci.body[ORDER_PROPERTY[order_type]]["status"] == edge.dest
        assert kci.event == edge.step.event.value
    assert_valid_stream(engine.kcis(order_id))
    if edge.dest in FINAL_STATUSES:
        assert (record.return_stack, record.amendments, record.cancellation) == ([], [], None)


def test_the_edge_parametrization_covers_every_step_of_every_chart() -> None:
    for order_type, machine in MACHINES.items():
        steps = {edge.step for edge in machine.edges}
        assert steps == set(CHARTS[order_type].steps), order_type


@pytest.mark.parametrize("order_type", list(OrderType))
def test_every_non_final_state_allows_an_event_and_no_final_state_does(
    order_type: OrderType,
) -> None:
    machine = MACHINES[order_type]
    for state in machine.chart.states:
        assert bool(machine.allowed(state)) is (state not in FINAL_STATUSES), state


def test_allowed_is_empty_for_a_status_the_chart_does_not_know() -> None:
    assert MACHINES[P].allowed("NO_SUCH_STATUS") == frozenset()
    assert MACHINES[U].allowed(S.PENDING) == frozenset()


def test_internal_edges_keep_the_status_and_others_move_it() -> None:
    for machine in MACHINES.values():
        for edge in machine.edges:
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
#: CANCELLED KCI while a tenant's request is in flight must answer it), the set says so.
TENANT_SOURCES: dict[Event, set[str]] = {
    E.ACKNOWLEDGE: {S.SENT_TO_SUPPLIER},
    E.ACKNOWLEDGED_IN_201: {S.SENT_TO_SUPPLIER},
    E.COMMITTED_IN_201: {S.SENT_TO_SUPPLIER},
    E.REJECT: {S.SENT_TO_SUPPLIER},
    E.COMMIT: {S.ACKNOWLEDGED},
    E.DELAY: {S.ACKNOWLEDGED, S.IN_PROGRESS},
    E.RESUME: {S.HELD},
    E.REQUEST_INFORMATION: {S.ACKNOWLEDGED, S.IN_PROGRESS, S.HELD},
    E.REQUEST_REAPPOINTMENT: {S.ACKNOWLEDGED, S.IN_PROGRESS, S.HELD},
    E.REQUEST_RESUBMISSION: {S.ACKNOWLEDGED, S.IN_PROGRESS, S.PENDING},
    E.REAPPOINTED: {S.ACKNOWLEDGED, S.IN_PROGRESS, S.HELD, S.PENDING},
    E.UPDATE: _NON_FINAL,
    E.ADD_INFORMATION: _NON_FINAL,
    E.WARN: _NON_FINAL,
    E.AMENDMENT_RECEIVED: {S.ACKNOWLEDGED, S.IN_PROGRESS, S.PENDING, S.PENDING_AMENDMENT},
    E.ACCEPT_AMENDMENT: {S.PENDING_AMENDMENT},
    E.REJECT_AMENDMENT: {S.PENDING_AMENDMENT},
    E.CANCELLATION_RECEIVED: _NON_FINAL - {S.PENDING_CANCELLATION},
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
    E.CANCELLATION_RECEIVED: (S.PENDING_CANCELLATION, None),
    E.ACCEPT_CANCELLATION: (S.CANCELLED, ReasonCode.CANCELLED),
    E.CANCEL: (S.CANCELLED, ReasonCode.CANCELLED),
    E.COMPLETE: (S.COMPLETED, ReasonCode.COMPLETED),
}
_APPOINTMENT_EVENTS = {E.REQUEST_REAPPOINTMENT, E.REAPPOINTED}


def _sources(order_type: OrderType) -> dict[Event, set[str]]:
    found: dict[Event, set[str]] = {}
    for edge in MACHINES[order_type].edges:
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
    for edge in MACHINES[order_type].edges:
        if edge.step.event not in TENANT_MOVES or edge.condition is not None:
            continue
        dest, reason = TENANT_MOVES[edge.step.event]
        assert (edge.dest, edge.step.reason) == (dest or edge.source, reason), edge


def test_unsolicited_cease_chart_has_no_amendments_and_creates_with_created() -> None:
    sources = _sources(U)
    assert not {E.AMENDMENT_RECEIVED, E.ACCEPT_AMENDMENT, E.REJECT_AMENDMENT} & sources.keys()
    assert not {E.ACKNOWLEDGE, E.REJECT, E.REQUEST_INFORMATION, E.REAPPOINTED} & sources.keys()
    assert sources[E.CREATE] == {NEW}
    assert sources[E.COMMIT] == {S.ACKNOWLEDGED}
    assert sources[E.COMPLETE] == {S.IN_PROGRESS}
    creates = {e.dest: e.step.reason for e in MACHINES[U].edges if e.step.event is E.CREATE}
    assert creates == {S.ACKNOWLEDGED: ReasonCode.CREATED, S.IN_PROGRESS: ReasonCode.CREATED}


# --- return_target ------------------------------------------------------------------------------

_RESUME = Step(E.RESUME, (S.HELD,), RETURN, ReasonCode.RESUMED)
_ACCEPT = Step(E.ACCEPT_AMENDMENT, (S.PENDING_AMENDMENT,), RETURN_RESOLVED, ReasonCode.AMENDED)


@pytest.mark.parametrize(
    ("step", "stack", "resolves", "expected"),
    [
        (_RESUME, [], True, (None, 0)),
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
    step: Step, stack: list[str], resolves: bool, expected: tuple[str | None, int]
) -> None:
    assert return_target(step, stack, resolves) == expected


def test_a_return_with_nothing_to_return_to_is_an_engine_error_naming_the_stack() -> None:
    record = OrderRecord("T:1", P, S.HELD, {"id": 1, "tenant": "T", "status": "HELD"})
    firing = Firing(record, E.RESUME, EventData(), EPOCH, sequential_ids())
    with pytest.raises(EngineError, match=r"no transition for 'resume' in status HELD") as info:
        MACHINES[P].fire(firing)
    assert "return stack is []" in str(info.value)
    assert (info.value.order_id, info.value.status, info.value.event) == ("T:1", "HELD", "resume")
    assert (record.status, firing.kcis) == (S.HELD, [])


# --- Structure checks ---------------------------------------------------------------------------

_DONE = Step(E.COMPLETE, (S.IN_PROGRESS,), S.COMPLETED, ReasonCode.COMPLETED)
_START = Step(E.COMMIT, (S.ACKNOWLEDGED,), S.IN_PROGRESS, ReasonCode.COMMITTED)


def chart(states: tuple[str, ...], *steps: Step, initial: str = S.ACKNOWLEDGED) -> Chart:
    return Chart(OrderType.CEASE, initial, states, steps)


def test_a_well_formed_chart_compiles() -> None:
    compiled = CompiledChart(
        chart((S.ACKNOWLEDGED, S.IN_PROGRESS, S.COMPLETED), _START, _DONE), run_step
    )
    assert [(e.source, e.dest) for e in compiled.edges] == [
        (S.ACKNOWLEDGED, S.IN_PROGRESS),
        (S.IN_PROGRESS, S.COMPLETED),
    ]
    assert compiled.allowed(S.ACKNOWLEDGED) == {E.COMMIT}


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        pytest.param(
            chart((S.ACKNOWLEDGED, S.IN_PROGRESS, S.COMPLETED), _START, _DONE, initial=S.HELD),
            "cease: initial state HELD is not one of its states",
            id="missing-initial",
        ),
        pytest.param(
            chart((S.ACKNOWLEDGED, S.COMPLETED), _START, _DONE),
            "uses undeclared state IN_PROGRESS",
            id="undeclared-state",
        ),
        pytest.param(
            chart(
                (S.ACKNOWLEDGED, S.IN_PROGRESS, S.COMPLETED),
                _START,
                _DONE,
                Step(E.UPDATE, (S.COMPLETED,), None, ReasonCode.UPDATE),
            ),
            "final state COMPLETED has an exit (update)",
            id="exit-from-final",
        ),
        pytest.param(
            chart((S.ACKNOWLEDGED, S.IN_PROGRESS, S.HELD, S.COMPLETED), _START, _DONE),
            "unreachable states",
            id="unreachable",
        ),
        pytest.param(
            chart(
                (S.ACKNOWLEDGED, S.IN_PROGRESS),
                _START,
                Step(E.DELAY, (S.IN_PROGRESS,), S.ACKNOWLEDGED, ReasonCode.DELAY),
            ),
            "cease: no final state",
            id="no-final",
        ),
        pytest.param(
            chart(
                (S.ACKNOWLEDGED, S.IN_PROGRESS, S.HELD, S.COMPLETED),
                _START,
                _DONE,
                Step(E.DELAY, (S.ACKNOWLEDGED,), S.HELD, ReasonCode.DELAY),
            ),
            "states that can never reach a final state",
            id="trap",
        ),
    ],
)
def test_a_malformed_chart_is_refused_when_it_is_built(broken: Chart, message: str) -> None:
    with pytest.raises(ChartError) as info:
        CompiledChart(broken, run_step)
    assert message in str(info.value)
    if "reach" in message:
        assert "HELD" in str(info.value)


def test_return_edges_go_to_every_status_the_waiting_state_is_entered_from() -> None:
    compiled = CompiledChart(
        chart(
            (S.ACKNOWLEDGED, S.IN_PROGRESS, S.HELD, S.COMPLETED),
            _START,
            _DONE,
            Step(E.DELAY, (S.ACKNOWLEDGED, S.IN_PROGRESS), S.HELD, ReasonCode.DELAY),
            _RESUME,
        ),
        run_step,
    )
    returns = [e for e in compiled.edges if e.step is _RESUME]
    assert [(e.dest, e.condition.label if e.condition else None) for e in returns] == [
        (S.ACKNOWLEDGED, "was ACKNOWLEDGED"),
        (S.IN_PROGRESS, "was IN_PROGRESS"),
    ]


def test_a_quiet_condition_decides_between_steps_of_the_same_event() -> None:
    always = When("always", lambda firing: True)
    step = Step(E.UPDATE, (S.ACKNOWLEDGED,), None, ReasonCode.UPDATE, when=always)
    compiled = CompiledChart(
        chart((S.ACKNOWLEDGED, S.IN_PROGRESS, S.COMPLETED), _START, _DONE, step), run_step
    )
    [edge] = [e for e in compiled.edges if e.step is step]
    assert edge.condition is always
