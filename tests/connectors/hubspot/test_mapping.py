"""Conversions between HubSpot's string values and our types."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from nps_sync.connectors.hubspot.mapping import due_date, due_timestamp, iana_time_zone, to_value
from nps_sync.models import Category


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ""),
        (True, "true"),
        (False, "false"),
        (9, "9"),
        (33.333333, "33.333333"),
        (Category.PROMOTER.value, "promoter"),
        (date(2026, 3, 1), "2026-03-01"),
        (datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))), "2026-03-01T10:00:00.000Z"),
    ],
)
def test_values_become_hubspot_strings(value: object, expected: str) -> None:
    assert expected == to_value(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("america_slash_los_angeles", "America/Los_Angeles"),
        ("europe_slash_berlin", "Europe/Berlin"),
        ("America/New_York", "America/New_York"),
        ("not_a_zone", None),
        ("", None),
    ],
)
def test_hubspot_time_zones_become_iana_names(stored: str, expected: str | None) -> None:
    assert expected == iana_time_zone(stored)


def test_tasks_are_due_at_the_local_hour_across_daylight_saving() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    summer = due_timestamp(date(2026, 7, 1), time(17, 0), berlin)
    winter = due_timestamp(date(2026, 12, 1), time(17, 0), berlin)
    assert ("2026-07-01T15:00:00.000Z", "2026-12-01T16:00:00.000Z") == (summer, winter)
    assert date(2026, 7, 1) == due_date(summer, berlin)
    assert date(2026, 12, 1) == due_date("1796140800000", berlin)  # epoch ms, as HubSpot may return
