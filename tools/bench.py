"""Benchmarks for kci-engine. Prints progress lines, then one JSON object on the last line.

    python tools/bench.py            full run
    python tools/bench.py --quick    under a minute on 2 cores (fewer orders, fewer repeats)
    python tools/bench.py --only apply_memory

Every figure is the best of ``--repeat`` runs (the least disturbed by the rest of the machine).
Results and the machine they came from are recorded in docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from kci_engine import Engine, Event, EventData, OrderType
from kci_engine._facade import new_kci_id
from kci_engine.tooling.testing import COMMIT_DATES, provide_order

#: A provide order's lifecycle with the detours suppliers see most: every event is applied
#: with its data as a plain mapping (as it arrives from a supplier's backend), validated,
#: and produces one validated KCI.
LIFECYCLE: tuple[tuple[Event, dict[str, Any] | None], ...] = (
    (Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "SUP-1"}}),
    (Event.COMMIT, {"order": COMMIT_DATES}),
    (Event.WARN, {"problem_code": "NETWORK_ISSUE", "text": "Node maintenance"}),
    (Event.DELAY, {"problem_code": "WAYLEAVE_ISSUE", "text": "Wayleave needed"}),
    (Event.RESUME, None),
    (Event.UPDATE, {"order": {"notes": "Engineer booked"}}),
    (Event.ADD_INFORMATION, {"service_characteristics": {"SERVICE_ID": "SVC-1"}}),
    (Event.COMPLETE, None),
)


def _orders(count: int, start: int = 1) -> Iterator[dict[str, Any]]:
    for n in range(start, start + count):
        yield provide_order(n)


def bench_apply_memory(orders: int) -> dict[str, float]:
    """Events applied to in-memory orders (KCIs built and validated), events per second."""
    engine = Engine()
    ids = [engine.accept_order(OrderType.PROVIDE, order) for order in _orders(orders)]
    events = 0
    started = time.perf_counter()
    for event, data in LIFECYCLE:
        for order_id in ids:
            events += len(engine.apply(order_id, event, data))
    elapsed = time.perf_counter() - started
    return {"apply_memory_events_per_s": events / elapsed}


def _sqlite_file(directory: str, name: str) -> str:
    return f"sqlite:///{Path(directory) / name}"


def _durable_orders(engine: Engine, count: int) -> list[str]:
    items = list(_orders(count))
    ids: list[str] = []
    with engine.store.batch():
        for order in items:
            ids.append(engine.accept_order(OrderType.PROVIDE, order))
    return ids


def bench_durable(orders: int) -> dict[str, float]:
    """The durable path on a SQLite file (WAL, synchronous=FULL), one transaction per event,
    against raw sqlite3 doing the same writes, and against a naive build of the same parts."""
    from kci_engine.store.sql import SqlStore

    count = max(orders // 10, 50)
    with tempfile.TemporaryDirectory(prefix="kci-bench-") as tmp:
        store = SqlStore(_sqlite_file(tmp, "engine.db"))
        engine = Engine(store)
        ids = _durable_orders(engine, count)
        events = 0
        started = time.perf_counter()
        for event, data in LIFECYCLE:
            for order_id in ids:
                events += len(engine.apply(order_id, event, data))
        durable = events / (time.perf_counter() - started)
        body = store.kcis(ids[0])[-1].json()
        document = json.dumps(store.load(ids[0]).document)
        store.close()
        floor = _sqlite_floor(Path(tmp) / "floor.db", count, len(LIFECYCLE), body, document)
        naive = _naive(_sqlite_file(tmp, "naive.db"), max(count // 2, 25))
    return {
        "apply_durable_events_per_s": durable,
        "sqlite_floor_txn_per_s": floor,
        "naive_durable_events_per_s": naive,
        "durable_vs_floor": durable / floor,
        "durable_vs_naive": durable / naive,
    }


def _sqlite_floor(path: Path, orders: int, rounds: int, body: str, document: str) -> float:
    """Raw sqlite3, same schema, journal and sync settings: per transaction the writes the
    engine makes for one event (order row update, outbox insert, event-log insert)."""
    from kci_engine.store.migrate import upgrade
    from kci_engine.store.sql import create_db_engine

    setup = create_db_engine(f"sqlite:///{path}")
    upgrade(setup)
    setup.dispose()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    now = 0
    for n in range(orders):
        conn.execute(
            "INSERT INTO kci_order VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (f"o{n}", "provide", "IN_PROGRESS", "[]", "{}", document, 1, None, 1, None, now, now),
        )
    started = time.perf_counter()
    txns = 0
    for round_ in range(rounds):
        for n in range(orders):
            kci_id = f"{round_:08d}-{n:027d}"
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "UPDATE kci_order SET status=?, document=?, next_sequence=next_sequence+1, "
                "version=version+1, updated_at_ms=? WHERE order_id=? AND version=?",
                ("IN_PROGRESS", document, now, f"o{n}", round_ + 1),
            )
            conn.execute(
                "INSERT INTO kci_outbox (kci_id, order_id, sequence_number, reason_code, status, "
                "event, issued_on, body, delivery_state, attempts, next_attempt_at_ms, "
                "created_at_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    kci_id,
                    f"o{n}",
                    round_ + 1,
                    "WARNING",
                    "IN_PROGRESS",
                    "warn",
                    "2026-11-23T09:00:00.000Z",
                    body,
                    "PENDING",
                    0,
                    now,
                    now,
                ),
            )
            conn.execute(
                "INSERT INTO kci_event (order_id, event_id, event, status_before, status_after, "
                "kci_ids, data, applied_at_ms) VALUES (?,?,?,?,?,?,?,?)",
                (
                    f"o{n}",
                    None,
                    "warn",
                    "IN_PROGRESS",
                    "IN_PROGRESS",
                    f'["{kci_id}"]',
                    '{"problem_code":"NETWORK_ISSUE"}',
                    now,
                ),
            )
            conn.execute("COMMIT")
            txns += 1
    elapsed = time.perf_counter() - started
    conn.close()
    return txns / elapsed


def _naive(url: str, orders: int) -> float:
    """The same parts put together naively: a fresh ORM session and a new transitions Machine
    for every event, and the KCI validated by building the whole pydantic model."""
    from kci_engine.core._lifecycle import run_step
    from kci_engine.core._machine import CompiledChart, Firing
    from kci_engine.core.wire import parse_kci
    from kci_engine.orders import CHARTS
    from kci_engine.store.sql import SqlStore, _order_row, _record, now_ms
    from kci_engine.store.tables import EventRow, OrderRow, OutboxRow
    from sqlmodel import Session

    store = SqlStore(url)
    ids = _durable_orders(Engine(store), orders)
    events = 0
    started = time.perf_counter()
    for event, data in LIFECYCLE:
        for order_id in ids:
            with Session(store.db) as session:
                row = session.get(OrderRow, order_id)
                assert row is not None
                record = _record(row.model_dump())
                chart = CompiledChart(CHARTS[record.order_type], run_step)  # a Machine per order
                firing = Firing(
                    record,
                    event,
                    EventData.model_validate(data or {}),
                    datetime.now(UTC),
                    new_kci_id,
                )
                chart.fire(firing)
                for key, value in _order_row(record, now_ms()).items():
                    setattr(row, key, value)
                row.version += 1
                for kci in firing.kcis:
                    parse_kci(kci.json())
                    session.add(
                        OutboxRow(
                            kci_id=kci.kci_id,
                            order_id=order_id,
                            sequence_number=kci.sequence_number,
                            reason_code=kci.reason_code.value,
                            status=kci.status.value,
                            event=kci.event,
                            issued_on=kci.body["issuedOn"],
                            body=kci.json(),
                            delivery_state="PENDING",
                            attempts=0,
                            next_attempt_at_ms=now_ms(),
                            created_at_ms=now_ms(),
                        )
                    )
                session.add(
                    EventRow(
                        order_id=order_id,
                        event=event.value,
                        status_before="",
                        status_after="",
                        kci_ids="[]",
                        data="{}",
                        applied_at_ms=now_ms(),
                    )
                )
                session.commit()
                events += len(firing.kcis)
    elapsed = time.perf_counter() - started
    store.close()
    return events / elapsed


def bench_batch(orders: int) -> dict[str, float]:
    """Events applied in batches of 1,000 per transaction (bulk import or replay)."""
    from kci_engine.store.sql import SqlStore

    with tempfile.TemporaryDirectory(prefix="kci-bench-") as tmp:
        store = SqlStore(_sqlite_file(tmp, "batch.db"))
        engine = Engine(store)
        ids = _durable_orders(engine, orders // 2)
        items = [(order_id, event, data) for event, data in LIFECYCLE for order_id in ids]
        started = time.perf_counter()
        events = 0
        for start in range(0, len(items), 1000):
            events += sum(len(k) for k in engine.apply_batch(items[start : start + 1000]))
        elapsed = time.perf_counter() - started
        store.close()
    return {"batch_events_per_s": events / elapsed}


def bench_rss(orders: int) -> dict[str, float]:
    """Peak RSS of a fresh process that accepts ``N`` orders on SQLite and applies an event to
    each (in batches): memory must not grow with the number of stored orders."""
    count = 100_000 if orders >= 10_000 else 5_000
    with tempfile.TemporaryDirectory(prefix="kci-bench-") as tmp:
        out = subprocess.run(
            [sys.executable, __file__, "--rss-child", str(count), _sqlite_file(tmp, "rss.db")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    child = json.loads(out.strip().splitlines()[-1])
    return {
        f"rss_mb_{count // 1000}k_orders": child["rss_mb"],
        f"rss_mb_{count // 1000}k_orders_at_1k": child["rss_mb_at_1k"],
    }


def _rss_child(count: int, url: str) -> None:
    from kci_engine.store.sql import SqlStore

    engine = Engine(SqlStore(url))
    at_1k = 0.0
    for start in range(1, count + 1, 1000):
        with engine.store.batch():
            for n in range(start, min(start + 1000, count + 1)):
                order_id = engine.accept_order(OrderType.PROVIDE, provide_order(n))
                engine.apply(order_id, *LIFECYCLE[0])
        if start == 1:
            at_1k = _peak_rss_mb()
    print(json.dumps({"rss_mb": _peak_rss_mb(), "rss_mb_at_1k": at_1k}))


def _peak_rss_mb() -> float:
    """Peak RSS of this process. Linux's ``ru_maxrss`` survives fork and exec (a child reports
    its parent's peak), so read the address space's own high-water mark where there is one."""
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.exists() else ():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_delivery(orders: int) -> dict[str, float]:
    """Outbox (SQLite file) to the sandbox gateway (its own process, loopback, keep-alive),
    against a bare httpx POST loop of the same bodies to the same sandbox; then the latency
    from commit to 204 while events arrive at a steady 200 per second."""
    from kci_engine.delivery.client import GatewayClient
    from kci_engine.delivery.dispatcher import Dispatcher
    from kci_engine.delivery.policy import RetryPolicy
    from kci_engine.store.sql import SqlStore

    count = max(orders // 8, 100)
    with tempfile.TemporaryDirectory(prefix="kci-bench-") as tmp, _sandbox_process() as base:
        store = SqlStore(_sqlite_file(tmp, "delivery.db"))
        engine = Engine(store)
        ids = _durable_orders(engine, count)
        items = [(order_id, event, data) for event, data in LIFECYCLE for order_id in ids]
        for start in range(0, len(items), 2000):
            engine.apply_batch(items[start : start + 2000])
        bodies = [k.json() for order_id in ids for k in store.kcis(order_id)]
        client = GatewayClient(base, "sandbox-client", "sandbox-secret", timeout_s=10)
        dispatcher = Dispatcher(store, client, policy=RetryPolicy(0.05, 1.0), poll_s=0.01)
        started = time.perf_counter()
        delivered = dispatcher.run(idle_exit=True).delivered
        ours = delivered / (time.perf_counter() - started)
        httpx.post(base.replace("/v1", "/_sandbox/reset"), timeout=10)
        bare = _bare_httpx(base, bodies)
        p99 = _steady_latency(engine, client, store, seconds=3 if orders < 10_000 else 15)
        client.close()
        store.close()
    return {
        "delivery_kcis_per_s": ours,
        "bare_httpx_kcis_per_s": bare,
        "delivery_vs_bare_httpx": ours / bare,
        "delivery_p99_ms": p99,
    }


def _bare_httpx(base: str, bodies: list[str]) -> float:
    with httpx.Client(base_url=base + "/", timeout=10) as http:
        token = http.post(
            "auth/supplier/access-token",
            data={
                "grant_type": "client_credentials",
                "client_id": "sandbox-client",
                "client_secret": "sandbox-secret",
            },
        ).json()["access_token"]
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "X-Conversation-ID": "bench",
        }
        started = time.perf_counter()
        for body in bodies:
            response = http.post("kcis", content=body, headers={**headers, "X-Request-ID": "r"})
            assert response.status_code == 204, response.text
        return len(bodies) / (time.perf_counter() - started)


def _steady_latency(engine: Engine, client: Any, store: Any, seconds: float) -> float:
    """Apply events at 200/s while a dispatcher runs; p99 of commit-to-204, in ms."""
    import statistics
    import threading

    from kci_engine.delivery.dispatcher import Dispatcher
    from kci_engine.delivery.policy import RetryPolicy

    ids: list[str] = []
    start_n = 10_000_000
    dispatcher = Dispatcher(store, client, policy=RetryPolicy(0.05, 1.0), poll_s=0.005)
    worker = threading.Thread(target=dispatcher.run)
    worker.start()
    interval = 1 / 200
    next_at = time.perf_counter()
    applied = 0
    n = start_n
    order_id = ""
    step = len(LIFECYCLE)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if step == len(LIFECYCLE):
            n += 1
            order_id = engine.accept_order(OrderType.PROVIDE, provide_order(n))
            ids.append(order_id)
            step = 0
        event, data = LIFECYCLE[step]
        engine.apply(order_id, event, data)
        step += 1
        applied += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.perf_counter()))
    time.sleep(1.0)
    dispatcher.stop()
    worker.join()
    latencies = sorted(dispatcher.stats.latencies_ms)
    return statistics.quantiles(latencies, n=100)[98] if len(latencies) > 100 else float("nan")


@contextlib.contextmanager
def _sandbox_process() -> Iterator[str]:
    """The sandbox gateway in a process of its own on a free loopback port."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kci_engine.cli", "sandbox", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{port}/_sandbox/stats", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def bench_delivery_service(orders: int) -> dict[str, float]:
    """The asyncio dispatcher at a gateway's pace; see tools/bench_delivery.py."""
    from bench_delivery import bench_delivery_service as run

    return run(orders)


BENCHES: dict[str, Callable[[int], dict[str, float]]] = {
    "delivery": bench_delivery,
    "delivery_service": bench_delivery_service,
    "apply_memory": bench_apply_memory,
    "durable": bench_durable,
    "batch": bench_batch,
    "rss": bench_rss,
}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--repeat", type=int, default=None, help="runs per figure (best kept)")
    parser.add_argument("--only", choices=sorted(BENCHES), action="append", help="run only these")
    parser.add_argument("--rss-child", nargs=2, metavar=("N", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        _rss_child(int(args.rss_child[0]), args.rss_child[1])
        return 0
    orders = 2_000 if args.quick else 10_000
    repeat = args.repeat or (1 if args.quick else 3)
    results: dict[str, Any] = {"quick": args.quick, "orders": orders, "repeat": repeat}
    for name in args.only or list(BENCHES):
        best: dict[str, float] = {}
        began = time.perf_counter()
        for _ in range(1 if name == "rss" else repeat):
            gc.collect()
            for key, value in BENCHES[name](orders).items():
                better = min if key.startswith("rss") else max
                best[key] = better(best.get(key, value), value)
        took = time.perf_counter() - began
        figures = ", ".join(f"{k}={v:,.3f}" for k, v in best.items())
        print(f"{name} ({took:.1f} s): {figures}", file=sys.stderr)
        results.update({k: round(v, 3 if "_vs_" in k else 1) for k, v in best.items()})
    results["machine"] = machine()
    print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
