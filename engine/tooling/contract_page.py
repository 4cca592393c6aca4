"""The tables of docs/contract.md, generated from the contract tables and the order-type specs.

The page's prose is written by hand; each table sits between two markers,
``<!-- generated: NAME -->`` and ``<!-- end generated: NAME -->``, and is rewritten from
:mod:`kci_engine.core.contract` (with the events that send each reason code read from the
charts). :func:`fill` replaces every region of a page; the statecharts check
(:func:`kci_engine.tooling.diagrams.check`) fails when a committed region differs from what the
tables say now.
"""

from __future__ import annotations

import re
from collections import defaultdict

from ..core.codes import OrderType, ReasonCode
from ..core.contract import PROBLEM_CODES, REASONS, STATUSES, Need, News, Situation
from ..orders import SPECS

PAGE = "contract.md"
_REGION = re.compile(
    r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated: (?P=name) -->)",
    re.DOTALL,
)


def _need(need: Need, column: Situation | None = None) -> str:
    if need is Need.REQUIRED:
        return f"**required**, {column}" if column else "**required**"
    if need is Need.FORBIDDEN:
        return "never"
    return f"optional, {column}" if column else "optional"


def _events(reason: ReasonCode) -> str:
    by_event: dict[str, set[str]] = defaultdict(set)
    for order_type, spec in SPECS.items():
        for edge in spec.edges:
            if edge.step.reason is reason:
                by_event[edge.step.event.value].add(order_type.value)
    every = {t.value for t in OrderType}
    cells = []
    for event, types in sorted(by_event.items()):
        only = "" if types == every else f" ({', '.join(sorted(types))})"
        cells.append(f"`{event}`{only}")
    return ", ".join(cells) or "—"


def reason_table() -> str:
    """What each reason code's KCI carries: statuses, problemCode, text and the rest."""
    rows = [
        "| reason code | status it carries | problemCode | text | must also carry |",
        "|---|---|---|---|---|",
    ]
    for reason, rule in REASONS.items():
        given = {carry.names for carry in rule.gives}
        also = [
            *(carry.label for carry in rule.carries if carry.names not in given),
            *(f"new {carry.label}" for carry in rule.gives),
            *(f"{name} unchanged" for name in rule.keeps),
        ]
        if rule.answers is not None:
            ref = f"the {rule.answers.name.lower()} reference"
            also.append(ref if rule.always_answers else f"{ref}, when it answers a request")
        if rule.news:
            also.append("news: " + " or ".join(n.value for n in News if n in rule.news))
        statuses = ", ".join(s.value for s in sorted(rule.statuses, key=list(STATUSES).index))
        rows.append(
            f"| `{reason}` | {statuses} | {_need(rule.problem_code, rule.situation)} "
            f"| {_need(rule.text)} | {'; '.join(also) or '—'} |"
        )
    return "\n".join(rows)


def sender_table() -> str:
    """What each reason code tells the tenant, which events send it, and where it never goes."""
    rows = [
        "| reason code | tells the tenant | sent by | never on | the tenant sees |",
        "|---|---|---|---|---|",
    ]
    for reason, rule in REASONS.items():
        never = ", ".join(sorted(t.value for t in rule.not_on)) or "—"
        rows.append(
            f"| `{reason}` | {rule.meaning} | {_events(reason)} | {never} | {rule.tenant_sees} |"
        )
    return "\n".join(rows)


def status_table() -> str:
    """One row per order status: who sets it and what an order in it carries."""
    rows = ["| status | set by | means | an order in it carries |", "|---|---|---|---|"]
    for status, rule in STATUSES.items():
        carries = [carry.label for carry in rule.carries]
        if rule.completes:
            carries += [
                f"{spec.order_type.value}: {spec.completion.label}"
                for spec in SPECS.values()
                if spec.completion is not None
            ]
        rows.append(
            f"| `{status}` | {rule.set_by} | {rule.meaning} | {'; '.join(carries) or '—'} |"
        )
    return "\n".join(rows)


def problem_code_table() -> str:
    """The published rows of the problem-code table, then the codes whose row was not."""
    columns = list(Situation)
    rows = [
        "| problem code | " + " | ".join(c.value for c in columns) + " |",
        "|---|" + ":-:|" * len(columns),
    ]
    unpublished = []
    for code, situations in PROBLEM_CODES.items():
        if situations is None:
            unpublished.append(f"`{code}`")
            continue
        marks = " | ".join("✓" if c in situations else "" for c in columns)
        rows.append(f"| `{code}` | {marks} |")
    tied = ", ".join(
        f"{rule.situation.value}: `{reason}`" for reason, rule in REASONS.items() if rule.situation
    )
    rows += [
        "",
        f"Columns tie to reason codes ({tied}); other reason codes accept any code. The rows of "
        f"{len(unpublished)} codes were not published, so they are accepted in every column: "
        + ", ".join(unpublished)
        + ".",
    ]
    return "\n".join(rows)


REGIONS = {
    "reason-codes": reason_table,
    "senders": sender_table,
    "statuses": status_table,
    "problem-codes": problem_code_table,
}


def fill(text: str) -> str:
    """``text`` with every generated region rewritten from the tables.

    Raises:
        KeyError: a region names no table.
    """

    def replace(match: re.Match[str]) -> str:
        table = REGIONS[match.group("name")]()
        return f"{match.group(1)}{table}\n{match.group(4)}"

    return _REGION.sub(replace, text)
