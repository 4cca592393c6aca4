"""Model-based lifecycles: generated from the machine definitions, checked against the model.

For every order type the generator searches the chart breadth first for the shortest event
sequence that takes each transition (with the return stack its quiet condition needs), and turns
each into a :class:`~engine.scenarios.model.Scenario` whose expectations the *model* predicts:
the step's reason code, its destination status and the next sequence number. The model here is
deliberately separate from the engine's own lifecycle code: it keeps its own return stack and
request bookkeeping (the rules of docs/decisions.md L1-L3) and decides itself which of a step's
conditional edges is taken; from the charts it borrows only their steps (sources, destinations,
reason codes, rules). A replay then holds the engine to what the charts say, and a change to either
side that the other does not share fails.

:mod:`engine.scenarios.refusals` adds the refusals: every guard broken once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from ...core._machine import NEW, RETURN, RETURN_RESOLVED, Edge, Step
from ...core.codes import FINAL_STATUSES, WAITING_STATUSES, OrderStatus, OrderType
from ...core.events import Event
from ...orders import MACHINES
from ..testing import COMMIT_DATES, SAMPLE_ORDERS
from .coverage import edge_name
from .model import Scenario

E = Event
S = OrderStatus
U = OrderType.UNSOLICITED_CEASE
REFERENCE = {"supplierOrderReference": "SUP-GEN-1"}
NEW_APPOINTMENT = {
    "appointmentTimeslot": {
        "timeslotStartDateTime": "2026-12-03T08:00:00.000Z",
        "timeslotEndDateTime": "2026-12-03T13:00:00.000Z",
    },
    "appointmentSupplierReference": "APPT-GEN",
    "targetDate": "2026-12-03T13:00:00.000Z",
}
#: How deep the search goes; every chart's transitions are all reached well within it.
MAX_DEPTH = 8


class GenerationError(Exception):
    """The generator cannot reach or break part of a chart: the model needs teaching."""


@dataclass(frozen=True)
class State:
    """What the model knows of an order: enough to predict every transition and sequence."""

    status: str
    stack: tuple[str, ...] = ()
    amendments: tuple[int, ...] = ()
    cancellation: int | None = None
    sent: int = 0
    committed: bool = False
    count: int = 0

    def key(self) -> tuple[Any, ...]:
        """States that behave alike (the search visits one of each)."""
        in_flight = min(len(self.amendments), 2)
        has_cancellation = self.cancellation is not None
        return (self.status, self.stack, in_flight, has_cancellation, self.sent > 0, self.committed)


@dataclass(frozen=True)
class Move:
    """One event of a generated lifecycle, the edge the model says it takes, and the states."""

    event: E
    data: dict[str, Any]
    edge: Edge
    before: State
    after: State


@dataclass(frozen=True)
class Lifecycle:
    """A generated lifecycle: how the order starts (an unsolicited cease's created status)."""

    order_type: OrderType
    created: str | None
    moves: tuple[Move, ...] = ()

    @property
    def state(self) -> State:
        if self.moves:
            return self.moves[-1].after
        if self.created is None:
            return State(S.SENT_TO_SUPPLIER)
        return State(self.created, sent=1, committed=self.created == S.IN_PROGRESS)


def valid_data(
    order_type: OrderType, event: E, state: State, resolves: bool = True
) -> dict[str, Any]:
    """Data that satisfies every rule of ``event`` for an order in ``state`` (unique where a
    rule needs a change or a new request)."""
    n = state.count + 1
    characteristics = order_type in (OrderType.PROVIDE, OrderType.MODIFY)
    answer = state.amendments[0] if state.amendments else 999  # none in flight: a stranger
    cancellation = state.cancellation or 999
    table: dict[E, dict[str, Any]] = {
        E.ACKNOWLEDGE: {"order": REFERENCE},
        E.ACKNOWLEDGED_IN_201: {"order": REFERENCE},
        E.COMMITTED_IN_201: {"order": {**REFERENCE, **COMMIT_DATES}},
        E.REJECT: {"problem_code": "INVALID_REQUEST", "text": "Not on our network"},
        E.COMMIT: {"order": COMMIT_DATES},
        E.DELAY: {"problem_code": "NETWORK_ISSUE"},
        E.RESUME: {},
        E.REQUEST_INFORMATION: {"problem_code": "INFORMATION_REQUIRED", "text": "Which floor?"},
        E.REQUEST_REAPPOINTMENT: {"problem_code": "ACCESS_ISSUE"},
        E.REQUEST_RESUBMISSION: {"problem_code": "INVALID_REQUEST", "text": "Resubmit"},
        E.REAPPOINTED: {"order": NEW_APPOINTMENT},
        E.UPDATE: {"order": {"notes": f"Note {n}"}},
        E.ADD_INFORMATION: (
            {"service_characteristics": {"ONT_REFERENCE": f"ONT-{n}"}}
            if characteristics
            else {"order": {"hazards": f"Hazard {n}"}}
        ),
        E.WARN: {"problem_code": "NETWORK_ISSUE", "text": "Node maintenance"},
        E.AMENDMENT_RECEIVED: {"amendment_id": 500 + n},
        E.ACCEPT_AMENDMENT: {"amendment_id": answer, "order": {"notes": f"Amended {n}"}},
        E.REJECT_AMENDMENT: {"amendment_id": answer, "problem_code": "OTHER", "text": "No"},
        E.CANCELLATION_RECEIVED: {
            "cancellation_id": 900 + n,
            "cancellation_reason": "NO_AUTHORISATION" if order_type is U else "OTHER",
        },
        E.ACCEPT_CANCELLATION: {
            "cancellation_id": cancellation,
            "problem_code": "CUSTOMER_CHANGED_MIND",
        },
        E.REJECT_CANCELLATION: {
            "cancellation_id": cancellation,
            "problem_code": "OTHER",
            "text": "Past the point of no return",
        },
        E.CANCEL: {"problem_code": "CAPACITY_ISSUE", "text": "No fibre route"},
        E.COMPLETE: (
            {"service_characteristics": {"SERVICE_ID": "SVC-GEN"}}
            if order_type is OrderType.PROVIDE
            else {}
        ),
    }
    data = dict(table[event])
    if event is E.ACCEPT_AMENDMENT and not resolves:
        data["resolves_request"] = False
    return data


#: The charts' quiet conditions other than returns, as the model reads them (decisions L3).
CONDITIONS: dict[str, Callable[[State], bool]] = {
    "other amendments in flight": lambda state: len(state.amendments) > 1,
}


def returns_to(state: State, step: Step, resolves: bool) -> str | None:
    """Where the model says a returning step goes: the status the wait was entered from, or
    past PENDING too when the answer resolves what PENDING waited for (decisions L1, L2)."""
    if not state.stack:
        return None
    if step.dest == RETURN_RESOLVED and state.stack[-1] == S.PENDING and resolves:
        return state.stack[-2] if len(state.stack) > 1 else S.PENDING
    return state.stack[-1]


def choose(order_type: OrderType, state: State, event: E, data: dict[str, Any]) -> Edge | None:
    """The edge the model says the chart takes for ``event`` in ``state``: the first, in chart
    order as ``transitions`` tries them, whose condition the model finds true. The charts' own
    condition code is not used, so a change to it that the model does not share is caught.

    Raises:
        GenerationError: a chart has a condition the model does not know.
    """
    resolves = bool(data.get("resolves_request", True))
    for edge in MACHINES[order_type].edges:
        if edge.step.event is not event or edge.source != state.status:
            continue
        if edge.step.dest in (RETURN, RETURN_RESOLVED):
            if edge.dest == returns_to(state, edge.step, resolves):
                return edge
        elif edge.condition is None:
            return edge
        elif (test := CONDITIONS.get(edge.condition.label)) is None:
            raise GenerationError(f"the model does not know the condition {edge.condition.label!r}")
        elif test(state):
            return edge
    return None


def advance(state: State, edge: Edge, data: dict[str, Any]) -> State:
    """The model's next state: decisions.md L1 (waits push where they came from, returns pop),
    L2 (an answer that resolves PENDING pops it too) and L3 (amendments in flight)."""
    event = edge.step.event
    stack = list(state.stack)
    amendments = list(state.amendments)
    cancellation = state.cancellation
    if event is E.AMENDMENT_RECEIVED:
        amendments.append(data["amendment_id"])
    elif event in (E.ACCEPT_AMENDMENT, E.REJECT_AMENDMENT):
        amendments.remove(data["amendment_id"])
    elif event is E.CANCELLATION_RECEIVED:
        cancellation = data["cancellation_id"]
    elif event in (E.ACCEPT_CANCELLATION, E.REJECT_CANCELLATION):
        cancellation = None
    if edge.dest in FINAL_STATUSES:
        stack, amendments, cancellation = [], [], None
    elif edge.step.dest in (RETURN, RETURN_RESOLVED):
        resolved = edge.step.dest == RETURN_RESOLVED and stack[-1] == S.PENDING != edge.dest
        del stack[-2 if resolved else -1 :]
    elif edge.step.dest is not None and edge.dest in WAITING_STATUSES and edge.dest != edge.source:
        stack.append(state.status)
    return State(
        edge.dest,
        tuple(stack),
        tuple(amendments),
        cancellation,
        state.sent + (edge.step.reason is not None),
        state.committed or event in (E.COMMIT, E.COMMITTED_IN_201),
        state.count + 1,
    )


def _successors(lifecycle: Lifecycle) -> Iterator[Lifecycle]:
    state = lifecycle.state
    machine = MACHINES[lifecycle.order_type]
    for event in sorted(machine.allowed(state.status)):
        if event in (E.ACKNOWLEDGED_IN_201, E.COMMITTED_IN_201) and state.sent:
            continue  # a 201 answer comes before any KCI (its refusal is generated apart)
        for resolves in (True, False) if event is E.ACCEPT_AMENDMENT else (True,):
            data = valid_data(lifecycle.order_type, event, state, resolves)
            edge = choose(lifecycle.order_type, state, event, data)
            if edge is not None:
                move = Move(event, data, edge, state, advance(state, edge, data))
                yield replace(lifecycle, moves=(*lifecycle.moves, move))


def covering(order_type: OrderType) -> dict[Edge, Lifecycle]:
    """For every edge of the order type's chart, a shortest lifecycle that ends by taking it.

    Raises:
        GenerationError: an edge cannot be reached within :data:`MAX_DEPTH` events.
    """
    machine = MACHINES[order_type]
    found: dict[Edge, Lifecycle] = {}
    starts = [Lifecycle(order_type, None)]
    if order_type is U:
        starts = [Lifecycle(order_type, e.dest) for e in machine.edges if e.source == NEW]
        found.update({e: Lifecycle(order_type, e.dest) for e in machine.edges if e.source == NEW})
    queue = deque(starts)
    seen = {lifecycle.state.key() for lifecycle in starts}
    while queue and len(found) < len(machine.edges):
        lifecycle = queue.popleft()
        if len(lifecycle.moves) >= MAX_DEPTH:
            continue
        for nxt in _successors(lifecycle):
            found.setdefault(nxt.moves[-1].edge, nxt)
            if nxt.state.key() not in seen:
                seen.add(nxt.state.key())
                queue.append(nxt)
    if missing := [edge_name(order_type, e) for e in machine.edges if e not in found]:
        raise GenerationError(f"no lifecycle reaches {', '.join(missing)}")
    return {edge: found[edge] for edge in machine.edges}


def sample_order(order_type: OrderType, created: str | None) -> dict[str, Any]:
    """The order a generated lifecycle runs on (an unsolicited cease in its created status)."""
    if order_type is U:
        dates = COMMIT_DATES if created == S.IN_PROGRESS else {}
        return SAMPLE_ORDERS[U](status=created, **dates)
    return SAMPLE_ORDERS[order_type]()


def expect(move: Move) -> list[dict[str, Any]]:
    """What the model says a move sends: its reason code, destination and next number."""
    reason = move.edge.step.reason
    if reason is None:
        return []
    return [{"reason": reason, "status": move.edge.dest, "sequence": move.before.sent + 1}]


def step(move: Move) -> dict[str, Any]:
    """A move as a scenario step, with the model's expectations."""
    return {
        "event": move.event,
        "data": move.data,
        "expect": expect(move),
        "order_status": move.edge.dest,
    }


def to_scenario(
    lifecycle: Lifecycle, title: str, extra: list[dict[str, Any]] | None = None
) -> Scenario:
    """A lifecycle (and steps to add after it) as a scenario."""
    start: dict[str, Any] = {}
    if lifecycle.created is not None:
        start["expect"] = [{"reason": "CREATED", "status": lifecycle.created, "sequence": 1}]
        start["order_status"] = lifecycle.created
    return Scenario.model_validate(
        {
            "title": title,
            "order_type": lifecycle.order_type,
            "order": sample_order(lifecycle.order_type, lifecycle.created),
            "start": start,
            "steps": [step(move) for move in lifecycle.moves] + (extra or []),
        }
    )


def covering_scenarios() -> list[tuple[str, Scenario]]:
    """A shortest lifecycle to every transition of every machine, as named scenarios."""
    out: list[tuple[str, Scenario]] = []
    for order_type in MACHINES:
        for edge, lifecycle in covering(order_type).items():
            name = f"cover/{edge_name(order_type, edge)}"
            out.append((name, to_scenario(lifecycle, f"takes {edge_name(order_type, edge)}")))
    return out
