"""Failure modes an operator or an attacker meets, each on real components: a SQLite write lock
held by another connection, a real full disk and a read-only mount (where this machine lets the
test make one), real worker processes racing, and the CLI as a user runs it. Each failure is a
typed error in one line, and nothing already committed is lost or changed."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from kci_engine import Engine, Event
from kci_engine.cli import main
from kci_engine.errors import (
    ConcurrencyConflict,
    ConfigurationError,
    InvalidEventData,
    InvalidOrder,
    SchemaOutdated,
    StoreBusy,
    StoreError,
)
from kci_engine.store.sql import SqlStore
from kci_engine.tooling.testing import COMMIT_DATES, provide_order, test_engine

ROOT = Path(__file__).resolve().parent.parent
SURROGATE = json.loads('"\\ud800"')


def _run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, list(args), env=env)


def _one_line_error(result: Any) -> str:
    """The CLI's answer to a failure: exit status 1 and one line ``Error: ...``."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return str(lines[0])


def _committed(url: str, n: int = 1, **store_args: Any) -> tuple[SqlStore, Engine, str]:
    store = SqlStore(url, **store_args)
    engine = Engine(store, conflict_retries=3)
    order_id = engine.accept_order("provide", provide_order(n))
    engine.apply(order_id, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": f"S{n}"}})
    return store, engine, order_id


@contextmanager
def _write_lock_held(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding the database's write lock (``BEGIN IMMEDIATE``)."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield other
    finally:
        other.execute("ROLLBACK")
        other.close()


# -- 1. storage faults are typed -----------------------------------------------------------


def test_a_held_write_lock_is_store_busy_quickly_and_nothing_is_written(tmp_path: Path) -> None:
    """Another process holding the write lock past the busy timeout gives StoreBusy (a
    retryable ConcurrencyConflict) after the timeout, not after conflict_retries more waits,
    and not a ProgrammingError hiding it; the order is as it was."""
    path = tmp_path / "kci.db"
    store, engine, order_id = _committed(f"sqlite:///{path}", busy_timeout_s=0.2)
    before = (store.load(order_id), store.kcis(order_id))
    with _write_lock_held(path):
        started = time.monotonic()
        with pytest.raises(StoreBusy, match="write lock") as caught:
            engine.apply(order_id, Event.COMMIT, {"order": COMMIT_DATES})
        waited = time.monotonic() - started
    assert isinstance(caught.value, ConcurrencyConflict)
    assert "ProgrammingError" not in repr(caught.value.__cause__)
    assert waited < 5, waited  # the busy timeout, once: not 30 s, not 4 x 0.2 s retried
    assert (store.load(order_id), store.kcis(order_id)) == before
    [kci] = engine.apply(order_id, Event.COMMIT, {"order": COMMIT_DATES})  # lock gone: works
    assert kci.sequence_number == 2
    store.close()


def test_busy_timeout_is_validated() -> None:
    for bad in (-1, 1e9, float("nan"), "5"):
        with pytest.raises(ConfigurationError, match="busy_timeout"):
            SqlStore("sqlite://", busy_timeout_s=bad)  # type: ignore[arg-type]


@contextmanager
def _tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A real, small filesystem mounted at ``directory`` (needs root and CAP_SYS_ADMIN)."""
    directory.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def _fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` up to the last byte."""
    ballast = directory / "ballast"
    with ballast.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return ballast


def _apply_until_full(engine: Engine, first: int) -> tuple[int, StoreError]:
    """Create orders until the disk refuses; the number created and the error."""
    for n in range(first, first + 10_000):
        try:
            engine.accept_order("provide", provide_order(n))
        except StoreError as exc:
            return n, exc
    raise AssertionError("the disk never filled up")


def test_a_full_disk_is_a_store_error_naming_disk_and_path_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """A real full disk: a clear StoreError ('the disk is full', the file's path), every order
    committed before it intact, and the store working again once space is freed."""
    with _tmpfs(tmp_path / "small", "2m") as disk:
        path = disk / "kci.db"
        store, engine, order_id = _committed(f"sqlite:///{path}")
        ballast = _fill(disk)
        last, error = _apply_until_full(engine, 2)
        assert type(error) is StoreError
        assert "the disk is full" in str(error)
        assert str(path) in str(error)
        assert "\n" not in str(error)
        ballast.unlink()
        again = engine.accept_order("provide", provide_order(last))  # space back: works
        assert store.load(order_id).status == "ACKNOWLEDGED"
        assert [k.sequence_number for k in store.kcis(order_id)] == [1]
        assert store.load(again).status == "SENT_TO_SUPPLIER"
        store.close()


def test_a_full_database_is_the_same_store_error_where_no_disk_can_be_filled(
    tmp_path: Path,
) -> None:
    """SQLite's own size cap (``max_page_count``) fails the way a full disk does (SQLITE_FULL):
    the same translation, on every machine."""
    path = tmp_path / "kci.db"
    store, _engine, order_id = _committed(f"sqlite:///{path}")
    pages = sqlite3.connect(path).execute("PRAGMA page_count").fetchone()[0]
    store.close()

    def cap(conn: Any, _record: Any) -> None:
        conn.execute(f"PRAGMA max_page_count={pages + 2}")

    sa.event.listen(sa.engine.Engine, "connect", cap)  # every engine made from now on
    try:
        store = SqlStore(f"sqlite:///{path}")
        _last, error = _apply_until_full(Engine(store), 2)
    finally:
        sa.event.remove(sa.engine.Engine, "connect", cap)
    assert "the disk is full" in str(error)
    assert str(path) in str(error)
    assert [k.sequence_number for k in store.kcis(order_id)] == [1]
    store.close()


@contextmanager
def _read_only_mount(directory: Path) -> Iterator[Path]:
    with _tmpfs(directory, "8m") as mounted:
        yield mounted
        # the caller remounts read-only inside; unmounting drops it either way


def _remount_read_only(directory: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True)


def test_a_read_only_mount_serves_reads_and_refuses_writes_clearly(tmp_path: Path) -> None:
    """On a read-only filesystem the operator's read commands work, and a write is a
    StoreError saying the database is read-only, naming the file."""
    with _read_only_mount(tmp_path / "ro") as disk:
        path = disk / "kci.db"
        url = f"sqlite:///{path}"
        store, _engine, order_id = _committed(url)
        store.close()
        _remount_read_only(disk)
        for args in (
            ["outbox", "status"],
            ["outbox", "dead-letters"],
            ["timeline", order_id],
        ):
            result = _run(*args, "--db", url)
            assert result.exit_code == 0, result.output
        assert "ACKNOWLEDGED" in _run("timeline", order_id, "--db", url).output
        with pytest.raises(StoreError) as caught:
            Engine(SqlStore(url)).accept_order("provide", provide_order(9))
        assert str(path) in str(caught.value)
        assert "read-only" in str(caught.value) or "cannot be written" in str(caught.value)


def test_read_commands_answer_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    """The commands an operator runs when something is wrong neither migrate nor wait for the
    write lock."""
    path = tmp_path / "kci.db"
    url = f"sqlite:///{path}"
    store, _engine, order_id = _committed(url)
    store.close()
    with _write_lock_held(path):
        started = time.monotonic()
        for args in (["outbox", "status"], ["outbox", "dead-letters"], ["timeline", order_id]):
            result = _run(*args, "--db", url)
            assert result.exit_code == 0, result.output
        assert time.monotonic() - started < 10


def test_a_read_command_in_a_directory_the_user_cannot_write_works(tmp_path: Path) -> None:
    """A read-only directory without a -wal file (no writer has it open) is read immutably."""
    with _read_only_mount(tmp_path / "ro") as disk:
        url = f"sqlite:///{disk / 'kci.db'}"
        store, _engine, _order = _committed(url)
        store.close()
        _remount_read_only(disk)
        assert not (disk / "kci.db-wal").exists()
        result = _run("outbox", "status", "--db", url)
        assert result.exit_code == 0, result.output
        assert "PENDING" in result.output


# -- 2, 3, 4. the CLI: one line, read-only, no in-memory database ---------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:////nonexistent/dir/x.db", "no such file"),
        ("sqlite:////etc/passwd", "not a SQLite database"),
        ("sqlite:///{tmp}", "is a directory"),
        ("sqlite://", "in-memory database"),
        ("sqlite:///:memory:", "in-memory database"),
        ("sqlite:///{tmp}/typo.db", "no such file"),
        ("postgresql+psycopg://kci:hunter2@127.0.0.1:1/kci", "cannot reach the server"),
        ("mysql://x/y", "only sqlite"),
    ],
)
@pytest.mark.parametrize("command", [["outbox", "status"], ["timeline", "T:1"]])
def test_a_bad_database_is_one_line_and_exit_1(
    tmp_path: Path, url: str, expected: str, command: list[str]
) -> None:
    url = url.replace("{tmp}", str(tmp_path))
    line = _one_line_error(_run(*command, "--db", url))
    assert expected in line, line
    assert "hunter2" not in line
    assert not (tmp_path / "typo.db").exists()  # a read command never creates a database


def test_dispatch_refuses_an_in_memory_database(tmp_path: Path) -> None:
    env = {"KCI_GATEWAY_URL": "http://127.0.0.1:9", "KCI_CLIENT_ID": "c", "KCI_CLIENT_SECRET": "s"}
    for url in ("sqlite://", "sqlite:///:memory:"):
        result = _run("dispatch", "--once", "--db", url, env=env)
        assert "in-memory database" in _one_line_error(result)
    config = tmp_path / "kci.toml"
    config.write_text('engine_db = "sqlite://"\ngateway_url = "http://127.0.0.1:9"\n')
    result = _run("dispatch", "--once", "--config", str(config), env=env)
    assert "in-memory database" in _one_line_error(result)


def test_debug_shows_the_traceback() -> None:
    result = _run("--debug", "outbox", "status", "--db", "sqlite:////etc/passwd")
    assert result.exit_code == 1
    assert isinstance(result.exception, StoreError)


def test_an_unmigrated_database_says_run_db_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    sqlite3.connect(path).execute("CREATE TABLE unrelated (a)").connection.commit()
    line = _one_line_error(_run("outbox", "status", "--db", f"sqlite:///{path}"))
    assert "run `kci-engine db upgrade`" in line
    with pytest.raises(SchemaOutdated):
        SqlStore(f"sqlite:///{path}", read_only=True)
    assert _run("db", "upgrade", "--db", f"sqlite:///{path}").exit_code == 0
    assert _run("outbox", "status", "--db", f"sqlite:///{path}").exit_code == 0


def test_a_database_file_replaced_under_a_store_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "kci.db"
    store, _engine, _order = _committed(f"sqlite:///{path}")
    store.verify()
    path.unlink()
    with pytest.raises(StoreError, match="deleted"):
        store.verify()
    _committed(f"sqlite:///{path}", 2)[0].close()  # a new file in its place
    with pytest.raises(StoreError, match="replaced"):
        store.verify()
    store.close()


def test_db_upgrade_and_dispatch_print_no_library_noise(tmp_path: Path) -> None:
    """Alembic's INFO lines are not the operator's business."""
    url = f"sqlite:///{tmp_path / 'kci.db'}"
    proc = subprocess.run(
        [sys.executable, "-m", "kci_engine.cli", "db", "upgrade", "--db", url],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "alembic" not in (proc.stdout + proc.stderr).lower()


def test_db_help_does_not_claim_required_when_the_environment_gives_it() -> None:
    result = _run("outbox", "status", "--help")
    assert "[required]" not in result.output
    assert "KCI_ENGINE_DB" in result.output
    line = _one_line_error(_run("outbox", "status", env={"KCI_ENGINE_DB": ""}))
    assert "--db" in line


# -- 5, 6. input: surrogates, types and lengths ----------------------------------------------


def _order(**changes: Any) -> dict[str, Any]:
    order = provide_order(1)
    order.update(changes)
    return order


@pytest.mark.parametrize(
    "order",
    [
        _order(notes=SURROGATE),
        _order(notes="x" * 1_000_001),
        _order(tenant="ISP\nTWO"),
        _order(tenant="ISP\x1b[31m"),
        _order(id=2**63),
        _order(id=10**30),
        _order(id=True),
        _order(id="123"),
    ],
    ids=["surrogate", "1MB", "newline", "ansi", "2**63", "10**30", "True", "str"],
)
def test_wire_types_and_limits_refuse_bad_orders(order: dict[str, Any]) -> None:
    engine = test_engine()
    with pytest.raises(InvalidOrder):
        engine.accept_order("provide", order)
    assert list(engine.store.order_ids()) == []


def test_the_largest_gateway_id_is_accepted() -> None:
    engine = test_engine()
    assert engine.accept_order("provide", _order(id=2**63 - 1))


def test_a_surrogate_in_a_characteristic_name_is_refused() -> None:
    order = provide_order(1)
    order["serviceCharacteristics"] = {SURROGATE: "1"}
    with pytest.raises(InvalidOrder):
        test_engine().accept_order("provide", order)


@pytest.mark.parametrize("field", ["order_id", "conversation_id", "event_id"])
def test_surrogates_and_bad_types_in_create_arguments_are_invalid_order(field: str) -> None:
    engine = test_engine()
    for bad in (SURROGATE, 5, ""):
        if field == "conversation_id" and bad == "":
            continue
        with pytest.raises(InvalidOrder):
            engine.accept_order("provide", provide_order(1), **{field: bad})
    assert list(engine.store.order_ids()) == []


def test_a_malformed_order_id_given_to_apply_is_invalid_order() -> None:
    engine = test_engine()
    for bad in (SURROGATE, "", 5, "x" * 201, "a\x1bb"):
        with pytest.raises(InvalidOrder):
            engine.apply(bad, Event.ACKNOWLEDGE)  # type: ignore[arg-type]


def test_event_data_surrogates_and_sizes_are_invalid_event_data(engine: Engine) -> None:
    order_id = engine.accept_order("provide", provide_order(1))
    for data in (
        {"order": {"notes": SURROGATE}},
        {"text": "x" * 1_000_001},
        {"order": {"notes": "x" * 1_000_001}},
        {"event_id": 5},
    ):
        with pytest.raises(InvalidEventData):
            engine.apply(order_id, Event.ACKNOWLEDGE, data)
    assert engine.store.kcis(order_id) == []


def test_event_data_errors_name_the_event_as_users_type_it(engine: Engine) -> None:
    order_id = engine.accept_order("provide", provide_order(1))
    engine.apply(order_id, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S"}})
    with pytest.raises(InvalidEventData) as caught:
        engine.apply(order_id, Event.WARN, {"problem_code": "NOPE"})
    assert "'warn'" in str(caught.value)
    assert "Event.WARN" not in str(caught.value)


def test_an_empty_order_id_is_refused_not_replaced_by_the_default(engine: Engine) -> None:
    with pytest.raises(InvalidOrder, match="order id"):
        engine.accept_order("provide", provide_order(1), order_id="")


# -- 7. issuedOn in the far future -----------------------------------------------------------


def test_a_far_future_issued_on_is_refused_and_the_skew_is_configurable() -> None:
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    engine = Engine(clock=lambda: now)
    order_id = engine.accept_order("provide", provide_order(1))
    with pytest.raises(InvalidEventData, match="issued_on"):
        engine.apply(
            order_id,
            Event.ACKNOWLEDGE,
            {"order": {"supplierOrderReference": "S"}, "issued_on": "9999-12-31T23:59:59Z"},
        )
    assert engine.store.kcis(order_id) == []
    soon = (now + timedelta(minutes=4)).isoformat()
    [kci] = engine.apply(
        order_id, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S"}, "issued_on": soon}
    )
    assert kci.body["issuedOn"].startswith("2026-12-01T09:04")
    lenient = Engine(clock=lambda: now, max_issued_on_skew=timedelta(days=1))
    other = lenient.accept_order("provide", provide_order(2))
    later = (now + timedelta(hours=3)).isoformat()
    lenient.apply(
        other, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S"}, "issued_on": later}
    )
    with pytest.raises(ConfigurationError, match="max_issued_on_skew"):
        Engine(max_issued_on_skew=timedelta(minutes=-1))


# -- 8. racing creates with the same event id -----------------------------------------------


def test_racing_creates_with_the_same_event_id_all_answer_the_order(db_url: str) -> None:
    """Four processes send the same 60 creates (provide and unsolicited cease, fixed event ids)
    at the same moment: every call answers the order id, and each order is stored once."""
    SqlStore(db_url).close()  # migrated once, before the race
    start = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.workers", "creates", db_url, "30", str(start)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    answers = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        answers.append(json.loads(out.strip().splitlines()[-1]))
    assert [a["refused"] for a in answers] == [[], [], [], []]
    assert len({tuple(a["ids"]) for a in answers}) == 1
    store = SqlStore(db_url)
    assert sorted(store.order_ids()) == sorted(answers[0]["ids"])
    store.close()


# -- 12. output ------------------------------------------------------------------------------


def test_timeline_escapes_control_characters_from_stored_text(tmp_path: Path) -> None:
    """An order id or a gateway's message with an ANSI escape, written by an older engine or
    another tool, is shown escaped, never executed by the terminal."""
    path = tmp_path / "kci.db"
    url = f"sqlite:///{path}"
    store, _engine, order_id = _committed(url)
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE kci_outbox SET last_error = ? WHERE order_id = ?",
            ("422 \x1b[2J\x1b[31mwiped\x07", order_id),
        )
    result = _run("timeline", order_id, "--db", url)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    assert "\x07" not in result.output
    assert "\\x1b[2J" in result.output
    lines = [
        json.loads(line)
        for line in _run("timeline", order_id, "--json", "--db", url).output.splitlines()
    ]
    assert lines[-1]["kcis"][0]["last_error"].startswith("422 \x1b")  # JSON escapes it itself


def test_the_demo_keeps_its_database_for_the_timeline_it_suggests(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    result = _run("demo", "--db", url)
    assert result.exit_code == 0, result.output
    suggested = result.output.split("kci-engine timeline ", 1)[1].splitlines()[0]
    order_id, _db, given = suggested.split()
    assert given == url
    timeline = _run("timeline", order_id, "--db", given)
    assert timeline.exit_code == 0, timeline.output
    assert "KCI #1" in timeline.output
