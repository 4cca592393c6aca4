"""Reliability: processes killed with SIGKILL mid-apply and mid-delivery, the gateway itself
killed and restarted, a gateway that fails 30 % of the time, and processes racing on the same
orders, on SQLite and PostgreSQL.

The crash test itself is ``tools/crashtest.py`` (full size in docs/reliability.md); here it runs
small. Racing processes on many orders are in test_store_sql.py; the races here are forced: every
process reads the order before any of them writes, so conflicts are certain, not likely.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa
from kci_engine import Engine, Event
from kci_engine.errors import ConcurrencyConflict
from kci_engine.store.sql import SqlStore
from kci_engine.store.tables import OUTBOX
from kci_engine.tooling.testing import COMMIT_DATES, provide_order

ROOT = Path(__file__).resolve().parent.parent
#: Written out here on purpose, not imported from tools/crash_checks.py (MUST_BE_ZERO): a check
#: dropped from the harness must still fail these tests.
ZEROS = (
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


def _crashtest(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "crashtest.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    summary: dict[str, Any] = json.loads(lines[-1])
    assert proc.returncode == 0, "\n".join(lines[-15:]) + proc.stderr[-2000:]
    return summary


def _assert_nothing_lost(summary: dict[str, Any], kills: int, sandbox_kills: int) -> None:
    assert {name: summary[name] for name in ZEROS} == dict.fromkeys(ZEROS, 0)
    assert summary["ok"] is True
    assert summary["kills"] == kills
    assert summary["kills_applier"] >= 1
    assert summary["kills_dispatcher"] >= 1
    assert summary["kills_sandbox"] == sandbox_kills
    assert summary["concurrency"] == 128
    assert summary["events_applied"] == summary["events_planned"]
    assert summary["kcis"] == summary["kcis_expected"] == summary["sandbox_accepted"]
    if sandbox_kills:
        # The last gateway took back what the ones before it had accepted (it was killed while
        # KCIs were being delivered), and accepted the rest itself.
        assert 0 < summary["sandbox_reloaded"] < summary["kcis"]


def test_sigkilled_applier_dispatcher_and_gateway_lose_reorder_and_duplicate_nothing() -> None:
    """150 orders, 750 events, 128 in flight; the applier and the dispatcher SIGKILLed 4 times
    between them, and the sandbox gateway twice among those, restarted on its record."""
    summary = _crashtest(
        *("--orders", "150", "--events", "750", "--kills", "4", "--sandbox-kills", "2"),
        *("--seed", "11", "--release-leases"),
    )
    _assert_nothing_lost(summary, kills=4, sandbox_kills=2)
    assert summary["kcis"] > 700


def test_under_30_percent_gateway_faults_and_kills_everything_arrives_once_in_order() -> None:
    """The fault soak, small: every kind of fault injected, the gateway killed and restarted
    twice, every KCI delivered in order, and the KCIs the gateway processed before a timeout,
    a dropped connection or its own death are redelivered with the identical body."""
    summary = _crashtest(
        *("--orders", "150", "--events", "750", "--kills", "3", "--sandbox-kills", "2"),
        *("--seed", "12", "--fault-rate", "0.3", "--release-leases"),
    )
    _assert_nothing_lost(summary, kills=3, sandbox_kills=2)
    assert all(count > 0 for count in summary["faults_injected"].values()), summary
    assert summary["redeliveries"] > 0
    assert summary["delivery_attempts"] > summary["kcis"]


def test_on_postgresql_killed_processes_lose_nothing(postgres_url: str) -> None:
    """The crash test with the outbox in PostgreSQL."""
    from tests.conftest import _fresh_postgres_database

    databases = _fresh_postgres_database(postgres_url, "crashtest")
    url = next(databases)
    try:
        summary = _crashtest(
            *("--orders", "40", "--events", "400", "--kills", "3", "--sandbox-kills", "1"),
            *("--seed", "13", "--db", url, "--release-leases"),
        )
    finally:
        next(databases, None)
    _assert_nothing_lost(summary, kills=3, sandbox_kills=1)
    assert summary["database"] == "postgresql+psycopg"


def _crash_module(name: str) -> ModuleType:
    """A module of tools/ (crash_checks, crash_worker), imported as the crash test imports it."""
    tools = str(ROOT / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    return importlib.import_module(name)


def test_the_crash_test_checks_catch_loss_reordering_duplication_and_changed_bodies(
    sqlite_url: str, tmp_path: Path
) -> None:
    """The crash test's verdicts are not vacuous: a clean run scores zero, and each kind of
    damage, made by hand, is counted, including what a gateway that forgot or garbled its record
    across a restart would leave."""
    checks, worker = _crash_module("crash_checks"), _crash_module("crash_worker")
    args = type("Args", (), {"seed": 5, "orders": 6, "events": 40})()
    SqlStore(sqlite_url).close()
    worker.apply_plan(sqlite_url, 5, 6, 40, 0.0)
    want = checks.expected(args)
    db = sa.create_engine(sqlite_url)
    with db.begin() as conn:
        conn.execute(OUTBOX.update().values(delivery_state="DELIVERED"))
        rows = conn.execute(
            sa.select(OUTBOX.c.body).order_by(OUTBOX.c.order_id, OUTBOX.c.sequence_number)
        ).all()
    record = tmp_path / "received.jsonl"
    lines = [row.body for row in rows]
    stats = {"accepted": len(lines), "redelivered": 0, "violations": 0}

    def verdict(received: list[str]) -> dict[str, Any]:
        record.write_text("".join(line + "\n" for line in received))
        result: dict[str, Any] = checks.verify(sqlite_url, record, stats, want)
        return result

    clean = verdict(lines)
    assert {name: clean[name] for name in checks.MUST_BE_ZERO if name in clean} == {
        name: 0 for name in checks.MUST_BE_ZERO if name in clean
    }
    assert clean["kcis"] == clean["kcis_expected"] == len(lines)

    assert verdict(lines[:3] + lines[4:])["lost"] == 1
    assert verdict([lines[1], lines[0], *lines[2:]])["reorderings"] == 1
    changed = json.loads(lines[2])
    changed["issuedOn"] = "2030-01-01T00:00:00.000Z"
    assert verdict([*lines[:2], json.dumps(changed), *lines[3:]])["different_bodies_same_id"] == 1
    # A restarted gateway that forgot its record takes a redelivered first KCI as new.
    forgot = verdict([*lines, lines[0]])
    assert forgot["received_twice_as_new"] == 1
    assert forgot["reorderings"] == 1
    # A line cut short by a killed gateway, the next acceptance glued to it.
    glued = verdict([*lines[:3], lines[3][:40] + lines[4], *lines[5:]])
    assert glued["record_damaged"] == 1
    assert glued["lost"] == 2

    with db.begin() as conn:  # a KCI written twice: an extra row no event accounts for
        first = conn.execute(sa.select(OUTBOX).limit(1)).one()._asdict()
        top = conn.execute(
            sa.select(sa.func.max(OUTBOX.c.sequence_number)).where(
                OUTBOX.c.order_id == first["order_id"]
            )
        ).scalar_one()
        conn.execute(
            OUTBOX.insert().values(
                {
                    **first,
                    "kci_id": "00000000-0000-4000-8000-000000000001",
                    "sequence_number": top + 2,
                }
            )
        )
    damaged = verdict(lines)
    assert damaged["duplicated_in_outbox"] == 1
    assert damaged["gaps"] == 1
    assert damaged["lost"] == 1  # the extra KCI never reached the gateway
    db.dispose()


def test_the_gateway_counters_of_every_incarnation_are_added_up() -> None:
    """Counters read from each killed gateway before its kill, plus the last one's; what was
    accepted is what the last one holds (taken back from the record, then accepted)."""
    checks = _crash_module("crash_checks")
    killed = [
        {"accepted": 9, "redelivered": 2, "violations": 0, "faults": {"drop": 1, "slow": 0}},
        {},  # it did not answer before its kill
    ]
    last = {"accepted": 5, "reloaded": 7, "redelivered": 1, "faults": {"drop": 2, "slow": 1}}
    totals = checks.gateway_totals(killed, last)
    assert totals["accepted"] == 12
    assert totals["reloaded"] == 7
    assert totals["redelivered"] == 3
    assert totals["faults"] == {"drop": 3, "slow": 1}


# --- forced races --------------------------------------------------------------------------------

RACERS = 4


def _racer(tasks: Any, results: Any, barrier: Any) -> None:
    """A racing process: for each task, apply one warning to the order. Its clock, read after
    the order is loaded and before it is written, waits until every racer has loaded it."""
    while (task := tasks.get()) is not None:
        url, order_id, data, retries = task
        waited = False

        def clock() -> datetime:
            nonlocal waited
            if not waited:
                waited = True
                barrier.wait(timeout=60)
            return datetime.now(UTC)

        store = SqlStore(url, migrate=False)
        engine = Engine(store, clock=clock, conflict_retries=retries)
        try:
            kcis = engine.apply(order_id, Event.WARN, data)
            results.put(("ok", [k.kci_id for k in kcis], ""))
        except ConcurrencyConflict as exc:
            results.put(("conflict", [exc.order_id], exc.message))
        except Exception as exc:  # reported to the test, which fails on it
            results.put(("error", [], repr(exc)))
        finally:
            store.close()


class Racers:
    """``RACERS`` processes (started once: spawning them is the slow part) that race on
    whatever order they are given."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.barrier = context.Barrier(RACERS)  # kept: the children pick it up as they start
        self.results = context.Queue()
        self.tasks = [context.Queue() for _ in range(RACERS)]
        self.processes = [
            context.Process(target=_racer, args=(tasks, self.results, self.barrier), daemon=True)
            for tasks in self.tasks
        ]
        for process in self.processes:
            process.start()

    def race(self, url: str, order_id: str, data: dict[str, Any], retries: int) -> list[Any]:
        for tasks in self.tasks:
            tasks.put((url, order_id, data, retries))
        return [self.results.get(timeout=90) for _ in self.tasks]

    def close(self) -> None:
        for tasks in self.tasks:
            tasks.put(None)
        for process in self.processes:
            process.join(timeout=30)


@pytest.fixture(scope="module")
def racers() -> Iterator[Racers]:
    team = Racers()
    yield team
    team.close()


def _committed_order(url: str) -> tuple[str, int]:
    store = SqlStore(url)
    engine = Engine(store)
    order_id = engine.accept_order("provide", provide_order(1))
    engine.apply(order_id, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S1"}})
    engine.apply(order_id, Event.COMMIT, {"order": COMMIT_DATES})
    store.close()
    return order_id, 2


def _numbers_and_log(url: str, order_id: str) -> tuple[list[int], list[str], int]:
    store = SqlStore(url, migrate=False)
    try:
        kcis = store.kcis(order_id)
        logged = [kci_id for entry in store.events(order_id) for kci_id in entry.kci_ids]
        return [k.sequence_number for k in kcis], logged, store.load(order_id).next_sequence
    finally:
        store.close()


@pytest.mark.parametrize("retries", [0, RACERS])
def test_processes_racing_on_one_order_get_the_typed_conflict_or_retry(
    racers: Racers, db_url: str, retries: int
) -> None:
    """Four processes apply a warning to the same order, all having read it first. Without
    retries exactly one wins and three get ConcurrencyConflict naming the order; with retries
    all four land. Either way: one KCI per success, numbered without a gap."""
    order_id, before = _committed_order(db_url)
    outcomes = racers.race(db_url, order_id, {"problem_code": "NETWORK_ISSUE"}, retries)
    errors = [o for o in outcomes if o[0] == "error"]
    assert not errors
    wins = [o for o in outcomes if o[0] == "ok"]
    conflicts = [o for o in outcomes if o[0] == "conflict"]
    if retries:
        assert len(wins) == RACERS
    else:
        assert len(wins) == 1
        assert len(conflicts) == RACERS - 1
        for _, (named,), message in conflicts:
            assert named == order_id
            assert order_id in message
    numbers, logged, next_sequence = _numbers_and_log(db_url, order_id)
    assert numbers == list(range(1, before + len(wins) + 1))
    assert next_sequence == len(numbers) + 1
    assert len(logged) == len(numbers)  # the event log names every KCI once
    assert sorted(kci for _, ids, _ in wins for kci in ids) == sorted(logged[before:])


@pytest.mark.parametrize("retries", [0, 1])
def test_the_same_event_id_applied_by_racing_processes_lands_once(
    racers: Racers, db_url: str, retries: int
) -> None:
    """Four processes apply the same event (same event id) at once: it is logged and produces
    its KCI once. With a retry allowed, the losers get the winner's KCI back."""
    order_id, before = _committed_order(db_url)
    data = {"problem_code": "NETWORK_ISSUE", "event_id": "supplier-msg-42"}
    outcomes = racers.race(db_url, order_id, data, retries)
    assert not [o for o in outcomes if o[0] == "error"]
    wins = [o for o in outcomes if o[0] == "ok"]
    numbers, logged, _ = _numbers_and_log(db_url, order_id)
    assert numbers == list(range(1, before + 2))
    if retries:
        assert len(wins) == RACERS
        assert {tuple(ids) for _, ids, _ in wins} == {(logged[-1],)}
    else:
        assert len(wins) == 1
        assert sum(o[0] == "conflict" for o in outcomes) == RACERS - 1
    store = SqlStore(db_url, migrate=False)
    assert [e.event_id for e in store.events(order_id)].count("supplier-msg-42") == 1
    store.close()
