"""Business-day arithmetic: task due dates and "2 business days" delays, DST-correct.

A :class:`BusinessCalendar` is a time zone, the working weekdays, the daily opening hours and the
holidays. Work that arrives outside business hours counts from the next opening, so a detractor who
answers on Friday evening gets a follow-up task due on Tuesday, not on Monday morning.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import TypeVar
from zoneinfo import ZoneInfo

from nps_sync.durations import BusinessDays, Delay, TimeWindow

__all__ = ["BusinessCalendar", "local_datetime"]

_ONE_DAY = timedelta(days=1)
_ONE_MINUTE = timedelta(minutes=1)
_T = TypeVar("_T")


def local_datetime(day: date, at: time, tz: ZoneInfo, *, fold: int = 0) -> datetime:
    """The instant the wall clock in ``tz`` reads ``day at``, as an aware datetime in ``tz``.

    An ambiguous wall time (read twice when clocks go back) takes ``fold``. A wall time skipped by
    a DST gap (02:30 on a spring-forward night) maps to the instant the clock jumps past it, which
    reads as the end of the gap (03:00): the first instant whose wall clock is at least ``at``.
    """
    wall = datetime.combine(day, at.replace(tzinfo=None))
    first = wall.replace(tzinfo=tz, fold=fold).astimezone(timezone.utc)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first.astimezone(tz)
    # In a gap the two folds straddle the transition; find it to the minute (offsets change on one).
    early, late = sorted(wall.replace(tzinfo=tz, fold=f).astimezone(timezone.utc) for f in (0, 1))
    minutes = range(int((late - early) / _ONE_MINUTE) + 1)
    step = bisect.bisect_left(
        minutes, True, key=lambda m: (early + m * _ONE_MINUTE).astimezone(tz).replace(tzinfo=None) >= wall
    )
    return (early + step * _ONE_MINUTE).astimezone(tz)


@dataclass(frozen=True)
class BusinessCalendar:
    """Working days, opening hours and holidays of one time zone. Raises ValueError if inconsistent."""

    tz: ZoneInfo
    work_days: frozenset[int] = frozenset({0, 1, 2, 3, 4})  # Monday = 0
    hours: TimeWindow = TimeWindow(time(9), time(17))  # noqa: RUF009 (frozen, so sharing is safe)
    holidays: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        if not isinstance(self.tz, ZoneInfo):
            raise ValueError(f"business calendar tz must be a zoneinfo.ZoneInfo, got: {self.tz!r}")
        # Accept any iterable (a TOML list) but store frozensets so the calendar stays hashable.
        object.__setattr__(self, "work_days", _frozen(self.work_days))
        object.__setattr__(self, "holidays", _frozen(self.holidays))
        if not self.work_days or not self.work_days <= frozenset(range(7)):
            raise ValueError(
                "business calendar work_days must be a non-empty set of weekdays 0–6 (Monday = 0), "
                f"got: {sorted(self.work_days)!r}"
            )
        if self.hours.wraps_midnight:
            raise ValueError(
                f"business hours must not wrap midnight (opening before closing), got: {self.hours}"
            )

    def is_business_day(self, d: date) -> bool:
        return d.weekday() in self.work_days and d not in self.holidays

    def next_business_day(self, d: date) -> date:
        """The first business day strictly after ``d``."""
        # Terminates: work_days is non-empty and only finitely many holidays exist.
        d += _ONE_DAY
        while not self.is_business_day(d):
            d += _ONE_DAY
        return d

    def effective_start(self, at: datetime) -> datetime:
        """``at`` itself when inside business hours on a business day, else the next opening (in ``tz``).

        Raises ValueError for a naive datetime: a business calendar has no meaning without a zone.
        """
        local = self._local(at)
        day = local.date()
        if self.is_business_day(day):
            if self.hours.contains(local.time()):
                return at
            if local.time() < self.hours.start:
                return local_datetime(day, self.hours.start, self.tz)
        return local_datetime(self.next_business_day(day), self.hours.start, self.tz)

    def add_business_days(self, at: datetime, n: int) -> datetime:
        """:meth:`effective_start` moved ``n`` business days later, at the same local time of day."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"number of business days must be an integer >= 0, got: {n!r}")
        start = self._local(self.effective_start(at))
        if n == 0:
            return start
        day = start.date()
        for _ in range(n):
            day = self.next_business_day(day)
        return local_datetime(day, start.time(), self.tz, fold=start.fold)

    def due_date(self, at: datetime, n: int) -> date:
        """The local date of :meth:`add_business_days`: Friday 15:00 + 1 → Monday, Saturday + 1 → Tuesday."""
        return self.add_business_days(at, n).date()

    def add(self, at: datetime, delay: Delay) -> datetime:
        """``at`` plus a delay. A timedelta is elapsed time (``12h`` is twelve real hours even across
        a DST change), returned in ``at``'s zone; :class:`BusinessDays` go through
        :meth:`add_business_days` and come back in ``tz``.
        """
        if isinstance(delay, BusinessDays):
            return self.add_business_days(at, delay.days)
        if at.tzinfo is None:
            return at + delay
        # Aware `at + delay` is wall-clock arithmetic in Python; go through UTC for elapsed time.
        return (at.astimezone(timezone.utc) + delay).astimezone(at.tzinfo)

    def _local(self, at: datetime) -> datetime:
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"business time needs a timezone-aware datetime, got naive: {at.isoformat()}")
        return at.astimezone(self.tz)


def _frozen(values: Iterable[_T]) -> frozenset[_T]:
    return frozenset(values)
