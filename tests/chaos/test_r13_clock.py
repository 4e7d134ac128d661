"""R13: the scheduler across DST both ways, clock jumps, a leap day, and a leader hand-over in the
night the clocks go back. Each schedule must fire once per intended slot (claimed rows in ``ticks``)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from nps_sync.config import Config
from nps_sync.leader import resume_from_ticks
from nps_sync.scheduler import Scheduler
from nps_sync.store import schema
from nps_sync.store.db import Store

pytestmark = pytest.mark.chaos

BERLIN = ZoneInfo("Europe/Berlin")


def config(schedule: str) -> Config:
    return Config.model_validate(
        {"daemon": {"time_zone": "Europe/Berlin"}, "program": [{"name": "p", "schedule": schedule}]}
    )


def walk(store: Store, cfg: Config, start: datetime, end: datetime, step: timedelta) -> Scheduler:
    scheduler = Scheduler(store, cfg, now=start)
    at = start
    while at <= end:
        scheduler.due(at)
        at += step
    return scheduler


def fired(store: Store) -> list[datetime]:
    t = schema.ticks
    with store.read() as conn:
        return sorted(conn.execute(select(t.c.fire_at).where(t.c.schedule == "p")).scalars())


def local_days(times: list[datetime]) -> list[date]:
    return [t.astimezone(BERLIN).date() for t in times]


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=timezone.utc)


def test_a_daily_0230_fires_once_a_day_across_both_dst_changes(sqlite_store: Store) -> None:
    cfg = config("30 2 * * *")
    walk(sqlite_store, cfg, utc(2026, 3, 27), utc(2026, 3, 31), timedelta(minutes=7))
    walk(sqlite_store, cfg, utc(2026, 10, 23), utc(2026, 10, 27), timedelta(minutes=7))
    days = local_days(fired(sqlite_store))
    print(f"\nR13: 02:30 Europe/Berlin fired on {[d.isoformat() for d in days]}")
    spring = [date(2026, 3, d) for d in (27, 28, 29, 30)]
    autumn = [date(2026, 10, d) for d in (23, 24, 25, 26)]
    assert (
        spring + autumn == days
    )  # 29 March has no 02:30 and still fires once; 25 October has two, fires once


def test_clock_jumps_back_and_forward_fire_each_slot_once(sqlite_store: Store) -> None:
    cfg = config("0 * * * *")
    scheduler = Scheduler(sqlite_store, cfg, now=utc(2026, 6, 1, 8, 30))
    for now in [
        utc(2026, 6, 1, 9, 1),
        utc(2026, 6, 1, 8, 10),
        utc(2026, 6, 1, 9, 30),
        utc(2026, 6, 1, 12, 5),
    ]:
        scheduler.due(now)  # an NTP step back after 09:00, then a jump three hours ahead
    assert [utc(2026, 6, 1, h) for h in (9, 10, 11, 12)] == fired(sqlite_store)


def test_a_leap_day_schedule_fires_only_on_29_february(sqlite_store: Store) -> None:
    cfg = config("0 10 29 2 *")
    walk(sqlite_store, cfg, utc(2027, 2, 27), utc(2027, 3, 2), timedelta(hours=1))
    walk(sqlite_store, cfg, utc(2028, 2, 27), utc(2028, 3, 2), timedelta(hours=1))
    assert [date(2028, 2, 29)] == local_days(fired(sqlite_store))


def test_a_new_leader_in_the_night_the_clocks_go_back_does_not_repeat_0230(sqlite_store: Store) -> None:
    cfg = config("30 2 * * *")
    first = walk(sqlite_store, cfg, utc(2026, 10, 24, 23), utc(2026, 10, 25, 0, 45), timedelta(minutes=5))
    # 00:30 UTC is the first 02:30 (CEST). The leader dies; the next one starts in the repeated hour.
    assert 1 == len(fired(sqlite_store))
    second = Scheduler(sqlite_store, cfg, now=utc(2026, 10, 25, 1, 0))
    resume_from_ticks(second, sqlite_store, now=utc(2026, 10, 25, 1, 0))
    at = utc(2026, 10, 25, 1, 0)
    while at <= utc(2026, 10, 26, 3):
        second.due(at)
        first.due(at)  # the old leader, paused, wakes up and tries too
        at += timedelta(minutes=5)
    assert [date(2026, 10, 25), date(2026, 10, 26)] == local_days(fired(sqlite_store))
