"""Jeopardy on a UK working-day calendar: the calendar pinned on real holiday sequences, each
rule against a real SQLite database, and the command."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from kci_engine import Engine, Event, OrderType
from kci_engine.cli import main
from kci_engine.errors import ConfigurationError
from kci_engine.history.calendar import WorkingCalendar
from kci_engine.history.jeopardy import (
    RULES,
    Jeopardy,
    gauges,
    jeopardy,
    load_rules,
    parse_rules,
    prometheus_text,
)
from kci_engine.store.sql import SqlStore
from kci_engine.store.tables import OUTBOX
from kci_engine.tooling.testing import COMMIT_DATES, provide_order

LONDON = ZoneInfo("Europe/London")


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=LONDON)  # type: ignore[misc]


# --- the calendar ---------------------------------------------------------------------------------


def test_two_working_days_from_christmas_eve_skip_christmas_the_weekend_and_the_substitute() -> (
    None
):
    calendar = WorkingCalendar()
    assert calendar.holiday(date(2026, 12, 25)) == "Christmas Day"
    assert calendar.holiday(date(2026, 12, 26)) == "Boxing Day"
    assert calendar.holiday(date(2026, 12, 28)) == "Boxing Day (observed)"
    assert calendar.add_working_days(at(2026, 12, 24, 10, 0), 2) == at(2026, 12, 30, 10, 0)
    # After hours on the 24th, the count starts when work next starts: Tuesday 29th, 08:00.
    assert calendar.add_working_days(at(2026, 12, 24, 19, 0), 2) == at(2026, 12, 31, 8, 0)


def test_working_hours_stop_at_closing_time_and_resume_after_the_holidays() -> None:
    calendar = WorkingCalendar()
    assert calendar.add_working_hours(at(2026, 12, 24, 16, 0), 4) == at(2026, 12, 29, 10, 0)
    # Thursday 25 March 2027, 17:00: one hour that day; Good Friday, the weekend (the clocks go
    # forward) and Easter Monday do not count; the second hour is Tuesday 08:00-09:00 BST.
    due = calendar.add_working_hours(at(2027, 3, 25, 17, 0), 2)
    assert due == at(2027, 3, 30, 9, 0)
    assert due.utcoffset() == timedelta(hours=1)
    late = WorkingCalendar(opens=time(9, 30), closes=time(17, 30))
    assert late.working_moment(at(2026, 12, 29, 7, 0)) == at(2026, 12, 29, 9, 30)


def test_each_nation_keeps_its_own_bank_holidays() -> None:
    england, scotland = WorkingCalendar(), WorkingCalendar("scotland")
    ireland = WorkingCalendar("northern-ireland")
    # 2 January 2027 is a Saturday: Scotland's substitute is Monday 4 January.
    assert england.add_working_days(at(2026, 12, 31, 10, 0), 1) == at(2027, 1, 4, 10, 0)
    assert scotland.add_working_days(at(2026, 12, 31, 10, 0), 1) == at(2027, 1, 5, 10, 0)
    assert scotland.holiday(date(2027, 1, 4)) == "New Year Holiday (observed)"
    # St Patrick's Day (Wednesday 17 March 2027) in Northern Ireland only.
    assert ireland.add_working_days(at(2027, 3, 16, 10, 0), 1) == at(2027, 3, 18, 10, 0)
    assert england.add_working_days(at(2027, 3, 16, 10, 0), 1) == at(2027, 3, 17, 10, 0)
    shut = WorkingCalendar(closures=[date(2026, 12, 29)])
    assert shut.add_working_days(at(2026, 12, 24, 10, 0), 2) == at(2026, 12, 31, 10, 0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: WorkingCalendar("wales"), "nation 'wales' is not one of"),
        (lambda: WorkingCalendar(opens=time(18), closes=time(8)), "must open before they close"),
        (lambda: WorkingCalendar(timezone="Mars/Olympus"), "not a known zone"),
        (lambda: WorkingCalendar().working_moment(datetime(2026, 1, 5)), "has no timezone"),
        (lambda: parse_rules("x = 1"), "unknown key 'x'"),
        (lambda: parse_rules("[rules.kci_owed]\nhours = 1"), "unknown key 'rules.kci_owed.hours'"),
        (
            lambda: parse_rules("[rules.kci_owed]\nworking_hours = 'four'"),
            "must be a number, not 'four'",
        ),
        (lambda: parse_rules("[rules.kci_owed]\nworking_hours = -1"), "must be a number >= 0"),
        (lambda: parse_rules('[calendar]\nopens = "8am"'), "not a time of day"),
        (lambda: parse_rules('[calendar]\nclosures = ["soon"]'), "not a date"),
        (lambda: parse_rules('[calendar]\nnation = "mars"'), "calendar: nation 'mars'"),
        (lambda: parse_rules("[calendar"), "not valid TOML"),
        (lambda: parse_rules("calendar = 1"), "calendar must be a table"),
        (lambda: load_rules("/nonexistent/rules.toml"), "cannot read"),
    ],
)
def test_bad_settings_are_refused_naming_what_is_wrong(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_rules_keep_their_defaults_where_the_file_is_silent(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        '[calendar]\nnation = "scotland"\n[rules.kci_owed]\nworking_hours = 2\n'
        "[rules.date_passed]\nenabled = false\n",
        encoding="utf-8",
    )
    rules = load_rules(path)
    assert rules.calendar.nation == "scotland"
    assert rules.kci_owed_working_hours == 2
    assert rules.waiting_working_days == 5
    assert rules.enabled == frozenset(RULES) - {"date_passed"}
    assert load_rules().calendar.nation == "england-and-wales"


# --- the rules on a real database -----------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def christmas(sqlite_url: str) -> str:
    """Orders that meet each rule over Christmas 2026 (times are London time)."""
    clock = Clock(at(2026, 12, 24, 10, 0))
    with SqlStore(sqlite_url) as store:
        engine = Engine(store, clock=clock)
        # Acknowledged on Christmas Eve and left there.
        acked = engine.accept_order(OrderType.PROVIDE, provide_order(1))
        engine.apply(acked, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S-1"}})
        # Received at 16:00 and not answered: 4 working hours run out on Tuesday 29th, 10:00.
        clock.now = at(2026, 12, 24, 16, 0)
        engine.accept_order(OrderType.PROVIDE, provide_order(2))
        # Committed for 1 December, held, with an appointment that ended on the 24th.
        clock.now = at(2026, 11, 20, 9, 0)
        late = engine.accept_order(
            OrderType.PROVIDE,
            provide_order(
                3,
                appointmentTimeslot={
                    "timeslotStartDateTime": "2026-12-24T08:00:00.000Z",
                    "timeslotEndDateTime": "2026-12-24T12:00:00.000Z",
                },
            ),
        )
        engine.apply(late, Event.ACKNOWLEDGE, {"order": {"supplierOrderReference": "S-3"}})
        engine.apply(late, Event.COMMIT, {"order": COMMIT_DATES})
        engine.apply(late, Event.DELAY, {"problem_code": "WAYLEAVE_ISSUE", "text": "wayleave"})
    with sa.create_engine(sqlite_url).begin() as conn:
        conn.execute(OUTBOX.update().values(delivery_state="DELIVERED"))
        first_of_3 = sa.and_(OUTBOX.c.order_id == "TENANT1:3", OUTBOX.c.sequence_number == 3)
        conn.execute(
            OUTBOX.update()
            .where(first_of_3)
            .values(
                delivery_state="DEAD",
                last_error="HTTP 400: invalid body",
                created_at_ms=int(at(2026, 12, 29, 9, 0).timestamp() * 1000),
            )
        )
    return sqlite_url


def _found(url: str, now: datetime, text: str = "") -> list[Jeopardy]:
    with SqlStore(url, read_only=True) as store:
        return jeopardy(store, rules=parse_rules(text), now=now)


def test_each_rule_finds_its_order_when_its_time_has_run_out(christmas: str) -> None:
    found = _found(christmas, at(2026, 12, 29, 10, 30))
    by_rule = {(j.rule, j.order_id): j for j in found}
    owed = by_rule["kci_owed", "TENANT1:2"]
    assert owed.since == at(2026, 12, 24, 16, 0)
    assert owed.due == at(2026, 12, 29, 10, 0)
    assert owed.next_events == ("acknowledge", "cancel", "reject")
    assert by_rule["date_passed", "TENANT1:3"].due == datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    assert "committedDate" in by_rule["date_passed", "TENANT1:3"].detail
    assert by_rule["appointment_passed", "TENANT1:3"].due == datetime(2026, 12, 24, 12, tzinfo=UTC)
    held = by_rule["waiting_without_kci", "TENANT1:3"]
    assert held.since == at(2026, 11, 20, 9, 0)
    assert held.due == at(2026, 11, 27, 9, 0)  # five working days
    assert held.next_events == ("update", "resume", "add_information")
    dead = by_rule["kci_undelivered", "TENANT1:3"]
    assert "dead-lettered: HTTP 400" in dead.detail
    assert "kci-engine outbox retry TENANT1:3" in dead.action
    assert [j.due for j in found] == sorted(j.due for j in found)  # worst first
    assert ("kci_owed", "TENANT1:1") not in by_rule  # acknowledged: nothing owed
    assert gauges(found) == {
        "kci_owed": 1,
        "date_passed": 1,
        "waiting_without_kci": 1,
        "appointment_passed": 1,
        "kci_undelivered": 1,
    }
    assert 'kci_jeopardy_orders{rule="kci_owed"} 1\n' in prometheus_text(gauges(found))


def test_a_kci_owed_is_not_in_jeopardy_before_its_working_hours_run_out(christmas: str) -> None:
    before = _found(christmas, at(2026, 12, 29, 9, 59))
    assert "TENANT1:2" not in {j.order_id for j in before if j.rule == "kci_owed"}


def test_acknowledged_christmas_eve_with_a_two_working_day_rule_is_due_wednesday_30th(
    christmas: str,
) -> None:
    rules = "[rules.waiting_without_kci]\nworking_days = 2\nstatuses = ['ACKNOWLEDGED']\n"
    before = _found(christmas, at(2026, 12, 30, 9, 59), rules)
    after = _found(christmas, at(2026, 12, 30, 10, 1), rules)
    assert [j.order_id for j in before if j.rule == "waiting_without_kci"] == []
    [item] = [j for j in after if j.rule == "waiting_without_kci"]
    assert item.order_id == "TENANT1:1"
    assert item.due == at(2026, 12, 30, 10, 0)


def test_the_command_lists_worst_first_and_prints_json_and_gauges(
    christmas: str, tmp_path: Path
) -> None:
    now = "2026-12-29T10:30:00Z"
    runner = CliRunner()
    text = runner.invoke(main, ["jeopardy", "--db", christmas, "--now", now])
    assert text.exit_code == 0, text.output
    assert text.output.startswith("5 in jeopardy at 2026-12-29T10:30Z (kci_owed 1, ")
    assert text.output.index("date_passed") < text.output.index("kci_owed  ")
    report = json.loads(
        runner.invoke(main, ["jeopardy", "--db", christmas, "--now", now, "--json"]).output
    )
    assert report["gauges"]["kci_owed"] == 1
    assert report["orders"][0]["rule"] == "waiting_without_kci"  # due 27 November
    rules = tmp_path / "rules.toml"
    rules.write_text("[rules.kci_undelivered]\nenabled = false\n", encoding="utf-8")
    metrics = runner.invoke(
        main, ["jeopardy", "--db", christmas, "--now", now, "--metrics", "--rules", str(rules)]
    )
    assert 'kci_jeopardy_orders{rule="kci_undelivered"} 0' in metrics.output
    bad = runner.invoke(main, ["jeopardy", "--db", christmas, "--rules", str(tmp_path / "no")])
    assert bad.exit_code == 1
    assert bad.output.startswith("Error: jeopardy rules")


def test_a_kci_still_retrying_with_more_behind_it_and_a_naive_now(christmas: str) -> None:
    with sa.create_engine(christmas).begin() as conn:
        conn.execute(
            OUTBOX.update()
            .where(OUTBOX.c.order_id == "TENANT1:3")
            .values(delivery_state="PENDING", attempts=2, created_at_ms=0)
        )
    found = _found(christmas, at(2026, 12, 29, 10, 30))
    [late] = [j for j in found if j.rule == "kci_undelivered"]
    assert (
        late.detail
        == "KCI #1 ACKNOWLEDGED undelivered after 2 attempt(s); 2 more KCI(s) wait behind it"
    )
    assert "kci-engine outbox status" in late.action
    with (
        SqlStore(christmas, read_only=True) as store,
        pytest.raises(ConfigurationError, match="no timezone"),
    ):
        jeopardy(store, now=datetime(2026, 12, 29))
    rules = parse_rules("[calendar]\nclosures = [2026-12-29]\n")
    assert rules.calendar.holiday(date(2026, 12, 29)) == "closure"
    assert repr(rules.calendar) == (
        "WorkingCalendar('england-and-wales', opens=08:00, closes=18:00, timezone='Europe/London')"
    )
