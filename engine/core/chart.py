"""The language order-type charts are written in: states, steps, rules, and their checks.

A :class:`Chart` is data: its states, each marked ``final`` or ``waiting`` on the chart itself,
and its :class:`Step` s (event, sources, destination, the reason code of the KCI it sends, the
rules it must satisfy). :func:`expand` turns steps into :class:`Edge` s, one per source and
concrete destination; :func:`check_structure` refuses a malformed chart when it is defined,
including one that would send a KCI the contract tables do not allow. Nothing here runs a
transition: :mod:`._machine` builds the ``transitions`` machine and :mod:`._lifecycle` says what
firing a step does.

A waiting status (HELD, PENDING, PENDING_AMENDMENT, PENDING_CANCELLATION) remembers the status it
was entered from; a step whose destination is :data:`RETURN` goes back there, and
:data:`RETURN_RESOLVED` goes further back when the answer resolved what a ``resolvable`` wait
(PENDING) waited for. A returning step goes back only to statuses its KCI may carry (the
contract's ``statuses``): where it cannot, another step of the chart must take the order out
(docs/decisions.md L1, L18).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from ..errors import ChartError
from .codes import OrderStatus, OrderType, ReasonCode
from .contract import REASONS, STATUSES, Request
from .events import Event

if TYPE_CHECKING:
    from ._lifecycle import Firing

#: Destination of a step that goes back to the status its waiting status was entered from.
RETURN = "RETURN"
#: Like RETURN, and past a ``resolvable`` wait too when the answer resolved what it waited for.
RETURN_RESOLVED = "RETURN_RESOLVED"
#: The internal state of a supplier-created order before it is created (never on the wire).
NEW = "NEW"


@dataclass(frozen=True, slots=True)
class State:
    """A status of a chart.

    Attributes:
        name: the status (an :class:`~kci_engine.core.codes.OrderStatus` value, or ``NEW``).
        final: no event leaves it.
        waiting: it waits for something and returns to the status it was entered from.
        resolvable: a tenant's answer (an accepted amendment) can resolve what it waits for.
    """

    name: str
    final: bool = False
    waiting: bool = False
    resolvable: bool = False


def final(name: str) -> State:
    return State(name, final=True)


def waiting(name: str, *, resolvable: bool = False) -> State:
    return State(name, waiting=True, resolvable=resolvable)


@dataclass(frozen=True, slots=True)
class Rule:
    """A guard a step must satisfy beyond the contract.

    Attributes:
        label: how the statecharts name it.
        check: raises a :class:`~kci_engine.errors.RefusedEvent` naming what is wrong.
        uses: the event data fields it reads (an event may be given them only on its steps).
        answers: the tenant request a step with this rule answers (its KCI references it).
        record: what the step records about the order's requests once it has fired.
    """

    label: str
    check: Callable[[Firing], None]
    uses: tuple[str, ...] = ()
    answers: Request | None = None
    record: Callable[[Firing], None] | None = None


@dataclass(frozen=True, slots=True)
class When:
    """A quiet condition choosing between steps with the same event and source."""

    label: str
    test: Callable[[Firing], bool]


def was(status: str) -> When:
    """The condition "the waiting status was entered from ``status``"."""

    def test(firing: Firing) -> bool:
        stack = firing.record.return_stack
        return bool(stack) and stack[-1] == status

    return When(f"was {status}", test)


@dataclass(frozen=True, slots=True)
class Step:
    """A transition declared as data.

    Attributes:
        event: the supplier action.
        sources: statuses it is allowed from.
        dest: the status it moves to; ``None`` leaves the status as it is; :data:`RETURN` and
            :data:`RETURN_RESOLVED` go back to where a waiting status was entered from.
        reason: the reason code of the KCI it sends, or ``None`` if it sends none.
        rules: guards beyond the contract's rules for ``reason``.
        when: a quiet condition, when several steps share an event and a source.
        told_by_gateway: it sends no KCI because the gateway tells the tenant itself (a
            synchronous 201 answer), so it may carry order details without one.
    """

    event: Event
    sources: tuple[str, ...]
    dest: str | None
    reason: ReasonCode | None
    rules: tuple[Rule, ...] = ()
    when: When | None = None
    told_by_gateway: bool = False

    @property
    def returns(self) -> bool:
        return self.dest in (RETURN, RETURN_RESOLVED)


@dataclass(frozen=True, slots=True)
class Edge:
    """One expanded transition: a step from one source to one concrete destination.

    ``back_to`` is set on the edges of a returning step: the status the order must have been in
    before its wait for this edge to be the one taken (its condition reads ``was <status>``).
    """

    step: Step
    source: str
    dest: str
    condition: When | None = None
    back_to: str | None = None

    @property
    def internal(self) -> bool:
        """The status does not change (an update, a warning)."""
        return self.step.dest is None

    @property
    def condition_label(self) -> str | None:
        if self.back_to is not None:
            return f"was {self.back_to}"
        return self.condition.label if self.condition is not None else None

    @property
    def status(self) -> str:
        """The status the KCI of this edge carries: where the order is afterwards."""
        return self.dest


@dataclass(frozen=True)
class Chart:
    """An order type's lifecycle, as data."""

    order_type: OrderType
    initial: str
    states: tuple[State, ...]
    steps: tuple[Step, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(state.name for state in self.states)

    def state(self, name: str) -> State | None:
        return self._by_name.get(name)

    @cached_property
    def _by_name(self) -> dict[str, State]:
        return {state.name: state for state in self.states}

    @property
    def finals(self) -> frozenset[str]:
        return frozenset(state.name for state in self.states if state.final)

    @property
    def waits(self) -> frozenset[str]:
        return frozenset(state.name for state in self.states if state.waiting)

    @property
    def non_final(self) -> tuple[str, ...]:
        """Every status an event can leave, in chart order (the initial one included)."""
        return tuple(state.name for state in self.states if not state.final)


# --- Expansion -----------------------------------------------------------------------------------


def entered_from(chart: Chart) -> dict[str, set[str]]:
    """For each waiting status, the statuses a step can enter it from (what RETURN reaches)."""
    waits = chart.waits
    entered: dict[str, set[str]] = defaultdict(set)
    for step in chart.steps:
        if step.dest in waits:
            entered[step.dest].update(s for s in step.sources if s != step.dest)
    return entered


def return_targets(chart: Chart, step: Step, source: str) -> set[str]:
    """The statuses a returning ``step`` can go back to from ``source``: where the wait can be
    entered from (and, for RETURN_RESOLVED, past a resolvable wait), only those its KCI may
    carry."""
    entered = entered_from(chart)
    targets = set(entered.get(source, ()))
    if step.dest == RETURN_RESOLVED:
        for state in chart.states:
            if state.resolvable and state.name in targets:
                targets |= entered.get(state.name, set())
    if step.reason is not None:
        targets &= REASONS[step.reason].statuses
    return targets


def expand(chart: Chart) -> Iterator[Edge]:
    """Every edge of the chart, in step order (the order ``transitions`` tries them).

    Destinations are plain strings, not :class:`OrderStatus` members (equal and hashed alike):
    a destination becomes the order document's ``status``, and pydantic_core encodes a member
    through its ``value`` property, a Python call on every KCI body."""
    for step in chart.steps:
        for source in step.sources:
            if step.returns:
                for target in sorted(return_targets(chart, step, source)):
                    yield Edge(step, source, str(target), back_to=target)
            else:
                yield Edge(step, source, str(step.dest or source), step.when)


# --- Structure -----------------------------------------------------------------------------------


def check_structure(chart: Chart, edges: tuple[Edge, ...]) -> None:
    """Refuse a malformed chart: no initial state, unknown states, exits from finals, returns
    from a status no step waits in, unreachable or trap states, and steps that would send a KCI
    the contract refuses whatever the data (a reason code never sent on this order type, or a
    status its KCI may not carry).

    Raises:
        ChartError: naming the chart, the step and what is wrong.
    """
    name = chart.order_type.value
    states = set(chart.names)
    if chart.initial not in states:
        raise ChartError(f"{name}: initial state {chart.initial} is not one of its states")
    for step in chart.steps:
        for source in step.sources:
            if source not in states:
                raise ChartError(f"{name}: {step.event} uses undeclared state {source}")
            if step.returns and source not in chart.waits:
                raise ChartError(
                    f"{name}: {step.event} returns from {source}, which is not a waiting state"
                )
            if step.returns and not any(e.step is step and e.source == source for e in edges):
                raise ChartError(
                    f"{name}: {step.event} from {source} can return nowhere its KCI may go"
                )
        if step.reason is not None and chart.order_type in REASONS[step.reason].not_on:
            raise ChartError(
                f"{name}: {step.event} sends {step.reason}, which is never sent on this type"
            )
    for edge in edges:
        if edge.dest not in states:
            raise ChartError(f"{name}: {edge.step.event} uses undeclared state {edge.dest}")
        if edge.source in chart.finals:
            raise ChartError(f"{name}: final state {edge.source} has an exit ({edge.step.event})")
        _check_kci_status(chart, edge)
    _check_reachability(chart, edges)
    _check_answers_come_first(chart, edges)


def _check_kci_status(chart: Chart, edge: Edge) -> None:
    reason = edge.step.reason
    if reason is None:
        return
    allowed = REASONS[reason].statuses
    if edge.status not in allowed or STATUSES[OrderStatus(edge.status)].set_by != "supplier":
        raise ChartError(
            f"{chart.order_type.value}: {edge.step.event} from {edge.source} would send {reason} "
            f"with status {edge.status}; a {reason} KCI carries {', '.join(sorted(allowed))}"
        )


def _check_answers_come_first(chart: Chart, edges: tuple[Edge, ...]) -> None:
    """A step the gateway tells the tenant of that moves the order (a synchronous 201 answer to
    the create request) must come before any KCI: no status it starts from may be reachable
    once a KCI was sent. One that leaves the status as it is (a 201 answer to an amendment) may
    come at any time: the status the tenant was last told stays true."""
    forward: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        forward[edge.source].add(edge.dest)
    after_kci: set[str] = set()
    for edge in edges:
        if edge.step.reason is not None:
            after_kci |= _closure(edge.dest, forward)
    for step in chart.steps:
        moves = step.dest is not None
        if step.told_by_gateway and moves and (late := after_kci & set(step.sources)):
            raise ChartError(
                f"{chart.order_type.value}: {step.event} (a synchronous answer) is allowed in "
                f"{', '.join(sorted(map(str, late)))}, which an order can reach after a KCI"
            )


def _check_reachability(chart: Chart, edges: tuple[Edge, ...]) -> None:
    name = chart.order_type.value
    states = set(chart.names)
    forward: dict[str, set[str]] = defaultdict(set)
    backward: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        forward[edge.source].add(edge.dest)
        backward[edge.dest].add(edge.source)
    if unreachable := states - _closure(chart.initial, forward):
        raise ChartError(f"{name}: unreachable states {sorted(unreachable)}")
    if not chart.finals:
        raise ChartError(f"{name}: no final state")
    can_finish: set[str] = set()
    for end in chart.finals:
        can_finish |= _closure(end, backward)
    if traps := states - can_finish:
        raise ChartError(f"{name}: states that can never reach a final state {sorted(traps)}")


def _closure(start: str, graph: dict[str, set[str]]) -> set[str]:
    seen = {start}
    queue = deque([start])
    while queue:
        for nxt in graph.get(queue.popleft(), ()):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen
