"""Fire each program's wave on its cron schedule — exactly once per scheduled time.

APScheduler 3.11's ``CronTrigger`` computes the fire times (DST-correct, in the daemon's time zone).
Each fire time is claimed as a row ``(schedule, fire_at)`` with INSERT … ON CONFLICT DO NOTHING before
the wave is queued, so a second replica, or a paused former leader waking up, cannot fire it twice.
Fire times that passed while no daemon ran are not caught up (the next one runs as scheduled); inside
a running daemon (a clock jump, a suspended process) each missed one is claimed once, in order, and a
newly elected leader catches up the last five minutes from the ticks table (nps_sync.leader).
Like cron, a wall-clock time runs once: the repeated 02:30 of a night the clocks go back is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import structlog
from apscheduler.triggers.cron import CronTrigger

from nps_sync.config import Config, ProgramConfig
from nps_sync.queue import WORKER_ID, enqueue
from nps_sync.store import schema
from nps_sync.store.db import Store, utcnow
from nps_sync.waves import wave_id_for

log = structlog.get_logger("nps_sync.scheduler")


def claim_tick(store: Store, schedule: str, fire_at: datetime, *, worker_id: str = WORKER_ID) -> bool:
    """Claim one scheduled fire time and queue its wave; False when someone already did."""
    with store.begin() as conn:
        if not store.insert_ignore(
            conn,
            schema.ticks,
            {"schedule": schedule, "fire_at": fire_at, "claimed_by": worker_id, "claimed_at": utcnow()},
            "schedule",
            "fire_at",
        ):
            return False
        wave_id = wave_id_for(schedule, fire_at)
        enqueue(store, conn, "wave", {"program": schedule, "wave_id": wave_id}, dedupe_key=f"wave:{wave_id}")
    log.info("schedule.fired", program=schedule, fire_at=fire_at.isoformat(), wave_id=wave_id)
    return True


class Scheduler:
    def __init__(self, store: Store, config: Config, *, now: datetime | None = None) -> None:
        self.store = store
        self.programs: Sequence[ProgramConfig] = [p for p in config.program if p.enabled]
        self.triggers = {
            p.name: CronTrigger.from_crontab(p.schedule, timezone=config.daemon.time_zone)
            for p in self.programs
        }
        start = now or utcnow()
        self.next_at: dict[str, datetime | None] = {
            name: trigger.get_next_fire_time(None, start) for name, trigger in self.triggers.items()
        }

    def due(self, now: datetime | None = None) -> int:
        """Claim every fire time that has come; returns how many waves this call queued."""
        now = now or utcnow()
        fired = 0
        for name, trigger in self.triggers.items():
            while (at := self.next_at[name]) is not None and at <= now:
                if not _repeated_wall_time(at):
                    fired += claim_tick(self.store, name, at)
                self.next_at[name] = _next_after(trigger, at)
        return fired

    def fire_now(self, now: datetime | None = None) -> int:
        """The start-up wave of every enabled program (``run_on_start``), claimed like a tick."""
        at = (now or utcnow()).replace(second=0, microsecond=0)
        return sum(claim_tick(self.store, p.name, at) for p in self.programs)


def _repeated_wall_time(at: datetime) -> bool:
    """The second occurrence of a wall-clock time in the hour the clocks go back (fold=1)."""
    return at.fold == 1 and at.replace(fold=0).utcoffset() != at.utcoffset()


def _next_after(trigger: CronTrigger, at: datetime) -> datetime | None:
    """The first fire time strictly after ``at`` (None if the trigger would go backwards).

    Given ``previous_fire_time``, APScheduler 3.11 ignores ``fold`` in the hour the clocks go back:
    after the second 02:30 it answers that same 02:30, or an earlier time, for ever. Asked for the
    first time after the next UTC instant instead, it answers right.
    """
    after = at.astimezone(timezone.utc)
    nxt: datetime | None = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
    if nxt is not None and nxt.astimezone(timezone.utc) <= after:
        return None
    return nxt
