"""Durations, delays and daily windows as written in config and playbook files."""

# The house style is `assert expected == actual`, which SIM300 calls a Yoda condition.

from __future__ import annotations

from datetime import time, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from nps_sync.durations import (
    BusinessDays,
    TimeWindow,
    format_delay,
    format_duration,
    parse_delay,
    parse_duration,
    parse_window,
)

FAST = settings(max_examples=200, deadline=None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("90 days", timedelta(days=90)),
        ("3d", timedelta(days=3)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("45s", timedelta(seconds=45)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        ("1 day", timedelta(days=1)),
        ("2 weeks", timedelta(weeks=2)),
        ("1 hour 15 minutes", timedelta(hours=1, minutes=15)),
        ("  7D ", timedelta(days=7)),
        ("10 mins", timedelta(minutes=10)),
        ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration_reads_the_documented_forms(text: str, expected: timedelta) -> None:
    assert expected == parse_duration(text)


@pytest.mark.parametrize(
    "text",
    ["ninety", "", "   ", "d", "90", "-1d", "1.5h", "3 months", "2 years", "30m1h", "1h1h", "1 business day"],
)
def test_parse_duration_refuses_other_text_naming_the_value(text: str) -> None:
    with pytest.raises(
        ValueError, match="expected a duration such as '90d', '12h', '30m' or '2w', got: "
    ) as info:
        parse_duration(text)
    assert repr(text) in str(info.value)


def test_parse_duration_message_matches_the_documented_wording() -> None:
    with pytest.raises(ValueError, match="ninety") as info:
        parse_duration("ninety")
    assert "expected a duration such as '90d', '12h', '30m' or '2w', got: 'ninety'" == str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2 business days", BusinessDays(2)),
        ("1 business day", BusinessDays(1)),
        ("3bd", BusinessDays(3)),
        ("3 BD", BusinessDays(3)),
        ("0 business days", BusinessDays(0)),
        ("10 Business Days", BusinessDays(10)),
        ("90d", timedelta(days=90)),
        ("12h", timedelta(hours=12)),
    ],
)
def test_parse_delay_reads_durations_and_business_days(text: str, expected: object) -> None:
    assert expected == parse_delay(text)


@pytest.mark.parametrize("text", ["two business days", "-1bd", "1.5 business days", "business days", "soon"])
def test_parse_delay_refuses_other_text(text: str) -> None:
    with pytest.raises(ValueError, match="expected a delay such as"):
        parse_delay(text)


@pytest.mark.parametrize("days", [-1, True, 1.5])
def test_business_days_must_be_a_non_negative_integer(days: object) -> None:
    with pytest.raises(ValueError, match="business days must be an integer >= 0"):
        BusinessDays(days)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("09:00-17:00", time(9), time(17)),
        ("9:00 - 17:30", time(9), time(17, 30)),
        ("21:00-08:00", time(21), time(8)),
        ("08:00–21:00", time(8), time(21)),  # an en dash, as word processors write it
        ("18:00-24:00", time(18), time(0)),
        ("00:00-23:59", time(0), time(23, 59)),
    ],
)
def test_parse_window_reads_the_documented_forms(text: str, start: time, end: time) -> None:
    assert TimeWindow(start, end) == parse_window(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("9-17", "expected a time window 'HH:MM-HH:MM'"),
        ("", "expected a time window"),
        ("09:00", "expected a time window"),
        ("25:00-08:00", "hours 00–23, minutes 00–59"),
        ("09:60-10:00", "hours 00–23, minutes 00–59"),
        ("09:00-09:00", "start and end must differ"),
        ("24:00-08:00", "hours 00–23"),
    ],
)
def test_parse_window_refuses_bad_text_with_a_clear_message(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as info:
        parse_window(text)
    assert repr(text) in str(info.value)


def test_time_window_refuses_an_empty_window() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        TimeWindow(time(8), time(8))


def test_time_window_prints_as_it_is_written() -> None:
    assert "09:00-17:00" == str(TimeWindow(time(9), time(17)))
    assert "21:00-08:00" == str(TimeWindow(time(21), time(8)))


@pytest.mark.parametrize(
    ("t", "expected"),
    [(time(8, 59), False), (time(9), True), (time(12), True), (time(16, 59, 59), True), (time(17), False)],
)
def test_window_includes_its_start_and_excludes_its_end(t: time, expected: bool) -> None:
    assert expected == TimeWindow(time(9), time(17)).contains(t)


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (time(20, 59), False),
        (time(21), True),
        (time(23, 59), True),
        (time(0), True),
        (time(7, 59), True),
        (time(8), False),
        (time(12), False),
    ],
)
def test_window_across_midnight_wraps(t: time, expected: bool) -> None:
    assert expected == TimeWindow(time(21), time(8)).contains(t)


times = st.times().map(lambda t: t.replace(microsecond=0))
minute_times = st.builds(time, st.integers(0, 23), st.integers(0, 59))


@FAST
@given(st.integers(0, 10**8).map(lambda s: timedelta(seconds=s)))
def test_formatted_durations_parse_back_to_themselves(delta: timedelta) -> None:
    assert delta == parse_duration(format_duration(delta))


@FAST
@given(
    st.one_of(
        st.integers(0, 10**8).map(lambda s: timedelta(seconds=s)),
        st.integers(0, 1000).map(BusinessDays),
    )
)
def test_formatted_delays_parse_back_to_themselves(delay: timedelta | BusinessDays) -> None:
    assert delay == parse_delay(format_delay(delay))


@FAST
@given(minute_times, minute_times)
def test_printed_windows_parse_back_to_themselves(start: time, end: time) -> None:
    assume(start != end)
    window = TimeWindow(start, end)
    assert window == parse_window(str(window))


@FAST
@given(minute_times, minute_times, times)
def test_a_window_and_its_complement_split_the_day(start: time, end: time, t: time) -> None:
    assume(start != end)
    assert TimeWindow(start, end).contains(t) != TimeWindow(end, start).contains(t)


@FAST
@given(minute_times, minute_times, times)
def test_a_window_that_does_not_wrap_is_an_interval(start: time, end: time, t: time) -> None:
    assume(start < end)
    assert (start <= t < end) == TimeWindow(start, end).contains(t)
