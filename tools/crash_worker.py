"""The applier of the crash test: applies a deterministic plan of order lifecycles to a database.

    python tools/crash_worker.py --db URL --orders 500 --events 5000 --seed 7

Every call carries an ``event_id`` (``accept`` for the order's arrival, ``e0``, ``e1``, ... for
its events), so the worker can be killed at any moment and started again with the same
arguments: it walks the same plan from the start, events already applied are answered from the
event log and change nothing, and it carries on where the killed one stopped. It prints one JSON
line when the whole plan is applied.

:func:`plan` is also what ``tools/crashtest.py`` checks the database against.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import dataclass
from typing import Any

from kci_engine import Engine, Event, OrderType
from kci_engine.tooling.testing import COMMIT_DATES, cease_order, modify_order, provide_order

Step = tuple[Event, dict[str, Any] | None]
TENANT = "CRASH"
KINDS = (OrderType.PROVIDE, OrderType.MODIFY, OrderType.CEASE)


@dataclass(frozen=True)
class OrderPlan:
    """One order of the plan: its type, the order document, and its events in order."""

    number: int
    order_type: OrderType
    order: dict[str, Any]
    steps: tuple[Step, ...]

    @property
    def order_id(self) -> str:
        return f"{TENANT}:{self.number}"


def _detours(n: int, step: int, kind: OrderType) -> list[list[Step]]:
    """Excursions that leave an IN_PROGRESS order IN_PROGRESS again (one to three events)."""
    amendment = 100 * n + step
    cancellation = 100 * n + step
    detours: list[list[Step]] = [
        [(Event.WARN, {"problem_code": "NETWORK_ISSUE", "text": f"maintenance {step}"})],
        [(Event.UPDATE, {"order": {"notes": f"note {n}.{step}"}})],
        [
            (Event.DELAY, {"problem_code": "WAYLEAVE_ISSUE", "text": "wayleave needed"}),
            (Event.RESUME, None),
        ],
        [
            (Event.REQUEST_INFORMATION, {"problem_code": "COST_ISSUE", "text": "chargeband"}),
            (Event.AMENDMENT_RECEIVED, {"amendment_id": amendment}),
            (Event.ACCEPT_AMENDMENT, {"amendment_id": amendment}),
        ],
        [
            (
                Event.CANCELLATION_RECEIVED,
                {"cancellation_id": cancellation, "cancellation_reason": "NO_LONGER_REQUIRED"},
            ),
            (
                Event.REJECT_CANCELLATION,
                {
                    "cancellation_id": cancellation,
                    "problem_code": "INVALID_REQUEST",
                    "text": "work already done",
                },
            ),
        ],
    ]
    if kind is not OrderType.CEASE:  # cease orders have no appointment steps (L11)
        detours.append(
            [
                (
                    Event.REQUEST_REAPPOINTMENT,
                    {"problem_code": "ACCESS_ISSUE", "text": "no access"},
                ),
                (
                    Event.REAPPOINTED,
                    {
                        "order": {
                            "appointmentSupplierReference": f"APPT-{n}-{step}",
                            "targetDate": "2026-12-03T13:00:00.000Z",
                        }
                    },
                ),
            ]
        )
    return detours


def _order_plan(n: int, length: int, rng: random.Random) -> OrderPlan:
    kind = KINDS[n % len(KINDS)]
    if kind is OrderType.PROVIDE:
        order = provide_order(n, tenant=TENANT)
    elif kind is OrderType.MODIFY:
        order = modify_order(n, tenant=TENANT)
    else:
        order = cease_order(n, tenant=TENANT)
    steps: list[Step] = [
        (Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": f"SUP-{n}"}}),
        (Event.COMMIT, {"order": COMMIT_DATES}),
    ]
    cancelled = rng.random() < 0.1
    ending: list[Step]
    if cancelled:
        ending = [
            (
                Event.CANCELLATION_RECEIVED,
                {"cancellation_id": 1, "cancellation_reason": "NO_LONGER_REQUIRED"},
            ),
            (
                Event.ACCEPT_CANCELLATION,
                {"cancellation_id": 1, "problem_code": "CUSTOMER_CHANGED_MIND"},
            ),
        ]
    else:
        information: dict[str, Any] = (
            {"order": {"notes": f"ceased {n}"}}  # a cease carries no service characteristics
            if kind is OrderType.CEASE
            else {"service_characteristics": {"SERVICE_ID": f"SVC-{n}"}}
        )
        ending = [(Event.ADD_INFORMATION, information), (Event.COMPLETE, None)]
    while len(steps) + len(ending) < length:
        detour = rng.choice(_detours(n, len(steps), kind))
        room = length - len(steps) - len(ending)
        if len(detour) > room:
            detour = _detours(n, len(steps), kind)[0]  # a warning always fits
        steps.extend(detour)
    return OrderPlan(n, kind, order, tuple(steps + ending))


def plan(seed: int, orders: int, events: int) -> tuple[list[OrderPlan], list[int]]:
    """The orders and the schedule: the order number of each call, in the order they are made.

    Each order's calls are its acceptance and then its events, in order; the orders' calls are
    interleaved at random (from ``seed``), so hundreds of orders are in flight at once.
    """
    rng = random.Random(seed)
    length = max(events // max(orders, 1), 4)
    plans = [_order_plan(n, length, rng) for n in range(1, orders + 1)]
    schedule = [p.number for p in plans for _ in range(len(p.steps) + 1)]
    rng.shuffle(schedule)
    return plans, schedule


def apply_plan(url: str, seed: int, orders: int, events: int, rate: float) -> dict[str, int]:
    """Apply the whole plan, idempotently, at most ``rate`` new calls a second (0: no limit).

    Calls already in the event log when the worker starts are made again too (they return what
    they returned the first time and write nothing), but without waiting for the rate.
    """
    import sqlalchemy as sa
    from kci_engine.store.sql import SqlStore
    from kci_engine.store.tables import EVENTS

    plans, schedule = plan(seed, orders, events)
    by_number = {p.number: p for p in plans}
    cursor = dict.fromkeys(by_number, 0)
    store = SqlStore(url, migrate=False)
    with store.db.connect() as conn:
        done = {tuple(row) for row in conn.execute(sa.select(EVENTS.c.order_id, EVENTS.c.event_id))}
    engine = Engine(store)
    calls = replayed = 0
    started = time.monotonic()
    try:
        for number in schedule:
            one = by_number[number]
            position = cursor[number]
            cursor[number] += 1
            event_id = "accept" if position == 0 else f"e{position - 1}"
            if (one.order_id, event_id) in done:
                replayed += 1
            elif rate:
                time.sleep(max(0.0, started + (calls - replayed) / rate - time.monotonic()))
            if position == 0:
                engine.accept_order(
                    one.order_type, one.order, order_id=one.order_id, event_id=event_id
                )
            else:
                event, data = one.steps[position - 1]
                engine.apply(one.order_id, event, {**(data or {}), "event_id": event_id})
            calls += 1
    finally:
        store.close()
    return {"calls": calls, "replayed": replayed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="database URL")
    parser.add_argument("--orders", type=int, default=500)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=0.0, help="new calls a second (0: no limit)")
    args = parser.parse_args()
    result = apply_plan(args.db, args.seed, args.orders, args.events, args.rate)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
