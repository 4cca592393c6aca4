"""Charts declared as data, built once into ``transitions`` machines, and fired on plain records.

This is the only module that imports ``transitions``. Each order type declares a :class:`Chart`
(states and :class:`Step` s); :class:`CompiledChart` checks its structure and builds one
``transitions.Machine`` with ``model=None``. Events are fired against :class:`OrderRecord` s that
are never added to the machine, so no per-order machine or trigger method exists.

``transitions`` never rolls back: if a callback raises after the state moved, the model stays
moved. The engine therefore fires on a working copy of the record and keeps it only when the
whole event, store commit included, succeeded.
"""

from __future__ import annotations

import itertools
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from transitions import Event as TransitionsEvent
from transitions import EventData as TransitionsEventData
from transitions import Machine, State, Transition

from ..errors import EngineError, EventNotAllowed
from .codes import FINAL_STATUSES, WAITING_STATUSES, OrderStatus, OrderType, ReasonCode
from .events import Event, EventData

if TYPE_CHECKING:
    from .records import Kci, OrderRecord

#: Destination of a step that goes back to the status its waiting status was entered from.
RETURN = "RETURN"
#: Like RETURN, and out of PENDING too when the answer resolved what PENDING waited for.
RETURN_RESOLVED = "RETURN_RESOLVED"
#: The internal state of an unsolicited cease before it is created (never sent on the wire).
NEW = "NEW"


@dataclass(slots=True)
class Firing:
    """One event being applied: the working record, the data, and what it produced."""

    record: OrderRecord
    event: Event
    data: EventData
    now: datetime
    new_id: Callable[[], str]
    kcis: list[Kci] = field(default_factory=list)
    new_document: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """A contract rule an event must satisfy; ``check`` raises a :class:`RefusedEvent`."""

    label: str
    check: Callable[[Firing], None]


@dataclass(frozen=True, slots=True)
class When:
    """A quiet condition choosing between alternative steps for the same event and source."""

    label: str
    test: Callable[[Firing], bool]


@dataclass(frozen=True, slots=True)
class Step:
    """A transition declared as data.

    Attributes:
        event: the supplier action.
        sources: statuses it is allowed from.
        dest: the status it moves to; ``None`` leaves the status as it is; :data:`RETURN` and
            :data:`RETURN_RESOLVED` go back to the status a waiting status was entered from.
        reason: the reason code of the KCI it sends, or ``None`` if it sends none.
        rules: contract rules beyond those every KCI of ``reason`` obeys.
        when: a quiet condition, when several steps share an event and a source.
    """

    event: Event
    sources: tuple[str, ...]
    dest: str | None
    reason: ReasonCode | None
    rules: tuple[Rule, ...] = ()
    when: When | None = None


@dataclass(frozen=True, slots=True)
class Edge:
    """One expanded transition: a step from one source to one concrete destination."""

    step: Step
    source: str
    dest: str
    condition: When | None

    @property
    def internal(self) -> bool:
        return self.step.dest is None


@dataclass(frozen=True)
class Chart:
    """An order type's lifecycle, as data."""

    order_type: OrderType
    initial: str
    states: tuple[str, ...]
    steps: tuple[Step, ...]


class _QuietState(State):
    """``transitions.State`` without its per-call log lines."""

    def enter(self, event_data: Any) -> None:
        event_data.machine.callbacks(self.on_enter, event_data)

    def exit(self, event_data: Any) -> None:
        event_data.machine.callbacks(self.on_exit, event_data)


class _QuietTransition(Transition):
    """``transitions.Transition`` without its per-call debug log lines, which cost about a third
    of a trigger. The order of prepare, conditions, before, exit, enter and after is kept; exit
    and enter callbacks run only when the state has some."""

    def execute(self, event_data: Any) -> bool:
        machine = event_data.machine
        machine.callbacks(self.prepare, event_data)
        if not self._eval_conditions(event_data):
            return False
        machine.callbacks(itertools.chain(machine.before_state_change, self.before), event_data)
        if self.dest:  # None: an internal transition, the state does not change
            self._change_state(event_data)
        machine.callbacks(itertools.chain(self.after, machine.after_state_change), event_data)
        return True

    def _change_state(self, event_data: Any) -> None:
        machine = event_data.machine
        source = machine.get_state(self.source)
        if source.on_exit:
            source.exit(event_data)
        dest = machine.get_state(self.dest)
        setattr(event_data.model, machine.model_attribute, dest.value)
        event_data.state = dest
        if dest.on_enter:
            dest.enter(event_data)
        if dest.final:
            machine.callbacks(machine.on_final, event_data)


class _DirectEvent(TransitionsEvent):
    """``transitions.Event`` fired directly: the engine's machines are never queued and use no
    machine-level prepare/finalize/exception callbacks, so the trigger runs the transitions of
    the model's state in order and stops at the first that executes."""

    def trigger(self, model: Any, *args: Any, **kwargs: Any) -> bool:
        event_data = TransitionsEventData(None, self, self.machine, model, args=args, kwargs=kwargs)
        event_data.state = self.machine.get_model_state(model)
        for transition in self.transitions[event_data.state.name]:
            event_data.transition = transition
            if transition.execute(event_data):
                event_data.result = True
                break
        return bool(event_data.result)


class _QuietMachine(Machine):
    """A ``transitions.Machine`` built from the quiet state, transition and event classes. The
    engine logs each applied event once itself."""

    state_cls = _QuietState
    transition_cls = _QuietTransition
    event_cls = _DirectEvent

    def callbacks(self, funcs: Iterable[Any], event_data: Any) -> None:
        for func in funcs:
            self.callback(func, event_data)


class ChartError(EngineError):
    """A chart is malformed (found when it is built, at import time)."""


RunStep = Callable[[Step, Firing, str], None]


class CompiledChart:
    """A :class:`Chart` checked and built into one ``transitions.Machine``."""

    def __init__(self, chart: Chart, run_step: RunStep) -> None:
        self.chart = chart
        self.edges: tuple[Edge, ...] = tuple(_expand(chart))
        _check_structure(chart, self.edges)
        self._allowed: dict[str, frozenset[Event]] = {
            state: frozenset(e.step.event for e in self.edges if e.source == state)
            for state in chart.states
        }
        self._machine = _QuietMachine(
            model=None,
            states=[str(state) for state in chart.states],
            initial=str(chart.initial),
            auto_transitions=False,
            send_event=True,
            model_attribute="status",
            name=f"{chart.order_type.value}: ",
        )
        for edge in self.edges:
            self._machine.add_transition(
                trigger=edge.step.event.value,
                source=str(edge.source),
                dest=None if edge.internal else str(edge.dest),
                conditions=[_condition(edge.condition)] if edge.condition else None,
                before=[_callback(run_step, edge.step)],
            )
        self._events = {Event(name): ev for name, ev in self._machine.events.items()}

    def allowed(self, status: str) -> frozenset[Event]:
        """The events allowed in ``status``."""
        return self._allowed.get(status, frozenset())

    def fire(self, firing: Firing) -> None:
        """Fire ``firing.event`` on ``firing.record``.

        Raises:
            EventNotAllowed: the event is not allowed in the record's status.
            RefusedEvent: a rule refused it (raised by the step's callback).
        """
        record = firing.record
        if firing.event not in self._allowed.get(record.status, ()):
            raise EventNotAllowed(
                order_id=record.order_id,
                status=record.status,
                event=firing.event.value,
                allowed=(e.value for e in self.allowed(record.status)),
            )
        if not self._events[firing.event].trigger(record, firing):
            raise EngineError(
                f"order {record.order_id}: no transition for '{firing.event}' in status "
                f"{record.status} matched (its return stack is {record.return_stack})",
                order_id=record.order_id,
                status=record.status,
                event=firing.event.value,
            )


def _callback(run_step: RunStep, step: Step) -> Callable[[Any], None]:
    def before(event_data: Any) -> None:
        dest = event_data.transition.dest or event_data.state.name
        run_step(step, event_data.args[0], dest)

    return before


def _condition(when: When) -> Callable[[Any], bool]:
    def check(event_data: Any) -> bool:
        return when.test(event_data.args[0])

    return check


# --- Return destinations -------------------------------------------------------------------------


def return_target(step: Step, stack: list[str], resolves: bool) -> tuple[str | None, int]:
    """Where a RETURN / RETURN_RESOLVED step goes from ``stack``, and how many entries it pops."""
    if not stack:
        return None, 0
    target = stack[-1]
    if (
        step.dest == RETURN_RESOLVED
        and target == OrderStatus.PENDING
        and resolves
        and len(stack) > 1
    ):
        return stack[-2], 2
    return target, 1


def _returns_to(step: Step, dest: str) -> When:
    def test(firing: Firing) -> bool:
        target, _ = return_target(step, firing.record.return_stack, firing.data.resolves_request)
        return target == dest

    return When(f"was {dest}", test)


def _entered_from(steps: Iterable[Step]) -> dict[str, set[str]]:
    """For each waiting status, the statuses a step can enter it from (what RETURN can reach)."""
    entered: dict[str, set[str]] = defaultdict(set)
    for step in steps:
        if step.dest in WAITING_STATUSES:
            entered[step.dest].update(s for s in step.sources if s != step.dest)
    return entered


def _expand(chart: Chart) -> Iterator[Edge]:
    entered = _entered_from(chart.steps)
    for step in chart.steps:
        for source in step.sources:
            if step.dest in (RETURN, RETURN_RESOLVED):
                targets = set(entered.get(source, ()))
                if step.dest == RETURN_RESOLVED and OrderStatus.PENDING in targets:
                    targets |= entered.get(OrderStatus.PENDING, set())
                for target in sorted(targets):
                    yield Edge(step, source, target, _returns_to(step, target))
            else:
                yield Edge(step, source, step.dest or source, step.when)


def _check_structure(chart: Chart, edges: tuple[Edge, ...]) -> None:
    """Refuse a chart with no initial state, exits from finals, unknown, unreachable or trap
    states."""
    name = chart.order_type.value
    states = set(chart.states)
    for step in chart.steps:
        for source in step.sources:
            if step.dest in (RETURN, RETURN_RESOLVED) and not any(
                e.step is step and e.source == source for e in edges
            ):
                raise ChartError(
                    f"{name}: {step.event} returns from {source}, which no step enters as a wait"
                )
    if chart.initial not in states:
        raise ChartError(f"{name}: initial state {chart.initial} is not one of its states")
    for edge in edges:
        for state in (edge.source, edge.dest):
            if state not in states:
                raise ChartError(f"{name}: {edge.step.event} uses undeclared state {state}")
        if edge.source in FINAL_STATUSES:
            raise ChartError(f"{name}: final state {edge.source} has an exit ({edge.step.event})")
    forward: dict[str, set[str]] = defaultdict(set)
    backward: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        forward[edge.source].add(edge.dest)
        backward[edge.dest].add(edge.source)
    reachable = _closure(chart.initial, forward)
    if unreachable := states - reachable:
        raise ChartError(f"{name}: unreachable states {sorted(map(str, unreachable))}")
    finals = states & FINAL_STATUSES
    if not finals:
        raise ChartError(f"{name}: no final state")
    can_finish: set[str] = set()
    for final in finals:
        can_finish |= _closure(final, backward)
    if traps := states - can_finish:
        raise ChartError(
            f"{name}: states that can never reach a final state {sorted(map(str, traps))}"
        )


def _closure(start: str, graph: dict[str, set[str]]) -> set[str]:
    seen = {start}
    queue = deque([start])
    while queue:
        for nxt in graph.get(queue.popleft(), ()):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen
