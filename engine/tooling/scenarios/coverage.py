"""Transition coverage: which edges of each order type's machine a set of replays exercised.

Coverage is read from the engine's own event log (event, status before, status after), not
from instrumenting the machines, so it works the same on every store and measures what the
engine actually did rather than what a scenario meant to do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ...core._machine import Edge
from ...core.codes import OrderStatus, OrderType
from ...core.events import RECEIVED, Event, EventEntry
from ...orders import MACHINES

#: How a synchronous 201 answer shows in the event log: the order's arrival, already moved on.
_SYNC_EDGES = {
    OrderStatus.ACKNOWLEDGED: Event.ACKNOWLEDGED_IN_201,
    OrderStatus.IN_PROGRESS: Event.COMMITTED_IN_201,
}


def edge_name(order_type: OrderType, edge: Edge) -> str:
    """An edge as reports name it: ``provide:resume:HELD->IN_PROGRESS[was IN_PROGRESS]``."""
    condition = f"[{edge.condition.label}]" if edge.condition else ""
    return f"{order_type.value}:{edge.step.event.value}:{edge.source}->{edge.dest}{condition}"


def edges_exercised(order_type: OrderType, entries: list[EventEntry]) -> set[Edge]:
    """The transitions of the order's machine that its event log shows were taken.

    No two edges of a chart share event, source and destination, so the log's event and
    statuses before and after name exactly one edge. An order's arrival with a synchronous 201
    answer is logged as its arrival, already ACKNOWLEDGED or IN_PROGRESS.
    """
    machine = MACHINES[order_type]
    by_move = {(e.step.event.value, e.source, e.dest): e for e in machine.edges}
    found: set[Edge] = set()
    for entry in entries:
        event = entry.event
        before = entry.status_before or machine.chart.initial
        if event == RECEIVED:
            sync = _SYNC_EDGES.get(OrderStatus(entry.status_after))
            if sync is None:
                continue
            event = sync.value
        edge = by_move.get((event, before, entry.status_after))
        if edge is not None:
            found.add(edge)
    return found


@dataclass
class Coverage:
    """The edges exercised so far, per order type."""

    covered: dict[OrderType, set[Edge]] = field(
        default_factory=lambda: {order_type: set() for order_type in MACHINES}
    )

    def add(self, order_type: OrderType, edges: Iterable[Edge]) -> None:
        self.covered[order_type].update(edges)

    def missing(self, order_type: OrderType) -> list[Edge]:
        """The edges of ``order_type`` no replay took, in chart order."""
        return [e for e in MACHINES[order_type].edges if e not in self.covered[order_type]]

    def figures(self) -> dict[OrderType, tuple[int, int]]:
        """Per order type: edges exercised, edges in the machine."""
        return {
            order_type: (len(self.covered[order_type]), len(machine.edges))
            for order_type, machine in MACHINES.items()
        }

    def complete(self) -> bool:
        return all(done == total for done, total in self.figures().values())

    def lines(self, *, detail: int = 0) -> list[str]:
        """The coverage table, with up to ``detail`` missing edges named per order type."""
        out = ["transition coverage:"]
        for order_type, (done, total) in self.figures().items():
            out.append(f"  {order_type.value:<18} {done:>3}/{total:<3} {100 * done / total:5.1f} %")
            missing = self.missing(order_type)
            out.extend(f"      not exercised: {edge_name(order_type, e)}" for e in missing[:detail])
            if 0 < detail < len(missing):
                out.append(f"      ... and {len(missing) - detail} more")
        return out
