"""Facts about a stored order that jeopardy and reconciliation both read: when it entered its
status, whether the supplier owes the tenant a KCI there, and the times the rows keep."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache

from ..core.spec import OrderTypeSpec
from ._scan import StoredOrder


def entered_at(stored: StoredOrder, status: str) -> datetime:
    """When the order last entered ``status`` (an event that moved it there)."""
    for event in reversed(stored.events):
        if event["status_after"] == status and event["status_before"] != status:
            return at_ms(event["applied_at_ms"])
    return at_ms(stored.row["created_at_ms"])


@cache
def owing(spec: OrderTypeSpec) -> frozenset[str]:
    """The statuses in which the supplier owes the tenant a KCI: where a tenant-placed order
    starts, and where a step puts it without a KCI of its own (a request taken with a 202). Never
    a final status: nothing can be sent after it, and a step into one without a KCI is a 201
    answer (a cancellation taken at once) that the gateway gave the tenant itself."""
    found = {spec.chart.initial} if spec.placed_by_tenant else set()
    found |= {
        edge.dest
        for edge in spec.edges
        if edge.step.reason is None and not edge.step.told_by_gateway and not edge.internal
    }
    return frozenset(found - spec.chart.finals)


def wire_time(value: object) -> datetime | None:
    """A wire date-time (``2026-12-01T08:00:00.000Z``) as an aware datetime, if it is one."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def at_ms(ms: int) -> datetime:
    """A time column (milliseconds since the epoch) as an aware datetime."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def iso(moment: datetime) -> str:
    """``2026-12-24T16:00:00Z``."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
