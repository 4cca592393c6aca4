"""Reconciliation: the tenant's view (the KCIs the gateway accepted, and what the gateway told
them itself) against each order's state, with the reason they differ, on a real SQLite file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from kci_engine import Engine, Event, OrderType
from kci_engine.cli import main
from kci_engine.errors import ConfigurationError
from kci_engine.history.reconcile import Reconciliation, Why, out_of_step_for, reconcile
from kci_engine.store.sql import SqlStore
from kci_engine.store.tables import ORDERS, OUTBOX
from kci_engine.tooling.testing import COMMIT_DATES, provide_order

#: When the test's KCIs were written (their outbox rows' created_at).
WRITTEN = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ACK = {"order": {"supplierOrderReference": "S"}}


def _orders(url: str) -> None:
    """Orders 1-7, one per case; every KCI delivered, then each case's damage done by hand."""
    with SqlStore(url) as store:
        engine = Engine(store)
        for n in range(1, 8):
            key = engine.accept_order(OrderType.PROVIDE, provide_order(n))
            if n == 5:
                continue  # received, never answered
            engine.apply(key, Event.ACKNOWLEDGE, ACK)
            if n == 6:
                engine.apply(key, Event.AMENDMENT_RECEIVED, {"amendment_id": 60})
                continue
            engine.apply(key, Event.COMMIT, {"order": COMMIT_DATES})
    written = int(WRITTEN.timestamp() * 1000)
    commit = sa.and_(OUTBOX.c.sequence_number == 2)
    with sa.create_engine(url).begin() as conn:
        conn.execute(OUTBOX.update().values(delivery_state="DELIVERED", created_at_ms=written))
        for n, values in (
            (2, {"delivery_state": "PENDING", "attempts": 0}),
            (3, {"delivery_state": "PENDING", "attempts": 3, "last_error": "HTTP 503"}),
            (4, {"delivery_state": "DEAD", "attempts": 1, "last_error": "HTTP 400: bad body"}),
        ):
            conn.execute(
                OUTBOX.update().where(commit, OUTBOX.c.order_id == f"TENANT1:{n}").values(values)
            )
        conn.execute(ORDERS.update().where(ORDERS.c.order_id == "TENANT1:7").values(status="HELD"))


@pytest.fixture
def url(sqlite_url: str) -> str:
    _orders(sqlite_url)
    return sqlite_url


def _found(url: str) -> dict[str, Reconciliation]:
    with SqlStore(url, read_only=True) as store:
        return {r.order_id: r for r in reconcile(store)}


def test_each_order_out_of_step_says_what_the_tenant_was_told_and_why(url: str) -> None:
    found = _found(url)
    assert sorted(found) == [f"TENANT1:{n}" for n in (2, 3, 4, 5, 6, 7)]  # 1 is in step
    flight = found["TENANT1:2"]
    assert flight.why == (Why.IN_FLIGHT,)
    assert (flight.told.status, flight.told.sequence_number) == ("ACKNOWLEDGED", 1)
    assert flight.told.dates == {}
    assert (flight.actual.status, flight.actual.sequence_number) == ("IN_PROGRESS", 2)
    assert flight.actual.dates == {
        "committedDate": "2026-12-01T08:00:00.000Z",
        "targetDate": "2026-12-01T08:00:00.000Z",
    }
    assert flight.differs
    assert flight.since == WRITTEN
    assert found["TENANT1:3"].why == (Why.UNDELIVERED,)
    assert "after 3 attempt(s): HTTP 503" in found["TENANT1:3"].detail
    assert found["TENANT1:4"].why == (Why.DEAD_LETTERED,)
    assert "HTTP 400: bad body" in found["TENANT1:4"].detail
    owed = found["TENANT1:5"]
    assert owed.why == (Why.OWED,)
    assert owed.told.status == owed.actual.status == "SENT_TO_SUPPLIER"
    assert not owed.differs
    amended = found["TENANT1:6"]  # the gateway answered the amendment request with a 202
    assert amended.why == (Why.OWED,)
    assert amended.told.status == "PENDING_AMENDMENT"
    assert found["TENANT1:7"].why == (Why.UNEXPLAINED,)
    assert found["TENANT1:7"].told.status == "IN_PROGRESS"


def test_the_command_exits_non_zero_only_past_the_threshold(url: str) -> None:
    runner = CliRunner()
    hour_later = (WRITTEN + timedelta(minutes=59)).isoformat()
    within = runner.invoke(main, ["reconcile", "--db", url, "--now", hour_later])
    # Orders 5, 6 (owed since their events, applied by the real clock) and 7 are recent too.
    assert within.exit_code == 0, within.output
    assert "6 order(s) out of step" in within.output
    assert "in flight 1, undelivered 1, dead-lettered 1, owed 2, unexplained 1" in within.output
    assert "  TENANT1:2 (provide): in flight" in within.output
    assert "    told   ACKNOWLEDGED  #1" in within.output
    later = runner.invoke(
        main,
        ["reconcile", "--db", url, "--now", "2030-01-01T00:00:00Z", "--threshold-minutes", "5"],
    )
    assert later.exit_code == 1
    assert "6 for longer than 5 minutes" in later.output
    assert "! TENANT1:4 (provide): dead-lettered" in later.output
    lines = [
        json.loads(line)
        for line in runner.invoke(
            main, ["reconcile", "--db", url, "--json", "--now", "2030-01-01T00:00:00Z"]
        ).output.splitlines()
    ]
    assert lines[-1]["totals"] == {
        "out_of_step": 6,
        "past_threshold": 6,
        "why": {
            "in flight": 1,
            "undelivered": 1,
            "dead-lettered": 1,
            "owed": 2,
            "unexplained": 1,
        },
    }
    first = lines[0]["order"]
    assert first["order_id"] == "TENANT1:2"
    assert first["told"]["status"] == "ACKNOWLEDGED"
    assert first["why"] == ["in flight"]


def test_the_demo_database_is_in_step_in_no_jeopardy_and_replays_identically(
    sqlite_url: str,
) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["demo", "--db", sqlite_url])
    assert result.exit_code == 0, result.output
    reconciled = runner.invoke(main, ["reconcile", "--db", sqlite_url])
    assert reconciled.exit_code == 0, reconciled.output
    assert reconciled.output.startswith("0 order(s) out of step")
    jeopardy = runner.invoke(main, ["jeopardy", "--db", sqlite_url])
    assert jeopardy.exit_code == 0, jeopardy.output
    assert jeopardy.output.startswith("0 in jeopardy at ")
    replayed = runner.invoke(main, ["history", "replay", "--db", sqlite_url, "--progress"])
    assert replayed.exit_code == 0, replayed.output
    # The 8 lifecycles and the 8 orders the round trip placed and the supplier did not refuse.
    assert "orders replayed 16: identical 16, different 0, refused 0" in replayed.output


def test_a_naive_now_is_refused(url: str) -> None:
    [first, *_] = _found(url).values()
    with pytest.raises(ConfigurationError, match="has no timezone"):
        out_of_step_for(first, datetime(2026, 1, 1), timedelta(0))
