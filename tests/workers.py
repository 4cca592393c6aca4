"""Worker processes for the concurrency and crash tests: ``python -m tests.workers MODE ...``.

apply URL ORDER_IDS N RETRIES   apply N warn/update events spread over the orders; print one
                                JSON line {"applied": a, "conflicts": c}
churn URL PREFIX COUNT          create COUNT orders and run each through a lifecycle with
                                event ids, forever if COUNT is 0, printing progress lines
creates URL COUNT START         at time START (epoch seconds), create the same COUNT provide
                                orders and unsolicited ceases as every other such worker, each
                                with its one event id; print {"ids": [...], "refused": [...]}
"""

from __future__ import annotations

import json
import random
import sys
import time

from kci_engine import Engine, Event
from kci_engine.errors import ConcurrencyConflict
from kci_engine.store.sql import SqlStore
from kci_engine.tooling.testing import COMMIT_DATES, provide_order, unsolicited_cease_order

LIFE = (
    (Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S"}}),
    (Event.COMMIT, {"order": COMMIT_DATES}),
    (Event.WARN, {"problem_code": "NETWORK_ISSUE"}),
    (Event.DELAY, {"problem_code": "WAYLEAVE_ISSUE"}),
    (Event.RESUME, None),
    (Event.ADD_INFORMATION, {"service_characteristics": {"SERVICE_ID": "SVC"}}),
    (Event.COMPLETE, None),
)


def apply(url: str, order_ids: str, count: int, retries: int) -> None:
    engine = Engine(SqlStore(url), conflict_retries=retries)
    ids = order_ids.split(",")
    applied = conflicts = 0
    rng = random.Random()
    for n in range(count):
        event = Event.WARN if n % 2 else Event.UPDATE
        data = (
            {"problem_code": "NETWORK_ISSUE"}
            if event is Event.WARN
            else {"order": {"notes": f"n{n}-{rng.random()}"}}
        )
        try:
            engine.apply(rng.choice(ids), event, data)
            applied += 1
        except ConcurrencyConflict:
            conflicts += 1
    print(json.dumps({"applied": applied, "conflicts": conflicts}), flush=True)


def churn(url: str, prefix: str, count: int) -> None:
    engine = Engine(SqlStore(url))
    n = 0
    while count == 0 or n < count:
        n += 1
        order = provide_order(n, tenant=prefix)
        order_id = f"{prefix}:{n}"
        engine.accept_order("provide", order, event_id="accept")
        for step, (event, data) in enumerate(LIFE):
            engine.apply(order_id, event, {**(data or {}), "event_id": f"e{step}"})
        print(f"done {order_id}", flush=True)


def creates(url: str, count: int, start: float) -> None:
    """The gateway's retries of the same creates, racing: each call must answer the order."""
    engine = Engine(SqlStore(url))
    time.sleep(max(0.0, start - time.time()))
    ids: list[str] = []
    refused: list[str] = []
    for n in range(1, count + 1):
        try:
            ids.append(engine.accept_order("provide", provide_order(n), event_id=f"create-{n}"))
            kcis = engine.create_unsolicited_cease(
                unsolicited_cease_order(f"R{n}"), event_id=f"cease-{n}"
            )
            ids.append(kcis[0].order_id)
        except Exception as exc:  # reported, not raised: the test counts them
            refused.append(f"{type(exc).__name__}: {exc}")
    print(json.dumps({"ids": ids, "refused": refused}), flush=True)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "apply":
        apply(args[0], args[1], int(args[2]), int(args[3]))
    elif mode == "churn":
        churn(args[0], args[1], int(args[2]))
    elif mode == "creates":
        creates(args[0], int(args[1]), float(args[2]))
    else:
        raise SystemExit(f"unknown mode {mode}")
