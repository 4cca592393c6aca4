"""Holding what the engine did against what a scenario's author wrote, and showing the difference.

Only what the author gave is compared (a scenario says what it cares about), and the report
shows the same keys on both sides, expected (``-``) against actual (``+``), one KCI a line, so a
failure reads as a diff rather than as two JSON documents to compare by eye.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import Enum
from typing import Any

from ...core.codes import OrderType
from ...core.records import Kci
from ...core.wire import format_datetime
from ...errors import EngineError, EventNotAllowed, MissingField
from ...orders import SPECS
from .model import ExpectedKci, ExpectedRefusal

_BARE = re.compile(r"[\w.:+-]+")


def compare(
    order_type: OrderType,
    expect: list[ExpectedKci] | None,
    refused: ExpectedRefusal | None,
    kcis: list[Kci],
    error: EngineError | None,
) -> list[str]:
    """Expected against actual, as diff lines (``-`` expected, ``+`` actual, two spaces for a
    line that matched); empty when everything the author gave matched."""
    if refused is not None:
        if error is not None and not refusal_mismatch(refused, error):
            return []
        actual = [describe_error(error)] if error else [render(order_type, k) for k in kcis]
        return [f"- {describe_refusal(refused)}", *(f"+ {line}" for line in actual or ["(none)"])]
    if error is not None:
        wanted = [render_expected(e) for e in expect or []]
        return [*(f"- {line}" for line in wanted or ["(no KCI)"]), f"+ {describe_error(error)}"]
    if expect is None:  # the start of a tenant-placed order: nothing said, nothing to check
        return []
    lines: list[str] = []
    differs = len(expect) != len(kcis)
    for position in range(max(len(expect), len(kcis))):
        exp = expect[position] if position < len(expect) else None
        act = kcis[position] if position < len(kcis) else None
        want = render_expected(exp) if exp else "(no KCI)"
        got = render(order_type, act, exp) if act else "(no KCI)"
        if exp is not None and act is not None and matches(order_type, exp, act):
            lines.append(f"  {want}")
        else:
            differs = True
            lines += [f"- {want}", f"+ {got}"]
    return lines if differs else []


def matches(order_type: OrderType, expected: ExpectedKci, kci: Kci) -> bool:
    """Whether ``kci`` has every value ``expected`` gives."""
    actual = project(order_type, kci, expected)
    return all(_same(value, actual.get(key)) for key, value in wanted_values(expected).items())


def wanted_values(expected: ExpectedKci) -> dict[str, Any]:
    """The values the author gave, flattened: ``order.targetDate``, ``characteristics.X``."""
    values: dict[str, Any] = {}
    for key in (
        "reason",
        "status",
        "sequence",
        "problem_code",
        "text",
        "supplier_codes",
        "supplier_notes",
    ):
        if key in expected.checked():
            value = getattr(expected, key)
            values[key] = value.value if isinstance(value, Enum) else value
    if "issued_on" in expected.checked():
        issued = expected.issued_on
        values["issued_on"] = None if issued is None else format_datetime(issued)
    for name, value in (expected.order or {}).items():
        values[f"order.{name}"] = value
    for name, value in (expected.characteristics or {}).items():
        values[f"characteristics.{name}"] = value
    return values


def project(order_type: OrderType, kci: Kci, expected: ExpectedKci | None) -> dict[str, Any]:
    """The KCI's values under the keys ``expected`` gives (reason, status, sequence if none)."""
    spec = SPECS[order_type]
    body = kci.body
    order = body[spec.kci_property]
    values: dict[str, Any] = {
        "reason": kci.reason_code.value,
        "status": kci.status.value,
        "sequence": kci.sequence_number,
        "problem_code": body.get("problemCode"),
        "text": body.get("text"),
        "supplier_codes": body.get("supplierCodes"),
        "supplier_notes": body.get("supplierNotes"),
        "issued_on": body.get("issuedOn"),
    }
    keys = wanted_values(expected) if expected else {"reason": 0, "status": 0, "sequence": 0}
    for key in keys:
        if key.startswith("order."):
            values[key] = order.get(key.removeprefix("order."))
        elif key.startswith("characteristics."):
            values[key] = spec.characteristic(order, key.removeprefix("characteristics."))
    return {key: values[key] for key in keys}


def _same(expected: Any, actual: Any) -> bool:
    """Equal, with date-times compared as instants at any depth (an appointment's start inside
    an ``order:`` expectation as much as a top-level targetDate)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(
            _same(value, actual[key]) for key, value in expected.items()
        )
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(
            _same(e, a) for e, a in zip(expected, actual, strict=True)
        )
    if isinstance(expected, str) and isinstance(actual, str) and expected != actual:
        moments = [_instant(expected), _instant(actual)]
        return None not in moments and moments[0] == moments[1]
    return bool(expected == actual)


def _instant(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def render_expected(expected: ExpectedKci) -> str:
    return _line(wanted_values(expected))


def render(order_type: OrderType, kci: Kci, expected: ExpectedKci | None = None) -> str:
    """One KCI as a line, showing the values ``expected`` cares about (or the essentials)."""
    values = project(order_type, kci, expected)
    if expected is not None:  # show the author's spelling where the values are the same instant
        for key, value in wanted_values(expected).items():
            if _same(value, values[key]):
                values[key] = value
    return _line(values)


def _line(values: dict[str, Any]) -> str:
    head = f"#{values.pop('sequence', '?')} {values.pop('reason')}"
    return " ".join([head, *(f"{key}={_show(value)}" for key, value in values.items())])


def _show(value: Any) -> str:
    if isinstance(value, str) and _BARE.fullmatch(value):
        return value
    return json.dumps(value, ensure_ascii=False)


def refusal_mismatch(expected: ExpectedRefusal, error: EngineError) -> bool:
    """Whether ``error`` is not the refusal the author described."""
    if type(error).__name__ != expected.error:
        return True
    if expected.field is not None and getattr(error, "field", None) != expected.field:
        return True
    if expected.rule is not None and expected.rule not in str(getattr(error, "rule", "")):
        return True
    if expected.message is not None and expected.message not in error.message:
        return True
    allowed = [event.value for event in expected.allowed or ()]
    return expected.allowed is not None and list(getattr(error, "allowed", ())) != allowed


def describe_refusal(expected: ExpectedRefusal) -> str:
    parts = [f"refused {expected.error}"]
    for key in ("field", "rule", "message"):
        if getattr(expected, key) is not None:
            parts.append(f"{key}={_show(getattr(expected, key))}")
    if expected.allowed is not None:
        parts.append(f"allowed={_show([event.value for event in expected.allowed])}")
    return " ".join(parts)


def describe_error(error: EngineError) -> str:
    parts = [f"refused {type(error).__name__}"]
    if isinstance(error, MissingField):
        parts.append(f"field={_show(error.field)}")
    if isinstance(error, EventNotAllowed):
        parts.append(f"allowed={_show(list(error.allowed))}")
    return " ".join(parts) + f": {error.message}"
