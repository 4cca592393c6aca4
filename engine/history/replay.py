"""History replay: would this engine tell tenants the same thing the stored outbox did?

Each order's stored events are run again, in memory, through the order type's current machine,
starting from the document the order was created with (``kci_order_origin``), with the time each
event was applied. The KCIs that produces are held against the KCIs the outbox holds for the same
events, body by body, with KCI ids and issuedOn normalised as the golden transcripts of the
scenario files are (``<kci N>``, ``<issuedOn>``): what remains is what the tenant would be told.

An order's replay ends in one of four ways (:class:`Outcome`):

- ``identical``: the same KCIs, the same statuses;
- ``different``: a KCI body or a status differs (the diff says where, in the tenant's terms);
- ``refused``: the current machine refuses an event the order went through (a status the
  order is in, or went through, is no longer reached that way);
- ``narrowed``: given a baseline (the deployed charts, :func:`baselines`), the order replays
  the same but is open in a status where the deployed chart allows events the current one
  does not: its next events would be refused after the deploy;
- ``skipped``: the order was created before chart versions were recorded (migration 0005) and
  its first document is kept nowhere.

An order whose replay is identical is in a status the current chart has, and the chart's own
check (every status can reach a final one) means it can still go on; the events it may get next
are the chart's (``kci-engine chart TYPE --format matrix`` shows them).

Nothing is written: the replay fires the machines on plain records, never through a store.
"""

from __future__ import annotations

import difflib
import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ..core._documents import apply_changes
from ..core._lifecycle import Firing
from ..core.codes import OrderType
from ..core.events import NO_DATA, RECEIVED, REPAIRED, EventData, parse_event
from ..core.records import OrderRecord
from ..core.spec import OrderTypeSpec
from ..errors import ConfigurationError, EngineError
from ..orders import SPECS
from ..store.sql import SqlStore
from ._scan import PAGE, StoredOrder, scan
from .normalise import normalise

__all__ = [
    "OrderReplay",
    "Outcome",
    "ReplayTotals",
    "baselines",
    "chart_versions",
    "replay_history",
    "replay_order",
]

#: A diff longer than this is cut: its first lines say what changed.
MAX_DIFF_LINES = 60


class Outcome(StrEnum):
    """How an order's replay ended."""

    IDENTICAL = "identical"
    DIFFERENT = "different"
    REFUSED = "refused"
    NARROWED = "narrowed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class OrderReplay:
    """The replay of one order.

    Attributes:
        order_id: the order.
        order_type: its type.
        status: its stored (current) status.
        outcome: how the replay ended.
        events: events replayed.
        created_under: the chart version it was created under (``None``: not recorded).
        current_version: the version of the chart it was replayed through.
        diff: for ``different`` (and a ``refused`` whose earlier KCIs differ too): a unified
            diff of the stored KCIs (``stored``) against the replay's (``replay``).
        detail: what was refused, or why the order was skipped.
        advice: what to do about it before deploying.
    """

    order_id: str
    order_type: str
    status: str
    outcome: Outcome
    events: int
    created_under: str | None
    current_version: str
    diff: tuple[str, ...] = ()
    detail: str = ""
    advice: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "order_type": self.order_type,
            "status": self.status,
            "outcome": self.outcome.value,
            "events": self.events,
            "created_under": self.created_under,
            "current_version": self.current_version,
            "diff": list(self.diff),
            "detail": self.detail,
            "advice": self.advice,
        }


@dataclass(slots=True)
class ReplayTotals:
    """Counts over a replay, and how many orders each recorded chart version created."""

    replayed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    created_under: Counter[str] = field(default_factory=Counter)

    def add(self, result: OrderReplay) -> None:
        self.replayed += 1
        self.outcomes[result.outcome.value] += 1
        self.created_under[result.created_under or "unrecorded"] += 1

    @property
    def problems(self) -> int:
        """Orders that differ, are refused or lose next events: each one blocks a deploy."""
        return sum(self.outcomes[o] for o in (Outcome.DIFFERENT, Outcome.REFUSED, Outcome.NARROWED))

    def to_json(self) -> dict[str, Any]:
        return {
            "replayed": self.replayed,
            **{outcome.value: self.outcomes[outcome.value] for outcome in Outcome},
            "created_under": dict(sorted(self.created_under.items())),
        }


def chart_versions(specs: Mapping[OrderType, OrderTypeSpec] = SPECS) -> dict[str, str]:
    """The current chart version of each order type."""
    return {spec.order_type.value: spec.version for spec in specs.values()}


def replay_history(
    store: SqlStore,
    *,
    specs: Mapping[OrderType, OrderTypeSpec] = SPECS,
    order_ids: Iterable[str] | None = None,
    since: datetime | None = None,
    page: int = PAGE,
    baseline: Mapping[str, Any] | None = None,
) -> Iterator[OrderReplay]:
    """Replay every stored order (or those in ``order_ids``, or those changed since ``since``)
    through ``specs``' machines, one order at a time, in constant memory.

    Args:
        store: the database (a read-only store is enough: nothing is written).
        specs: the order types to replay through (default: this engine's; a test or a review
            passes changed ones, e.g. built with :meth:`OrderTypeSpec.with_chart`).
        order_ids: only these orders.
        since: only orders with an event at or after this time (timezone-aware).
        page: orders read per database round trip.
        baseline: the deployed charts (``kci-engine history version --charts``, read with
            :func:`baselines`): open orders that would lose next events are ``narrowed``.

    Yields:
        One :class:`OrderReplay` per order, in order-id order.

    Raises:
        StoreError: the database cannot be read.
    """
    since_ms = None if since is None else int(since.timestamp() * 1000)
    for stored in scan(store, order_ids=order_ids, since_ms=since_ms, page=page, origins=True):
        yield replay_order(stored, specs, baseline)


def replay_order(
    stored: StoredOrder,
    specs: Mapping[OrderType, OrderTypeSpec] = SPECS,
    baseline: Mapping[str, Any] | None = None,
) -> OrderReplay:
    """Replay one stored order (see the module's docstring)."""
    row = stored.row
    spec = specs[OrderType(row["order_type"])]

    def result(outcome: Outcome, **rest: Any) -> OrderReplay:
        return OrderReplay(
            order_id=stored.order_id,
            order_type=spec.order_type.value,
            status=row["status"],
            outcome=outcome,
            events=rest.pop("events", 0),
            created_under=None if stored.origin is None else stored.origin["chart_version"],
            current_version=spec.version,
            **rest,
        )

    if stored.origin is None:
        return result(
            Outcome.SKIPPED,
            detail="created before chart versions were recorded (migration 0005): the document "
            "it began with is kept nowhere",
            advice="nothing to do: orders created from now on are replayed",
        )
    bodies = {kci["kci_id"]: kci["body"] for kci in stored.outbox}
    # A dead letter an operator repaired is compared as the engine first wrote it.
    for repair in reversed(stored.repairs):
        bodies[repair["kci_id"]] = repair["refused_body"]
    run = _Run(spec, stored)
    for number, event in enumerate(stored.events, 1):
        told = [json.loads(bodies[k]) for k in json.loads(event["kci_ids"]) if k in bodies]
        run.stored.append(_step(event["event"], event["status_after"], told, run.stored_ids))
        refusal = run.fire(event)
        if refusal is not None:
            diff = _diff(run.stored[:-1], run.replayed)
            status, name = event["status_before"] or spec.chart.initial, event["event"]
            return result(
                Outcome.REFUSED,
                events=number,
                diff=diff,
                detail=f"event {number} ('{name}' in status {status}): {refusal}",
                advice=_refused_advice(spec, row["status"], name, status),
            )
    diff = _diff(run.stored, run.replayed)
    if diff:
        return result(
            Outcome.DIFFERENT,
            events=len(stored.events),
            diff=diff,
            advice="the same events would tell the tenant something else; if that is the change "
            "you meant, deploy: KCIs already sent stay as they are and the order's next KCIs "
            "follow the new chart (docs/history.md)",
        )
    lost = _lost(spec, run.record.status, baseline)
    if lost:
        status = run.record.status
        return result(
            Outcome.NARROWED,
            events=len(stored.events),
            detail=f"in {status} the deployed chart allows {', '.join(lost)}; the new one does not",
            advice=f"if orders in {status} may still need {', '.join(lost)}, keep the step; "
            "otherwise move them on with the deployed version before deploying (docs/history.md)",
        )
    return result(Outcome.IDENTICAL, events=len(stored.events))


class _Run:
    """One order's replay: the working record and both transcripts."""

    def __init__(self, spec: OrderTypeSpec, stored: StoredOrder) -> None:
        assert stored.origin is not None
        self.spec = spec
        document = json.loads(stored.origin["document"])
        first = stored.events[0]["event"] if stored.events else RECEIVED
        if first == RECEIVED:
            # The origin holds the document after a synchronous answer, if there was one; the
            # replay starts before it and fires that answer again.
            document = {**document, "status": spec.chart.initial}
        self.record = OrderRecord(
            stored.order_id,
            spec.order_type,
            spec.chart.initial,
            document,
            conversation_id=stored.row["conversation_id"],
        )
        counter = itertools.count(1)
        self.new_id: Callable[[], str] = lambda: f"replay-{next(counter)}"
        self.stored: list[dict[str, Any]] = []
        self.replayed: list[dict[str, Any]] = []
        self.stored_ids: dict[str, str] = {}
        self.replay_ids: dict[str, str] = {}

    def fire(self, event: Mapping[str, Any]) -> str | None:
        """Fire one stored event; the refusal's message, or ``None``."""
        name = event["event"]
        now = datetime.fromtimestamp(event["applied_at_ms"] / 1000, UTC)
        try:
            if name == RECEIVED:
                answered = event["status_after"]
                if answered == self.spec.chart.initial:
                    self.replayed.append(_step(name, self.record.status, [], self.replay_ids))
                    return None
                sync = self.spec.synchronous_answers.get(answered)
                if sync is None:
                    return f"the chart has no synchronous 201 answer with status {answered}"
                kind, data = sync, NO_DATA
            elif name == REPAIRED:  # an operator's correction of the order's data
                data = EventData.model_validate(json.loads(event["data"]))
                self.record.document = apply_changes(
                    self.spec, self.record.document, data.order, data.service_characteristics
                )
                self.replayed.append(_step(name, self.record.status, [], self.replay_ids))
                return None
            else:
                kind = parse_event(name)
                given = event["data"]
                data = NO_DATA if given == "{}" else EventData.model_validate(json.loads(given))
            firing = Firing(self.spec, self.record, kind, data, now, self.new_id)
            self.spec.machine.fire(firing)
        except EngineError as exc:
            return exc.message
        bodies = [kci.body for kci in firing.kcis]
        self.replayed.append(_step(name, self.record.status, bodies, self.replay_ids))
        return None


def _step(
    event: str, status: str, bodies: list[dict[str, Any]], ids: dict[str, str]
) -> dict[str, Any]:
    return {"event": event, "status": status, "kcis": [normalise(b, ids) for b in bodies]}


def _dumps(step: dict[str, Any]) -> list[str]:
    return json.dumps(step, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def _diff(stored: list[dict[str, Any]], replayed: list[dict[str, Any]]) -> tuple[str, ...]:
    """Where the two transcripts (one step per event, as many on each side) differ, event by
    event: a heading naming the event, then a unified diff of its status and KCI bodies."""
    lines: list[str] = []
    for number, (was, now) in enumerate(zip(stored, replayed, strict=True), 1):
        if was == now:
            continue
        lines.append(f"event {number} '{was['event']}':")
        body = difflib.unified_diff(
            _dumps(was), _dumps(now), fromfile="stored", tofile="replay", lineterm="", n=1
        )
        lines.extend(line for line in body if not line.startswith(("---", "+++")))
    if len(lines) > MAX_DIFF_LINES:
        lines = [*lines[:MAX_DIFF_LINES], f"... {len(lines) - MAX_DIFF_LINES} more diff lines"]
    return tuple(lines)


def baselines(text: str, *, source: str = "baseline") -> dict[str, Any]:
    """The deployed charts, from the JSON ``kci-engine history version --charts`` printed.

    Raises:
        ConfigurationError: it is not that JSON.
    """
    try:
        data = json.loads(text)
        for summary in data.values():
            if not isinstance(summary["next_events"], dict) or not summary["version"]:
                raise TypeError(summary)
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ConfigurationError(
            f"{source}: not the output of `kci-engine history version --charts`"
        ) from None
    return dict(data)


def _lost(spec: OrderTypeSpec, status: str, baseline: Mapping[str, Any] | None) -> list[str]:
    """The events the deployed chart allows in ``status`` that this one does not."""
    if baseline is None:
        return []
    deployed = baseline.get(spec.order_type.value)
    if deployed is None or status not in deployed["next_events"]:
        return []
    now = {event.value for event in spec.allowed(status)}
    return sorted(set(deployed["next_events"][status]) - now)


def _refused_advice(spec: OrderTypeSpec, current: str, event: str, status: str) -> str:
    state = spec.chart.state(current)
    if state is not None and state.final:
        return (
            f"the order is finished ({current}): nothing changes for it, but its history no "
            f"longer replays; if '{event}' in {status} should still be allowed, keep the step"
        )
    return (
        f"the order is still open ({current}): if orders in {status} may still get '{event}', "
        "keep that step in the new chart; otherwise move open orders on before deploying "
        "(docs/history.md)"
    )
