"""Generated refusals: every guard of every chart broken once, and every event a status refuses.

Each refusal scenario takes the generated path to a transition, then fires the transition's
event with data that breaks one rule, expecting the typed error the rule promises, and then
fires it again with valid data, expecting the transition's KCI with the very sequence number the
refused attempt must not have used. Which rules exist is read from the charts (each step's
:class:`~engine.machine.Rule` s) and from the contract tables in :mod:`engine.codes`; a rule
the generator cannot break is an error, so a new guard cannot go untested unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ...core import _rules as rules
from ...core._machine import Rule
from ...core.codes import (
    PROBLEM_CODE_FORBIDDEN,
    PROBLEM_CODE_REQUIRED,
    PROBLEM_CODE_SITUATIONS,
    REASON_SITUATION,
    TEXT_REQUIRED,
    OrderType,
    ProblemCode,
    ReasonCode,
)
from ...orders import MACHINES
from .generate import (
    REFERENCE,
    E,
    GenerationError,
    Lifecycle,
    Move,
    U,
    covering,
    covering_scenarios,
    sample_order,
    step,
    to_scenario,
)
from .model import Scenario


class Break(NamedTuple):
    """One way to break a guard: the data to send instead, and the refusal it must meet."""

    label: str
    data: dict[str, Any]
    refused: dict[str, Any]
    order: dict[str, Any] | None = None  # start from this order instead of the sample
    setup: tuple[dict[str, Any], ...] = ()  # steps to take first (a KCI before a 201 answer)
    then_valid: bool = True  # whether the valid event is then accepted


def _missing(field: str) -> dict[str, Any]:
    return {"error": "MissingField", "field": field}


def _violation(rule: str) -> dict[str, Any]:
    return {"error": "ContractViolation", "rule": rule}


def _drop(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in keys}


def _drop_order(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {**data, "order": _drop(data.get("order") or {}, *keys)}


def _amendment_news(move: Move) -> list[Break]:
    out = [Break("no amendment id", _drop(move.data, "amendment_id"), _missing("amendment_id"))]
    if move.before.amendments:
        duplicate = {**move.data, "amendment_id": move.before.amendments[0]}
        out.append(Break("amendment already received", duplicate, _violation("already received")))
    return out


def _answers(field: str) -> Callable[[Move], list[Break]]:
    def breaks(move: Move) -> list[Break]:
        stranger = {**move.data, field: 999}
        return [
            Break(f"no {field}", _drop(move.data, field), _missing(field)),
            Break(f"{field} not in flight", stranger, _violation("is not in flight")),
        ]

    return breaks


def _cancellation_news(move: Move) -> list[Break]:
    unsolicited = move.data.get("cancellation_reason") == "NO_AUTHORISATION"
    wrong = "CUSTOMER_CHANGED_MIND" if unsolicited else "NO_AUTHORISATION"
    return [
        Break(
            "no cancellation id", _drop(move.data, "cancellation_id"), _missing("cancellation_id")
        ),
        Break(
            "cancellation reason of the other kind",
            {**move.data, "cancellation_reason": wrong},
            _violation("is not a cancellation reason"),
        ),
    ]


def _before_first_kci(move: Move) -> list[Break]:
    warn = {
        "event": E.WARN,
        "data": {"problem_code": "NETWORK_ISSUE"},
        "expect": [{"reason": "WARNING", "sequence": 1}],
    }
    refused = _violation("before any KCI")
    return [Break("201 answer after a KCI", move.data, refused, setup=(warn,), then_valid=False)]


#: How to break each rule the charts attach to steps.
RULE_BREAKERS: dict[Rule, Callable[[Move], list[Break]]] = {
    rules.SUPPLIER_REFERENCE: lambda m: [
        Break(
            "no supplierOrderReference",
            _drop_order(m.data, "supplierOrderReference"),
            _missing("supplierOrderReference"),
        )
    ],
    rules.COMMITTED_DATES: lambda m: [
        Break(f"no {f}", _drop_order(m.data, f), _missing(f))
        for f in ("committedDate", "targetDate")
    ],
    rules.BEFORE_FIRST_KCI: _before_first_kci,
    rules.ORDER_CHANGED: lambda m: [Break("no change", {}, _violation("nothing on the order"))],
    rules.NEW_APPOINTMENT: lambda m: [
        Break(
            "no new appointment",
            _drop_order(m.data, "appointmentTimeslot", "appointmentSupplierReference"),
            _missing("appointmentTimeslot"),
        ),
        Break("no new targetDate", _drop_order(m.data, "targetDate"), _missing("targetDate")),
    ],
    rules.TEXT_GIVEN: lambda m: [Break("no text", _drop(m.data, "text"), _missing("text"))],
    rules.NAMES_NEW_AMENDMENT: _amendment_news,
    rules.ANSWERS_AMENDMENT: _answers("amendment_id"),
    rules.NAMES_NEW_CANCELLATION: _cancellation_news,
    rules.ANSWERS_CANCELLATION: _answers("cancellation_id"),
}


def _wrong_code(reason: ReasonCode) -> ProblemCode:
    situation = REASON_SITUATION[reason]
    for code, allowed in PROBLEM_CODE_SITUATIONS.items():
        if allowed is not None and situation not in allowed:
            return code
    raise GenerationError(f"every problem code is allowed on {reason}")


def contract_breaks(order_type: OrderType, move: Move) -> list[Break]:
    """The one-body contract rules of the reason code ``move`` sends (docs/decisions.md C1-C5,
    the completion rule, L5 and L13), each broken."""
    reason = move.edge.step.reason
    data = move.data
    if reason is None:
        return [Break("KCI field on an event that sends none", {**data, "text": "x"},
                      {"error": "InvalidEventData", "message": "sends no KCI"})]  # fmt: skip
    out: list[Break] = []
    if reason in PROBLEM_CODE_REQUIRED:
        out.append(Break("no problemCode", _drop(data, "problem_code"), _missing("problemCode")))
        other = {**_drop(data, "text"), "problem_code": "OTHER"}
        out.append(Break("OTHER without text", other, _missing("text")))
    if reason in TEXT_REQUIRED:
        out.append(Break("no text", _drop(data, "text"), _missing("text")))
    if reason in PROBLEM_CODE_FORBIDDEN:
        coded = {**data, "problem_code": "NETWORK_ISSUE"}
        out.append(
            Break("problemCode on a happy path", coded, _violation("carries no problemCode"))
        )
    if reason in REASON_SITUATION:
        code = _wrong_code(reason)
        situation = REASON_SITUATION[reason].value
        wrong = {**data, "problem_code": code}
        out.append(Break(f"{code} on {reason}", wrong, _violation(f"not a {situation} problem")))
    if reason is ReasonCode.COMPLETED and order_type is OrderType.PROVIDE:
        out.append(Break("no SERVICE_ID", _drop(data, "service_characteristics"),
                         _missing("serviceOrderItem.serviceCharacteristics")))  # fmt: skip
    elif reason is ReasonCode.COMPLETED and order_type is not U:
        order = {k: v for k, v in sample_order(order_type, None).items() if k != "serviceId"}
        out.append(Break("no serviceId", data, _missing("serviceId"), order, then_valid=False))
    if move.event is E.UPDATE and move.before.committed:
        moved = {"order": {"committedDate": "2026-12-09T08:00:00.000Z"}}
        out.append(Break("committedDate moved", moved, _violation("committedDate is set once")))
    return out


def breaks(order_type: OrderType, move: Move) -> list[Break]:
    """Every way to break a guard of ``move``'s transition.

    Raises:
        GenerationError: the transition has a rule the generator does not know how to break.
    """
    out: list[Break] = []
    for rule in move.edge.step.rules:
        breaker = RULE_BREAKERS.get(rule)
        if breaker is None:
            raise GenerationError(f"no way to break rule {rule.label!r} of {move.event}")
        out.extend(breaker(move))
    return out + contract_breaks(order_type, move)


def refusal_scenarios() -> list[tuple[str, Scenario]]:
    """Every guard of every transition broken once (deduplicated by event, source and break),
    and every event refused in every status (finals refuse them all), as named scenarios."""
    out: list[tuple[str, Scenario]] = []
    for order_type in MACHINES:
        lifecycles = covering(order_type)
        done: set[tuple[E, str, str]] = set()
        for lifecycle in lifecycles.values():
            if not lifecycle.moves:
                continue  # an unsolicited cease's creation: see _start_refusals()
            move = lifecycle.moves[-1]
            for broken in breaks(order_type, move):
                if (move.event, move.before.status, broken.label) in done:
                    continue
                done.add((move.event, move.before.status, broken.label))
                name = f"refuse/{order_type.value}:{move.event.value}:{move.before.status}"
                out.append((f"{name}/{broken.label}", _refusal(lifecycle, broken)))
        out.extend(_not_allowed(order_type, lifecycles))
    return out + _start_refusals()


def _refusal(lifecycle: Lifecycle, broken: Break) -> Scenario:
    move = lifecycle.moves[-1]
    prefix = Lifecycle(lifecycle.order_type, lifecycle.created, lifecycle.moves[:-1])
    refused = {"event": move.event, "data": broken.data, "refused": broken.refused}
    steps = [*broken.setup, {**refused, "order_status": move.before.status}]
    if broken.then_valid:
        steps.append(step(move))
    title = f"refuses {move.event.value} in {move.before.status}: {broken.label}"
    scenario = to_scenario(prefix, title, steps)
    if broken.order is not None:
        scenario = scenario.model_copy(update={"order": broken.order})
    return scenario


def _not_allowed(
    order_type: OrderType, lifecycles: dict[Any, Lifecycle]
) -> list[tuple[str, Scenario]]:
    machine = MACHINES[order_type]
    reach: dict[str, Lifecycle] = {}
    for lifecycle in sorted(lifecycles.values(), key=lambda lc: len(lc.moves)):
        reach.setdefault(lifecycle.state.status, lifecycle)
    out: list[tuple[str, Scenario]] = []
    for status, lifecycle in sorted(reach.items()):
        allowed = sorted(e.value for e in machine.allowed(status))
        refused = {"error": "EventNotAllowed", "allowed": allowed}
        steps = [
            {"event": event, "refused": refused, "order_status": status}
            for event in E
            if event.value not in allowed
        ]
        name = f"not-allowed/{order_type.value}:{status}"
        out.append((name, to_scenario(lifecycle, f"{status} refuses {len(steps)} events", steps)))
    return out


def _start_refusals() -> list[tuple[str, Scenario]]:
    """A synchronous 201 answer, or an unsolicited cease created IN_PROGRESS, without what the
    answer promises: refused at the start."""
    out: list[tuple[str, Scenario]] = []
    for order_type in (OrderType.PROVIDE, OrderType.MODIFY, OrderType.CEASE):
        plain = sample_order(order_type, None)
        cases = [
            ("ACKNOWLEDGED", plain, "supplierOrderReference"),
            ("IN_PROGRESS", {**plain, **REFERENCE}, "committedDate"),
        ]
        for answer, order, field in cases:
            start = {"answered_with": answer, "refused": _missing(field)}
            title = f"refuses a 201 {answer} answer without {field}"
            out.append((f"refuse/{order_type.value}:201-{answer}/no {field}", _start(
                order_type, order, start, title)))  # fmt: skip
    bare = {k: v for k, v in sample_order(U, "IN_PROGRESS").items() if k != "committedDate"}
    start = {"refused": _missing("committedDate")}
    title = "refuses to create an unsolicited cease IN_PROGRESS without committedDate"
    out.append(("refuse/unsolicited_cease:create-IN_PROGRESS/no committedDate",
                _start(U, bare, start, title)))  # fmt: skip
    return out


def _start(
    order_type: OrderType, order: dict[str, Any], start: dict[str, Any], title: str
) -> Scenario:
    return Scenario.model_validate(
        {"title": title, "order_type": order_type, "order": order, "start": start}
    )


def generated_scenarios() -> list[tuple[str, Scenario]]:
    """The covering lifecycles and the refusals, as named scenarios."""
    return covering_scenarios() + refusal_scenarios()
