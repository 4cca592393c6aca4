"""Model-based lifecycles: generated from the order-type specs, checked against a model.

For every order type the generator searches the chart breadth first for the shortest event
sequence that takes each transition (with the return stack its condition needs), and turns each
into a :class:`~kci_engine.tooling.scenarios.model.Scenario` whose expectations the *model*
predicts: the step's reason code, its destination status and the next sequence number. The model
is deliberately separate from the engine's lifecycle code: it keeps its own return stack and
request bookkeeping (docs/decisions.md L1-L3) and decides itself which of an event's edges is
taken; from the specs it borrows only the steps (sources, destinations, reason codes, rules). A
replay then holds the engine to what the charts say, and a change to either side that the other
does not share fails.

The data for each step is not written per event: it is derived from the contract tables
(problemCode, text, the fields a status carries, new values, news) and from the step's rules
(request ids), so a new reason code or rule needs no entry here.
:mod:`kci_engine.tooling.scenarios.refusals` adds the refusals: every rule broken once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ...core import _rules as rules
from ...core.chart import NEW, RETURN_RESOLVED, Edge, Rule, Step
from ...core.codes import OrderStatus, OrderType
from ...core.contract import Carry, Need, News, example_problem_code
from ...core.events import Event
from ...core.spec import OrderTypeSpec
from ...errors import GenerationError
from ...orders import SPECS
from ..testing import COMMIT_DATES, SAMPLE_ORDERS
from .coverage import edge_name
from .model import Scenario

E = Event
S = OrderStatus
#: A value for each order field the contract can ask for, and for each characteristic.
SAMPLE_FIELDS: dict[str, Any] = {
    "supplierOrderReference": "SUP-GEN-1",
    **COMMIT_DATES,
    "appointmentTimeslot": {
        "timeslotStartDateTime": "2026-12-03T08:00:00.000Z",
        "timeslotEndDateTime": "2026-12-03T13:00:00.000Z",
    },
    "appointmentSupplierReference": "APPT-GEN",
    "serviceId": "SVC-GEN-EXISTING",
}
SAMPLE_CHARACTERISTIC = "SVC-GEN"
#: A reappointment moves the target date to this.
NEW_TARGET_DATE = "2026-12-03T13:00:00.000Z"
#: How deep the search goes; every chart's transitions are all reached well within it.
MAX_DEPTH = 8


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
    """A generated lifecycle: how the order starts (a supplier-created order's status)."""

    order_type: OrderType
    created: str | None
    moves: tuple[Move, ...] = ()

    @property
    def spec(self) -> OrderTypeSpec:
        return SPECS[self.order_type]

    @property
    def state(self) -> State:
        if self.moves:
            return self.moves[-1].after
        if self.created is None:
            return State(self.spec.chart.initial)
        return State(self.created, sent=1, committed=self.created == S.IN_PROGRESS)


# --- The data a step needs -----------------------------------------------------------------------

#: What each step rule needs in the event data, for an order in a given state.
RULE_DATA: dict[Rule, Callable[[OrderTypeSpec, State], dict[str, Any]]] = {
    rules.TEXT_GIVEN: lambda spec, state: {"text": "No fibre route"},
    rules.NAMES_NEW_AMENDMENT: lambda spec, state: {"amendment_id": 500 + state.count + 1},
    rules.ANSWERS_AMENDMENT: lambda spec, state: {
        "amendment_id": state.amendments[0] if state.amendments else 999
    },
    rules.NAMES_NEW_CANCELLATION: lambda spec, state: {
        "cancellation_id": 900 + state.count + 1,
        "cancellation_reason": sorted(spec.cancellation_reasons)[0],
    },
    rules.ANSWERS_CANCELLATION: lambda spec, state: {"cancellation_id": state.cancellation or 999},
}


def satisfy(
    data: dict[str, Any],
    spec: OrderTypeSpec,
    carry: Carry,
    order: Mapping[str, Any] | None = None,
) -> None:
    """Add to ``data`` what ``carry`` asks for (the first name only, for ``any_of``) and
    ``order`` does not have already."""
    names = carry.names[:1] if carry.any_of else carry.names
    for name in names:
        if order is not None and (order.get(name) is not None or spec.characteristic(order, name)):
            continue
        if name in carry.characteristics:
            data.setdefault("service_characteristics", {})[name] = SAMPLE_CHARACTERISTIC
        else:
            data.setdefault("order", {})[name] = SAMPLE_FIELDS[name]


def valid_data(
    spec: OrderTypeSpec,
    edge: Edge,
    state: State,
    resolves: bool = True,
    order: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Data that satisfies every rule of ``edge`` and every demand the contract tables make of
    its KCI, for an order in ``state`` that started as ``order`` (default: the sample order),
    unique where a rule needs a change or a new request.

    Raises:
        GenerationError: a step has a rule this module does not know how to satisfy.
    """
    step = edge.step
    data: dict[str, Any] = {}
    for rule in step.rules:
        make = RULE_DATA.get(rule)
        if make is None:
            raise GenerationError(f"no data satisfies rule {rule.label!r} of {step.event}")
        data.update(make(spec, state))
    demands = spec.edge_demands(edge)
    reason_rule = demands.rule
    if reason_rule is not None:
        if reason_rule.problem_code is Need.REQUIRED:
            data["problem_code"] = example_problem_code(demands.reason)  # type: ignore[arg-type]
        if reason_rule.text is Need.REQUIRED:
            data["text"] = f"Reason {state.count + 1}"
        for carry in reason_rule.gives:
            satisfy(data, spec, carry)
        if any(carry.names == ("targetDate",) for carry in reason_rule.gives):
            data["order"]["targetDate"] = NEW_TARGET_DATE
        if News.ORDER in reason_rule.news and edge.internal and not data.get("order"):
            data.update(_news(spec, step, state))
    start = order if order is not None else SAMPLE_ORDERS[spec.order_type]()
    for carry in demands.carries:
        satisfy(data, spec, carry, start)
    if step.dest == RETURN_RESOLVED and not resolves:
        data["resolves_request"] = False
    return data


def _news(spec: OrderTypeSpec, step: Step, state: State) -> dict[str, Any]:
    """An order change that is news: a characteristic where the order type keeps them and the
    step adds information, else a note."""
    n = state.count + 1
    if step.event is E.ADD_INFORMATION and spec.characteristics:
        return {"service_characteristics": {"ONT_REFERENCE": f"ONT-{n}"}}
    if step.event is E.ADD_INFORMATION:
        return {"order": {"hazards": f"Hazard {n}"}}
    return {"order": {"notes": f"Note {n}"}}


# --- The model -----------------------------------------------------------------------------------

#: The charts' quiet conditions other than "was <status>", as the model reads them (L3).
CONDITIONS: dict[str, Callable[[State], bool]] = {
    "other amendments in flight": lambda state: len(state.amendments) > 1,
}


def returns_to(spec: OrderTypeSpec, state: State, step: Step, resolves: bool) -> str | None:
    """Where the model says a returning step goes: the status the wait was entered from, or
    past a resolvable wait too when the answer resolves what it waited for (L1, L2)."""
    if not state.stack:
        return None
    top = spec.chart.state(state.stack[-1])
    if step.dest == RETURN_RESOLVED and top is not None and top.resolvable and resolves:
        return state.stack[-2] if len(state.stack) > 1 else state.stack[-1]
    return state.stack[-1]


def holds(spec: OrderTypeSpec, edge: Edge, state: State, resolves: bool) -> bool:
    """Whether the model says ``edge``'s condition holds in ``state``.

    Raises:
        GenerationError: a chart has a condition the model does not know.
    """
    if edge.back_to is not None:
        return edge.back_to == returns_to(spec, state, edge.step, resolves)
    label = edge.condition_label
    if label is None:
        return True
    if label.startswith("was "):
        return bool(state.stack) and state.stack[-1] == label.removeprefix("was ")
    test = CONDITIONS.get(label)
    if test is None:
        raise GenerationError(f"the model does not know the condition {label!r}")
    return test(state)


def choose(order_type: OrderType, state: State, event: E, resolves: bool = True) -> Edge | None:
    """The edge the model says the chart takes for ``event`` in ``state``: the first, in chart
    order as ``transitions`` tries them, whose condition the model finds true. The charts' own
    condition code is not used, so a change to it that the model does not share is caught."""
    spec = SPECS[order_type]
    for edge in spec.edges:
        if (
            edge.step.event is event
            and edge.source == state.status
            and holds(spec, edge, state, resolves)
        ):
            return edge
    return None


def advance(spec: OrderTypeSpec, state: State, edge: Edge, data: dict[str, Any]) -> State:
    """The model's next state: L1 (waits push where they came from, returns pop, leaving a wait
    otherwise ends it), L2 (an answer that resolves PENDING pops it too) and L3 (amendments)."""
    stack = list(state.stack)
    amendments = list(state.amendments)
    cancellation = state.cancellation
    rule_set = set(edge.step.rules)
    if rules.NAMES_NEW_AMENDMENT in rule_set:
        amendments.append(data["amendment_id"])
    if rules.ANSWERS_AMENDMENT in rule_set:
        amendments.remove(data["amendment_id"])
    if rules.NAMES_NEW_CANCELLATION in rule_set:
        cancellation = data["cancellation_id"]
    if rules.ANSWERS_CANCELLATION in rule_set:
        cancellation = None
    dest = spec.chart.state(edge.dest)
    assert dest is not None
    if dest.final:
        stack, amendments, cancellation = [], [], None
    elif edge.step.returns:
        top = spec.chart.state(stack[-1])
        past = top is not None and top.resolvable and top.name != edge.dest
        del stack[-2 if past else -1 :]
    elif edge.dest != edge.source and dest.waiting:
        stack.append(state.status)
    elif edge.dest != edge.source:
        stack = []
    return State(
        edge.dest,
        tuple(stack),
        tuple(amendments),
        cancellation,
        state.sent + (edge.step.reason is not None),
        state.committed or edge.dest == S.IN_PROGRESS,
        state.count + 1,
    )


def _successors(lifecycle: Lifecycle) -> Iterator[Lifecycle]:
    state = lifecycle.state
    spec = lifecycle.spec
    for event in sorted(spec.allowed(state.status)):
        resolving = any(e.step.dest == RETURN_RESOLVED for e in spec.edges if e.step.event is event)
        for resolves in (True, False) if resolving else (True,):
            edge = choose(lifecycle.order_type, state, event, resolves)
            if edge is not None:
                order = sample_order(lifecycle.order_type, lifecycle.created)
                data = valid_data(spec, edge, state, resolves, order)
                move = Move(event, data, edge, state, advance(spec, state, edge, data))
                yield replace(lifecycle, moves=(*lifecycle.moves, move))


def starts(order_type: OrderType) -> list[Lifecycle]:
    """How an order of ``order_type`` can begin: accepted from the gateway, or created by the
    supplier in each status its first step can create it in."""
    spec = SPECS[order_type]
    if spec.placed_by_tenant:
        return [Lifecycle(order_type, None)]
    return [Lifecycle(order_type, e.dest) for e in spec.edges if e.source == NEW]


def covering(order_type: OrderType) -> dict[Edge, Lifecycle]:
    """For every edge of the order type's chart, a shortest lifecycle that ends by taking it.

    Raises:
        GenerationError: an edge cannot be reached within :data:`MAX_DEPTH` events.
    """
    spec = SPECS[order_type]
    found: dict[Edge, Lifecycle] = {}
    first = starts(order_type)
    if not spec.placed_by_tenant:
        found.update({e: Lifecycle(order_type, e.dest) for e in spec.edges if e.source == NEW})
    queue = deque(first)
    seen = {lifecycle.state.key() for lifecycle in first}
    while queue and len(found) < len(spec.edges):
        lifecycle = queue.popleft()
        if len(lifecycle.moves) >= MAX_DEPTH:
            continue
        for nxt in _successors(lifecycle):
            found.setdefault(nxt.moves[-1].edge, nxt)
            if nxt.state.key() not in seen:
                seen.add(nxt.state.key())
                queue.append(nxt)
    if missing := [edge_name(order_type, e) for e in spec.edges if e not in found]:
        raise GenerationError(f"no lifecycle reaches {', '.join(missing)}")
    return {edge: found[edge] for edge in spec.edges}


def sample_order(order_type: OrderType, created: str | None) -> dict[str, Any]:
    """The order a generated lifecycle runs on (a supplier-created order in its status)."""
    if created is None:
        return SAMPLE_ORDERS[order_type]()
    spec = SPECS[order_type]
    order = SAMPLE_ORDERS[order_type](status=created)
    for edge in spec.edges:
        if edge.source == spec.chart.initial and edge.dest == created:
            data: dict[str, Any] = {}
            for carry in spec.edge_demands(edge).carries:
                satisfy(data, spec, carry)
            order = {**data.get("order", {}), **order}
    return order


def expect(move: Move) -> list[dict[str, Any]]:
    """What the model says a move sends: its reason code, destination and next number."""
    reason = move.edge.step.reason
    if reason is None:
        return []
    return [{"reason": reason, "status": move.edge.dest, "sequence": move.before.sent + 1}]


def scenario_step(move: Move) -> dict[str, Any]:
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
            "steps": [scenario_step(move) for move in lifecycle.moves] + (extra or []),
        }
    )


def covering_scenarios() -> list[tuple[str, Scenario]]:
    """A shortest lifecycle to every transition of every chart, as named scenarios."""
    out: list[tuple[str, Scenario]] = []
    for order_type in SPECS:
        for edge, lifecycle in covering(order_type).items():
            name = f"cover/{edge_name(order_type, edge)}"
            out.append((name, to_scenario(lifecycle, f"takes {edge_name(order_type, edge)}")))
    return out
