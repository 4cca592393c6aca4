"""The SQL store on real databases: processes racing, SIGKILL mid-apply, joined transactions,
migrations and the operator commands."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from kci_engine import Engine, Event
from kci_engine.cli import main
from kci_engine.errors import ConcurrencyConflict, ConfigurationError
from kci_engine.store.migrate import current, head
from kci_engine.store.sql import SqlStore, create_db_engine
from kci_engine.tooling.testing import COMMIT_DATES, provide_order, test_engine
from sqlmodel import Session

ROOT = Path(__file__).resolve().parent.parent


def _worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.workers", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _committed_orders(url: str, count: int) -> list[str]:
    store = SqlStore(url)
    engine = Engine(store)
    ids = []
    for n in range(1, count + 1):
        order_id = engine.accept_order("provide", provide_order(n))
        engine.apply(order_id, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": f"S{n}"}})
        engine.apply(order_id, Event.COMMIT, {"order": COMMIT_DATES})
        ids.append(order_id)
    store.close()
    return ids


def _assert_consistent(url: str) -> dict[str, int]:
    """Every order's outbox runs 1..n with no gap, matches its counter and its event log."""
    store = SqlStore(url)
    try:
        totals = {}
        for order_id in store.order_ids():
            record = store.load(order_id)
            kcis = store.kcis(order_id)
            numbers = [k.sequence_number for k in kcis]
            assert numbers == list(range(1, len(kcis) + 1)), (order_id, numbers)
            assert record.next_sequence == len(kcis) + 1, order_id
            logged = [kci_id for entry in store.events(order_id) for kci_id in entry.kci_ids]
            assert logged == [k.kci_id for k in kcis], order_id
            totals[order_id] = len(kcis)
        return totals
    finally:
        store.close()


@pytest.mark.parametrize("retries", [0, 1000])
def test_racing_processes_never_duplicate_or_skip_a_sequence_number(
    db_url: str, retries: int
) -> None:
    """Four processes apply events to the same three orders at once. Every KCI lands exactly
    once with its own number; losers of a race get ConcurrencyConflict (or retry, if asked)."""
    ids = _committed_orders(db_url, 3)
    per_worker = 60
    workers = [
        _worker("apply", db_url, ",".join(ids), str(per_worker), str(retries)) for _ in range(4)
    ]
    results = []
    for proc in workers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    applied = sum(r["applied"] for r in results)
    conflicts = sum(r["conflicts"] for r in results)
    assert applied + conflicts == 4 * per_worker
    if retries:
        assert conflicts == 0
    totals = _assert_consistent(db_url)
    assert sum(totals.values()) == 2 * len(ids) + applied


def test_sigkill_mid_apply_leaves_each_order_before_or_after(sqlite_url: str) -> None:
    """A process killed at random moments while applying events never leaves half an event:
    after every kill the outbox, counters and event log agree, and a restart finishes the work
    (event ids make the replayed prefix idempotent)."""
    rng = random.Random(20261123)
    for _ in range(6):
        proc = _worker("churn", sqlite_url, "T", "40")
        time.sleep(rng.uniform(0.3, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        _assert_consistent(sqlite_url)
    proc = _worker("churn", sqlite_url, "T", "40")
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    totals = _assert_consistent(sqlite_url)
    assert len(totals) == 40
    assert set(totals.values()) == {7}


def test_joined_session_commits_business_writes_and_kcis_together(sqlite_url: str) -> None:
    """A supplier's own write and the KCI commit atomically in the supplier's transaction."""
    store = SqlStore(sqlite_url)
    engine = test_engine(store)
    order_id = engine.accept_order("provide", provide_order(1))
    with store.db.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE work_order (id TEXT PRIMARY KEY, state TEXT)")

    with Session(store.db) as session:
        session.execute(sa.text("INSERT INTO work_order VALUES ('W1', 'acknowledged')"))
        engine.using(store.joined(session)).apply(
            order_id, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S1"}}
        )
        session.rollback()
    assert store.kcis(order_id) == []
    assert store.load(order_id).status == "SENT_TO_SUPPLIER"

    with Session(store.db) as session:
        session.execute(sa.text("INSERT INTO work_order VALUES ('W1', 'acknowledged')"))
        [kci] = engine.using(store.joined(session)).apply(
            order_id, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S1"}}
        )
        session.commit()
    assert store.kcis(order_id) == [kci]
    with store.db.connect() as conn:
        assert conn.exec_driver_sql("SELECT state FROM work_order").scalar() == "acknowledged"
    store.close()


def test_migrations_create_upgrade_and_match_the_models(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from kci_engine.store.migrate import VERSION_TABLE, upgrade
    from kci_engine.store.tables import METADATA

    engine = create_db_engine(db_url)
    assert current(engine) is None
    upgrade(engine)
    upgrade(engine)  # idempotent
    assert current(engine) == head()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, METADATA) == []
    engine.dispose()


def test_sqlite_runs_in_wal_with_full_sync(sqlite_url: str) -> None:
    store = SqlStore(sqlite_url)
    with store.db.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    store.close()


@pytest.mark.parametrize("url", ["mysql://x/y", "not a url", "sqlite+pysqlite:///"])
def test_bad_database_url_is_a_clear_error(url: str) -> None:
    if url.startswith("sqlite"):
        create_db_engine(url).dispose()  # an in-memory SQLite URL is valid
        return
    with pytest.raises(ConfigurationError, match="database URL"):
        create_db_engine(url)


def test_cli_demo_on_a_database_then_timeline_and_status(db_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "kcis.jsonl"
    result = runner.invoke(main, ["demo", "--db", db_url, "--jsonl", str(out)])
    assert result.exit_code == 0, result.output
    assert "18 of 18 reason codes" in result.output
    again = runner.invoke(main, ["demo", "--db", db_url])
    assert again.exit_code == 1
    assert "already holds orders" in again.output

    timeline = runner.invoke(main, ["timeline", "TENANT1:2001", "--db", db_url])
    assert timeline.exit_code == 0, timeline.output
    assert "amendment_received" in timeline.output  # events that sent no KCI are shown too
    assert "KCI #6 COMPLETED" in timeline.output
    assert "[DELIVERED, 1 attempt(s)]" in timeline.output  # the demo delivers to the sandbox

    status = runner.invoke(main, ["outbox", "status", "--db", db_url, "--json"])
    found = json.loads(status.output)
    # 31 KCIs of the samples and 5 the round trip's 202 answers owed (tooling/demo.py)
    assert found["counts"] == {"PENDING": 0, "DELIVERED": 36, "DEAD": 0}
    assert found["owed"]["count"] == 0
    missing = runner.invoke(main, ["timeline", "nope", "--db", db_url])
    assert missing.exit_code == 1
    assert "order nope not found" in missing.output


def test_demo_kcis_identical_on_sqlite_and_postgresql(
    sqlite_url: str, postgres_url: str, tmp_path: Path
) -> None:
    """The demo's KCIs are the same in content on both backends, ids and timestamps aside."""
    from tests.conftest import _fresh_postgres_database

    def normalised(url: str, name: str) -> list[dict[str, object]]:
        out = tmp_path / name
        result = CliRunner().invoke(main, ["demo", "--db", url, "--jsonl", str(out)])
        assert result.exit_code == 0, result.output
        from kci_engine.tooling.sandbox import order_key

        bodies = [json.loads(line) for line in out.read_text().splitlines()]
        # Arrival order interleaves orders differently run to run; within an order it is fixed.
        bodies.sort(key=lambda body: (order_key(body), body["sequenceNumber"]))
        for body in bodies:
            body.pop("id")
            body.pop("issuedOn")
        return bodies

    gen = _fresh_postgres_database(postgres_url, "demo_identical")
    pg = next(gen)
    try:
        assert normalised(sqlite_url, "a.jsonl") == normalised(pg, "b.jsonl")
    finally:
        next(gen, None)


def test_db_upgrade_command(sqlite_url: str) -> None:
    result = CliRunner().invoke(main, ["db", "upgrade", "--db", sqlite_url])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"schema: none -> {head()}"
    result = CliRunner().invoke(main, ["db", "upgrade", "--db", sqlite_url])
    assert result.output.strip() == f"schema: {head()} -> {head()}"


def test_the_hot_path_is_visible_to_sqlalchemy_events_when_someone_listens(
    sqlite_url: str,
) -> None:
    """OpenTelemetry's SQLAlchemy instrumentation and echo see the engine's statements: with a
    cursor listener on the store's engine, every write goes through SQLAlchemy."""
    import sqlalchemy as sa
    from kci_engine import Engine
    from kci_engine.tooling.testing import provide_order

    with SqlStore(sqlite_url) as store:
        engine = Engine(store)
        quiet = engine.accept_order("provide", provide_order(1))
        seen: list[str] = []
        sa.event.listen(
            store.db, "before_cursor_execute", lambda *args: seen.append(args[2].split()[0])
        )
        loud = engine.accept_order("provide", provide_order(2))
        engine.apply(loud, "acknowledge", {"order": {"supplierOrderReference": "S-2"}})
        assert {"INSERT", "UPDATE", "SELECT"} <= set(seen)
        assert engine.kcis(loud)[0].reason_code == "ACKNOWLEDGED"
        assert engine.order(quiet).status == "SENT_TO_SUPPLIER"


def test_outbox_bodies_and_log_data_are_the_engines_own_encoding(db_url: str) -> None:
    """The outbox keeps each KCI body exactly as ``Kci.json()`` encodes it (the order
    document's JSON is reused inside it, not re-encoded differently), and the event log's data
    decodes to the data as given; in batches too, where orders are kept between events."""
    from kci_engine.tooling.demo import play

    with SqlStore(db_url) as store:
        engine = test_engine(store)
        played = list(play(engine))
        warn = {"problem_code": "NETWORK_ISSUE", "text": "Ünïcode ✓"}
        with store.batch():
            order_id = engine.accept_order("provide", provide_order(9001))
            engine.apply_batch(
                [
                    (order_id, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S-✓"}}),
                    (order_id, Event.COMMIT, {"order": COMMIT_DATES}),
                    (order_id, Event.WARN, warn),
                    (order_id, Event.WARN, warn),
                ]
            )
        kcis = {k.kci_id: k for p in played for k in p.kcis}
        kcis.update({k.kci_id: k for k in engine.kcis(order_id)})
        with store.db.connect() as conn:
            rows = conn.execute(sa.text("SELECT kci_id, body FROM kci_outbox")).all()
            bodies = dict(rows)
            logged = conn.execute(sa.text("SELECT order_id, data FROM kci_event ORDER BY seq"))
            data = [(o, json.loads(d)) for o, d in logged.all()]
        assert bodies == {kci_id: kci.json() for kci_id, kci in kcis.items()}
        by_order: dict[str, list[object]] = {}
        for logged_order, given in data:
            by_order.setdefault(logged_order, []).append(given)
        assert by_order == {o: [e.data_json() for e in engine.events(o)] for o in by_order}
        numbers = [k.sequence_number for k in engine.kcis(order_id)]
        assert numbers == list(range(1, len(numbers) + 1))


_OVERTAKE = {
    "version": "UPDATE kci_order SET version = version + 5",
    "event id": (
        "INSERT INTO kci_event (order_id, event_id, event, status_before, status_after, "
        "kci_ids, data, applied_at_ms) VALUES ('TENANT1:1', 'e-1', 'x', '', '', '[]', '{}', 0)"
    ),
}


@pytest.mark.parametrize("overtaken", sorted(_OVERTAKE))
def test_a_sqlite_batch_keeps_its_guards_on_the_writes_it_defers(
    sqlite_url: str, overtaken: str
) -> None:
    """A SQLite batch sends its events' writes a few hundred at a time; the versioned UPDATE
    and the unique event id still refuse a write that something came before, and then nothing
    of the batch is kept. (Under the batch's write lock only the batch's own connection can
    come before; the test writes on it behind the engine's back.)"""
    with SqlStore(sqlite_url) as store:
        engine = test_engine(store)
        order_id = engine.accept_order("provide", provide_order(1))
        assert order_id == "TENANT1:1"
        acknowledge = {"order": {"supplierOrderReference": "S-1"}, "event_id": "e-1"}

        def overtaken_batch() -> None:
            with store.batch():
                engine.apply(order_id, Event.ACKNOWLEDGE, acknowledge)
                store._dbapi().cursor().execute(_OVERTAKE[overtaken])

        with pytest.raises(ConcurrencyConflict, match="nothing of the batch was kept"):
            overtaken_batch()
        assert engine.order(order_id).version == 1
        assert engine.kcis(order_id) == []
        assert [e.event for e in engine.events(order_id)] == ["received"]


def test_apply_batch_reads_its_orders_ahead_in_a_few_statements(sqlite_url: str) -> None:
    """A batch over 600 orders reads them 500 to a statement (two reads of kci_order), not
    one SELECT per order; each order is still read once, from what was read ahead. (Without
    kept records: with them, the read ahead is of versions; see test_record_cache.py.)"""
    with SqlStore(sqlite_url, record_cache=0) as store:
        engine = test_engine(store)
        ids = [engine.accept_order("provide", provide_order(n)) for n in range(1, 601)]
        seen: list[str] = []
        sa.event.listen(store.db, "before_cursor_execute", lambda *a: seen.append(a[2]))
        ack = {"order": {"supplierOrderReference": "S"}}
        engine.apply_batch([(o, Event.ACKNOWLEDGE, ack) for o in ids])
        reads = [sql for sql in seen if sql.lstrip().startswith("SELECT") and "kci_order" in sql]
        assert len(reads) == 2, reads[:3]
        assert all(" IN (" in sql for sql in reads)
        assert all(engine.order(o).status == "ACKNOWLEDGED" for o in ids)
