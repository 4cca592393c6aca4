"""Benchmarks for kci-engine. Prints progress lines, then one JSON object on the last line.

    python tools/bench.py            full run
    python tools/bench.py --quick    two minutes or so on 2 cores (fewer orders, fewer repeats)
    python tools/bench.py --only apply_memory
    python tools/bench.py --only postgres   starts its own throwaway PostgreSQL server
    python tools/bench.py --quick --only inbound --only history   the Supplier API; replay,
                                     jeopardy and reconciliation (tools/bench_history.py alone
                                     for the 100,000-order run)

Every figure is the best of ``--repeat`` runs (the least disturbed by the rest of the machine):
the highest rate, the lowest latency, size or cost.
The apply paths are measured beside a floor in the same run, interleaved round by round, and
their targets are the ratios in RATIOS: each repetition's engine figure over the floor measured
beside it (the pair saw the same machine), the median of the repetitions reported, every one of
them under ``ratio_runs``. ``--quick`` still runs these three times (a single repetition's ratio
moves by 15 % either way on a shared machine); its other figures once. Results and the machine
they came from are recorded in docs/performance.md.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import json
import os
import platform
import resource
import sqlite3
import statistics
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
    """Events applied to in-memory orders (KCIs built and validated), events per second, at
    10,000 orders and at 2,000, against a floor measured in the same run, round by round
    interleaved with the 10,000: a dict state machine making the same status moves and building
    and encoding an equivalent KCI."""
    del orders  # the ratio's target is set at 10,000 orders, --quick included
    moves = _lifecycle_moves()
    engine, floor = _interleaved(
        1, lambda _: (_apply_memory(10_000), _memory_floor(10_000, moves), lambda: None)
    )
    small = _apply_memory(2_000)
    gc.collect()
    events, started = 0, time.perf_counter()
    for round_ in range(len(LIFECYCLE)):
        events += small(round_)
    return {
        "memory_floor_events_per_s": floor,
        "apply_memory_events_per_s": engine,
        "apply_memory_2k_events_per_s": events / (time.perf_counter() - started),
    }


def _apply_memory(orders: int) -> Callable[[int], int]:
    """``orders`` orders accepted by an engine on a memory store, and what applies a round of
    LIFECYCLE to all of them (returning the KCIs it made)."""
    engine = Engine()
    ids = [engine.accept_order(OrderType.PROVIDE, order) for order in _orders(orders)]

    def round_(number: int) -> int:
        event, data = LIFECYCLE[number]
        return sum([len(engine.apply(order_id, event, data)) for order_id in ids])

    return round_


#: One lifecycle step as the floor makes it: (status before, event) -> (status after, reason).
Moves = dict[tuple[str, str], tuple[str, str | None]]


def _lifecycle_moves() -> Moves:
    """The status moves and reason codes the engine makes for LIFECYCLE (taken from one order
    run through the engine, so the floor makes exactly the same moves)."""
    engine = Engine()
    order_id = engine.accept_order(OrderType.PROVIDE, provide_order(1))
    moves: Moves = {}
    for event, data in LIFECYCLE:
        before = engine.order(order_id).status
        kcis = engine.apply(order_id, event, data)
        reason = str(kcis[0].reason_code) if kcis else None
        moves[(before, event.value)] = (engine.order(order_id).status, reason)
    return moves


def _memory_floor(orders: int, moves: Moves) -> Callable[[int], int]:
    """The least an in-memory apply can do, for a round of LIFECYCLE on ``orders`` orders:
    look the move up in a dict, merge the order changes, build the KCI dict (id, sequence
    number, issuedOn, reason, problem, the order) and keep its JSON text."""
    documents = [provide_order(n) for n in range(1, orders + 1)]
    states = [{"status": "SENT_TO_SUPPLIER", "seq": 1, "document": d} for d in documents]
    outbox: list[str] = []

    def round_(number: int) -> int:
        event, data = LIFECYCLE[number]
        name = event.value
        given = data or {}
        changes = given.get("order")
        events = 0
        for state in states:
            dest, reason = moves[(state["status"], name)]
            document = state["document"]
            if changes:
                document = {**document, **changes}
            document = {**document, "status": dest}
            state["status"], state["document"] = dest, document
            if reason is None:
                continue
            now = datetime.now(UTC)
            body: dict[str, Any] = {
                "id": new_kci_id(),
                "sequenceNumber": state["seq"],
                "issuedOn": now.isoformat(timespec="milliseconds")[:-6] + "Z",
                "reasonCode": reason,
            }
            if "problem_code" in given:
                body["problemCode"] = given["problem_code"]
                body["text"] = given["text"]
            body["provideServiceOrder"] = document
            outbox.append(json.dumps(body, separators=(",", ":"), ensure_ascii=False))
            state["seq"] += 1
            events += 1
        return events

    return round_


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
    against raw sqlite3 doing the same writes (round by round, interleaved), and against a naive
    build of the same parts."""
    from kci_engine.store.sql import SqlStore

    count = max(orders // 10, 50)
    with tempfile.TemporaryDirectory(prefix="kci-bench-") as tmp:
        raw = _RawSqlite(Path(tmp) / "floor.db", count, *_sample_rows(_sqlite_file(tmp, "s.db")))
        store = SqlStore(_sqlite_file(tmp, "engine.db"))
        engine = Engine(store)
        ids = _durable_orders(engine, count)
        events = txns = 0
        ours = theirs = 0.0
        gc.collect()  # the set-up's objects, as the other benches collect theirs before timing
        for round_, (event, data) in enumerate(LIFECYCLE):
            started = time.perf_counter()
            for order_id in ids:
                events += len(engine.apply(order_id, event, data))
            ours += time.perf_counter() - started
            done, took = raw.round(round_, per_txn=1)
            txns += done
            theirs += took
        store.close()
        raw.close()
        naive = _naive(_sqlite_file(tmp, "naive.db"), max(count // 2, 25))
    return {
        "apply_durable_events_per_s": events / ours,
        "sqlite_floor_txn_per_s": txns / theirs,
        "naive_durable_events_per_s": naive,
    }


def _sample_rows(url: str) -> tuple[str, str]:
    """A KCI body and an order document as the engine writes them (for the raw floors)."""
    from kci_engine.store.sql import SqlStore

    with SqlStore(url) as store:
        engine = Engine(store)
        order_id = engine.accept_order(OrderType.PROVIDE, provide_order(10**9))
        for event, data in LIFECYCLE[:3]:
            engine.apply(order_id, event, data)
        body = store.kcis(order_id)[-1].json()
        document = json.dumps(store.load(order_id).document, separators=(",", ":"))
    return body, document


class _RawSqlite:
    """Raw sqlite3, same schema, journal and sync settings, making the writes the engine makes
    for one event (the order row's UPDATE of the same columns, outbox insert, event-log insert)
    for each of ``orders`` orders a round."""

    def __init__(self, path: Path, orders: int, body: str, document: str) -> None:
        from kci_engine.store.migrate import upgrade
        from kci_engine.store.sql import create_db_engine

        setup = create_db_engine(f"sqlite:///{path}")
        upgrade(setup)
        setup.dispose()
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.keys = [f"o{n}" for n in range(orders)]
        self.body, self.document = body, document
        for key in self.keys:
            self.conn.execute(_RAW_INSERT_ORDER, _raw_order(key, document))

    def round(self, round_: int, per_txn: int) -> tuple[int, float]:
        """One event for every order, ``per_txn`` events to a transaction: (events, seconds)."""
        conn = self.conn
        started = time.perf_counter()
        pending = 0
        for key in self.keys:
            if pending == 0:
                conn.execute("BEGIN IMMEDIATE")
            update, kci, event = _raw_event_rows(key, round_, self.body, self.document)
            conn.execute(_RAW_UPDATE, update)
            conn.execute(_RAW_INSERT_KCI, kci)
            conn.execute(_RAW_INSERT_EVENT, event)
            pending += 1
            if pending == per_txn:
                conn.execute("COMMIT")
                pending = 0
        if pending:
            conn.execute("COMMIT")
        return len(self.keys), time.perf_counter() - started

    def close(self) -> None:
        self.conn.close()


#: The raw floors' statements (sqlite3 placeholders; psycopg's are ``%s``): the engine's writes.
_RAW_INSERT_ORDER = "INSERT INTO kci_order VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
_RAW_UPDATE = (
    "UPDATE kci_order SET order_type=?, status=?, return_stack=?, requests=?, document=?, "
    "next_sequence=?, last_issued_on=?, version=?, conversation_id=?, updated_at_ms=? "
    "WHERE order_id=? AND version=?"
)
_RAW_INSERT_KCI = (
    "INSERT INTO kci_outbox (kci_id, order_id, sequence_number, reason_code, status, event, "
    "issued_on, body, delivery_state, attempts, next_attempt_at_ms, created_at_ms) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
_RAW_INSERT_EVENT = (
    "INSERT INTO kci_event (order_id, event_id, event, status_before, status_after, kci_ids, "
    "data, applied_at_ms) VALUES (?,?,?,?,?,?,?,?)"
)
_RAW_REQUESTS = '{"amendments": [], "cancellation": null}'


def _raw_order(key: str, document: str) -> tuple[Any, ...]:
    return (key, "provide", "IN_PROGRESS", "[]", _RAW_REQUESTS, document, 1, None, 1, None, 0, 0)


def _raw_event_rows(
    key: str, round_: int, body: str, document: str
) -> tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]]:
    """The parameters of one event's UPDATE, outbox INSERT and event-log INSERT."""
    kci_id = f"{round_:08d}-{key:>27}"
    issued = "2026-11-23T09:00:00.000Z"
    update = ("provide", "IN_PROGRESS", "[]", _RAW_REQUESTS, document, round_ + 2, issued)
    return (
        (*update, round_ + 2, None, 0, key, round_ + 1),
        (
            kci_id,
            key,
            round_ + 1,
            "WARNING",
            "IN_PROGRESS",
            "warn",
            issued,
            body,
            "PENDING",
            0,
            0,
            0,
        ),
        (
            key,
            None,
            "warn",
            "IN_PROGRESS",
            "IN_PROGRESS",
            f'["{kci_id}"]',
            '{"problem_code":"NETWORK_ISSUE","text":"Node maintenance"}',
            0,
        ),
    )


def _naive(url: str, orders: int) -> float:
    """The same parts put together naively: a fresh ORM session and a new transitions Machine
    for every event, and the KCI validated by building the whole pydantic model."""
    from kci_engine.core._lifecycle import Firing
    from kci_engine.core._machine import Machine
    from kci_engine.orders import SPECS, parse_kci
    from kci_engine.store.sql import _SET, SqlStore, _order_values, _record, now_ms
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
                spec = SPECS[record.order_type]
                machine = Machine(spec.chart, spec.edges)  # a transitions Machine per event
                firing = Firing(
                    spec,
                    record,
                    event,
                    EventData.model_validate(data or {}),
                    datetime.now(UTC),
                    new_kci_id,
                )
                machine.fire(firing)
                document = json.dumps(record.document, separators=(",", ":"), ensure_ascii=False)
                values = _order_values(record, now_ms(), document, row.version + 1)
                for key, value in zip(_SET, values, strict=True):
                    setattr(row, key, value)
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
    """Events applied in batches of 1,000 per transaction (bulk import or replay), against raw
    sqlite3 making the same three writes per event, 1,000 events to a transaction (round by
    round, interleaved)."""
    from kci_engine.store.sql import SqlStore

    count = orders // 2
    with tempfile.TemporaryDirectory(prefix="kci-bench-") as tmp:
        raw = _RawSqlite(Path(tmp) / "raw.db", count, *_sample_rows(_sqlite_file(tmp, "s.db")))
        store = SqlStore(_sqlite_file(tmp, "batch.db"))
        engine = Engine(store)
        ids = _durable_orders(engine, count)
        events = txns = 0
        ours = theirs = 0.0
        gc.collect()
        for round_, (event, data) in enumerate(LIFECYCLE):
            items = [(order_id, event, data) for order_id in ids]
            started = time.perf_counter()
            for start in range(0, len(items), 1000):
                events += sum(len(k) for k in engine.apply_batch(items[start : start + 1000]))
            ours += time.perf_counter() - started
            done, took = raw.round(round_, per_txn=1000)
            txns += done
            theirs += took
        store.close()
        raw.close()
    return {"batch_events_per_s": events / ours, "raw_sqlite_batch_events_per_s": txns / theirs}


def bench_postgres(orders: int) -> dict[str, float]:
    """PostgreSQL (a throwaway server started as the tests start theirs, ``fsync=off``), one
    transaction per event, with 1 and 2 applier processes on different orders, interleaved round
    by round with raw psycopg making the same writes (BEGIN, UPDATE, INSERT, INSERT ...
    RETURNING, COMMIT) from as many processes: both sides see the same server and machine."""
    base = _postgres()
    count = max(orders // 10, 200)
    engine_url, raw_url = _fresh_database(base, "engine"), _fresh_database(base, "raw")
    body, document = _sample_rows(engine_url)
    engine1, raw1 = _pg_interleaved(engine_url, raw_url, count, 1, (body, document))
    engine2, raw2 = _pg_interleaved(engine_url, raw_url, count, 2, (body, document))
    return {
        "postgres_events_per_s": engine1,
        "raw_postgres_events_per_s": raw1,
        "postgres2_events_per_s": engine2,
        "raw_postgres2_events_per_s": raw2,
    }


_SERVERS = contextlib.ExitStack()
atexit.register(_SERVERS.close)
_PG_URL: list[str] = []


def _postgres() -> str:
    """``KCI_TEST_POSTGRES_URL``, or tests/pgserver.py's throwaway server, started once and
    stopped when the bench exits."""
    given = os.environ.get("KCI_TEST_POSTGRES_URL")
    if given:
        return given
    if not _PG_URL:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.pgserver import postgres_server

        _PG_URL.append(_SERVERS.enter_context(postgres_server()))
    return _PG_URL[0]


def _fresh_database(base: str, name: str) -> str:
    """A new, empty database on the server at ``base``."""
    import sqlalchemy as sa

    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "bench_{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "bench_{name}"')
    admin.dispose()
    return base.rsplit("/", 1)[0] + f"/bench_{name}"


#: One applier's work for an interleaved bench: its engine round, its floor's round (each takes
#: the round's number and returns what it applied), and what closes its connections.
Sides = tuple[Callable[[int], int], Callable[[int], int], Callable[[], None]]


def _interleaved(appliers: int, prepare: Callable[[int], Sides]) -> tuple[float, float]:
    """An engine and its floor, round by round, ``appliers`` workers at a time, each in a
    process of its own (as a deployment runs them: a thread each would share one interpreter
    lock) or, for one, in this process: (engine events per second, floor's per second).
    ``prepare(i)`` sets up worker ``i``; a round is timed from when every worker starts it until
    the last one is done, and the other side's round follows."""
    import multiprocessing

    steps = [(side, round_) for round_ in range(len(LIFECYCLE)) for side in (0, 1)]
    took, done = [0.0, 0.0], [0, 0]
    if appliers == 1:
        *sides, close = prepare(0)
        gc.collect()
        for side, round_ in steps:
            started = time.perf_counter()
            done[side] += sides[side](round_)
            took[side] += time.perf_counter() - started
        close()
        return done[0] / took[0], done[1] / took[1]
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(appliers + 1)
    counts = context.SimpleQueue()

    def child(i: int) -> None:
        *sides, close = prepare(i)
        gc.collect()
        mine = [0, 0]
        for side, round_ in steps:
            barrier.wait()
            mine[side] += sides[side](round_)
        barrier.wait()
        close()
        counts.put(mine)

    workers = [context.Process(target=child, args=(i,)) for i in range(appliers)]
    for worker in workers:
        worker.start()
    barrier.wait()
    previous = time.perf_counter()
    for side, _round in steps:
        barrier.wait()  # every worker has finished this step
        now = time.perf_counter()
        took[side] += now - previous
        previous = now
    for _ in workers:
        engine, raw = counts.get()
        done[0] += engine
        done[1] += raw
    for worker in workers:
        worker.join()
    return done[0] / took[0], done[1] / took[1]


def _pg_interleaved(
    engine_url: str, raw_url: str, count: int, appliers: int, sample: tuple[str, str]
) -> tuple[float, float]:
    """The engine on PostgreSQL, one transaction per event, and raw psycopg 3 making the
    engine's writes for one event in one transaction (BEGIN, the order row's UPDATE, the outbox
    INSERT, the event-log INSERT ... RETURNING, COMMIT); ``count`` orders per applier each."""
    import psycopg
    from kci_engine.store.migrate import upgrade
    from kci_engine.store.sql import SqlStore, create_db_engine

    body, document = sample
    with SqlStore(engine_url) as store:
        engine = Engine(store)
        start = len(list(store.order_ids())) + 1
        with store.batch():
            ids = [
                engine.accept_order(OrderType.PROVIDE, order)
                for order in _orders(count * appliers, start)
            ]
    setup = create_db_engine(raw_url)
    upgrade(setup)
    setup.dispose()
    dsn = raw_url.replace("postgresql+psycopg://", "postgresql://")
    pg = {sql: sql.replace("?", "%s") for sql in (_RAW_INSERT_ORDER, _RAW_UPDATE, _RAW_INSERT_KCI)}
    insert_event = _RAW_INSERT_EVENT.replace("?", "%s") + " RETURNING seq"
    with psycopg.connect(dsn, autocommit=True) as conn:
        first = conn.execute("SELECT count(*) FROM kci_order").fetchone()[0]  # type: ignore[index]
        keys = [f"o{n}" for n in range(first, first + count * appliers)]
        with conn.cursor() as cur:
            cur.executemany(pg[_RAW_INSERT_ORDER], [_raw_order(key, document) for key in keys])

    def prepare(i: int) -> Sides:
        store = SqlStore(engine_url, migrate=False)
        engine = Engine(store)
        mine, theirs = ids[i::appliers], keys[i::appliers]
        # Open the store's connection before the clock starts, as the raw side opens its own
        # (the first use connects and initialises SQLAlchemy's dialect: ~25 ms); a read only.
        store.load(mine[0])
        conn = psycopg.connect(dsn, autocommit=True)
        cur = conn.cursor()

        def applied(round_: int) -> int:
            event, data = LIFECYCLE[round_]
            return sum([len(engine.apply(order_id, event, data)) for order_id in mine])

        def raw(round_: int) -> int:
            for key in theirs:
                update, kci, event = _raw_event_rows(key, round_, body, document)
                cur.execute("BEGIN")
                cur.execute(pg[_RAW_UPDATE], update)
                cur.execute(pg[_RAW_INSERT_KCI], kci)
                cur.execute(insert_event, event)
                cur.fetchone()
                cur.execute("COMMIT")
            return len(theirs)

        def close() -> None:
            store.close()
            cur.close()
            conn.close()

        return applied, raw, close

    return _interleaved(appliers, prepare)


def bench_rss(orders: int) -> dict[str, float]:
    """Peak RSS of a fresh process that accepts ``N`` orders on SQLite and applies an event to
    each (in batches): memory must not grow with the number of stored orders once the store's
    kept records (10,000 by default) are full, so the peak at a fifth of them and at the end
    are compared. And of one that keeps them all in the memory store."""
    count = 100_000 if orders >= 10_000 else 5_000
    with tempfile.TemporaryDirectory(prefix="kci-bench-") as tmp:
        sql = _rss_run(count, _sqlite_file(tmp, "rss.db"))
    memory = _rss_run(count, "memory")
    fifth = {f"rss_mb_{count // 1000}k_orders_at_{count // 5000}k": sql["rss_mb_at_fifth"]}
    return {
        f"rss_mb_{count // 1000}k_orders": sql["rss_mb"],
        f"rss_mb_{count // 1000}k_orders_at_1k": sql["rss_mb_at_1k"],
        **(fifth if count >= 10_000 else {}),  # (at 5,000 orders a fifth is the first 1,000)
        f"rss_mb_{count // 1000}k_orders_memory_store": memory["rss_mb"],
    }


def _rss_run(count: int, url: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(count), url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return figures


def _rss_child(count: int, url: str) -> None:
    from kci_engine.store.sql import SqlStore

    engine = Engine() if url == "memory" else Engine(SqlStore(url))
    at_1k = at_fifth = 0.0
    for start in range(1, count + 1, 1000):
        with engine.store.batch():
            for n in range(start, min(start + 1000, count + 1)):
                order_id = engine.accept_order(OrderType.PROVIDE, provide_order(n))
                engine.apply(order_id, *LIFECYCLE[0])
        if start == 1:
            at_1k = peak_rss_mb()
        if start == count // 5 - 999:  # past the SQL store's kept records (10,000 orders)
            at_fifth = peak_rss_mb()
    print(json.dumps({"rss_mb": peak_rss_mb(), "rss_mb_at_1k": at_1k, "rss_mb_at_fifth": at_fifth}))


def peak_rss_mb() -> float:
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


def bench_inbound(orders: int) -> dict[str, float]:
    """The Supplier API's creates over HTTP; see tools/bench_inbound.py."""
    from bench_inbound import bench_inbound as run

    return run(orders)


def bench_history(orders: int) -> dict[str, float]:
    """History replay, the jeopardy scan and reconciliation; see tools/bench_history.py."""
    from bench_history import bench_history as run

    return run(orders)


BENCHES: dict[str, Callable[[int], dict[str, float]]] = {
    "delivery": bench_delivery,
    "delivery_service": bench_delivery_service,
    "inbound": bench_inbound,
    "history": bench_history,
    "apply_memory": bench_apply_memory,
    "durable": bench_durable,
    "batch": bench_batch,
    "postgres": bench_postgres,
    "rss": bench_rss,
}

#: Ratios computed from the best figures of the same run: name -> (numerator, denominator).
RATIOS: dict[str, tuple[str, str]] = {
    "apply_memory_vs_floor": ("apply_memory_events_per_s", "memory_floor_events_per_s"),
    "durable_vs_floor": ("apply_durable_events_per_s", "sqlite_floor_txn_per_s"),
    "durable_vs_naive": ("apply_durable_events_per_s", "naive_durable_events_per_s"),
    "batch_vs_raw_sqlite": ("batch_events_per_s", "raw_sqlite_batch_events_per_s"),
    "postgres_vs_raw": ("postgres_events_per_s", "raw_postgres_events_per_s"),
    "postgres2_vs_raw": ("postgres2_events_per_s", "raw_postgres2_events_per_s"),
}


#: A figure whose name has one of these words is best when lowest (a latency, a size, a cost).
_LOWER_IS_BETTER = {"ms", "us", "mb", "rss", "growth"}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


#: The apply paths, measured beside their floors: their ratios are the median of three
#: repetitions unless ``--repeat`` says otherwise, ``--quick`` included.
PAIRED = frozenset({"apply_memory", "durable", "batch", "postgres"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a minute or two")
    parser.add_argument("--repeat", type=int, default=None, help="runs per figure (best kept)")
    parser.add_argument("--only", choices=sorted(BENCHES), action="append", help="run only these")
    parser.add_argument("--rss-child", nargs=2, metavar=("N", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        _rss_child(int(args.rss_child[0]), args.rss_child[1])
        return 0
    orders = 2_000 if args.quick else 10_000
    repeat = args.repeat or (1 if args.quick else 3)
    paired_repeat = args.repeat or 3
    results: dict[str, Any] = {"quick": args.quick, "orders": orders, "repeat": repeat}
    runs: dict[str, list[float]] = {}
    for name in args.only or list(BENCHES):
        best: dict[str, float] = {}
        began = time.perf_counter()
        times = 1 if name == "rss" else paired_repeat if name in PAIRED else repeat
        for _ in range(times):
            gc.collect()
            figures = BENCHES[name](orders)
            for key, value in figures.items():
                better = min if _LOWER_IS_BETTER & set(key.split("_")) else max
                best[key] = better(best.get(key, value), value)
            for ratio, (numerator, denominator) in RATIOS.items():
                if numerator in figures and denominator in figures:
                    runs.setdefault(ratio, []).append(figures[numerator] / figures[denominator])
        took = time.perf_counter() - began
        for ratio, paired in runs.items():
            if ratio not in best and RATIOS[ratio][0] in best:
                best[ratio] = statistics.median(paired)
        figures = ", ".join(f"{k}={v:,.3f}" for k, v in best.items())
        print(f"{name} ({took:.1f} s): {figures}", file=sys.stderr)
        results.update({k: round(v, 3 if "_vs_" in k else 1) for k, v in best.items()})
    results["ratio_runs"] = {ratio: [round(r, 3) for r in paired] for ratio, paired in runs.items()}
    results["machine"] = machine()
    print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
