"""The UK working-day calendar jeopardy rules count in: bank holidays per nation, from the
maintained ``holidays`` library (substitute days included), and configurable working hours.

Suppliers are measured in working days and hours: an order acknowledged on Thursday 24 December
2026 with a two-working-day rule is due on Wednesday 30 December (Christmas Day, the weekend and
the Boxing Day substitute on Monday 28th do not count). The nations differ: Scotland keeps 2
January (and its substitute), Northern Ireland St Patrick's Day and the Battle of the Boyne.

Times are counted in UK local time (``Europe/London`` by default, so working hours follow the
clocks across British Summer Time) and returned timezone-aware.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import ConfigurationError

#: The nations whose bank holidays differ, and the ``holidays`` library's subdivision codes.
NATIONS: dict[str, str] = {
    "england-and-wales": "ENG",
    "scotland": "SCT",
    "northern-ireland": "NIR",
}
_DAY = timedelta(days=1)
#: How far ahead a search for the next working day gives up (no calendar closes for a year).
_MAX_CLOSED_DAYS = 366


class WorkingCalendar:
    """Working days and hours for one UK nation.

    Args:
        nation: ``england-and-wales`` (default), ``scotland`` or ``northern-ireland``.
        opens: when working hours begin each working day, local time (default 08:00).
        closes: when they end (default 18:00).
        timezone: the zone working hours are kept in (default ``Europe/London``).
        closures: more days that are not working days (a company shutdown).

    Raises:
        ConfigurationError: an unknown nation or zone, or working hours that end before they
            start; the ``holidays`` library is not installed (the ``jeopardy`` extra).
    """

    def __init__(
        self,
        nation: str = "england-and-wales",
        *,
        opens: time = time(8, 0),
        closes: time = time(18, 0),
        timezone: str = "Europe/London",
        closures: Iterable[date] = (),
    ) -> None:
        if nation not in NATIONS:
            raise ConfigurationError(
                f"nation {nation!r} is not one of {', '.join(NATIONS)} (UK bank holidays differ "
                "by nation)"
            )
        if not (isinstance(opens, time) and isinstance(closes, time) and opens < closes):
            raise ConfigurationError(
                f"working hours must open before they close, not {opens!r} to {closes!r}"
            )
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(f"timezone {timezone!r} is not a known zone") from None
        try:
            import holidays
        except ImportError:  # pragma: no cover - the dev install has every extra
            raise ConfigurationError(
                "the working-day calendar needs the holidays library: pip install "
                "'kci-engine[jeopardy]'"
            ) from None
        self.nation = nation
        self.opens = opens
        self.closes = closes
        self.closures = frozenset(closures)
        self._holidays: Any = holidays.country_holidays("GB", subdiv=NATIONS[nation])

    def __repr__(self) -> str:
        return (
            f"WorkingCalendar({self.nation!r}, opens={self.opens:%H:%M}, "
            f"closes={self.closes:%H:%M}, timezone={self.zone.key!r})"
        )

    def holiday(self, day: date) -> str | None:
        """The name of the bank holiday (or closure) on ``day``, if it is one."""
        if day in self.closures:
            return "closure"
        name = self._holidays.get(day)
        return None if name is None else str(name)

    def is_working_day(self, day: date) -> bool:
        """Monday to Friday, and neither a bank holiday of the nation nor a closure."""
        return day.weekday() < 5 and self.holiday(day) is None

    def next_working_day(self, day: date) -> date:
        """The first working day after ``day``."""
        for _ in range(_MAX_CLOSED_DAYS):
            day += _DAY
            if self.is_working_day(day):
                return day
        raise ConfigurationError(f"no working day within a year after {day}")  # pragma: no cover

    def working_moment(self, moment: datetime) -> datetime:
        """``moment`` in local time if it falls in working hours; otherwise when work next
        starts (the next opening time on a working day).

        Raises:
            ConfigurationError: ``moment`` is naive (no timezone).
        """
        local = self._local(moment)
        day = local.date()
        if self.is_working_day(day):
            if local.time() < self.opens:
                return self._at(day, self.opens)
            if local.time() < self.closes:
                return local
        return self._at(self.next_working_day(day), self.opens)

    def add_working_days(self, moment: datetime, days: int) -> datetime:
        """The same time of day ``days`` working days after ``moment`` (counted from when work
        next starts, if ``moment`` is outside working hours)."""
        start = self.working_moment(moment)
        day = start.date()
        for _ in range(days):
            day = self.next_working_day(day)
        return self._at(day, start.timetz().replace(tzinfo=None))

    def add_working_hours(self, moment: datetime, hours: float) -> datetime:
        """The moment ``hours`` working hours after ``moment``: only time within working hours
        on working days counts."""
        remaining = timedelta(hours=hours)
        current = self.working_moment(moment)
        while True:
            left_today = self._at(current.date(), self.closes) - current
            if remaining <= left_today:
                return current + remaining
            remaining -= left_today
            current = self._at(self.next_working_day(current.date()), self.opens)

    def _local(self, moment: datetime) -> datetime:
        if moment.tzinfo is None:
            raise ConfigurationError(f"{moment.isoformat()} has no timezone")
        return moment.astimezone(self.zone)

    def _at(self, day: date, clock: time) -> datetime:
        return datetime.combine(day, clock, tzinfo=self.zone)
