"""Replicas, heartbeats and the one leader that runs the scheduler.

Every daemon registers itself in ``replicas`` and beats there every second. On PostgreSQL the leader
is whoever holds a session-level advisory lock (``pg_try_advisory_lock``) on a connection of its own;
followers try again every second. ../shared/docs/reliability-and-compliance.md §2:

- kill -9 of the leader closes its connection, PostgreSQL drops the lock, a follower takes it.
- A paused leader (SIGSTOP) keeps its socket, so its lock would never go: a follower that sees the
  leader's heartbeat older than ``LEADER_LEASE`` terminates the leader's backend
  (``pg_terminate_backend``). If the old leader wakes up it finds its connection gone and steps down;
  whatever it fires before noticing is harmless, because each fire time is claimed once in ``ticks``.
- The scheduler of a new leader starts from the last claimed fire time, so ticks missed during the
  failover run late rather than never.

Sends claimed by a replica whose heartbeat stopped ``REPLICA_DEAD_AFTER`` ago are its abandoned sends:
the leader marks them ``unknown`` and reconciles them. A live replica's in-flight sends are never
touched, which is why start-up no longer marks *every* ``sending`` row unknown on PostgreSQL.
SQLite allows one daemon per state directory, so there the daemon is always the leader.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, create_engine, delete, func, select, text, update
from sqlalchemy.pool import NullPool

from nps_sync.queue import WORKER_ID
from nps_sync.store import schema
from nps_sync.store.db import Store, utcnow

log = structlog.get_logger("nps_sync.leader")

#: An arbitrary constant: the advisory lock key that only the scheduler leader holds.
LOCK_KEY = 0x6E7073_5CED
HEARTBEAT_EVERY = 0.5
#: A leader silent this long is presumed paused or partitioned and is fenced off.
LEADER_LEASE = timedelta(seconds=1.5)
#: A replica silent this long is presumed dead: its in-flight sends become ``unknown``.
REPLICA_DEAD_AFTER = timedelta(seconds=15)
#: How far back a new leader catches up fire times missed during a failover.
CATCH_UP = timedelta(minutes=5)
LEADER_SETTING = "leader"


class Replicas:
    """This process's row in ``replicas`` and questions about the others."""

    def __init__(self, store: Store, replica_id: str = WORKER_ID) -> None:
        self.store = store
        self.id = replica_id

    def register(self, now: datetime | None = None) -> None:
        now = now or utcnow()
        row = {"id": self.id, "host": socket.gethostname(), "pid": os.getpid()}
        with self.store.begin() as conn:
            if not self.store.insert_ignore(
                conn, schema.replicas, {**row, "started_at": now, "heartbeat_at": now}, "id"
            ):
                # The same host:pid as a dead predecessor (pid 1 in a restarted container).
                conn.execute(
                    update(schema.replicas)
                    .where(schema.replicas.c.id == self.id)
                    .values(**row, started_at=now, heartbeat_at=now)
                )
        log.info("replica.registered", replica=self.id)

    def beat(self, now: datetime | None = None) -> None:
        with self.store.begin() as conn:
            done = conn.execute(
                update(schema.replicas)
                .where(schema.replicas.c.id == self.id)
                .values(heartbeat_at=now or utcnow())
            )
        if not done.rowcount:  # pruned by another replica while we were stalled
            self.register(now)

    def deregister(self) -> None:
        with self.store.begin() as conn:
            conn.execute(delete(schema.replicas).where(schema.replicas.c.id == self.id))
        log.info("replica.deregistered", replica=self.id)

    def live(self, within: timedelta, now: datetime | None = None) -> set[str]:
        now = now or utcnow()
        with self.store.read() as conn:
            return set(
                conn.execute(
                    select(schema.replicas.c.id).where(schema.replicas.c.heartbeat_at >= now - within)
                ).scalars()
            )

    def prune(self, older_than: timedelta = timedelta(days=1), now: datetime | None = None) -> int:
        now = now or utcnow()
        with self.store.begin() as conn:
            result = conn.execute(
                delete(schema.replicas).where(schema.replicas.c.heartbeat_at < now - older_than)
            )
        return int(result.rowcount or 0)


def abandoned_claimers(
    store: Store, replicas: Replicas, *, startup: bool = False, now: datetime | None = None
) -> list[str]:
    """Worker ids holding ``sending`` rows or running jobs that nobody alive will ever finish.

    A claimer counts as dead when it has no fresh heartbeat and its claim is older than
    ``REPLICA_DEAD_AFTER`` (a one-shot CLI command has no heartbeat but may still be mid-call). At
    start-up our own id also counts: a previous process with the same host:pid is gone.
    """
    now = now or utcnow()
    sends, jobs = schema.sends, schema.jobs
    claimers: dict[str, datetime | None] = {}
    with store.read() as conn:
        held = list(
            conn.execute(
                select(sends.c.claimed_by, func.min(sends.c.claimed_at))
                .where(sends.c.state == "sending")
                .group_by(sends.c.claimed_by)
            )
        )
        held += conn.execute(
            select(jobs.c.locked_by, func.min(jobs.c.locked_at))
            .where(jobs.c.state == "running")
            .group_by(jobs.c.locked_by)
        ).all()
    for worker, oldest in held:
        if worker is not None:
            known = claimers.get(worker, oldest)
            # No claim time at all counts as the oldest (a claimer that never said when).
            claimers[worker] = None if known is None or oldest is None else min(known, oldest)
    live = replicas.live(REPLICA_DEAD_AFTER, now) - ({replicas.id} if startup else set())
    dead = [
        worker
        for worker, claimed_at in claimers.items()
        if (startup and worker == replicas.id)
        or (worker not in live and (claimed_at is None or claimed_at < now - REPLICA_DEAD_AFTER))
    ]
    return sorted(dead)


class Leadership:
    """Holds (or tries to take) the scheduler lock. ``check()`` once a second says who leads."""

    def __init__(self, store: Store, replicas: Replicas, *, lease: timedelta = LEADER_LEASE) -> None:
        self.store = store
        self.replicas = replicas
        self.lease = lease
        self.is_leader = False
        self.since: datetime | None = None
        self._conn: Connection | None = None
        self._engine = (
            None
            if store.is_sqlite
            else create_engine(store.url, poolclass=NullPool, connect_args={"connect_timeout": 5})
        )

    def check(self) -> bool:
        """Keep, take or fence off leadership; returns True when this process leads now."""
        if self._engine is None:
            if not self.is_leader:
                self._became_leader()
            return True
        if self.is_leader:
            if self._alive():
                return True
            self._lost("connection lost")
        try:
            self._try_take()
        except Exception as exc:  # the database is away: stay a follower and try again next second
            log.warning("leader.try_failed", error=f"{type(exc).__name__}: {exc}")
            self._drop_conn()
        return self.is_leader

    def _alive(self) -> bool:
        assert self._conn is not None
        try:
            self._conn.execute(text("select 1"))
            self._conn.commit()
        except Exception:
            self._drop_conn()
            return False
        return True

    def _try_take(self) -> None:
        assert self._engine is not None
        if self._conn is None:
            self._conn = self._engine.connect()
        got = bool(self._conn.execute(text("select pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar())
        self._conn.commit()
        if got:
            pid = self._conn.execute(text("select pg_backend_pid()")).scalar_one()
            self._conn.commit()
            self.store.set_setting(LEADER_SETTING, f"{self.replicas.id} {pid}")
            self._became_leader()
            return
        self._fence_stale_leader()

    def _fence_stale_leader(self) -> None:
        """A leader whose heartbeat stopped still holds the lock if it is paused: cut its session."""
        holder = (self.store.get_setting(LEADER_SETTING) or "").rsplit(" ", 1)
        if len(holder) != 2 or not holder[1].isdigit() or holder[0] == self.replicas.id:
            return
        replica, pid = holder[0], int(holder[1])
        if replica in self.replicas.live(self.lease):
            return
        assert self._conn is not None
        cut = self._conn.execute(text("select pg_terminate_backend(:p)"), {"p": pid}).scalar()
        self._conn.commit()
        if cut:
            log.warning("leader.fenced", replica=replica, backend_pid=pid, lease=self.lease.total_seconds())

    def _became_leader(self) -> None:
        self.is_leader = True
        self.since = utcnow()
        log.info("leader.elected", replica=self.replicas.id)

    def _lost(self, why: str) -> None:
        self.is_leader = False
        self.since = None
        log.warning("leader.lost", replica=self.replicas.id, reason=why)

    def _drop_conn(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # the socket is already gone; nothing to release
                log.debug("leader.close_failed")
        self._conn = None

    def release(self) -> None:
        if self._conn is not None and self.is_leader:
            try:
                self._conn.execute(text("select pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                self._conn.commit()
            except Exception:  # closing the connection releases the lock anyway
                log.debug("leader.unlock_failed")
        if self.is_leader:
            self._lost("stopping")
        self._drop_conn()
        if self._engine is not None:
            self._engine.dispose()


def last_fire_times(store: Store, schedules: list[str], now: datetime | None = None) -> dict[str, datetime]:
    """The newest claimed fire time of each schedule within ``CATCH_UP`` (where a new leader resumes)."""
    now = now or utcnow()
    ticks = schema.ticks
    with store.read() as conn:
        rows = conn.execute(
            select(ticks.c.schedule, ticks.c.fire_at).where(
                ticks.c.schedule.in_(schedules), ticks.c.fire_at >= now - CATCH_UP
            )
        ).all()
    last: dict[str, datetime] = {}
    for schedule, fire_at in rows:
        if schedule not in last or fire_at > last[schedule]:
            last[schedule] = fire_at
    return last


def resume_from_ticks(scheduler: Any, store: Store, now: datetime | None = None) -> None:
    """Point a fresh :class:`~nps_sync.scheduler.Scheduler` at the first fire time after the last
    claimed one, so fire times that fell into a failover gap still run (once: the claim decides)."""
    last = last_fire_times(store, list(scheduler.triggers), now)
    for name, at in last.items():
        trigger = scheduler.triggers[name]
        scheduler.next_at[name] = trigger.get_next_fire_time(at, at + timedelta(microseconds=1))


MAINTENANCE = "nps-sync.maintenance"
MAINTENANCE_EVERY = timedelta(seconds=1)


class Maintenance:
    """The leader's own one-second schedule, claimed in ``ticks`` like a program's: recovery of dead
    replicas' sends and the periodic scans run once per slot across all replicas, even when a paused
    former leader wakes up and tries the same slot."""

    def __init__(self, store: Store, replica_id: str = WORKER_ID, now: datetime | None = None) -> None:
        self.store = store
        self.replica_id = replica_id
        last = last_fire_times(store, [MAINTENANCE], now).get(MAINTENANCE)
        start = _slot(now or utcnow())
        self.next_at = last + MAINTENANCE_EVERY if last is not None else start
        self.lost = 0

    def due(self, now: datetime | None = None) -> int:
        """Claim every slot that has come; returns how many this call won."""
        now = now or utcnow()
        won = 0
        while self.next_at <= now:
            at, self.next_at = self.next_at, self.next_at + MAINTENANCE_EVERY
            with self.store.begin() as conn:
                claimed = self.store.insert_ignore(
                    conn,
                    schema.ticks,
                    {
                        "schedule": MAINTENANCE,
                        "fire_at": at,
                        "claimed_by": self.replica_id,
                        "claimed_at": now,
                    },
                    "schedule",
                    "fire_at",
                )
            if claimed:
                won += 1
            else:
                self.lost += 1
                log.info("leader.tick_lost", schedule=MAINTENANCE, fire_at=at.isoformat())
        return won

    def prune(self, now: datetime | None = None) -> None:
        now = now or utcnow()
        with self.store.begin() as conn:
            conn.execute(
                delete(schema.ticks).where(
                    schema.ticks.c.schedule == MAINTENANCE, schema.ticks.c.fire_at < now - CATCH_UP
                )
            )


def _slot(at: datetime) -> datetime:
    return at.replace(microsecond=0)


def recover_sends(rt: Any, replicas: Replicas, *, startup: bool = False) -> int:
    """Mark the sends of dead replicas ``unknown`` and reconcile them, and put their running jobs back
    in the queue. SQLite has a single daemon, so at its start-up every ``sending`` row and running job
    is abandoned. Returns how many sends were marked."""
    if rt.store.is_sqlite:
        if not startup:
            return 0
        marked = int(rt.sender.mark_abandoned())
        rt.queue.release_abandoned()
    else:
        dead = abandoned_claimers(rt.store, replicas, startup=startup)
        marked = int(rt.sender.mark_abandoned(worker_ids=dead)) if dead else 0
        if dead:
            rt.queue.release_abandoned(worker_ids=dead)
        if marked:
            log.warning("replica.sends_abandoned", replicas=dead, sends=marked)
    if marked or startup:
        rt.sender.reconcile()
    return marked
