"""Generated refusals: every rule of every transition broken once, and every event a status (or
an order's history) refuses.

Each refusal scenario takes the generated path to a transition, then fires the transition's event
with data that breaks one rule, expecting the typed error the rule promises, and then fires it
again with valid data, expecting the transition's KCI with the very sequence number the refused
attempt must not have used. Which rules exist is read from the charts (each step's
:class:`~kci_engine.core.chart.Rule` s) and from the contract tables
(:meth:`~kci_engine.core.spec.OrderTypeSpec.edge_demands`); a step rule the generator cannot
break is an error, so a new guard cannot go untested unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ...core import _rules as rules
from ...core.chart import Edge, Rule
from ...core.codes import OrderType, ProblemCode, ReasonCode
from ...core.contract import PROBLEM_CODES, REASONS, SET_ONCE, Carry, Need, News
from ...core.spec import OrderTypeSpec
from ...errors import GenerationError
from ...orders import SPECS
from .generate import (
    E,
    Lifecycle,
    Move,
    State,
    choose,
    covering,
    covering_scenarios,
    sample_order,
    satisfy,
    scenario_step,
    starts,
    to_scenario,
)
from .model import Scenario


class Break(NamedTuple):
    """One way to break a rule: the data to send instead, and the refusal it must meet."""

    label: str
    data: dict[str, Any]
    refused: dict[str, Any]
    order: dict[str, Any] | None = None  # start from this order instead of the sample
    then_valid: bool = True  # whether the valid event is then accepted


def _missing(field: str) -> dict[str, Any]:
    return {"error": "MissingField", "field": field}


def _violation(rule: str) -> dict[str, Any]:
    return {"error": "ContractViolation", "rule": rule}


def _drop(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in keys}


def _drop_name(data: dict[str, Any], name: str) -> dict[str, Any]:
    """``data`` without ``name``, whether an order field or a characteristic."""
    order = _drop(data.get("order") or {}, name)
    chars = _drop(data.get("service_characteristics") or {}, name)
    out = _drop(data, "order", "service_characteristics")
    if order:
        out["order"] = order
    if chars:
        out["service_characteristics"] = chars
    return out


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
    spec = SPECS[_order_type_of(move)]
    wrong = sorted({*_ALL_REASONS} - spec.cancellation_reasons)[0]
    return [
        Break(
            "no cancellation id", _drop(move.data, "cancellation_id"), _missing("cancellation_id")
        ),
        Break(
            "cancellation reason of another order type",
            {**move.data, "cancellation_reason": wrong},
            _violation("is not a cancellation reason"),
        ),
    ]


_ALL_REASONS = frozenset(reason for spec in SPECS.values() for reason in spec.cancellation_reasons)


def _order_type_of(move: Move) -> OrderType:
    return next(t for t, spec in SPECS.items() if move.edge in spec.edges)


#: How to break each rule the charts attach to steps.
RULE_BREAKERS: dict[Rule, Callable[[Move], list[Break]]] = {
    rules.TEXT_GIVEN: lambda m: [Break("no text", _drop(m.data, "text"), _missing("text"))],
    rules.NAMES_NEW_AMENDMENT: _amendment_news,
    rules.ANSWERS_AMENDMENT: _answers("amendment_id"),
    rules.NAMES_NEW_CANCELLATION: _cancellation_news,
    rules.ANSWERS_CANCELLATION: _answers("cancellation_id"),
}


_LATER = "2030-01-01T00:00:00.000Z"


def _wrong_code(reason: ReasonCode) -> ProblemCode:
    situation = REASONS[reason].situation
    for code, allowed in PROBLEM_CODES.items():
        if allowed is not None and situation not in allowed:
            return code
    raise GenerationError(f"every problem code is allowed on {reason}")


def contract_breaks(spec: OrderTypeSpec, move: Move) -> list[Break]:
    """Every demand the contract tables make of ``move``'s KCI, each broken once: problemCode
    (missing, forbidden, of the wrong column, OTHER without text), text, the fields the new
    status carries, new values, values kept, news and fields set once."""
    edge, data = move.edge, move.data
    demands = spec.edge_demands(edge)
    rule = demands.rule
    out: list[Break] = [_carry_break(spec, move, carry) for carry in demands.carries]
    if rule is None:
        coded = {**data, "text": "x"}
        refused = {"error": "InvalidEventData", "message": "sends no KCI"}
        return [*out, Break("KCI field on an event that sends none", coded, refused)]
    reason = demands.reason
    assert reason is not None
    if rule.problem_code is Need.REQUIRED:
        out.append(Break("no problemCode", _drop(data, "problem_code"), _missing("problemCode")))
        other = {**_drop(data, "text"), "problem_code": "OTHER"}
        out.append(Break("OTHER without text", other, _missing("text")))
    if rule.text is Need.REQUIRED:
        out.append(Break("no text", _drop(data, "text"), _missing("text")))
    if rule.problem_code is Need.FORBIDDEN:
        coded = {**data, "problem_code": "NETWORK_ISSUE"}
        out.append(
            Break("problemCode on a happy path", coded, _violation("carries no problemCode"))
        )
    if rule.situation is not None:
        code = _wrong_code(reason)
        wrong = {**data, "problem_code": code}
        out.append(Break(f"{code} on {reason}", wrong, _violation(f"not a {rule.situation}")))
    out += [_give_break(move, carry) for carry in rule.gives]
    for name in rule.keeps:
        moved = {**data, "order": {**(data.get("order") or {}), name: _LATER}}
        out.append(Break(f"{name} moved", moved, _violation(f"leaves {name} as it was")))
    if News.ORDER in rule.news and edge.internal:
        bare = _drop(data, "order", "service_characteristics", "text", "supplier_notes")
        out.append(Break("nothing new", bare, _violation("nothing new for the tenant")))
    if News.ORDER in rule.news and edge.internal and move.before.committed:
        for name in SET_ONCE:
            if name not in rule.resets:
                moved = {
                    **data,
                    "order": {**(data.get("order") or {}), name: "2030-01-01T00:00:00.000Z"},
                }
                out.append(Break(f"{name} moved", moved, _violation(f"{name} is set once")))
    return out


def _carry_break(spec: OrderTypeSpec, move: Move, carry: Carry) -> Break:
    """Leave out what the new status carries: from the event data when the event gives it,
    else from the order the lifecycle starts with (then the valid event cannot follow)."""
    name = carry.names[0]
    field = spec.characteristics_field if name in carry.characteristics else name
    given = name in (move.data.get("order") or {}) or name in (
        move.data.get("service_characteristics") or {}
    )
    if given:
        return Break(f"no {name}", _drop_name(move.data, name), _missing(field or name))
    start = Lifecycle(spec.order_type, None)
    order = {k: v for k, v in sample_order(spec.order_type, start.created).items() if k != name}
    return Break(f"no {name}", move.data, _missing(name), order, then_valid=False)


def _give_break(move: Move, carry: Carry) -> Break:
    data = move.data
    for name in carry.names:
        data = _drop_name(data, name)
    return Break(f"no new {carry.label}", data, _missing(carry.names[0]))


def breaks(spec: OrderTypeSpec, move: Move) -> list[Break]:
    """Every way to break a rule of ``move``'s transition.

    Raises:
        GenerationError: the transition has a step rule the generator does not know how to break.
    """
    out: list[Break] = []
    for rule in move.edge.step.rules:
        breaker = RULE_BREAKERS.get(rule)
        if breaker is None:
            raise GenerationError(f"no way to break rule {rule.label!r} of {move.event}")
        out.extend(breaker(move))
    return out + contract_breaks(spec, move)


def refusal_scenarios() -> list[tuple[str, Scenario]]:
    """Every rule of every transition broken once (deduplicated by event, source and break),
    every event refused in every status (finals refuse them all), and every event a status
    allows refused where the order's history rules out all its edges."""
    out: list[tuple[str, Scenario]] = []
    for order_type, spec in SPECS.items():
        lifecycles = covering(order_type)
        done: set[tuple[E, str, str]] = set()
        for lifecycle in lifecycles.values():
            if not lifecycle.moves:
                continue  # a supplier-created order's creation: see _start_refusals()
            move = lifecycle.moves[-1]
            for broken in breaks(spec, move):
                if (move.event, move.before.status, broken.label) in done:
                    continue
                done.add((move.event, move.before.status, broken.label))
                name = f"refuse/{order_type.value}:{move.event.value}:{move.before.status}"
                out.append((f"{name}/{broken.label}", _refusal(lifecycle, broken)))
        out.extend(_not_allowed(spec, lifecycles))
        out.extend(_not_taken(spec, lifecycles))
    return out + _start_refusals()


def _refusal(lifecycle: Lifecycle, broken: Break) -> Scenario:
    move = lifecycle.moves[-1]
    prefix = Lifecycle(lifecycle.order_type, lifecycle.created, lifecycle.moves[:-1])
    refused = {"event": move.event, "data": broken.data, "refused": broken.refused}
    steps = [{**refused, "order_status": move.before.status}]
    if broken.then_valid:
        steps.append(scenario_step(move))
    title = f"refuses {move.event.value} in {move.before.status}: {broken.label}"
    scenario = to_scenario(prefix, title, steps)
    if broken.order is not None:
        scenario = scenario.model_copy(update={"order": broken.order})
    return scenario


def _reaching(lifecycles: dict[Edge, Lifecycle]) -> list[Lifecycle]:
    """How the order begins, then shortest lifecycles first, so each status and history is
    reached the shortest way."""
    begin = starts(next(iter(lifecycles.values())).order_type)
    return begin + sorted(lifecycles.values(), key=lambda lc: len(lc.moves))


def _not_allowed(
    spec: OrderTypeSpec, lifecycles: dict[Edge, Lifecycle]
) -> list[tuple[str, Scenario]]:
    reach: dict[str, Lifecycle] = {}
    for lifecycle in _reaching(lifecycles):
        reach.setdefault(lifecycle.state.status, lifecycle)
    out: list[tuple[str, Scenario]] = []
    for status, lifecycle in sorted(reach.items()):
        allowed = sorted(e.value for e in spec.allowed(status))
        refused = {"error": "EventNotAllowed", "allowed": allowed}
        steps = [
            {"event": event, "refused": refused, "order_status": status}
            for event in E
            if event.value not in allowed
        ]
        name = f"not-allowed/{spec.order_type.value}:{status}"
        out.append((name, to_scenario(lifecycle, f"{status} refuses {len(steps)} events", steps)))
    return out


def _not_taken(
    spec: OrderTypeSpec, lifecycles: dict[Edge, Lifecycle]
) -> list[tuple[str, Scenario]]:
    """Events a status allows but the order's history rules out (``commit`` out of a delay
    that began after commitment), found by the model for each status and return stack."""
    reach: dict[tuple[str, tuple[str, ...]], Lifecycle] = {}
    for lifecycle in _reaching(lifecycles):
        reached: State = lifecycle.state
        reach.setdefault((reached.status, reached.stack), lifecycle)
    out: list[tuple[str, Scenario]] = []
    for (status, stack), lifecycle in sorted(reach.items()):
        state = lifecycle.state
        for event in sorted(spec.allowed(status)):
            if choose(spec.order_type, state, event) is not None:
                continue
            refused = {"error": "EventNotAllowed", "message": "for this order"}
            step = {"event": event, "refused": refused, "order_status": status}
            was = "/".join(stack) or "-"
            name = f"not-taken/{spec.order_type.value}:{event.value}:{status}[{was}]"
            title = f"{status} entered from {was} refuses {event.value}"
            out.append((name, to_scenario(lifecycle, title, [step])))
    return out


def _start_refusals() -> list[tuple[str, Scenario]]:
    """A synchronous 201 answer, or a supplier-created order, without what its status carries:
    refused at the start."""
    out: list[tuple[str, Scenario]] = []
    for spec in SPECS.values():
        for edge in spec.edges:
            if edge.source != spec.chart.initial:
                continue
            if not (edge.step.told_by_gateway or not spec.placed_by_tenant):
                continue
            carries = spec.edge_demands(edge).carries
            full: dict[str, Any] = {}
            for carry in carries:
                satisfy(full, spec, carry)
            for carry in carries:
                for name in carry.names:
                    if _model_requires(spec, name):
                        continue  # the order model refuses it first (InvalidOrder)
                    out.append(_start(spec, edge, full, name))
    return out


def _model_requires(spec: OrderTypeSpec, wire_name: str) -> bool:
    return any(
        (info.alias or name) == wire_name and info.is_required()
        for name, info in spec.order_model.model_fields.items()
    )


def _start(
    spec: OrderTypeSpec, edge: Edge, full: dict[str, Any], name: str
) -> tuple[str, Scenario]:
    order_type = spec.order_type
    supplier_created = not spec.placed_by_tenant
    base = sample_order(order_type, edge.dest if supplier_created else None)
    order = {**base, **full.get("order", {})}
    order.pop(name, None)
    start: dict[str, Any] = {"refused": _missing(name)}
    if not supplier_created:
        start["answered_with"] = edge.dest
    what = f"a 201 {edge.dest} answer" if not supplier_created else f"creation {edge.dest}"
    title = f"refuses {what} without {name}"
    scenario = Scenario.model_validate(
        {"title": title, "order_type": order_type, "order": order, "start": start}
    )
    return f"refuse/{order_type.value}:start-{edge.dest}/no {name}", scenario


def generated_scenarios() -> list[tuple[str, Scenario]]:
    """The covering lifecycles and the refusals, as named scenarios."""
    return covering_scenarios() + refusal_scenarios()
