"""The durable work queue: jobs in the state database, claimed by worker threads of any replica.

A job is enqueued inside the caller's transaction, so the work and the fact that caused it commit
together (a response and its write-back job, say). Workers claim jobs with ``FOR UPDATE SKIP LOCKED``
on PostgreSQL and inside ``BEGIN IMMEDIATE`` on SQLite. Handlers must be idempotent: a job whose
worker died is claimed again after its lease ends.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, and_, bindparam, delete, func, or_, select, update

from nps_sync.store import schema
from nps_sync.store.db import Store, utcnow

log = structlog.get_logger("nps_sync.queue")

#: A handler receives the payloads of a batch of claimed jobs of its kind, each with ``ATTEMPT``.
Handler = Callable[[Sequence[Mapping[str, Any]]], None]
#: Added to each payload handed to a handler: which claim of the job this is (1 the first time; more
#: after a failure, a crash or a lapsed lease, when the work may already be partly done).
ATTEMPT = "attempt"

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
#: Jobs that may run for hours keep their claim that long before another worker may take them over.
LONG_LEASES = {"wave": timedelta(hours=6)}
#: Done jobs are deleted after this long (the periodic scan, at most 10,000 at a time).
DONE_JOBS_KEPT = timedelta(days=7)


@dataclass(frozen=True)
class Linger:
    """How a kind's partial batch waits for more jobs, so a stream of answers costs one batched CRM
    call per full batch rather than one per few jobs. The batch runs as soon as it is full, when no
    job of the kind has come due or been touched for ``quiet`` (the burst ended), or when its oldest
    due job has waited ``longest``. While jobs of a kind in ``after`` are due or running the quiet
    gap does not count: that work is about to add or touch jobs of this kind."""

    quiet: timedelta
    longest: timedelta
    after: tuple[str, ...] = ()


#: Built once: a statement given its values as parameters is not rebuilt or re-keyed per job.
_INSERT_JOB = schema.jobs.insert()


def _job_row(
    kind: str,
    payload: Mapping[str, Any],
    dedupe_key: str | None,
    now: datetime,
    run_at: datetime | None = None,
) -> dict[str, Any]:
    """A queued job's row, due at ``run_at`` (default now)."""
    return {
        "kind": kind,
        "payload": dict(payload),
        "dedupe_key": dedupe_key,
        "state": "queued",
        "run_at": run_at or now,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


def enqueue(
    store: Store,
    conn: Connection,
    kind: str,
    payload: Mapping[str, Any],
    *,
    run_at: datetime | None = None,
    dedupe_key: str | None = None,
) -> bool:
    """Add a job in the caller's transaction. With ``dedupe_key`` a second job with the same key is
    silently dropped. Returns True when a job was added."""
    values = _job_row(kind, payload, dedupe_key, utcnow(), run_at)
    if dedupe_key is None:
        conn.execute(_INSERT_JOB, values)
        return True
    return store.insert_ignore(conn, schema.jobs, values, "dedupe_key")


def enqueue_coalesced(
    store: Store, conn: Connection, kind: str, payloads: Mapping[str, Mapping[str, Any]]
) -> None:
    """One queued job of ``kind`` per dedupe key (the keys of ``payloads``), in the caller's
    transaction: a key already queued is touched instead (see ``JobQueue.coalesce``)."""
    if not payloads:
        return
    now = utcnow()
    rows = [_job_row(kind, payload, key, now) for key, payload in payloads.items()]
    store.insert_ignore_many(conn, schema.jobs, rows, "dedupe_key")
    touch(conn, kind, list(payloads))


#: Built once, like ``_INSERT_JOB``: an answer touches its account's roll-up while holding the write lock.
_TOUCH = (
    update(schema.jobs)
    .where(
        schema.jobs.c.kind == bindparam("job_kind"),
        schema.jobs.c.state == "queued",
        schema.jobs.c.dedupe_key.in_(bindparam("keys", expanding=True)),
    )
    .values(updated_at=bindparam("touched_at"))
)


def touch(conn: Connection, kind: str, dedupe_keys: Sequence[str]) -> None:
    """Mark queued jobs of ``kind`` with these keys as just asked for again (``Linger.quiet`` counts
    from the latest touch), without moving their due time."""
    if dedupe_keys:
        conn.execute(_TOUCH, {"job_kind": kind, "keys": list(dedupe_keys), "touched_at": utcnow()})


def enqueue_many(conn: Connection, kind: str, payloads: Sequence[Mapping[str, Any]]) -> None:
    """Add jobs of one kind, due now, in one executemany (no dedupe keys)."""
    now = utcnow()
    rows = [_job_row(kind, p, None, now) for p in payloads]
    if rows:
        conn.execute(_INSERT_JOB, rows)


class JobQueue:
    """Claims and runs jobs. ``handlers`` maps a kind to a function taking a batch of payloads."""

    def __init__(
        self,
        store: Store,
        handlers: Mapping[str, Handler],
        *,
        batch_sizes: Mapping[str, int] | None = None,
        lease: timedelta = timedelta(minutes=10),
        max_attempts: int = 8,
        worker_id: str = WORKER_ID,
        lingers: Mapping[str, Linger] | None = None,
        coalesce: Collection[str] = (),
    ) -> None:
        self.store = store
        self.handlers = dict(handlers)
        self.batch_sizes = dict(batch_sizes or {})
        #: Kinds whose partial batch waits for more jobs (``Linger``); ``drain()`` never waits.
        self.lingers = dict(lingers or {})
        #: Kinds whose dedupe key only merges *queued* jobs: claiming a job frees its key, so work
        #: enqueued while the job runs is queued again instead of dropped (handlers recompute from
        #: the store, so one queued job per key stands for every request made since the last run).
        self.coalesce = frozenset(coalesce)
        self.lease = lease
        self.max_attempts = max_attempts
        self.worker_id = worker_id
        self.wakeup = threading.Event()
        #: When the last look found only lingering batches: the moment the first of them is due to
        #: run (its ``longest`` or ``quiet`` ends), so an idle worker wakes then, not a poll later.
        self.lingering_until: datetime | None = None

    def _lease_expired(self, now: datetime) -> Any:
        """A running job is claimable again once its worker's lease ended (the worker died).
        Kinds that legitimately run long (a wave over a large audience) have longer leases."""
        jobs = schema.jobs
        long = [and_(jobs.c.kind == k, jobs.c.locked_at < now - v) for k, v in LONG_LEASES.items()]
        short = and_(jobs.c.kind.not_in(list(LONG_LEASES)), jobs.c.locked_at < now - self.lease)
        return or_(short, *long)

    def claim(
        self, kind: str | None = None, limit: int = 50, *, linger: bool = True
    ) -> list[tuple[int, str, dict[str, Any], int]]:
        """Claim due jobs (one kind at a time); returns ``(id, kind, payload, attempts)``.
        With ``linger`` a kind whose batch is not full waits as its ``Linger`` says."""
        now = utcnow()
        jobs = schema.jobs
        due = and_(
            jobs.c.run_at <= now,
            or_(
                jobs.c.state == "queued",
                and_(jobs.c.state == "running", self._lease_expired(now)),
            ),
        )
        with self.store.begin() as conn:
            if kind is None and linger and self.lingers:
                kind = self._ready_kind(conn, due, now)
                if kind is None:
                    return []
                limit = self.batch_sizes.get(kind, 1)
            elif kind is None:
                first = select(jobs.c.kind).where(due).order_by(jobs.c.run_at, jobs.c.id).limit(1)
                if not self.store.is_sqlite:
                    first = first.with_for_update(skip_locked=True)
                kind = conn.execute(first).scalar_one_or_none()
                if kind is None:
                    return []
                limit = self.batch_sizes.get(kind, 1)
            query = (
                select(jobs.c.id, jobs.c.kind, jobs.c.payload, jobs.c.attempts)
                .where(due, jobs.c.kind == kind)
                .order_by(jobs.c.run_at, jobs.c.id)
                .limit(limit)
            )
            if not self.store.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            rows = conn.execute(query).all()
            if not rows:
                return []
            freed = {"dedupe_key": None} if kind in self.coalesce else {}
            conn.execute(
                update(jobs)
                .where(jobs.c.id.in_([r.id for r in rows]))
                .values(
                    state="running",
                    locked_by=self.worker_id,
                    locked_at=now,
                    attempts=jobs.c.attempts + 1,
                    updated_at=now,
                    **freed,
                )
            )
        return [(r.id, r.kind, dict(r.payload), r.attempts + 1) for r in rows]

    def _ready_kind(self, conn: Connection, due: Any, now: datetime) -> str | None:
        """The kind with the oldest due job among those ready to run (see ``Linger``). One grouped
        query over the due jobs (``ix_jobs_state_run_at`` keeps done jobs out of it), plus a
        one-row probe for running jobs of the kinds a quiet gap waits ``after``."""
        jobs = schema.jobs
        self.lingering_until = None
        rows = conn.execute(
            select(
                jobs.c.kind,
                func.min(jobs.c.run_at).label("oldest"),
                func.max(jobs.c.run_at).label("newest"),
                func.max(jobs.c.updated_at).label("touched"),
                func.count().label("n"),
            )
            .where(due)
            .group_by(jobs.c.kind)
            .order_by(func.min(jobs.c.run_at))
        ).all()
        pending = {str(row.kind) for row in rows}
        soonest: list[datetime] = []
        for row in rows:
            kind = str(row.kind)
            linger = self.lingers.get(kind)
            if linger is None or row.n >= self.batch_sizes.get(kind, 1):
                return kind
            if row.oldest <= now - linger.longest:
                return kind
            last = max(row.newest, row.touched)  # UtcDateTime: aware on SQLite too
            if last <= now - linger.quiet and not self._busy(conn, linger.after, pending):
                return kind
            soonest.append(row.oldest + linger.longest)
            if last > now - linger.quiet:  # (a quiet gap already over waits for the busy kinds)
                soonest.append(last + linger.quiet)
        self.lingering_until = min(soonest, default=None)
        return None

    def seconds_to_linger_end(self) -> float | None:
        """Seconds until the first lingering batch the last look saw is due to run, if any."""
        until = self.lingering_until
        return None if until is None else max(0.0, (until - utcnow()).total_seconds())

    def _busy(self, conn: Connection, kinds: Sequence[str], pending: set[str]) -> bool:
        """Whether a job of ``kinds`` is due or running."""
        if not kinds:
            return False
        if pending.intersection(kinds):
            return True
        jobs = schema.jobs
        running = select(jobs.c.id).where(jobs.c.state == "running", jobs.c.kind.in_(list(kinds))).limit(1)
        return conn.execute(running).first() is not None

    def release_abandoned(self, worker_ids: Sequence[str] | None = None) -> int:
        """Jobs a dead worker was running go back to the queue at once instead of waiting out their
        lease (handlers are idempotent). ``None``: every running job (a single daemon starting up)."""
        jobs = schema.jobs
        cond = jobs.c.state == "running"
        if worker_ids is not None:
            cond = cond & jobs.c.locked_by.in_(list(worker_ids))
        with self.store.begin() as conn:
            released = conn.execute(
                update(jobs).where(cond).values(state="queued", locked_by=None, updated_at=utcnow())
            ).rowcount
        if released:
            log.warning("job.released_after_crash", jobs=released)
        return int(released or 0)

    def prune(self, *, older_than: timedelta = DONE_JOBS_KEPT, limit: int = 10_000) -> int:
        """Delete up to ``limit`` jobs done more than ``older_than`` ago (a daemon running for months
        would otherwise keep every answer's jobs). Jobs with a dedupe key stay: they are what stops a
        wave or a note from being queued twice. Returns how many were deleted."""
        jobs = schema.jobs
        cutoff = utcnow() - older_than
        with self.store.begin() as conn:
            ids = select(jobs.c.id).where(
                jobs.c.state == "done", jobs.c.dedupe_key.is_(None), jobs.c.updated_at < cutoff
            )
            deleted = conn.execute(delete(jobs).where(jobs.c.id.in_(ids.limit(limit)))).rowcount
        if deleted:
            log.info("jobs.pruned", jobs=deleted, older_than_days=older_than.days)
        return int(deleted or 0)

    def run_once(self, kind: str | None = None, *, linger: bool = True) -> int:
        """Claim one batch and run it. Returns how many jobs were run (0 when the queue is idle)."""
        claimed = self.claim(kind, linger=linger)
        if not claimed:
            return 0
        kind_ = claimed[0][1]
        ids = [c[0] for c in claimed]
        handler = self.handlers.get(kind_)
        try:
            if handler is None:
                raise LookupError(f"no handler for job kind {kind_!r}")
            handler([{**c[2], ATTEMPT: c[3]} for c in claimed])
        except Exception as exc:
            attempts = max(c[3] for c in claimed)
            self._failed(ids, attempts, exc)
            log.warning("job.failed", kind=kind_, jobs=len(ids), attempts=attempts, error=str(exc))
        else:
            with self.store.begin() as conn:
                conn.execute(
                    update(schema.jobs)
                    .where(schema.jobs.c.id.in_(ids))
                    .values(state="done", updated_at=utcnow())
                )
        return len(ids)

    def _failed(self, ids: list[int], attempts: int, exc: Exception) -> None:
        retry_after = getattr(exc, "retry_after", None)
        delay = float(retry_after) if retry_after else min(2.0**attempts, 900.0)
        final = attempts >= self.max_attempts
        with self.store.begin() as conn:
            conn.execute(
                update(schema.jobs)
                .where(schema.jobs.c.id.in_(ids))
                .values(
                    state="failed" if final else "queued",
                    run_at=utcnow() + timedelta(seconds=delay),
                    last_error=f"{type(exc).__name__}: {exc}"[:2000],
                    updated_at=utcnow(),
                )
            )

    def drain(self, *, max_rounds: int = 1000) -> int:
        """Run due jobs until none is due (tests, the CLI's one-shot commands). Returns jobs run."""
        total = 0
        for _ in range(max_rounds):
            ran = self.run_once(linger=False)
            if not ran:
                break
            total += ran
        return total
