"""Contact zones, quiet hours over uncertain zones and DST, phone and email normalisation."""

# The house style is `assert expected == actual`, which SIM300 calls a Yoda condition.

from __future__ import annotations

import csv
import functools
import zoneinfo
from collections.abc import Sequence
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from nps_sync.durations import TimeWindow
from nps_sync.timezones import (
    ResolvedZone,
    country_code,
    in_window,
    next_window_start,
    normalize_email,
    normalize_phone,
    resolve_zone,
)
from tests.harness import SEED_DIR

UTC = timezone.utc
DEFAULT = ZoneInfo("Europe/Dublin")
QUIET_HOURS_OK = TimeWindow(time(8), time(21))  # when TCPA lets an SMS go out
NY, LA = ZoneInfo("America/New_York"), ZoneInfo("America/Los_Angeles")
ALL_ZONES = sorted(zoneinfo.available_timezones() - {"localtime"})
FAST = settings(max_examples=200, deadline=None)


def keys(resolved: ResolvedZone) -> tuple[str, ...]:
    return tuple(z.key for z in resolved.zones)


# --- resolve_zone -------------------------------------------------------------------------------


def test_a_valid_crm_zone_wins_over_phone_and_country() -> None:
    resolved = resolve_zone(crm_zone="Asia/Tokyo", phone="+12125551000", country="US", default=DEFAULT)
    assert (("Asia/Tokyo",), "crm") == (keys(resolved), resolved.source)


def test_crm_zone_names_are_matched_ignoring_case_and_spaces() -> None:
    resolved = resolve_zone(crm_zone=" europe/berlin ", phone=None, country=None, default=DEFAULT)
    assert (("Europe/Berlin",), "crm") == (keys(resolved), resolved.source)


@pytest.mark.parametrize(
    "bad", ["Mars/Olympus", "../etc/passwd", "/etc/localtime", "right/UTC", "localtime", "EST5"]
)
def test_an_invalid_crm_zone_is_logged_and_falls_through_to_the_phone(bad: str) -> None:
    with capture_logs() as logs:
        resolved = resolve_zone(crm_zone=bad, phone="+14155551001", country="US", default=DEFAULT)
    assert (("America/Los_Angeles",), "phone") == (keys(resolved), resolved.source)
    assert [{"event": "timezones.crm_zone_invalid", "value": bad, "log_level": "warning"}] == logs


def test_the_same_invalid_crm_zone_is_logged_once_per_process() -> None:
    with capture_logs() as logs:
        for _ in range(3):
            resolve_zone(crm_zone="Moon/Tranquility", phone=None, country=None, default=DEFAULT)
    assert 1 == len(logs)


def test_phone_gives_the_zones_of_its_region() -> None:
    resolved = resolve_zone(crm_zone="", phone="+49301231002", country=None, default=DEFAULT)
    assert (("Europe/Berlin",), "phone") == (keys(resolved), resolved.source)


def test_a_phone_spanning_zones_gives_every_candidate() -> None:
    toll_free = resolve_zone(crm_zone=None, phone="+18005551234", country=None, default=DEFAULT)
    assert "phone" == toll_free.source
    assert {"Pacific/Honolulu", "America/New_York", "Pacific/Guam"} <= set(keys(toll_free))
    assert not toll_free.certain


def test_a_national_phone_number_is_read_in_the_contacts_country() -> None:
    resolved = resolve_zone(crm_zone=None, phone="030 1231002", country="DE", default=DEFAULT)
    assert (("Europe/Berlin",), "phone") == (keys(resolved), resolved.source)


@pytest.mark.parametrize("phone", ["+49 30 12", "not a phone", "+999 123", "12"])
def test_an_unusable_phone_falls_through_to_the_country(phone: str) -> None:
    resolved = resolve_zone(crm_zone=None, phone=phone, country="CH", default=DEFAULT)
    assert (("Europe/Zurich",), "country") == (keys(resolved), resolved.source)


@pytest.mark.parametrize(
    ("country", "first"),
    [
        ("DE", "Europe/Berlin"),
        ("de", "Europe/Berlin"),
        ("Germany", "Europe/Berlin"),
        ("United States", "America/New_York"),
        ("USA", "America/New_York"),
        ("US", "America/New_York"),
        ("UK", "Europe/London"),
        ("United Kingdom", "Europe/London"),
        ("Britain", "Europe/London"),
        ("  japan ", "Asia/Tokyo"),
    ],
)
def test_country_gives_the_zone_tab_zones_most_populous_first(country: str, first: str) -> None:
    resolved = resolve_zone(crm_zone=None, phone=None, country=country, default=DEFAULT)
    assert (first, "country") == (resolved.zones[0].key, resolved.source)


def test_a_country_with_many_zones_lists_them_all() -> None:
    resolved = resolve_zone(crm_zone=None, phone=None, country="US", default=DEFAULT)
    assert {"America/New_York", "America/Chicago", "America/Los_Angeles", "Pacific/Honolulu"} <= set(
        keys(resolved)
    )


@pytest.mark.parametrize("country", [None, "", "Atlantis", "XX"])
def test_nothing_known_gives_the_default(country: str | None) -> None:
    resolved = resolve_zone(crm_zone=None, phone=None, country=country, default=DEFAULT)
    assert ((DEFAULT,), "default") == (resolved.zones, resolved.source)


def test_country_code_reads_codes_and_common_names() -> None:
    assert ["DE", "US", "GB", "CH", None] == [
        country_code(c) for c in ["Germany", "U.S.A.", "Great Britain", "switzerland", "Narnia"]
    ]


def test_every_seed_contact_resolves_and_agrees_with_its_crm_zone() -> None:
    with (SEED_DIR / "contacts.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        resolved = resolve_zone(
            crm_zone=row["time_zone"], phone=row["phone"], country=row["country"], default=DEFAULT
        )
        assert resolved.source != "default", row["id"]
        if row["time_zone"]:
            assert (row["time_zone"],) == keys(resolved)


def test_a_resolved_zone_needs_a_zone() -> None:
    with pytest.raises(ValueError, match="at least one candidate zone"):
        ResolvedZone((), "default")


# --- in_window / next_window_start: examples -----------------------------------------------------


def test_in_window_uses_the_local_time_of_every_zone() -> None:
    at = datetime(2026, 11, 23, 14, tzinfo=UTC)  # 09:00 New York, 06:00 Los Angeles
    assert in_window(at, [NY], QUIET_HOURS_OK)
    assert not in_window(at, [NY, LA], QUIET_HOURS_OK)


def test_next_window_start_is_at_itself_when_already_inside() -> None:
    at = datetime(2026, 11, 23, 15, 12, 7, tzinfo=UTC)
    assert at is next_window_start(at, [NY], QUIET_HOURS_OK)


def test_next_window_start_waits_for_the_latest_zone_to_open() -> None:
    at = datetime(2026, 11, 23, 7, 59, tzinfo=NY)
    assert datetime(2026, 11, 23, 8, tzinfo=LA) == next_window_start(at, [NY, LA], QUIET_HOURS_OK)
    assert datetime(2026, 11, 23, 8, tzinfo=NY) == next_window_start(at, [NY], QUIET_HOURS_OK)


def test_next_window_start_keeps_the_callers_tzinfo() -> None:
    at = datetime(2026, 11, 23, 3, tzinfo=UTC)
    result = next_window_start(at, [NY], QUIET_HOURS_OK)
    assert (datetime(2026, 11, 23, 13, tzinfo=UTC), UTC) == (result, result.tzinfo if result else None)


def test_zones_spread_around_the_globe_never_overlap() -> None:
    """08:00–21:00 is 13 hours: zones 8 hours apart from each other leave no common slot."""
    zones = [ZoneInfo("Etc/GMT"), ZoneInfo("Etc/GMT-8"), ZoneInfo("Etc/GMT+8")]
    assert None is next_window_start(datetime(2026, 11, 23, tzinfo=UTC), zones, QUIET_HOURS_OK)


def test_a_narrow_window_never_fits_zones_far_apart() -> None:
    guam, honolulu = ZoneInfo("Pacific/Guam"), ZoneInfo("Pacific/Honolulu")  # 20 hours apart
    window = TimeWindow(time(9), time(10))
    assert None is next_window_start(datetime(2026, 11, 23, tzinfo=UTC), [guam, honolulu], window)


def test_a_toll_free_number_is_texted_only_when_every_zone_of_the_plan_allows_it() -> None:
    zones = resolve_zone(crm_zone=None, phone="+18005551234", country=None, default=DEFAULT).zones
    result = next_window_start(datetime(2026, 11, 23, 3, tzinfo=UTC), zones, QUIET_HOURS_OK)
    # Guam (UTC+10) opens at 22:00 UTC, St John's (UTC−3:30) closes at 00:30 UTC.
    assert datetime(2026, 11, 23, 22, tzinfo=UTC) == result
    assert not in_window(datetime(2026, 11, 24, 0, 30, tzinfo=UTC), zones, QUIET_HOURS_OK)


def test_a_us_country_contact_is_texted_only_when_hawaii_and_new_york_both_allow_it() -> None:
    zones = resolve_zone(crm_zone=None, phone=None, country="US", default=DEFAULT).zones
    result = next_window_start(datetime(2026, 11, 23, 6, tzinfo=UTC), zones, QUIET_HOURS_OK)
    assert datetime(2026, 11, 23, 8, tzinfo=ZoneInfo("Pacific/Honolulu")) == result


def test_horizon_limits_the_search() -> None:
    at = datetime(2026, 11, 23, 22, tzinfo=NY)
    assert None is next_window_start(at, [NY], QUIET_HOURS_OK, horizon=timedelta(hours=9))
    assert datetime(2026, 11, 24, 8, tzinfo=NY) == next_window_start(
        at, [NY], QUIET_HOURS_OK, horizon=timedelta(hours=10)
    )


def test_a_window_opening_in_a_dst_gap_opens_when_the_clock_jumps_into_it() -> None:
    # 8 March 2026, New York: 02:00 EST becomes 03:00 EDT at 07:00 UTC.
    window = TimeWindow(time(2), time(3, 30))
    at = datetime(2026, 3, 8, 1, 30, tzinfo=NY)
    assert datetime(2026, 3, 8, 7, tzinfo=UTC) == next_window_start(at, [NY], window)


def test_a_window_entirely_inside_a_dst_gap_waits_for_the_next_day() -> None:
    window = TimeWindow(time(2, 15), time(2, 45))
    at = datetime(2026, 3, 8, 1, 30, tzinfo=NY)
    assert datetime(2026, 3, 9, 2, 15, tzinfo=NY) == next_window_start(at, [NY], window)


def test_a_window_repeated_when_clocks_go_back_opens_on_the_first_reading() -> None:
    # 1 November 2026, New York: 01:00–02:00 happens twice.
    window = TimeWindow(time(1, 30), time(1, 45))
    at = datetime(2026, 11, 1, 5, 50, tzinfo=UTC)  # 01:50 EDT, after the first 01:30–01:45
    assert datetime(2026, 11, 1, 6, 30, tzinfo=UTC) == next_window_start(at, [NY], window)


def test_naive_datetimes_and_empty_zone_lists_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        in_window(datetime(2026, 1, 1, 12), [NY], QUIET_HOURS_OK)
    with pytest.raises(ValueError, match="at least one candidate zone"):
        next_window_start(datetime(2026, 1, 1, 12, tzinfo=UTC), [], QUIET_HOURS_OK)


# --- in_window / next_window_start: every zone, every DST transition -----------------------------


@functools.cache
def transitions(key: str, year: int) -> tuple[datetime, ...]:
    """UTC instants in ``year`` where ``key``'s offset changes (daily scan, then bisection)."""
    zone = ZoneInfo(key)
    found = []
    day = datetime(year, 1, 1, tzinfo=UTC)
    while day.year == year:
        nxt = day + timedelta(days=1)
        if day.astimezone(zone).utcoffset() != nxt.astimezone(zone).utcoffset():
            lo, hi = day, nxt
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                if mid.astimezone(zone).utcoffset() == lo.astimezone(zone).utcoffset():
                    lo = mid
                else:
                    hi = mid
            found.append(hi.replace(microsecond=0))
        day = nxt
    return tuple(found)


def brute_force_next(
    at: datetime, zones: Sequence[ZoneInfo], window: TimeWindow, horizon: timedelta
) -> datetime | None:
    """The reference answer: test ``at``, then every whole minute up to the horizon."""
    if in_window(at, zones, window):
        return at
    minute = at.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    while minute <= at + horizon:
        if in_window(minute, zones, window):
            return minute
        minute += timedelta(minutes=1)
    return None


def test_every_zone_around_each_2026_transition_gets_a_valid_earliest_window_start() -> None:
    """For all IANA zones: next_window_start is in the window and the hour before it has no such minute."""
    checked = 0
    for key in ALL_ZONES:
        zone = ZoneInfo(key)
        starts = [t - timedelta(hours=h) for t in transitions(key, 2026) for h in (1, 7)] or [
            datetime(2026, 6, 1, 5, 17, tzinfo=UTC)
        ]
        for at in starts:
            for window in (QUIET_HOURS_OK, TimeWindow(time(1, 30), time(3, 15))):
                result = next_window_start(at, [zone], window)
                assert result is not None, (key, at)
                assert in_window(result, [zone], window), (key, at)
                earlier = (result - timedelta(minutes=m) for m in range(1, 61))
                assert not any(at <= e and in_window(e, [zone], window) for e in earlier), (key, at)
                checked += 1
    assert checked > len(ALL_ZONES)


zone_keys = st.sampled_from(ALL_ZONES)
windows = (
    st.tuples(
        st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45])),
        st.builds(time, st.integers(0, 23), st.sampled_from([0, 30])),
    )
    .filter(lambda ends: ends[0] != ends[1])
    .map(lambda ends: TimeWindow(*ends))
)


@st.composite
def instants_near_transitions(draw: st.DrawFn, key: str) -> datetime:
    year = draw(st.sampled_from([1996, 2008, 2024, 2026, 2031, 2037]))
    changes = transitions(key, year)
    if changes and draw(st.integers(0, 3)) > 0:  # mostly near a transition
        base = draw(st.sampled_from(changes))
        return base + timedelta(seconds=draw(st.integers(-36 * 3600, 36 * 3600)))
    return datetime(year, 1, 1, tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 364 * 86400)))


@st.composite
def zone_sets_and_instants(draw: st.DrawFn) -> tuple[list[ZoneInfo], datetime]:
    keys_ = draw(st.lists(zone_keys, min_size=1, max_size=3))
    at = draw(instants_near_transitions(keys_[0]))
    return [ZoneInfo(k) for k in keys_], at


@settings(max_examples=150, deadline=None)
@given(zone_sets_and_instants(), windows)
def test_next_window_start_equals_a_minute_by_minute_search(
    zones_at: tuple[list[ZoneInfo], datetime], window: TimeWindow
) -> None:
    zones, at = zones_at
    horizon = timedelta(hours=30)
    assert brute_force_next(at, zones, window, horizon) == next_window_start(
        at, zones, window, horizon=horizon
    )


@FAST
@given(zone_sets_and_instants(), windows, st.data())
def test_next_window_start_is_inside_and_no_sampled_earlier_minute_is(
    zones_at: tuple[list[ZoneInfo], datetime], window: TimeWindow, data: st.DataObject
) -> None:
    zones, at = zones_at
    result = next_window_start(at, zones, window)
    if result is None:
        probes = [at + timedelta(minutes=m) for m in range(0, 8 * 24 * 60 + 1, 7)]
        assert not any(in_window(p, zones, window) for p in probes)
        return
    assert at <= result <= at + timedelta(days=8)
    assert in_window(result, zones, window)
    span = int((result - at) / timedelta(minutes=1))
    sample = data.draw(st.lists(st.integers(0, span), max_size=60)) + list(range(max(0, span - 90), span))
    earlier = [at.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=m) for m in sample]
    assert not any(at <= e < result and in_window(e, zones, window) for e in earlier)


@FAST
@given(zone_sets_and_instants())
def test_quiet_hours_are_never_broken_in_any_candidate_zone(
    zones_at: tuple[list[ZoneInfo], datetime],
) -> None:
    zones, at = zones_at
    for instant in (at, next_window_start(at, zones, QUIET_HOURS_OK)):
        if instant is not None and in_window(instant, zones, QUIET_HOURS_OK):
            assert all(8 <= instant.astimezone(z).hour < 21 for z in zones)


# --- phone and email -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+12125551000", None, "+12125551000"),
        ("+1 (212) 555-1000", None, "+12125551000"),
        ("(212) 555-1000", "US", "+12125551000"),
        ("030 1231002", "DE", "+49301231002"),
        ("030 1231002", "de", "+49301231002"),
        ("+44 20 7946 0800", "DE", "+442079460800"),
        ("030 1231002", None, None),
        ("+49 30 12", None, None),
        ("not a phone", "US", None),
        ("", "US", None),
        ("   ", None, None),
        (None, "US", None),
    ],
)
def test_normalize_phone_gives_e164_for_valid_numbers_only(
    raw: str | None, region: str | None, expected: str | None
) -> None:
    assert expected == normalize_phone(raw, default_region=region)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alice.smith@northwind.example", "alice.smith@northwind.example"),
        ("  Bob@Example.COM ", "Bob@example.com"),
        ("carla@BÜCHER.example", "carla@bücher.example"),
        ("not-an-email", None),
        ("x@localhost", None),
        ("a@b.invalid", None),
        ("two@@signs.example", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_email_gives_the_normalised_form_or_none(raw: str | None, expected: str | None) -> None:
    assert expected == normalize_email(raw)
