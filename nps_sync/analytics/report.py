"""One analytics report over the store: what ``nps-sync report`` prints and the dashboard shows."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from nps_sync.analytics import data, nps
from nps_sync.analytics.data import Answer, ResponseRate
from nps_sync.analytics.nps import AccountStat, NpsStat, Period, PeriodStat
from nps_sync.analytics.outcomes import Outcomes, load_callbacks, outcomes
from nps_sync.analytics.themes import Theme, themes
from nps_sync.analytics.transitions import CATEGORIES, Transitions, transitions
from nps_sync.durations import parse_duration
from nps_sync.store.db import Store


def parse_since(text: str, *, now: datetime, tz: ZoneInfo) -> datetime:
    """``2026-01-31`` (midnight in ``tz``) or a duration back from now (``90d``, ``12w``).
    Raises ValueError naming the value."""
    text = text.strip()
    try:
        return datetime.combine(date.fromisoformat(text), time(0), tzinfo=tz)
    except ValueError:
        pass
    try:
        return now - parse_duration(text)
    except ValueError as exc:
        raise ValueError(
            f"expected a date such as '2026-01-31' or a duration such as '90d', got: {text!r}"
        ) from exc


@dataclass(frozen=True)
class Report:
    generated_at: datetime
    program: str | None
    since: datetime | None
    period: Period
    segment: str | None
    time_zone: str
    overall: NpsStat
    programs: list[tuple[str, NpsStat]]
    rates: list[ResponseRate]
    periods: list[PeriodStat]
    segments: list[tuple[str, NpsStat]]
    segment_names: list[str]
    accounts: list[AccountStat]
    transitions: Transitions
    outcomes: Outcomes
    themes: dict[str, list[Theme]]
    scores: list[int]
    answers: list[Answer]

    def as_dict(self) -> dict[str, object]:
        """JSON-ready (``nps-sync report --format json``)."""
        return {
            "generated_at": self.generated_at.isoformat(),
            "program": self.program,
            "since": self.since.isoformat() if self.since else None,
            "period": self.period,
            "time_zone": self.time_zone,
            "overall": self.overall.as_dict(),
            "programs": [{"program": name, **s.as_dict()} for name, s in self.programs],
            "response_rates": [
                {
                    "program": r.program,
                    "sent": r.sent,
                    "answered": r.answered,
                    "rate": None if r.rate is None else round(r.rate, 4),
                }
                for r in self.rates
            ],
            "periods": [
                {"period": p.label, "start": p.start.isoformat(), **p.stat.as_dict()} for p in self.periods
            ],
            "segment": self.segment,
            "segments": [{"value": v, **s.as_dict()} for v, s in self.segments],
            "segment_fields": self.segment_names,
            "accounts": [
                {"account_id": a.account_id, "account_name": a.name, **a.stat.as_dict()}
                for a in self.accounts
            ],
            "transitions": self.transitions.as_dict(),
            "callbacks": {
                **self.outcomes.as_dict(),
                "overdue_tasks": [
                    {
                        "task_key": c.task_key,
                        "contact_id": c.contact_id,
                        "owner_id": c.owner_id,
                        "subject": c.subject,
                        "due": c.due.isoformat(),
                    }
                    for c in self.outcomes.overdue_tasks
                ],
            },
            "themes": {cat: [t.as_dict() for t in ts] for cat, ts in self.themes.items()},
            "scores": self.scores,
        }


def build_report(
    store: Store,
    *,
    tz: ZoneInfo,
    now: datetime,
    program: str | None = None,
    since: datetime | None = None,
    period: Period = "month",
    segment: str | None = None,
) -> Report:
    with store.read() as conn:
        history = data.load_answers(conn, program=program)
        rates = data.response_rates(conn, program=program, since=since)
        callbacks = load_callbacks(conn, program=program)
    window = [a for a in history if since is None or a.responded_at >= since]
    latest = nps.latest_per_person(window)
    scores = Counter(a.score for a in latest)
    return Report(
        generated_at=now,
        program=program,
        since=since,
        period=period,
        segment=segment,
        time_zone=str(tz),
        overall=nps.nps_of(latest),
        programs=sorted(nps.grouped(window, lambda a: a.program).items()),
        rates=rates,
        periods=nps.by_period(window, period, tz),
        segments=nps.by_segment(window, segment) if segment else [],
        segment_names=data.segment_names(window),
        accounts=nps.by_account(window),
        transitions=transitions(history, since=since),
        outcomes=outcomes(callbacks, history, tz=tz, now=now, since=since),
        themes={cat: themes(window, cat) for cat in CATEGORIES},
        scores=[scores.get(s, 0) for s in range(11)],
        answers=window,
    )
