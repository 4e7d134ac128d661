"""The scheduler: every cron fire time claimed exactly once — across threads, replicas, SQLite and
PostgreSQL, and across DST changes in the daemon's zone (Europe/Berlin) — each claim queuing one
``wave`` job that carries the wave id."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from nps_sync import config as config_mod
from nps_sync.config import Config
from nps_sync.scheduler import Scheduler, claim_tick
from nps_sync.store import schema
from nps_sync.store.db import Store
from nps_sync.waves import wave_id_for
from tests.core import config_data, make_runtime, program

UTC = timezone.utc


def cfg(*programs: dict[str, Any]) -> Config:
    return config_mod.parse(config_data(*programs), source=Path("/srv/nps/config.toml"))


def ticks(store: Store) -> list[datetime]:
    with store.read() as conn:
        return list(conn.execute(select(schema.ticks.c.fire_at).order_by(schema.ticks.c.fire_at)).scalars())


def wave_jobs(store: Store) -> list[dict[str, Any]]:
    t = schema.jobs
    with store.read() as conn:
        return list(conn.execute(select(t.c.payload).where(t.c.kind == "wave").order_by(t.c.id)).scalars())


def run_night(scheduler: Scheduler, start: datetime, hours: int) -> int:
    """Call ``due`` every 10 minutes, as the daemon's loop would, for ``hours`` hours."""
    fired = 0
    for step in range(hours * 6 + 1):
        fired += scheduler.due(start + timedelta(minutes=10 * step))
    return fired


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_claim_tick_is_exactly_once_with_four_threads_racing(
    request: pytest.FixtureRequest, backend: str
) -> None:
    any_store: Store = request.getfixturevalue(f"{'pg' if backend == 'postgres' else 'sqlite'}_store")
    fire_times = [datetime(2026, 5, 4, 8, minute, tzinfo=UTC) for minute in range(0, 50, 10)]
    barrier = threading.Barrier(4)
    wins: list[tuple[int, bool]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def replica(n: int) -> None:
        try:
            for i, at in enumerate(fire_times):
                barrier.wait(timeout=30)
                won = claim_tick(any_store, "relationship", at, worker_id=f"replica-{n}")
                with lock:
                    wins.append((i, won))
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert [] == errors
    assert [1] * len(fire_times) == [sum(won for i, won in wins if i == k) for k in range(len(fire_times))]
    assert fire_times == ticks(any_store)
    assert [{"program": "relationship", "wave_id": wave_id_for("relationship", at)} for at in fire_times] == (
        wave_jobs(any_store)
    )


def test_the_wave_id_names_the_program_and_the_fire_instant() -> None:
    at = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)

    program_name, _, stamp = wave_id_for("relationship", at).partition("@")

    assert ("relationship", at) == (program_name, datetime.strptime(stamp, "%Y-%m-%dT%H:%M%z"))


def test_due_fires_a_weekday_10_oclock_schedule_at_10_berlin_time_across_the_spring_change(
    sqlite_store: Store,
) -> None:
    start = datetime(2026, 3, 25, 0, 0, tzinfo=UTC)
    scheduler = Scheduler(sqlite_store, cfg(program("rel", schedule="0 10 * * mon-fri")), now=start)

    fired = run_night(scheduler, start, 24 * 9)

    # Clocks go from CET (UTC+1) to CEST (UTC+2) on Sunday 2026-03-29.
    expected = [datetime(2026, 3, d, 9, 0, tzinfo=UTC) for d in (25, 26, 27)] + [
        datetime(2026, m, d, 8, 0, tzinfo=UTC) for m, d in ((3, 30), (3, 31), (4, 1), (4, 2))
    ]
    assert (len(expected), expected) == (fired, ticks(sqlite_store))


def test_due_fires_a_daily_0230_once_on_the_night_the_clocks_go_back(sqlite_store: Store) -> None:
    start = datetime(2026, 10, 24, 20, 0, tzinfo=UTC)
    scheduler = Scheduler(sqlite_store, cfg(program("rel", schedule="30 2 * * *")), now=start)

    fired = run_night(scheduler, start, 30)

    # 02:30 happens twice in Berlin on 2026-10-25 (00:30 UTC in CEST, 01:30 UTC in CET): cron runs it once.
    expected = [datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 26, 1, 30, tzinfo=UTC)]
    assert (2, expected) == (fired, ticks(sqlite_store))


def test_due_fires_a_daily_0230_once_on_the_night_that_has_no_0230(sqlite_store: Store) -> None:
    start = datetime(2026, 3, 28, 20, 0, tzinfo=UTC)
    scheduler = Scheduler(sqlite_store, cfg(program("rel", schedule="30 2 * * *")), now=start)

    fired = run_night(scheduler, start, 30)

    # On 2026-03-29 Berlin skips from 02:00 to 03:00; APScheduler runs the lost 02:30 at 01:30 UTC.
    expected = [datetime(2026, 3, 29, 1, 30, tzinfo=UTC), datetime(2026, 3, 30, 0, 30, tzinfo=UTC)]
    assert (2, expected) == (fired, ticks(sqlite_store))


def test_an_hourly_schedule_runs_each_wall_clock_hour_once_when_the_clocks_go_back(
    sqlite_store: Store,
) -> None:
    start = datetime(2026, 10, 24, 21, 30, tzinfo=UTC)
    scheduler = Scheduler(sqlite_store, cfg(program("rel", schedule="0 * * * *")), now=start)

    run_night(scheduler, start, 7)

    local = [
        t.astimezone(scheduler.triggers["rel"].timezone).strftime("%H:%M%z") for t in ticks(sqlite_store)
    ]
    assert ["00:00+0200", "01:00+0200", "02:00+0200", "03:00+0100", "04:00+0100", "05:00+0100"] == local


def test_a_schedule_inside_the_repeated_hour_moves_on_and_never_fires_backwards(sqlite_store: Store) -> None:
    start = datetime(2026, 10, 24, 23, 30, tzinfo=UTC)
    scheduler = Scheduler(sqlite_store, cfg(program("rel", schedule="*/20 * * * *")), now=start)

    run_night(scheduler, start, 4)

    fired = [t.strftime("%H:%M") for t in ticks(sqlite_store)]
    # 00:00-00:40 UTC is 02:00-02:40 CEST; 01:00-01:40 UTC repeats 02:00-02:40 in CET and is skipped.
    assert ["23:40", "00:00", "00:20", "00:40", "02:00", "02:20", "02:40", "03:00", "03:20"] == fired
    assert datetime(2026, 10, 25, 3, 40, tzinfo=UTC) == scheduler.next_at["rel"]


def test_due_queues_one_wave_job_per_fire_time_and_a_second_replica_fires_nothing(
    sqlite_store: Store,
) -> None:
    config = cfg(program("rel", schedule="0 10 * * *"), program("off", enabled=False, schedule="0 10 * * *"))
    start = datetime(2026, 6, 1, 7, 0, tzinfo=UTC)
    first, second = Scheduler(sqlite_store, config, now=start), Scheduler(sqlite_store, config, now=start)
    fire_at = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)  # 10:00 CEST

    counts = [
        first.due(fire_at - timedelta(seconds=1)),
        first.due(fire_at),
        second.due(fire_at),
        first.due(fire_at),
    ]

    assert [0, 1, 0, 0] == counts
    assert [{"program": "rel", "wave_id": wave_id_for("rel", fire_at)}] == wave_jobs(sqlite_store)


def test_fire_now_claims_the_current_minute_for_each_enabled_program_once(sqlite_store: Store) -> None:
    config = cfg(program("a"), program("b"), program("off", enabled=False))
    scheduler = Scheduler(sqlite_store, config, now=datetime(2026, 6, 1, 7, 0, tzinfo=UTC))
    now = datetime(2026, 6, 1, 7, 12, 41, 5000, tzinfo=UTC)

    counts = [scheduler.fire_now(now), scheduler.fire_now(now + timedelta(seconds=10))]

    minute = datetime(2026, 6, 1, 7, 12, tzinfo=UTC)
    assert [2, 0] == counts
    assert [{"program": p, "wave_id": wave_id_for(p, minute)} for p in ("a", "b")] == wave_jobs(sqlite_store)


def test_a_claimed_wave_job_runs_that_wave(tmp_path: Path, sqlite_store: Store) -> None:
    rt = make_runtime(tmp_path, sqlite_store, config_data(program("rel", audience={"where": {"id": "C002"}})))
    fire_at = datetime.now(UTC).replace(second=0, microsecond=0)
    try:
        assert claim_tick(rt.store, "rel", fire_at)
        rt.queue.run_once()
        with rt.store.read() as conn:
            waves = conn.execute(select(schema.waves.c.id, schema.waves.c.state)).all()
            queued = conn.execute(select(func.count()).select_from(schema.sends)).scalar_one()
    finally:
        rt.close()

    assert [(wave_id_for("rel", fire_at), "done")] == [tuple(w) for w in waves]
    assert 1 == queued
