"""Jeopardy: the orders a tenant is about to complain about, found before the tenant does.

A scan over every order (read-only, a page at a time) checks five rules, each counted on a UK
working-day calendar (:mod:`.calendar`) where the contract counts in working time:

========================  =====================================================================
rule                      in jeopardy when
========================  =====================================================================
``kci_owed``              the order waits for the supplier's answer (received and not yet
                          acknowledged or rejected; an amendment or cancellation request taken
                          with a 202 and not yet accepted or rejected) for longer than N working
                          hours since the event that put it there
``date_passed``           its committedDate or targetDate has passed and it is not finished
``waiting_without_kci``   HELD or PENDING (configurable) for longer than N working days with no
                          KCI since it got there or since its last KCI
``appointment_passed``    its appointment timeslot has ended and nothing has happened since
``kci_undelivered``       a KCI has been undelivered (or dead-lettered) for longer than N minutes
========================  =====================================================================

Which statuses owe an answer is read off the charts: the initial status of a tenant-placed
order, and every status a step enters without sending a KCI of its own (the gateway answered
the tenant's request with a 202 and the supplier owes the KCI that settles it). So the rule
needs no record of the 202 beyond the event log the engine already keeps.

Rules are configured in TOML (:func:`load_rules`); every key has a default.
"""

from __future__ import annotations

import json
import tomllib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from ..core.codes import OrderType
from ..core.events import Event
from ..core.spec import OrderTypeSpec
from ..errors import ConfigurationError
from ..orders import SPECS
from ..store.sql import SqlStore
from ..store.tables import DeliveryState
from ._facts import at_ms, entered_at, iso, owing, wire_time
from ._scan import PAGE, StoredOrder, scan
from .calendar import WorkingCalendar

__all__ = [
    "DEFAULT_RULES",
    "RULES",
    "Jeopardy",
    "JeopardyRules",
    "find_jeopardy",
    "gauges",
    "jeopardy",
    "load_rules",
    "parse_rules",
    "prometheus_text",
]

#: Every rule, in the order reports list them.
RULES = (
    "kci_owed",
    "date_passed",
    "waiting_without_kci",
    "appointment_passed",
    "kci_undelivered",
)

#: The defaults, as a TOML file would give them (and the documentation shows).
DEFAULT_RULES = """\
[calendar]
nation = "england-and-wales"   # or "scotland", "northern-ireland"
opens = "08:00"                # working hours, local time
closes = "18:00"
timezone = "Europe/London"
closures = []                  # more non-working days, e.g. ["2026-12-24"]

[rules.kci_owed]
working_hours = 4

[rules.date_passed]
enabled = true

[rules.waiting_without_kci]
working_days = 5
statuses = ["HELD", "PENDING"]

[rules.appointment_passed]
enabled = true

[rules.kci_undelivered]
minutes = 60
"""


@dataclass(frozen=True)
class JeopardyRules:
    """The rules' settings and the calendar they count on (see :data:`DEFAULT_RULES`)."""

    calendar: WorkingCalendar
    kci_owed_working_hours: float = 4.0
    waiting_working_days: int = 5
    waiting_statuses: frozenset[str] = frozenset({"HELD", "PENDING"})
    undelivered_minutes: float = 60.0
    enabled: frozenset[str] = frozenset(RULES)


@dataclass(frozen=True, slots=True)
class Jeopardy:
    """One order in jeopardy under one rule.

    Attributes:
        order_id: the order.
        order_type: its type.
        status: its status.
        rule: which rule (one of :data:`RULES`).
        since: when the rule's clock started (the event, date or KCI it counts from).
        due: when the order went into jeopardy (``since`` plus the rule's allowance).
        detail: what is wrong, in words.
        next_events: the events that would settle it, where one would (empty for delivery).
        action: what to do, in words.
    """

    order_id: str
    order_type: str
    status: str
    rule: str
    since: datetime
    due: datetime
    detail: str
    next_events: tuple[str, ...]
    action: str

    def overdue(self, now: datetime) -> timedelta:
        """How long it has been in jeopardy at ``now``."""
        return now - self.due

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "order_type": self.order_type,
            "status": self.status,
            "rule": self.rule,
            "since": iso(self.since),
            "due": iso(self.due),
            "overdue_s": int(self.overdue(now).total_seconds()),
            "detail": self.detail,
            "next_events": list(self.next_events),
            "action": self.action,
        }


def parse_rules(text: str, *, source: str = "rules") -> JeopardyRules:
    """Rules from TOML text; whatever it leaves out keeps its default.

    Raises:
        ConfigurationError: malformed TOML, an unknown section or key, a wrong value, naming it.
    """
    try:
        given = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{source}: not valid TOML: {exc}") from None
    data = tomllib.loads(DEFAULT_RULES)
    _merge(data, given, source, "")
    cal, rules = data["calendar"], data["rules"]
    try:
        calendar = WorkingCalendar(
            cal["nation"],
            opens=_clock(cal["opens"], f"{source}: calendar.opens"),
            closes=_clock(cal["closes"], f"{source}: calendar.closes"),
            timezone=str(cal["timezone"]),
            closures=[_date(d, f"{source}: calendar.closures") for d in cal["closures"]],
        )
    except ConfigurationError as exc:
        raise ConfigurationError(f"{source}: calendar: {exc.message}") from None
    enabled = frozenset(r for r in RULES if rules[r].get("enabled", True))
    return JeopardyRules(
        calendar=calendar,
        kci_owed_working_hours=_number(rules["kci_owed"]["working_hours"], source, "working_hours"),
        waiting_working_days=int(
            _number(rules["waiting_without_kci"]["working_days"], source, "working_days")
        ),
        waiting_statuses=frozenset(str(s) for s in rules["waiting_without_kci"]["statuses"]),
        undelivered_minutes=_number(rules["kci_undelivered"]["minutes"], source, "minutes"),
        enabled=enabled,
    )


def load_rules(path: Path | str | None = None) -> JeopardyRules:
    """Rules from a TOML file, or the defaults (``None``).

    Raises:
        ConfigurationError: the file cannot be read or is wrong (see :func:`parse_rules`).
    """
    if path is None:
        return parse_rules("")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"jeopardy rules {path}: cannot read: {exc.strerror}") from None
    return parse_rules(text, source=str(path))


def find_jeopardy(
    store: SqlStore,
    *,
    rules: JeopardyRules | None = None,
    now: datetime | None = None,
    specs: Mapping[OrderType, OrderTypeSpec] = SPECS,
    page: int = PAGE,
) -> Iterator[Jeopardy]:
    """Every order in jeopardy at ``now`` (default: the current time), in order-id order, one
    item per order and rule; read-only and a page of orders at a time.

    Raises:
        ConfigurationError: ``now`` is naive.
        StoreError: the database cannot be read.
    """
    rules = rules if rules is not None else load_rules()
    now = _aware(now if now is not None else datetime.now(UTC))
    for stored in scan(store, page=page):
        yield from _check(stored, specs[OrderType(stored.row["order_type"])], rules, now)


def jeopardy(
    store: SqlStore,
    *,
    rules: JeopardyRules | None = None,
    now: datetime | None = None,
    specs: Mapping[OrderType, OrderTypeSpec] = SPECS,
) -> list[Jeopardy]:
    """:func:`find_jeopardy`, worst first: the longest in jeopardy (earliest ``due``) first."""
    found = list(find_jeopardy(store, rules=rules, now=now, specs=specs))
    found.sort(key=lambda j: (j.due, RULES.index(j.rule), j.order_id))
    return found


def gauges(found: Iterable[Jeopardy]) -> dict[str, int]:
    """Orders in jeopardy by rule (every rule, zero included): the ``kci_jeopardy_orders``
    gauges."""
    counts = Counter(j.rule for j in found)
    return {rule: counts[rule] for rule in RULES}


def prometheus_text(counts: Mapping[str, int]) -> str:
    """The ``kci_jeopardy_orders`` gauges in the Prometheus text format, for a metrics endpoint."""
    lines = [
        "# HELP kci_jeopardy_orders Orders in jeopardy, by rule.",
        "# TYPE kci_jeopardy_orders gauge",
        *(f'kci_jeopardy_orders{{rule="{rule}"}} {n}' for rule, n in counts.items()),
    ]
    return "\n".join(lines) + "\n"


# --- the rules ------------------------------------------------------------------------------------


def _check(
    stored: StoredOrder, spec: OrderTypeSpec, rules: JeopardyRules, now: datetime
) -> Iterator[Jeopardy]:
    row = stored.row
    status = row["status"]
    state = spec.chart.state(status)
    open_order = state is not None and not state.final

    def item(rule: str, since: datetime, due: datetime, detail: str, action: str,
             events: Iterable[Event] = ()) -> Jeopardy:  # fmt: skip
        allowed = spec.allowed(status)
        return Jeopardy(
            stored.order_id,
            spec.order_type.value,
            status,
            rule,
            since,
            due,
            detail,
            tuple(e.value for e in events if e in allowed),
            action,
        )

    enabled = rules.enabled
    if "kci_undelivered" in enabled:
        found = _undelivered(stored, rules, now)
        if found is not None:
            since, due, detail, action = found
            yield item("kci_undelivered", since, due, detail, action)
    if not open_order:
        return
    entered = entered_at(stored, status)
    calendar = rules.calendar
    if "kci_owed" in enabled and status in owing(spec):
        due = calendar.add_working_hours(entered, rules.kci_owed_working_hours)
        if now > due:
            answers = _answers(spec, status)
            yield item(
                "kci_owed",
                entered,
                due,
                f"waiting for the supplier's answer in {status} since {iso(entered)}",
                "send the KCI that answers the tenant",
                answers,
            )
    document: dict[str, Any] = json.loads(row["document"])
    if "date_passed" in enabled:
        passed = _date_passed(document, now)
        if passed is not None:
            name, when = passed
            yield item(
                "date_passed",
                when,
                when,
                f"{name} {iso(when)} has passed and the order is {status}",
                "complete it, or tell the tenant the new date (delay or update with a new "
                "targetDate)",
                (Event.COMPLETE, Event.DELAY, Event.UPDATE),
            )
    if "waiting_without_kci" in enabled and status in rules.waiting_statuses:
        last_kci = max(
            (at_ms(e["applied_at_ms"]) for e in stored.events if e["kci_ids"] != "[]"),
            default=entered,
        )
        since = max(entered, last_kci)
        due = calendar.add_working_days(since, rules.waiting_working_days)
        if now > due:
            yield item(
                "waiting_without_kci",
                since,
                due,
                f"{status} since {iso(entered)}, no KCI since {iso(since)}",
                "keep the tenant informed (an UPDATE), or move the order on",
                (Event.UPDATE, Event.RESUME, Event.ADD_INFORMATION),
            )
    if "appointment_passed" in enabled:
        end = _appointment_end(document)
        last_event = at_ms(stored.events[-1]["applied_at_ms"]) if stored.events else entered
        if end is not None and end < now and last_event < end:
            yield item(
                "appointment_passed",
                end,
                end,
                f"the appointment ended {iso(end)} and nothing has happened since",
                "complete it, or reappoint (reappointed, request_reappointment)",
                (Event.COMPLETE, Event.REAPPOINTED, Event.REQUEST_REAPPOINTMENT),
            )


def _undelivered(
    stored: StoredOrder, rules: JeopardyRules, now: datetime
) -> tuple[datetime, datetime, str, str] | None:
    waiting = [k for k in stored.outbox if k["delivery_state"] != DeliveryState.DELIVERED]
    if not waiting:
        return None
    oldest = waiting[0]  # outbox rows come in sequence order
    since = at_ms(oldest["created_at_ms"])
    due = since + timedelta(minutes=rules.undelivered_minutes)
    if now <= due:
        return None
    number, state = oldest["sequence_number"], oldest["delivery_state"]
    if state == DeliveryState.DEAD:
        detail = f"KCI #{number} {oldest['reason_code']} is dead-lettered: {oldest['last_error']}"
        action = f"fix the cause, then kci-engine outbox retry {stored.order_id}"
    else:
        tried = oldest["attempts"]
        detail = f"KCI #{number} {oldest['reason_code']} undelivered after {tried} attempt(s)"
        action = "check the dispatcher and the gateway (kci-engine outbox status)"
    if len(waiting) > 1:
        detail += f"; {len(waiting) - 1} more KCI(s) wait behind it"
    return since, due, detail, action


@cache
def _answers(spec: OrderTypeSpec, status: str) -> tuple[Event, ...]:
    """The events that answer what ``status`` waits for: those answering a request, or else
    every step out of it that sends a KCI."""
    edges = [e for e in spec.edges if e.source == status and e.step.reason is not None]
    answering = [e for e in edges if any(rule.answers for rule in e.step.rules)]
    chosen = answering or [e for e in edges if not e.internal]
    finals = spec.chart.finals
    chosen.sort(key=lambda e: e.dest in finals)  # going on before ending, else chart order
    return tuple(dict.fromkeys(e.step.event for e in chosen))


def _date_passed(document: Mapping[str, Any], now: datetime) -> tuple[str, datetime] | None:
    passed = [
        (when, name)
        for name in ("committedDate", "targetDate")
        if (when := wire_time(document.get(name))) is not None and when < now
    ]
    if not passed:
        return None
    when, name = min(passed)
    return name, when


def _appointment_end(document: Mapping[str, Any]) -> datetime | None:
    slot = document.get("appointmentTimeslot")
    return wire_time(slot.get("timeslotEndDateTime")) if isinstance(slot, Mapping) else None


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ConfigurationError(f"now {moment.isoformat()} has no timezone")
    return moment


# --- reading the TOML -----------------------------------------------------------------------------


def _merge(into: dict[str, Any], given: Mapping[str, Any], source: str, where: str) -> None:
    for key, value in given.items():
        name = f"{where}{key}"
        if key not in into:
            known = ", ".join(sorted(into))
            raise ConfigurationError(f"{source}: unknown key {name!r} (known here: {known})")
        if isinstance(into[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigurationError(f"{source}: {name} must be a table")
            if where == "rules." or name.startswith("rules."):
                into[key].setdefault("enabled", True)
            _merge(into[key], value, source, f"{name}.")
        elif type(value) is not type(into[key]) and not (
            isinstance(value, int | float) and isinstance(into[key], int | float)
        ):
            kind = _KINDS.get(type(into[key]), type(into[key]).__name__)
            raise ConfigurationError(f"{source}: {name} must be {kind}, not {value!r}")
        else:
            into[key] = value


_KINDS = {
    int: "a number",
    float: "a number",
    str: "a string",
    bool: "true or false",
    list: "a list",
}


def _number(value: Any, source: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigurationError(f"{source}: {name} must be a number >= 0, not {value!r}")
    return float(value)


def _clock(value: Any, where: str) -> time:
    try:
        return time.fromisoformat(str(value))
    except ValueError:
        raise ConfigurationError(f"{where}: {value!r} is not a time of day (HH:MM)") from None


def _date(value: Any, where: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ConfigurationError(f"{where}: {value!r} is not a date (YYYY-MM-DD)") from None
