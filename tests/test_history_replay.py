"""History replay: the stored events run again through the current machines tell tenants the
same thing the outbox holds; a changed chart is caught, order by order, before a deploy."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from kci_engine import Engine, Event, OrderType
from kci_engine.cli import main
from kci_engine.core.codes import ReasonCode
from kci_engine.core.spec import OrderTypeSpec
from kci_engine.core.version import chart_version
from kci_engine.history.replay import (
    Outcome,
    ReplayTotals,
    chart_versions,
    replay_history,
)
from kci_engine.orders import SPECS
from kci_engine.store.sql import SqlStore
from kci_engine.store.tables import EVENTS, ORIGINS, OUTBOX
from kci_engine.tooling.demo import play
from kci_engine.tooling.testing import provide_order, sequential_ids

ROOT = Path(__file__).resolve().parent.parent


def _changed(
    order_type: OrderType, event: Event, reason: ReasonCode | None, *, drop: bool = False
) -> Mapping[OrderType, OrderTypeSpec]:
    """This engine's specs with one step of one chart changed: its reason code, or dropped."""
    spec = SPECS[order_type]
    steps = tuple(
        dataclasses.replace(step, reason=reason) if step.event is event else step
        for step in spec.chart.steps
        if not (drop and step.event is event)
    )
    return {**SPECS, order_type: spec.with_chart(dataclasses.replace(spec.chart, steps=steps))}


@pytest.fixture
def demo_db(sqlite_url: str) -> str:
    """A database filled by the demo's lifecycles (every order type, all 18 reason codes)."""
    with SqlStore(sqlite_url) as store:
        list(play(Engine(store, new_id=sequential_ids())))
    return sqlite_url


def _replay(url: str, **kwargs: object) -> tuple[ReplayTotals, list[object]]:
    totals = ReplayTotals()
    found = []
    with SqlStore(url, read_only=True) as store:
        for result in replay_history(store, **kwargs):  # type: ignore[arg-type]
            totals.add(result)
            if result.outcome is not Outcome.IDENTICAL:
                found.append(result)
    return totals, found


def test_the_demo_database_replays_without_a_difference(demo_db: str) -> None:
    totals, problems = _replay(demo_db)
    assert problems == []
    assert totals.replayed == 8
    assert totals.outcomes["identical"] == 8
    assert set(totals.created_under) == set(chart_versions().values())


def test_the_crash_test_plan_replays_without_a_difference(sqlite_url: str) -> None:
    spec = importlib.util.spec_from_file_location(
        "crash_worker", ROOT / "tools" / "crash_worker.py"
    )
    assert spec is not None
    assert spec.loader is not None
    worker = importlib.util.module_from_spec(spec)
    sys.modules["crash_worker"] = worker
    spec.loader.exec_module(worker)
    SqlStore(sqlite_url).close()
    worker.apply_plan(sqlite_url, 11, 40, 400, 0.0)
    totals, problems = _replay(sqlite_url)
    assert problems == []
    assert totals.replayed == 40
    assert totals.outcomes["identical"] == 40


def test_one_changed_reason_code_reports_exactly_the_orders_that_took_that_step(
    demo_db: str,
) -> None:
    specs = _changed(OrderType.PROVIDE, Event.UPDATE, ReasonCode.ADDITIONAL)
    with sa.create_engine(demo_db).connect() as conn:
        took_it = {
            row.order_id
            for row in conn.execute(sa.select(EVENTS.c.order_id).where(EVENTS.c.event == "update"))
        }
    totals, problems = _replay(demo_db, specs=specs)
    reported = {p.order_id for p in problems}  # type: ignore[attr-defined]
    with SqlStore(demo_db, read_only=True) as store:
        provide = {o for o in took_it if store.load(o).order_type is OrderType.PROVIDE}
    assert reported == provide
    assert reported
    [first] = [p for p in problems if p.order_id == sorted(reported)[0]]  # type: ignore[attr-defined]
    assert first.outcome is Outcome.DIFFERENT
    assert any(line.startswith("event ") and "'update'" in line for line in first.diff)
    assert any(line.startswith("-") and '"reasonCode": "UPDATE"' in line for line in first.diff)
    assert any(line.startswith("+") and '"reasonCode": "ADDITIONAL"' in line for line in first.diff)
    assert first.current_version != first.created_under
    assert totals.outcomes["different"] == len(reported)


def test_a_dropped_step_refuses_the_orders_that_went_through_it(demo_db: str) -> None:
    specs = _changed(OrderType.PROVIDE, Event.REQUEST_REAPPOINTMENT, None, drop=True)
    _, problems = _replay(demo_db, specs=specs)
    assert problems
    for problem in problems:
        assert problem.outcome is Outcome.REFUSED  # type: ignore[attr-defined]
        assert "'request_reappointment'" in problem.detail  # type: ignore[attr-defined]
        assert problem.advice  # type: ignore[attr-defined]


def test_a_changed_outbox_body_is_a_difference_and_the_command_exits_non_zero(
    demo_db: str,
) -> None:
    with sa.create_engine(demo_db).begin() as conn:
        row = conn.execute(
            sa.select(OUTBOX.c.kci_id, OUTBOX.c.body, OUTBOX.c.order_id).limit(1)
        ).one()
        body = json.loads(row.body)
        body["sequenceNumber"] = 99
        conn.execute(
            OUTBOX.update().where(OUTBOX.c.kci_id == row.kci_id).values(body=json.dumps(body))
        )
    result = CliRunner().invoke(main, ["history", "replay", "--db", demo_db, "--no-progress"])
    assert result.exit_code == 1, result.output
    assert f"DIFFERENT {row.order_id}" in result.output
    assert '"sequenceNumber": 99' in result.output
    assert "orders replayed 8: identical 7, different 1" in result.output
    as_json = CliRunner().invoke(main, ["history", "replay", "--db", demo_db, "--json"])
    lines = [json.loads(line) for line in as_json.output.splitlines()]
    assert lines[-1]["totals"]["different"] == 1
    assert [line["order"]["order_id"] for line in lines[:-1]] == [row.order_id]
    only = CliRunner().invoke(
        main, ["history", "replay", "--db", demo_db, "--orders", "TENANT1:1002,nope"]
    )
    assert only.exit_code == 0, only.output
    assert "orders replayed 1: identical 1" in only.output


def test_orders_from_before_migration_0005_are_skipped_not_failed(demo_db: str) -> None:
    with sa.create_engine(demo_db).begin() as conn:
        conn.execute(ORIGINS.delete())
    totals, problems = _replay(demo_db)
    assert totals.outcomes["skipped"] == 8
    assert totals.problems == 0
    assert all(p.outcome is Outcome.SKIPPED for p in problems)  # type: ignore[attr-defined]


def test_since_limits_the_replay_to_orders_changed_since(demo_db: str) -> None:
    result = CliRunner().invoke(
        main, ["history", "replay", "--db", demo_db, "--since", "2999-01-01T00:00:00"]
    )
    assert result.exit_code == 0
    assert "orders replayed 0" in result.output
    bad = CliRunner().invoke(main, ["history", "replay", "--db", demo_db, "--since", "soon"])
    assert bad.exit_code == 2
    assert "not an ISO 8601 time" in bad.output


def test_each_order_records_the_chart_version_it_was_created_under(demo_db: str) -> None:
    with sa.create_engine(demo_db).connect() as conn:
        rows = conn.execute(sa.select(ORIGINS)).all()
    with SqlStore(demo_db, read_only=True) as store:
        for row in rows:
            spec = SPECS[store.load(row.order_id).order_type]
            assert row.chart_version == spec.version == chart_version(spec)
    assert len(rows) == 8


def test_the_chart_version_changes_with_the_chart_and_nothing_else() -> None:
    spec = SPECS[OrderType.PROVIDE]
    assert spec.with_chart(spec.chart).version == spec.version
    changed = _changed(OrderType.PROVIDE, Event.UPDATE, ReasonCode.ADDITIONAL)
    assert changed[OrderType.PROVIDE].version != spec.version
    assert len({s.version for s in SPECS.values()}) == 4
    result = CliRunner().invoke(main, ["history", "version", "--json"])
    assert json.loads(result.output) == {t.value: SPECS[t].version for t in SPECS}


def test_replay_jeopardy_and_reconcile_read_every_backend(db_url: str) -> None:
    """The same scans on SQLite and PostgreSQL, through a read-only store, pages of 3 orders."""
    from kci_engine.history.jeopardy import find_jeopardy
    from kci_engine.history.reconcile import Why, reconcile

    with SqlStore(db_url) as store:
        list(play(Engine(store, new_id=sequential_ids())))
    with SqlStore(db_url, read_only=True) as store:
        results = list(replay_history(store, page=3))
        assert [r.outcome for r in results] == [Outcome.IDENTICAL] * 8
        assert [r.order_id for r in results] == sorted(r.order_id for r in results)
        out_of_step = list(reconcile(store, page=3))
        jeopardy = list(find_jeopardy(store, page=3))
    # Nothing was delivered: every order's KCIs are in flight, and every demo order ends final.
    assert len(out_of_step) == 8
    assert {r.why for r in out_of_step} == {(Why.IN_FLIGHT,)}
    assert {j.rule for j in jeopardy} <= {"kci_undelivered"}


def test_a_refused_event_of_an_open_order_and_a_lost_201_answer_say_what_to_do(
    sqlite_url: str,
) -> None:
    with SqlStore(sqlite_url) as store:
        engine = Engine(store)
        key = engine.accept_order(OrderType.PROVIDE, provide_order(1))
        engine.apply(key, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S-1"}})
        engine.apply(key, Event.UPDATE, {"order": {"notes": "survey booked"}})
        engine.accept_order(
            OrderType.PROVIDE,
            provide_order(
                2,
                supplierOrderReference="S-2",
                committedDate="2026-12-01T08:00:00.000Z",
                targetDate="2026-12-01T08:00:00.000Z",
            ),
            answered_with="IN_PROGRESS",
        )
    _, problems = _replay(
        sqlite_url, specs=_changed(OrderType.PROVIDE, Event.UPDATE, None, drop=True)
    )
    [open_order] = problems
    assert open_order.outcome is Outcome.REFUSED  # type: ignore[attr-defined]
    assert open_order.detail.startswith("event 3 ('update' in status ACKNOWLEDGED)")  # type: ignore[attr-defined]
    assert "still open (ACKNOWLEDGED)" in open_order.advice  # type: ignore[attr-defined]
    no_201 = _changed(OrderType.PROVIDE, Event.COMMITTED_IN_201, None, drop=True)
    _, problems = _replay(sqlite_url, specs=no_201)
    [answered] = problems
    assert "no synchronous 201 answer with status IN_PROGRESS" in answered.detail  # type: ignore[attr-defined]


def test_a_long_diff_is_cut_and_the_command_shows_progress_and_versions(
    demo_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kci_engine.history import replay as module

    monkeypatch.setattr(module, "MAX_DIFF_LINES", 3)
    with sa.create_engine(demo_db).begin() as conn:
        conn.execute(
            OUTBOX.update().values(
                issued_on="x", body=sa.func.replace(OUTBOX.c.body, "TENANT1", "TENANT9")
            )
        )
    _, problems = _replay(demo_db, order_ids=["TENANT1:1001"])
    [changed] = problems
    assert len(changed.diff) == 4  # type: ignore[attr-defined]
    assert changed.diff[-1].endswith("more diff lines")  # type: ignore[attr-defined]
    shown = CliRunner().invoke(
        main,
        [
            "history",
            "replay",
            "--db",
            demo_db,
            "--progress",
            "--orders",
            "TENANT1:1002",
            "--since",
            "2000-01-01",
        ],
    )
    assert "replaying" in shown.output
    assert "orders replayed 1: identical 0, different 1" in shown.output
    versions = CliRunner().invoke(main, ["history", "version"])
    assert f"provide            {SPECS[OrderType.PROVIDE].version}" in versions.output


def test_a_scan_page_must_be_a_positive_integer(demo_db: str) -> None:
    from kci_engine.errors import ConfigurationError
    from kci_engine.history._facts import wire_time

    with (
        SqlStore(demo_db, read_only=True) as store,
        pytest.raises(ConfigurationError, match="page"),
    ):
        list(replay_history(store, page=0))
    assert wire_time("soon") is None
    assert wire_time(None) is None


def test_a_baseline_reports_open_orders_that_would_lose_their_next_events(
    sqlite_url: str, tmp_path: Path
) -> None:
    from kci_engine.history.replay import baselines

    with SqlStore(sqlite_url) as store:
        engine = Engine(store)
        key = engine.accept_order(OrderType.PROVIDE, provide_order(1))
        engine.apply(key, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S-1"}})
        done = engine.accept_order(OrderType.PROVIDE, provide_order(2))
        engine.apply(
            done, Event.REJECT, {"problem_code": "INVALID_REQUEST", "text": "no such address"}
        )
    charts = CliRunner().invoke(main, ["history", "version", "--charts"])
    deployed = tmp_path / "deployed.json"
    deployed.write_text(charts.output, encoding="utf-8")
    assert json.loads(charts.output)["provide"]["version"] == SPECS[OrderType.PROVIDE].version
    no_warning = _changed(OrderType.PROVIDE, Event.WARN, None, drop=True)
    totals, problems = _replay(
        sqlite_url, specs=no_warning, baseline=baselines(deployed.read_text())
    )
    [narrowed] = problems
    assert narrowed.outcome is Outcome.NARROWED  # type: ignore[attr-defined]
    assert narrowed.order_id == key  # type: ignore[attr-defined]
    assert narrowed.detail == "in ACKNOWLEDGED the deployed chart allows warn; the new one does not"  # type: ignore[attr-defined]
    assert totals.problems == 1
    same = CliRunner().invoke(
        main, ["history", "replay", "--db", sqlite_url, "--baseline", str(deployed)]
    )
    assert same.exit_code == 0, same.output
    assert "identical 2, different 0, refused 0, narrowed 0" in same.output
    deployed.write_text('{"provide": {}}', encoding="utf-8")
    bad = CliRunner().invoke(
        main, ["history", "replay", "--db", sqlite_url, "--baseline", str(deployed)]
    )
    assert bad.exit_code == 1
    assert "not the output of `kci-engine history version --charts`" in bad.output


def test_a_repaired_dead_letter_and_a_corrected_order_replay_identically(db_url: str) -> None:
    """An operator's repair is part of the history: the dead KCI is compared as the engine wrote
    it, and the order correction (the event log's `repaired` entry) is replayed where it came,
    so the KCIs made after it carry it on both sides. Without either, the order would differ."""
    from kci_engine.orders import parse_kci, spec_of
    from kci_engine.store.outbox import Outbox
    from kci_engine.store.tables import DeliveryState

    with SqlStore(db_url) as store:
        engine = Engine(store)
        order_id = engine.accept_order("provide", provide_order(1))
        engine.apply(order_id, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S1"}})
        engine.apply(order_id, Event.DELAY, {"problem_code": "WAYLEAVE_ISSUE"})
        dead = store.kcis(order_id)[1]
        with store.db.begin() as conn:  # the gateway refused KCI #2 (as the dispatcher marks it)
            conn.execute(
                OUTBOX.update()
                .where(OUTBOX.c.kci_id == dead.kci_id)
                .values(delivery_state=DeliveryState.DEAD, last_error="422 notes wanted")
            )
        Outbox(store).repair(
            order_id,
            {"text": "Wayleave refused by the landowner"},
            validate=parse_kci,
            order={"notes": "Gate code 1234"},
            characteristics={"LINE_PROFILE": "500"},
            spec=spec_of(OrderType.PROVIDE),
        )
        engine.apply(order_id, Event.RESUME)
        resumed = store.kcis(order_id)[-1].body["provideServiceOrder"]
        assert resumed["notes"] == "Gate code 1234"
        assert {"name": "LINE_PROFILE", "value": "500"} in (
            resumed["serviceOrderItem"]["serviceCharacteristics"]
        )
    with SqlStore(db_url, read_only=True) as store:
        [result] = replay_history(store)
        assert result.outcome is Outcome.IDENTICAL, result.diff
        assert result.events == 5  # received, acknowledge, delay, repaired, resume
