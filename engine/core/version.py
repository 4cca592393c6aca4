"""The chart version: a stable fingerprint of an order type's compiled chart and the contract.

Two engines that give the same version to an order type run its orders the same way: the same
statuses, the same edges (event, source, destination, condition, reason code, rules) and the same
contract tables (what each reason code and status demands). The version is a hash of a canonical
text of all of that, so it does not depend on the Python version, the order of dict insertion or
memory addresses; a rule's code is named by its label and qualified name, not hashed (a change
inside a guard's body keeps the version: ``history replay`` is what finds its effect).

Each order records the version it was created under (``kci_order_origin``); ``kci-engine history
version`` prints the current ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any

from .contract import PROBLEM_CODES, REASONS, SET_ONCE, STATUSES

if TYPE_CHECKING:
    from .spec import OrderTypeSpec

#: Characters of the hex digest kept: 64 bits, plenty to tell a handful of deployed charts apart.
VERSION_LENGTH = 16


def canonical(value: Any) -> Any:
    """``value`` as plain JSON data that is the same on every run: dataclasses by field, enums by
    value, sets sorted, functions by qualified name."""
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: canonical(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.name != "evidence"  # where a rule comes from, not what it does
        }
    if isinstance(value, Mapping):
        return {str(canonical(k)): canonical(v) for k, v in value.items()}
    if isinstance(value, frozenset | set):
        return sorted((canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"
    return value


def contract_text() -> str:
    """The contract tables as canonical JSON (the part of every order type's version they share)."""
    tables = {
        "reasons": canonical(REASONS),
        "statuses": canonical(STATUSES),
        "problem_codes": canonical(PROBLEM_CODES),
        "set_once": canonical(SET_ONCE),
    }
    return json.dumps(tables, sort_keys=True, separators=(",", ":"))


def chart_text(spec: OrderTypeSpec) -> str:
    """The compiled chart of ``spec`` as canonical JSON: its states and every expanded edge, in
    the order ``transitions`` tries them (which edge wins can depend on it)."""
    chart = spec.chart
    edges = [
        {
            "event": edge.step.event.value,
            "source": edge.source,
            "dest": edge.dest,
            "internal": edge.internal,
            "condition": edge.condition_label,
            "reason": None if edge.step.reason is None else edge.step.reason.value,
            "rules": canonical(edge.step.rules),
            "told_by_gateway": edge.step.told_by_gateway,
        }
        for edge in spec.edges
    ]
    data = {
        "order_type": chart.order_type.value,
        "initial": chart.initial,
        "states": canonical(chart.states),
        "edges": edges,
        "completion": canonical(spec.completion),
        "placed_by_tenant": spec.placed_by_tenant,
        "cancellation_reasons": canonical(spec.cancellation_reasons),
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def chart_version(spec: OrderTypeSpec) -> str:
    """The version of ``spec``'s chart and the contract: 16 hex digits."""
    digest = hashlib.sha256()
    digest.update(chart_text(spec).encode())
    digest.update(b"\n")
    digest.update(contract_text().encode())
    return digest.hexdigest()[:VERSION_LENGTH]


def chart_summary(spec: OrderTypeSpec) -> dict[str, Any]:
    """What an order of ``spec``'s type may do next in each status, with the chart version: what
    ``history replay --baseline`` compares the deployed chart against the new one by."""
    return {
        "version": spec.version,
        "finals": sorted(spec.chart.finals),
        "next_events": {
            state.name: sorted(event.value for event in spec.allowed(state.name))
            for state in spec.chart.states
            if not state.final
        },
    }
