"""The crash test's checks: what an undisturbed run produces, and every figure of the verdict,
read from the database and the gateway's record after a run of ``tools/crashtest.py``.

Kept apart from the harness that kills and restarts processes, so that
``tests/test_reliability.py`` can score damage made by hand and show the checks are not vacuous.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from crash_worker import plan
from kci_engine import Engine
from kci_engine.store.sql import create_db_engine
from kci_engine.store.tables import EVENTS, OUTBOX, DeliveryState
from kci_engine.tooling.sandbox import order_key

#: Figures that must be zero for the run to pass.
MUST_BE_ZERO = (
    "lost",
    "duplicated_in_outbox",
    "gaps",
    "reorderings",
    "different_bodies_same_id",
    "events_missing",
    "undelivered",
    "sandbox_violations",
    "unknown_received",
    "applier_failures",
    "orders_with_wrong_kcis",
    "received_twice_as_new",
    "record_damaged",
    "sandbox_exits",
)


@dataclass
class Expected:
    """What an undisturbed run produces: per order, the KCIs of each event."""

    reasons: dict[str, list[str]]  # order id -> reason codes in sequence order
    per_event: dict[tuple[str, str], int]  # (order id, event id) -> KCIs it produces
    events: int


def expected(args: argparse.Namespace) -> Expected:
    plans, _ = plan(args.seed, args.orders, args.events)
    engine = Engine()
    reasons: dict[str, list[str]] = {}
    per_event: dict[tuple[str, str], int] = {}
    events = 0
    for one in plans:
        engine.accept_order(one.order_type, one.order, order_id=one.order_id, event_id="accept")
        per_event[(one.order_id, "accept")] = 0
        for position, (event, data) in enumerate(one.steps):
            kcis = engine.apply(one.order_id, event, data)
            per_event[(one.order_id, f"e{position}")] = len(kcis)
            events += 1
        reasons[one.order_id] = [k.reason_code.value for k in engine.kcis(one.order_id)]
    return Expected(reasons, per_event, events)


def verify(url: str, record: Path, gateway_stats: dict[str, Any], want: Expected) -> dict[str, Any]:
    """Every figure of the summary, from the database and the gateway's record."""
    db = create_db_engine(url)
    with db.connect() as conn:
        outbox = [
            dict(row._mapping)
            for row in conn.execute(
                sa.select(
                    OUTBOX.c.kci_id,
                    OUTBOX.c.order_id,
                    OUTBOX.c.sequence_number,
                    OUTBOX.c.reason_code,
                    OUTBOX.c.body,
                    OUTBOX.c.delivery_state,
                    OUTBOX.c.attempts,
                    OUTBOX.c.last_error,
                )
            )
        ]
        logged = [
            dict(row._mapping)
            for row in conn.execute(
                sa.select(EVENTS.c.order_id, EVENTS.c.event_id, EVENTS.c.kci_ids).order_by(
                    EVENTS.c.seq
                )
            )
        ]
    db.dispose()
    by_id = {row["kci_id"]: row for row in outbox}
    per_order: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in outbox:
        per_order[row["order_id"]].append(row)

    # The event log against the plan: each planned call once, with the KCIs it should have.
    seen_events = Counter((e["order_id"], e["event_id"]) for e in logged)
    events_twice = sum(n - 1 for n in seen_events.values() if n > 1)
    unexpected_events = sum(1 for key in seen_events if key not in want.per_event)
    events_missing = sum(1 for key in want.per_event if key not in seen_events)
    events_applied = sum(1 for (_, eid) in seen_events if eid != "accept")
    referenced: Counter[str] = Counter()
    extra_kcis = missing_kcis = 0
    for entry in logged:
        ids = json.loads(entry["kci_ids"])
        referenced.update(ids)
        wanted = want.per_event.get((entry["order_id"], entry["event_id"]), 0)
        extra_kcis += max(0, len(ids) - wanted)
        missing_kcis += max(0, wanted - len(ids))
        missing_kcis += sum(1 for kci_id in ids if kci_id not in by_id)
    orphans = sum(1 for kci_id in by_id if kci_id not in referenced)
    shared = sum(n - 1 for n in referenced.values() if n > 1)
    wrong_reasons = 0
    gaps = 0
    for order_id, rows in per_order.items():
        rows.sort(key=lambda r: r["sequence_number"])
        numbers = [r["sequence_number"] for r in rows]
        gaps += (
            len(set(range(1, max(numbers) + 1)) - set(numbers)) + len(numbers) - len(set(numbers))
        )
        if [r["reason_code"] for r in rows] != want.reasons.get(order_id):
            wrong_reasons += 1
    missing_orders = sum(
        1 for order_id, r in want.reasons.items() if r and order_id not in per_order
    )

    # What the gateway received: first acceptances, in arrival order, across its restarts.
    received, damaged = read_record(record)
    received_ids = Counter(str(body["id"]) for body in received)
    arrival: dict[str, list[int]] = defaultdict(list)
    for body in received:
        arrival[order_key(body)].append(int(body["sequenceNumber"]))
    reorderings = 0
    received_gaps = 0
    for numbers in arrival.values():
        reorderings += sum(1 for a, b in itertools.pairwise(numbers) if b < a)
        received_gaps += sum(1 for a, b in itertools.pairwise([0, *numbers]) if b > a + 1)
    different = sum(
        1
        for body in received
        if str(body["id"]) in by_id and json.loads(by_id[str(body["id"])]["body"]) != body
    )
    different += sum(
        1 for row in outbox if "different body" in (row["last_error"] or "")
    )  # refused by the gateway as a reused id
    sequence_refusals = sum(
        1
        for row in outbox
        if row["delivery_state"] == DeliveryState.DEAD
        and re.search(r"sequenceNumber|issuedOn", row["last_error"] or "")
    )
    not_received = sum(1 for kci_id in by_id if kci_id not in received_ids)
    states = Counter(row["delivery_state"] for row in outbox)
    return {
        "events_planned": want.events,
        "events_applied": events_applied,
        "events_missing": events_missing,
        "kcis": len(outbox),
        "kcis_expected": sum(len(r) for r in want.reasons.values()),
        "lost": not_received + missing_kcis + missing_orders,
        "duplicated_in_outbox": extra_kcis + orphans + shared + events_twice + unexpected_events,
        "orders_with_wrong_kcis": wrong_reasons,
        "gaps": gaps + received_gaps,
        "reorderings": reorderings + sequence_refusals,
        "redeliveries": int(gateway_stats.get("redelivered", 0)),
        "different_bodies_same_id": different,
        "received_twice_as_new": sum(n - 1 for n in received_ids.values() if n > 1),
        "record_damaged": damaged,
        "unknown_received": sum(1 for kci_id in received_ids if kci_id not in by_id),
        "undelivered": states.get(DeliveryState.PENDING, 0) + states.get(DeliveryState.DEAD, 0),
        "dead_letters": states.get(DeliveryState.DEAD, 0),
        "delivery_attempts": sum(int(row["attempts"]) for row in outbox),
        "sandbox_accepted": int(gateway_stats.get("accepted", 0)),
        "sandbox_reloaded": int(gateway_stats.get("reloaded", 0)),
        "sandbox_violations": int(gateway_stats.get("violations", 0)),
        "sandbox_rejected": gateway_stats.get("rejected", {}),
        "faults_injected": gateway_stats.get("faults", {}),
        "tokens_issued": int(gateway_stats.get("tokens_issued", 0)),
    }


def read_record(record: Path) -> tuple[list[dict[str, Any]], int]:
    """The KCI bodies of the gateway's record, and how many of its lines are not one."""
    bodies: list[dict[str, Any]] = []
    damaged = 0
    for line in record.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            body = json.loads(line.decode("utf-8"))
        except ValueError:
            damaged += 1
            continue
        if isinstance(body, dict) and "id" in body and "sequenceNumber" in body:
            bodies.append(body)
        else:
            damaged += 1
    return bodies, damaged


def gateway_totals(killed: list[dict[str, Any]], last: dict[str, Any]) -> dict[str, Any]:
    """The counters of every incarnation added up (those of killed ones as read just before the
    kill); ``accepted`` is what the last one holds: taken back from the record, then accepted."""
    totals: dict[str, Any] = {"accepted": last.get("accepted", 0) + last.get("reloaded", 0)}
    totals["reloaded"] = last.get("reloaded", 0)
    for name in ("redelivered", "violations", "tokens_issued"):
        totals[name] = sum(int(one.get(name, 0)) for one in [*killed, last])
    for name in ("rejected", "faults"):
        added: Counter[str] = Counter()
        for one in [*killed, last]:
            added.update(one.get(name, {}))
        totals[name] = dict(sorted(added.items()))
    return totals
