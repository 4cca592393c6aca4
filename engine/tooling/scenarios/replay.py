"""Replaying a scenario on a fresh engine, and holding what it did against what the author wrote.

Each replay builds its own :class:`~engine.facade.Engine` (a new in-memory store unless one is
given) with a clock the scenario drives and sequential KCI ids, so the same file gives the same
KCIs on every run. A replay stops at the first step that differs: after that the order is in a
state the author did not describe, and every later step would only repeat the same news.

Besides the author's expectations, every replay checks what must hold of any lifecycle: a
refused event sends nothing and changes nothing, and the order's KCI stream is numbered 1..n
without gaps, never goes back in time and is valid under the whole contract.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ..._facade import Engine
from ...core.chart import Edge
from ...core.events import RECEIVED
from ...core.records import Kci
from ...errors import EngineError
from ...orders import SPECS, parse_kci
from ...store.base import Store
from ...store.memory import MemoryStore
from ..testing import sequential_ids
from .compare import compare
from .coverage import edges_exercised
from .model import Expectation, Scenario


class _Clock:
    """The engine's clock during a replay: whatever the scenario says it is now."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Outcome:
    """What the engine did at one point of a scenario: the start or a step."""

    label: str
    event: str
    kcis: list[Kci] = field(default_factory=list)
    error: EngineError | None = None
    status: str | None = None


@dataclass
class Result:
    """A replayed scenario: what happened, what differed, and which transitions it exercised."""

    name: str
    scenario: Scenario
    key: str = ""
    order_id: str | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    edges: set[Edge] = field(default_factory=set)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def kcis(self) -> list[Kci]:
        return [kci for outcome in self.outcomes for kci in outcome.kcis]

    def report(self) -> str:
        """The failures, readable: each step that differed, expected (-) against actual (+)."""
        head = f"{self.name}: {self.scenario.title}"
        return "\n".join([head, *self.failures]) if self.failures else head


def replay(
    scenario: Scenario,
    *,
    name: str = "scenario",
    store: Store | None = None,
    order_prefix: str = "",
    step_lines: Sequence[int] = (),
) -> Result:
    """Replay ``scenario`` on a fresh engine and compare every step with its expectations.

    Args:
        scenario: the lifecycle.
        name: how reports name it (usually its file).
        store: where to keep the order (default: a new in-memory store).
        order_prefix: put before the order's key, so many replays can share one database.
        step_lines: the line of each step in its file, for the report.

    Returns:
        The result; ``result.passed`` says whether everything matched.
    """
    times = scenario.timeline()
    clock = _Clock(times[0])
    # KCI ids are unique per database: replays sharing a store number theirs apart.
    ids = sequential_ids(secrets.randbits(60) if store is not None else 0)
    engine = Engine(store or MemoryStore(), clock=clock, new_id=ids)
    result = Result(name, scenario)
    start = scenario.start
    key = start.order_id or _default_key(scenario.order)
    order_id = order_prefix + key if (order_prefix or start.order_id) else None
    result.key = order_id or key
    outcome = Outcome("start", "create" if _unsolicited(scenario) else RECEIVED)
    try:
        if _unsolicited(scenario):
            outcome.kcis = engine.create_unsolicited_cease(
                scenario.order, order_id=order_id, conversation_id=start.conversation_id
            )
            result.order_id = order_id or key
        else:
            result.order_id = engine.accept_order(
                scenario.order_type,
                scenario.order,
                order_id=order_id,
                conversation_id=start.conversation_id,
                answered_with=start.answered_with,
            )
    except EngineError as exc:
        outcome.error = exc
    _record(result, engine, outcome, start, 0)
    for index, step in enumerate(scenario.steps):
        if not result.passed or result.order_id is None:
            break
        clock.now = times[index + 1]
        outcome = Outcome(f"steps[{index}]", step.event.value)
        before = engine.order(result.order_id)
        try:
            outcome.kcis = engine.apply(result.order_id, step.event, step.data)
        except EngineError as exc:
            outcome.error = exc
            after = engine.order(result.order_id)
            if (after.status, after.next_sequence) != (before.status, before.next_sequence):
                result.failures.append(f"  {outcome.label}: refused, yet the order changed")
        line = step_lines[index] if index < len(step_lines) else 0
        _record(result, engine, outcome, step, line)
    if result.order_id is not None and result.outcomes[0].error is None:
        result.failures.extend(stream_problems(engine.kcis(result.order_id)))
        result.edges = edges_exercised(scenario.order_type, engine.events(result.order_id))
    return result


def _record(
    result: Result, engine: Engine, outcome: Outcome, wanted: Expectation, line: int
) -> None:
    if result.order_id is not None:
        outcome.status = engine.order(result.order_id).status
    result.outcomes.append(outcome)
    order_type = result.scenario.order_type
    diff = compare(order_type, wanted.expect, wanted.refused, outcome.kcis, outcome.error)
    status = wanted.order_status
    if status is not None and outcome.status != status:
        diff += [f"- order status {wanted.order_status}", f"+ order status {outcome.status}"]
    if diff:
        where = f" (line {line})" if line else ""
        result.failures.append(f"  {outcome.label} {outcome.event}{where}:")
        result.failures.extend(f"    {text}" for text in diff)


def stream_problems(kcis: list[Kci]) -> list[str]:
    """What is wrong with one order's KCI stream as a whole (gaps, time going back, bodies the
    contract refuses), as report lines."""
    problems: list[str] = []
    numbers = [kci.sequence_number for kci in kcis]
    if numbers != list(range(1, len(kcis) + 1)):
        problems.append(f"  the KCI stream is not numbered 1..n without gaps: {numbers}")
    issued = [kci.issued_on for kci in kcis]
    if issued != sorted(issued):
        problems.append("  issuedOn goes backwards along the KCI stream")
    for kci in kcis:
        try:
            parse_kci(kci.json())
        except ValidationError as exc:
            problems.append(f"  KCI #{kci.sequence_number} breaks the contract: {exc}")
    return problems


def _unsolicited(scenario: Scenario) -> bool:
    return not SPECS[scenario.order_type].placed_by_tenant


def _default_key(order: dict[str, Any]) -> str:
    if order.get("id") is not None and order.get("tenant"):
        return f"{order['tenant']}:{order['id']}"
    return str(order.get("supplierOrderReference") or "order")
