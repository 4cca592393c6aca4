"""Worker processes for the concurrency and crash tests: ``python -m tests.workers MODE ...``.

apply URL ORDER_IDS N RETRIES   apply N warn/update events spread over the orders; print one
                                JSON line {"applied": a, "conflicts": c}
churn URL PREFIX COUNT          create COUNT orders and run each through a lifecycle with
                                event ids, forever if COUNT is 0, printing progress lines
"""

from __future__ import annotations

import json
import random
import sys

from kci_engine import Engine, Event
from kci_engine.errors import ConcurrencyConflict
from kci_engine.store.sql import SqlStore
from kci_engine.tooling.testing import COMMIT_DATES, provide_order

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


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "apply":
        apply(args[0], args[1], int(args[2]), int(args[3]))
    elif mode == "churn":
        churn(args[0], args[1], int(args[2]))
    else:
        raise SystemExit(f"unknown mode {mode}")
