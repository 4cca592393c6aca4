"""Transition coverage: which edges of each order type's machine a set of replays exercised.

Coverage is read from the engine's own event log (event, status before, status after), not
from instrumenting the machines, so it works the same on every store and measures what the
engine actually did rather than what a scenario meant to do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ...core.chart import Edge
from ...core.codes import OrderType
from ...core.events import RECEIVED, EventEntry
from ...orders import SPECS


def edge_name(order_type: OrderType, edge: Edge) -> str:
    """An edge as reports name it: ``provide:resume:HELD->IN_PROGRESS[was IN_PROGRESS]``."""
    condition = f"[{edge.condition_label}]" if edge.condition_label else ""
    return f"{order_type.value}:{edge.step.event.value}:{edge.source}->{edge.dest}{condition}"


def edges_exercised(order_type: OrderType, entries: list[EventEntry]) -> set[Edge]:
    """The transitions of the order's machine that its event log shows were taken.

    The log's event and statuses before and after name the edge, except where two edges of an
    event join the same statuses and differ by where the order was before its wait (a
    cancellation rejected before or after acknowledgement both go to ACKNOWLEDGED). For those,
    the statuses the order waited from are followed along the log itself: entering a waiting
    status remembers the status left, coming back to a remembered status forgets it and what was
    entered after, and moving into a working status forgets everything. An order's arrival with
    a synchronous 201 answer is logged as its arrival, already ACKNOWLEDGED or IN_PROGRESS.
    """
    spec = SPECS[order_type]
    chart = spec.chart
    by_move: dict[tuple[str, str, str], list[Edge]] = {}
    for edge in spec.edges:
        by_move.setdefault((edge.step.event.value, edge.source, edge.dest), []).append(edge)
    found: set[Edge] = set()
    stack: list[str] = []
    for entry in entries:
        event = entry.event
        before = entry.status_before or chart.initial
        after = entry.status_after
        if event == RECEIVED:
            sync = spec.synchronous_answers.get(after)
            event = sync.value if sync is not None else ""
        candidates = by_move.get((event, before, after), [])
        if candidates:
            was = stack[-1] if stack else None
            found.add(min(candidates, key=lambda e: _fit(e, was)))
        _follow(stack, chart.waits, before, after)
    return found


def _fit(edge: Edge, was: str | None) -> int:
    """How well ``edge`` fits an order that waited from ``was`` (lower is better): a step whose
    own condition names that status, a return to it, any other edge, a condition naming
    another status."""
    label = edge.condition.label if edge.condition is not None else ""
    if label.startswith("was "):
        return 0 if label == f"was {was}" else 3
    return 1 if edge.back_to == was else 2


def _follow(stack: list[str], waits: frozenset[str], before: str, after: str) -> None:
    """The statuses an order waits from, after a move from ``before`` to ``after``."""
    if after == before:
        return
    if after in stack:
        del stack[stack.index(after) :]
    elif after in waits:
        stack.append(before)
    else:
        stack.clear()


@dataclass
class Coverage:
    """The edges exercised so far, per order type."""

    covered: dict[OrderType, set[Edge]] = field(
        default_factory=lambda: {order_type: set() for order_type in SPECS}
    )

    def add(self, order_type: OrderType, edges: Iterable[Edge]) -> None:
        self.covered[order_type].update(edges)

    def missing(self, order_type: OrderType) -> list[Edge]:
        """The edges of ``order_type`` no replay took, in chart order."""
        return [e for e in SPECS[order_type].edges if e not in self.covered[order_type]]

    def figures(self) -> dict[OrderType, tuple[int, int]]:
        """Per order type: edges exercised, edges in the machine."""
        return {
            order_type: (len(self.covered[order_type]), len(spec.edges))
            for order_type, spec in SPECS.items()
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
