"""Benchmarks of the commands that read the whole database: history replay, the jeopardy scan
and reconciliation.

Through tools/bench.py (``--only history``: 2,000 orders with ``--quick``, else 10,000, the
database built once and reused by the repeats) they print ``history_replay_orders_per_s``,
``jeopardy_scan_orders_per_s`` and ``reconcile_orders_per_s`` on its JSON line. The full run,
100,000 orders (about 16 minutes to build on two shared cores), is this script on its own:

    python tools/bench_history.py                  100,000 orders
    python tools/bench_history.py --orders 5000    a smaller database
    python tools/bench_history.py --db sqlite:///kept.db --keep   reuse or keep the database

Each measurement runs in a child process of its own, so its peak RSS shows the memory the
command needs (it reads a page of orders at a time: the peak stays flat as the database grows).
Results and the machine they came from are recorded in docs/performance.md.
"""

from __future__ import annotations

import argparse
import atexit
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from bench import peak_rss_mb
from kci_engine import Engine, Event, OrderType
from kci_engine.store.sql import SqlStore
from kci_engine.store.tables import OUTBOX
from kci_engine.tooling.testing import COMMIT_DATES, SteppingClock, provide_order

#: When the benchmark's orders begin: a week of them before the jeopardy scan's "now".
START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
BATCH = 1000

Step = tuple[Event, dict[str, Any] | None]


def lifecycle(n: int) -> list[Step]:
    """Order ``n``'s events: most complete, a tenth each stay held, pending cancellation,
    acknowledged or just received (open orders are what the jeopardy scan looks at)."""
    steps: list[Step] = []
    kind = n % 10
    if kind == 9:
        return steps  # received, never acknowledged: an answer is owed
    steps.append((Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": f"SUP-{n}"}}))
    if kind == 8:
        return steps
    steps.append((Event.COMMIT, {"order": COMMIT_DATES}))
    if kind == 6:
        steps.append((Event.DELAY, {"problem_code": "WAYLEAVE_ISSUE", "text": "wayleave"}))
    elif kind == 7:
        steps.append(
            (Event.CANCELLATION_RECEIVED, {"cancellation_id": n, "cancellation_reason": "OTHER"})
        )
    else:
        steps.append((Event.UPDATE, {"order": {"notes": f"note {n}"}}))
        steps.append((Event.ADD_INFORMATION, {"service_characteristics": {"SERVICE_ID": f"S{n}"}}))
        steps.append((Event.COMPLETE, None))
    return steps


def build(url: str, orders: int) -> dict[str, Any]:
    """Fill a new database with ``orders`` provide orders, then mark most KCIs delivered (a
    few dead, the newest thousand still pending), as a running system's database would be."""
    started = time.perf_counter()
    events = 0
    with SqlStore(url) as store:
        engine = Engine(store, clock=SteppingClock(START, timedelta(milliseconds=5)))
        for first in range(1, orders + 1, BATCH):
            with store.batch():
                for n in range(first, min(first + BATCH, orders + 1)):
                    key = engine.accept_order(OrderType.PROVIDE, provide_order(n, tenant="BENCH"))
                    engine.apply_batch((key, event, data) for event, data in lifecycle(n))
                    events += 1 + len(lifecycle(n))
            if first % 20_000 == 1:
                print(f"  built {first + BATCH - 1:,} orders", file=sys.stderr, flush=True)
        with store.db.begin() as conn:
            conn.execute(OUTBOX.update().values(delivery_state="DELIVERED", attempts=1))
            newest = sa.select(OUTBOX.c.kci_id).order_by(OUTBOX.c.created_at_ms.desc()).limit(1000)
            conn.execute(
                OUTBOX.update()
                .where(OUTBOX.c.kci_id.in_(newest))
                .values(delivery_state="PENDING", attempts=0)
            )
            conn.execute(
                OUTBOX.update()
                .where(OUTBOX.c.order_id.like("BENCH:%13"))
                .values(delivery_state="DEAD", last_error="HTTP 400")
            )
    return {"orders": orders, "events": events, "build_s": round(time.perf_counter() - started, 1)}


def measure_replay(url: str) -> dict[str, Any]:
    from kci_engine.history.replay import ReplayTotals, replay_history

    totals = ReplayTotals()
    with SqlStore(url, read_only=True) as store:
        started = time.perf_counter()
        for result in replay_history(store):
            totals.add(result)
        elapsed = time.perf_counter() - started
    assert totals.problems == 0, totals.to_json()
    return {"history_replay_orders_per_s": round(totals.replayed / elapsed)}


def measure_jeopardy(url: str) -> dict[str, Any]:
    from kci_engine.history.jeopardy import find_jeopardy, gauges

    # A day after the build: every rule has something to find (undelivered KCIs too).
    now = datetime.now(UTC) + timedelta(days=1)
    orders = _orders(url)
    with SqlStore(url, read_only=True) as store:
        started = time.perf_counter()
        found = list(find_jeopardy(store, now=now))
        elapsed = time.perf_counter() - started
    return {
        "jeopardy_scan_orders_per_s": round(orders / elapsed),
        "jeopardy_found": gauges(found),
        "jeopardy_found_items": len(found),
    }


def measure_reconcile(url: str) -> dict[str, Any]:
    from kci_engine.history.reconcile import reconcile

    orders = _orders(url)
    with SqlStore(url, read_only=True) as store:
        started = time.perf_counter()
        out_of_step = sum(1 for _ in reconcile(store))
        elapsed = time.perf_counter() - started
    return {"reconcile_orders_per_s": round(orders / elapsed), "reconcile_out_of_step": out_of_step}


MEASURES: dict[str, Callable[[str], dict[str, Any]]] = {
    "replay": measure_replay,
    "jeopardy": measure_jeopardy,
    "reconcile": measure_reconcile,
}


def child(name: str, url: str) -> dict[str, Any]:
    result = MEASURES[name](url)
    return {**result, f"{name}_peak_rss_mb": round(peak_rss_mb(), 1)}


def measure(name: str, url: str) -> dict[str, Any]:
    """``MEASURES[name]`` on ``url`` in a child process of its own (its peak RSS its own)."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", name, "--db", url],
        check=True,
        capture_output=True,
        text=True,
    )
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


#: Databases built for tools/bench.py, by number of orders: its repeats reuse them.
_BUILT: dict[int, str] = {}


def bench_history(orders: int) -> dict[str, float]:
    """For tools/bench.py: a database of ``orders`` orders (built on the first call), then
    each command timed in a child process; the numeric figures only."""
    if orders not in _BUILT:
        work = tempfile.TemporaryDirectory(prefix="kci-bench-")
        atexit.register(work.cleanup)
        url = f"sqlite:///{Path(work.name) / 'history.db'}"
        build(url, orders)
        _BUILT[orders] = url
    figures: dict[str, float] = {}
    for name in sorted(MEASURES):
        found = measure(name, _BUILT[orders])
        figures.update({k: v for k, v in found.items() if isinstance(v, int | float)})
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--db", help="database URL (default: a new temporary SQLite file)")
    parser.add_argument("--keep", action="store_true", help="reuse the database if it is filled")
    parser.add_argument("--only", choices=sorted(MEASURES), action="append")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.db)))
        return 0
    with tempfile.TemporaryDirectory() as work:
        url = args.db or f"sqlite:///{Path(work) / 'bench.db'}"
        figures: dict[str, Any] = {}
        filled = args.keep and args.db and _orders(url) == args.orders
        if not filled:
            print(f"building {args.orders:,} orders ...", file=sys.stderr, flush=True)
            figures.update(build(url, args.orders))
        for name in args.only or sorted(MEASURES):
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            figures.update(measure(name, url))
        figures["orders"] = args.orders
        print(json.dumps(figures, sort_keys=True))
    return 0


def _orders(url: str) -> int:
    try:
        with SqlStore(url, read_only=True) as store, store.connection() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM kci_order")).scalar() or 0)
    except Exception:
        return -1


if __name__ == "__main__":
    sys.exit(main())
