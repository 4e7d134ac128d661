"""Playbook outcomes: were detractors called back within the SLA, and did it change their next score?

A detractor callback is the first CRM task a playbook run opened for a detractor's answer (later
tasks of the same run are escalations). nps-sync does not know when a task was completed in the CRM,
only when it *saw* it completed (``crm_tasks.checked_at``): the overdue check looks at every open
task on the first minute after its due date and records either the completion or ``overdue_fired``.
So a callback counts as **within the SLA** when it is completed, was never seen open past its due
date (``overdue_fired`` false) and its completion was seen no later than the day after the due date
(in the daemon's time zone). A daemon that was down over a due date sees completions late and counts
them late: the figure errs on the side of too few, never too many.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select

from nps_sync.analytics.data import Answer
from nps_sync.analytics.nps import NpsStat, nps_of
from nps_sync.store import schema


@dataclass(frozen=True)
class Callback:
    task_key: str
    contact_id: str
    account_id: str | None
    owner_id: str | None
    subject: str
    response_id: int
    due: date
    created_at: datetime
    completed: bool
    overdue_fired: bool
    checked_at: datetime | None

    def on_time(self, tz: ZoneInfo) -> bool:
        if not self.completed or self.overdue_fired or self.checked_at is None:
            return False
        return self.checked_at.astimezone(tz).date() <= self.due + timedelta(days=1)

    def overdue(self, today: date) -> bool:
        return not self.completed and self.due < today


def load_callbacks(conn: Connection, *, program: str | None = None) -> list[Callback]:
    """The first task of every playbook run started by a detractor's answer."""
    t, runs, r = schema.crm_tasks, schema.playbook_runs, schema.responses
    query = (
        select(t, runs.c.response_id)
        .join(runs, runs.c.id == t.c.run_id)
        .join(r, r.c.id == runs.c.response_id)
        .where(r.c.category == "detractor")
        .order_by(t.c.run_id, t.c.created_at, t.c.key)
    )
    if program is not None:
        query = query.where(r.c.program == program)
    seen: set[int] = set()
    out = []
    for row in conn.execute(query):
        if row.run_id in seen:
            continue
        seen.add(row.run_id)
        out.append(
            Callback(
                task_key=row.key,
                contact_id=row.contact_id,
                account_id=row.account_id,
                owner_id=row.owner_id,
                subject=row.subject,
                response_id=row.response_id,
                due=row.due,
                created_at=row.created_at,
                completed=bool(row.completed),
                overdue_fired=bool(row.overdue_fired),
                checked_at=row.checked_at,
            )
        )
    return out


@dataclass(frozen=True)
class FollowUp:
    """What the people in one group answered next (their first answer after the detractor one)."""

    detractors: int
    answered_again: int
    mean_score: float | None
    later: NpsStat

    def as_dict(self) -> dict[str, object]:
        return {
            "detractors": self.detractors,
            "answered_again": self.answered_again,
            "mean_later_score": None if self.mean_score is None else round(self.mean_score, 2),
            "later_nps": self.later.as_dict(),
        }


@dataclass(frozen=True)
class Outcomes:
    callbacks: int
    on_time: int
    late: int
    overdue: int
    open: int
    called_back: FollowUp
    not_called_back: FollowUp
    overdue_tasks: list[Callback]

    @property
    def on_time_rate(self) -> float | None:
        return self.on_time / self.callbacks if self.callbacks else None

    def as_dict(self) -> dict[str, object]:
        rate = self.on_time_rate
        return {
            "callbacks": self.callbacks,
            "within_sla": self.on_time,
            "completed_late": self.late,
            "overdue": self.overdue,
            "open": self.open,
            "within_sla_rate": None if rate is None else round(rate, 3),
            "later_scores": {
                "called_back": self.called_back.as_dict(),
                "not_called_back": self.not_called_back.as_dict(),
            },
        }


def _follow_up(response_ids: Sequence[int], answers: Sequence[Answer]) -> FollowUp:
    by_id = {a.response_id: a for a in answers}
    history: dict[str, list[Answer]] = {}
    for a in answers:
        history.setdefault(a.contact_id, []).append(a)
    later: list[Answer] = []
    for rid in response_ids:
        origin = by_id.get(rid)
        if origin is None:
            continue
        after = [
            a
            for a in history[origin.contact_id]
            if (a.responded_at, a.response_id) > (origin.responded_at, origin.response_id)
        ]
        if after:
            later.append(min(after, key=lambda a: (a.responded_at, a.response_id)))
    mean = sum(a.score for a in later) / len(later) if later else None
    return FollowUp(
        detractors=len(response_ids), answered_again=len(later), mean_score=mean, later=nps_of(later)
    )


def outcomes(
    callbacks: Sequence[Callback],
    answers: Sequence[Answer],
    *,
    tz: ZoneInfo,
    now: datetime,
    since: datetime | None = None,
) -> Outcomes:
    """SLA figures over callbacks opened since ``since``; later scores from ``answers`` (pass every
    answer, not only the window's, so a later answer is found)."""
    today = now.astimezone(tz).date()
    window = [c for c in callbacks if since is None or c.created_at >= since]
    on_time = [c for c in window if c.on_time(tz)]
    late = [c for c in window if c.completed and not c.on_time(tz)]
    overdue = [c for c in window if c.overdue(today)]
    called = [c.response_id for c in window if c.completed]
    not_called = [c.response_id for c in window if not c.completed]
    return Outcomes(
        callbacks=len(window),
        on_time=len(on_time),
        late=len(late),
        overdue=len(overdue),
        open=len(window) - len(on_time) - len(late) - len(overdue),
        called_back=_follow_up(called, answers),
        not_called_back=_follow_up(not_called, answers),
        overdue_tasks=sorted(overdue, key=lambda c: c.due),
    )
