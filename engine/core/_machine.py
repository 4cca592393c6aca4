"""The adapter to ``transitions``: the only module that imports it, and all it does.

:class:`Machine` builds one ``transitions.Machine`` per chart (``model=None``,
``auto_transitions=False``, ``send_event=True``) from the chart's expanded edges, and fires
events on plain :class:`~kci_engine.core.records.OrderRecord` s that are never added to it, so
no per-order machine or trigger method exists. What a step does, and which of several edges an
event takes, is the lifecycle's business (:mod:`._lifecycle`): each transition's ``before``
callback is :func:`~._lifecycle.run_step` and each condition is :func:`~._lifecycle.takes`.

``transitions`` never rolls back: if a callback raises after the state moved, the model stays
moved. The engine fires on a working copy of the record and keeps it only when the whole event,
store commit included, succeeded.

For speed, three classes below replace ``transitions`` internals that log on every call or go
through its queue machinery. They are the one place that depends on private behaviour of the
pinned ``transitions`` range; ``tests/test_machine_adapter.py`` fails loudly, naming the method,
when an upgrade changes any upstream method they stand in for.

:meth:`Machine.fire` runs what a trigger of these machines amounts to straight from the
transitions ``transitions`` built (read once into routes: edge, destination, condition or not):
the first transition whose condition holds runs its step, then the record takes its
destination. That skips building an event-data object and resolving callbacks per event (about
a seventh of an in-memory apply); the machines have no other callbacks, which building the
routes checks.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from transitions import Event as TransitionsEvent
from transitions import EventData as TransitionsEventData
from transitions import Machine as TransitionsMachine
from transitions import State as TransitionsState
from transitions import Transition as TransitionsTransition

from ..errors import EventNotAllowed
from ._lifecycle import not_taken, run_step, takes
from .chart import Chart, Edge
from .events import Event

if TYPE_CHECKING:
    from ._lifecycle import Firing

#: The upstream methods the classes below stand in for (checked by the adapter test).
OVERRIDDEN = (
    "transitions.core.State.enter",
    "transitions.core.State.exit",
    "transitions.core.Transition.execute",
    "transitions.core.Transition._change_state",
    "transitions.core.Event.trigger",
    "transitions.core.Event._trigger",
    "transitions.core.Event._process",
    "transitions.core.Machine.callbacks",
)


class _QuietState(TransitionsState):
    """``transitions.State`` without its per-call log lines."""

    def enter(self, event_data: Any) -> None:
        event_data.machine.callbacks(self.on_enter, event_data)

    def exit(self, event_data: Any) -> None:
        event_data.machine.callbacks(self.on_exit, event_data)


class _QuietTransition(TransitionsTransition):
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


class _QuietMachine(TransitionsMachine):
    """A ``transitions.Machine`` built from the quiet state, transition and event classes. The
    engine logs each applied event once itself."""

    state_cls = _QuietState
    transition_cls = _QuietTransition
    event_cls = _DirectEvent

    def callbacks(self, funcs: Iterable[Any], event_data: Any) -> None:
        for func in funcs:
            self.callback(func, event_data)


class Machine:
    """One chart built into one ``transitions`` machine."""

    def __init__(self, chart: Chart, edges: tuple[Edge, ...]) -> None:
        self.chart = chart
        self.edges = edges
        self._allowed: dict[str, frozenset[Event]] = {
            state: frozenset(e.step.event for e in edges if e.source == state)
            for state in chart.names
        }
        self._machine = _QuietMachine(
            model=None,
            states=[str(name) for name in chart.names],
            initial=str(chart.initial),
            auto_transitions=False,
            send_event=True,
            model_attribute="status",
            name=f"{chart.order_type.value}: ",
        )
        for edge in edges:
            conditional = _conditional(edge)
            self._machine.add_transition(
                trigger=edge.step.event.value,
                source=str(edge.source),
                dest=None if edge.internal else str(edge.dest),
                conditions=[_condition(edge)] if conditional else None,
                before=[_before(edge)],
            )
        self._events = {Event(name): ev for name, ev in self._machine.events.items()}
        #: Per (status, event): the transitions ``transitions`` built, as plain routes
        #: (edge, destination or ``None`` for an internal step, whether it has a condition).
        self._routes: dict[tuple[str, Event], tuple[tuple[Edge, str | None, bool], ...]] = {}
        for event, ev in self._events.items():
            for source, built in ev.transitions.items():
                self._routes[(source, event)] = tuple(_route(t) for t in built)

    def allowed(self, status: str) -> frozenset[Event]:
        """The events allowed in ``status`` (whatever the order's history)."""
        return self._allowed.get(status, frozenset())

    def fire(self, firing: Firing) -> None:
        """Fire ``firing.event`` on ``firing.record``.

        Raises:
            EventNotAllowed: the event is not allowed in the record's status, or none of its
                edges applies to this order's history (the lifecycle says why).
            RefusedEvent: a rule or the contract refused it (raised by the step).
        """
        record = firing.record
        if firing.event not in self._allowed.get(record.status, ()):
            raise EventNotAllowed(
                order_id=record.order_id,
                status=record.status,
                event=firing.event.value,
                allowed=(e.value for e in self.allowed(record.status)),
            )
        # What ``_DirectEvent.trigger`` does with these machines (no prepare, after, enter,
        # exit or final callbacks: each transition has one condition at most and one before
        # callback), run straight from the routes: the first transition whose condition
        # holds runs its step, then the record moves to its destination.
        for edge, dest, conditional in self._routes.get((record.status, firing.event), ()):
            if conditional and not takes(edge, firing):
                continue
            run_step(edge, firing)
            if dest is not None:
                record.status = dest
            return
        raise not_taken(self.edges, firing, self.allowed(record.status))


def _route(transition: Any) -> tuple[Edge, str | None, bool]:
    """A built transition as a route: its edge (from the one before callback
    :class:`Machine` gave it), its destination, and whether it has a condition."""
    (before,) = transition.before
    edge: Edge = before.edge
    conditional = _conditional(edge)
    if transition.prepare or transition.after or len(transition.conditions) != conditional:
        raise RuntimeError(f"{edge}: a transition with callbacks the engine did not give it")
    return edge, transition.dest, conditional


def _conditional(edge: Edge) -> bool:
    return edge.condition is not None or edge.back_to is not None


def _before(edge: Edge) -> Any:
    def before(event_data: Any) -> None:
        run_step(edge, event_data.args[0])

    before.edge = edge  # type: ignore[attr-defined]  # read back by _route
    return before


def _condition(edge: Edge) -> Any:
    def check(event_data: Any) -> bool:
        return takes(edge, event_data.args[0])

    return check
