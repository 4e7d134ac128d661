"""Business-day arithmetic for due dates and business-day delays."""

# The house style is `assert expected == actual`, which SIM300 calls a Yoda condition.

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nps_sync.business_time import BusinessCalendar, local_datetime
from nps_sync.durations import BusinessDays, TimeWindow

FAST = settings(max_examples=200, deadline=None)
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
UTC = timezone.utc


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


CAL = BusinessCalendar(BERLIN)
# 2026-11-20 is a Friday.


@pytest.mark.parametrize(
    ("at", "n", "expected"),
    [
        (berlin(2026, 11, 20, 15), 1, date(2026, 11, 23)),  # Friday 15:00 + 1 → Monday
        (berlin(2026, 11, 21, 10), 1, date(2026, 11, 24)),  # Saturday + 1 → Tuesday
        (berlin(2026, 11, 23, 20), 1, date(2026, 11, 25)),  # Monday 20:00 + 1 → Wednesday
        (berlin(2026, 11, 23, 7), 1, date(2026, 11, 24)),  # Monday 07:00 + 1 → Tuesday
        (berlin(2026, 11, 23, 17), 1, date(2026, 11, 25)),  # closing time counts as after hours
        (berlin(2026, 11, 23, 9), 0, date(2026, 11, 23)),
        (berlin(2026, 11, 22, 9), 0, date(2026, 11, 23)),  # Sunday + 0 → Monday
        (berlin(2026, 11, 20, 15), 5, date(2026, 11, 27)),
        (berlin(2026, 11, 20, 15), 10, date(2026, 12, 4)),
    ],
)
def test_due_date_counts_business_days_from_the_next_opening(at: datetime, n: int, expected: date) -> None:
    assert expected == CAL.due_date(at, n)


def test_due_date_skips_holidays() -> None:
    calendar = BusinessCalendar(BERLIN, holidays=frozenset({date(2026, 12, 24), date(2026, 12, 25)}))
    # Wednesday 23 Dec + 1 would be Thursday 24 Dec, a holiday; Friday 25 too.
    assert date(2026, 12, 28) == calendar.due_date(berlin(2026, 12, 23, 10), 1)


def test_arrival_on_a_holiday_counts_from_the_next_business_day() -> None:
    calendar = BusinessCalendar(BERLIN, holidays=frozenset({date(2026, 12, 24), date(2026, 12, 25)}))
    assert berlin(2026, 12, 28, 9) == calendar.effective_start(berlin(2026, 12, 24, 11))


def test_work_days_can_be_any_weekdays() -> None:
    sunday_to_thursday = BusinessCalendar(ZoneInfo("Asia/Jerusalem"), work_days=frozenset({6, 0, 1, 2, 3}))
    thursday_noon = datetime(2026, 11, 19, 12, tzinfo=sunday_to_thursday.tz)
    assert date(2026, 11, 22) == sunday_to_thursday.due_date(thursday_noon, 1)


def test_effective_start_returns_at_itself_inside_business_hours() -> None:
    at = datetime(2026, 11, 23, 10, 30, tzinfo=UTC)  # 11:30 in Berlin
    assert at is CAL.effective_start(at)


def test_effective_start_outside_hours_is_the_next_opening_in_the_calendar_zone() -> None:
    at = datetime(2026, 11, 20, 18, tzinfo=UTC)  # Friday 19:00 in Berlin
    start = CAL.effective_start(at)
    assert berlin(2026, 11, 23, 9) == start
    assert BERLIN == start.tzinfo


def test_add_business_days_keeps_the_local_time_across_a_dst_change() -> None:
    # Berlin moves to summer time on Sunday 29 March 2026.
    friday = berlin(2026, 3, 27, 10)
    monday = CAL.add_business_days(friday, 1)
    assert (date(2026, 3, 30), time(10)) == (monday.date(), monday.time())
    assert timedelta(days=3) - timedelta(hours=1) == monday.astimezone(UTC) - friday.astimezone(UTC)


def test_opening_hour_skipped_by_dst_starts_when_the_clock_passes_it() -> None:
    calendar = BusinessCalendar(
        NEW_YORK, work_days=frozenset(range(7)), hours=TimeWindow(time(2, 30), time(17))
    )
    # 8 March 2026: New York clocks jump from 02:00 EST to 03:00 EDT; 02:30 does not exist.
    start = calendar.effective_start(datetime(2026, 3, 8, 1, tzinfo=NEW_YORK))
    assert datetime(2026, 3, 8, 7, 0, tzinfo=UTC) == start
    assert time(3, 0) == start.time()


def test_add_with_a_timedelta_is_elapsed_time() -> None:
    saturday = berlin(2026, 3, 28, 12)
    later = CAL.add(saturday, timedelta(hours=24))
    assert timedelta(hours=24) == later.astimezone(UTC) - saturday.astimezone(UTC)
    assert time(13) == later.time()  # one hour later on the wall clock: summer time began


def test_add_with_business_days_uses_the_calendar() -> None:
    assert berlin(2026, 11, 24, 9) == CAL.add(berlin(2026, 11, 21, 10), BusinessDays(1))


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware datetime, got naive: 2026-11-20T15:00:00"):
        CAL.effective_start(datetime(2026, 11, 20, 15))


def test_negative_business_days_are_refused() -> None:
    with pytest.raises(ValueError, match="integer >= 0, got: -1"):
        CAL.add_business_days(berlin(2026, 11, 20, 15), -1)


def test_business_hours_must_not_wrap_midnight() -> None:
    with pytest.raises(ValueError, match=r"must not wrap midnight.*22:00-06:00"):
        BusinessCalendar(BERLIN, hours=TimeWindow(time(22), time(6)))


@pytest.mark.parametrize("work_days", [frozenset(), frozenset({7}), frozenset({-1, 0})])
def test_work_days_must_be_weekdays(work_days: frozenset[int]) -> None:
    with pytest.raises(ValueError, match="work_days must be a non-empty set of weekdays 0–6"):
        BusinessCalendar(BERLIN, work_days=work_days)


def test_calendar_accepts_lists_from_toml_and_stays_hashable() -> None:
    calendar = BusinessCalendar(BERLIN, work_days=[0, 1, 2], holidays=[date(2026, 1, 1)])  # type: ignore[arg-type]
    assert frozenset({0, 1, 2}) == calendar.work_days
    assert hash(calendar) == hash(
        BusinessCalendar(BERLIN, frozenset({0, 1, 2}), holidays=frozenset({date(2026, 1, 1)}))
    )


def test_local_datetime_picks_the_requested_fold_for_an_ambiguous_time() -> None:
    # 1 November 2026: New York reads 01:30 twice.
    first = local_datetime(date(2026, 11, 1), time(1, 30), NEW_YORK, fold=0)
    second = local_datetime(date(2026, 11, 1), time(1, 30), NEW_YORK, fold=1)
    assert timedelta(hours=1) == second.astimezone(UTC) - first.astimezone(UTC)


ZONES = st.sampled_from(
    [
        "Europe/Berlin",
        "America/New_York",
        "America/Sao_Paulo",
        "Australia/Lord_Howe",
        "Pacific/Chatham",
        "Asia/Kolkata",
        "Pacific/Apia",
        "America/Santiago",
        "UTC",
    ]
).map(ZoneInfo)
INSTANTS = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2037, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC)
)
HOLIDAY_SETS = st.frozensets(st.dates(min_value=date(1999, 12, 1), max_value=date(2038, 3, 1)), max_size=40)
WORK_DAYS = st.frozensets(st.integers(0, 6), min_size=1)
HOURS = st.tuples(st.integers(6, 11), st.integers(12, 20)).map(lambda h: TimeWindow(time(h[0]), time(h[1])))


def calendars() -> st.SearchStrategy[BusinessCalendar]:
    return st.builds(BusinessCalendar, tz=ZONES, work_days=WORK_DAYS, hours=HOURS, holidays=HOLIDAY_SETS)


def dense_holidays(at: datetime) -> st.SearchStrategy[frozenset[date]]:
    """Holidays close to ``at``, where they matter."""
    start = at.date() - timedelta(days=2)
    return st.frozensets(st.integers(0, 30).map(lambda k: start + timedelta(days=k)), max_size=15)


@FAST
@given(calendars(), INSTANTS, st.integers(0, 15), st.data())
def test_business_days_never_land_on_a_weekend_or_holiday(
    calendar: BusinessCalendar, at: datetime, n: int, data: st.DataObject
) -> None:
    calendar = BusinessCalendar(
        calendar.tz, calendar.work_days, calendar.hours, data.draw(dense_holidays(at))
    )
    result = calendar.add_business_days(at, n)
    local = result.astimezone(calendar.tz)
    assert calendar.is_business_day(local.date())
    assert local.date().weekday() in calendar.work_days
    assert local.date() not in calendar.holidays
    assert calendar.hours.contains(local.time())
    assert result >= at
    assert local.date() == calendar.due_date(at, n)


@FAST
@given(calendars(), INSTANTS, st.integers(0, 15))
def test_add_business_days_moves_exactly_n_business_days(
    calendar: BusinessCalendar, at: datetime, n: int
) -> None:
    start = calendar.effective_start(at).astimezone(calendar.tz)
    end = calendar.add_business_days(at, n).astimezone(calendar.tz)
    between = [start.date() + timedelta(days=k) for k in range(1, (end.date() - start.date()).days + 1)]
    assert n == sum(calendar.is_business_day(d) for d in between)
    assert start.time() == end.time() or _in_dst_gap(end.date(), start.time(), calendar.tz)


@FAST
@given(calendars(), INSTANTS)
def test_effective_start_is_the_first_business_instant_at_or_after_at(
    calendar: BusinessCalendar, at: datetime
) -> None:
    start = calendar.effective_start(at)
    local = start.astimezone(calendar.tz)
    assert start >= at
    assert calendar.is_business_day(local.date())
    assert calendar.hours.contains(local.time())
    if start != at:
        assert calendar.hours.start == local.time()
        # Nothing between `at` and the opening is business time: sample every hour and the minute before.
        probes = [at + timedelta(hours=k) for k in range(int((start - at) / timedelta(hours=1)) + 1)]
        for probe in [*probes, start - timedelta(minutes=1)]:
            if at <= probe < start:
                p = probe.astimezone(calendar.tz)
                assert not (calendar.is_business_day(p.date()) and calendar.hours.contains(p.time()))


@FAST
@given(calendars(), INSTANTS, st.integers(0, 10**6).map(lambda s: timedelta(seconds=s)))
def test_add_with_a_timedelta_adds_elapsed_time(
    calendar: BusinessCalendar, at: datetime, delta: timedelta
) -> None:
    at = at.astimezone(calendar.tz)
    assert delta == calendar.add(at, delta).astimezone(UTC) - at.astimezone(UTC)


def _in_dst_gap(day: date, t: time, tz: ZoneInfo) -> bool:
    return local_datetime(day, t, tz).time() != t
