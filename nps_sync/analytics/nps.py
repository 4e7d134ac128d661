"""Net Promoter Score with a 95 % confidence interval, per period, segment and account.

NPS = %promoters − %detractors. With p and d the promoter and detractor proportions of n answers,
each answer is +1, 0 or −1, so Var(NPS) = (p + d − (p − d)²) / n and the 95 % interval is
NPS ± 1.96·√Var (in points, ×100), clipped to [−100, 100].

Each person counts once per group (period, segment, account): with their latest answer in it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from nps_sync.analytics.data import Answer

Period = Literal["week", "month", "quarter"]
PERIODS: tuple[Period, ...] = ("week", "month", "quarter")
Z95 = 1.96


@dataclass(frozen=True)
class NpsStat:
    responses: int
    promoters: int
    passives: int
    detractors: int

    @property
    def nps(self) -> float | None:
        if not self.responses:
            return None
        return 100.0 * (self.promoters - self.detractors) / self.responses

    @property
    def margin(self) -> float | None:
        """Half-width of the 95 % confidence interval, in points."""
        if not self.responses:
            return None
        p, d = self.promoters / self.responses, self.detractors / self.responses
        variance = max(0.0, p + d - (p - d) ** 2) / self.responses
        return 100.0 * Z95 * math.sqrt(variance)

    @property
    def ci(self) -> tuple[float, float] | None:
        nps, margin = self.nps, self.margin
        if nps is None or margin is None:
            return None
        return max(-100.0, nps - margin), min(100.0, nps + margin)

    def as_dict(self) -> dict[str, float | int | None]:
        ci = self.ci
        return {
            "responses": self.responses,
            "promoters": self.promoters,
            "passives": self.passives,
            "detractors": self.detractors,
            "nps": _round(self.nps),
            "ci_low": _round(ci[0]) if ci else None,
            "ci_high": _round(ci[1]) if ci else None,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def nps_of(answers: Iterable[Answer]) -> NpsStat:
    """NPS over these answers as given (no de-duplication: see :func:`latest_per_person`)."""
    counts = {"promoter": 0, "passive": 0, "detractor": 0}
    for a in answers:
        counts[a.category] += 1
    return NpsStat(
        responses=sum(counts.values()),
        promoters=counts["promoter"],
        passives=counts["passive"],
        detractors=counts["detractor"],
    )


def latest_per_person(answers: Iterable[Answer]) -> list[Answer]:
    """Each contact once, with their latest answer (ties broken by the later response id)."""
    latest: dict[str, Answer] = {}
    for a in answers:
        held = latest.get(a.contact_id)
        if held is None or (a.responded_at, a.response_id) > (held.responded_at, held.response_id):
            latest[a.contact_id] = a
    return list(latest.values())


def overall(answers: Iterable[Answer]) -> NpsStat:
    return nps_of(latest_per_person(answers))


def grouped(answers: Iterable[Answer], key: Callable[[Answer], str]) -> dict[str, NpsStat]:
    """NPS per group, each person once per group with their latest answer in it."""
    groups: dict[str, list[Answer]] = {}
    for a in answers:
        groups.setdefault(key(a), []).append(a)
    return {name: overall(members) for name, members in groups.items()}


def period_start(moment: datetime, period: Period, tz: ZoneInfo) -> date:
    """The first day of the week (Monday), month or quarter holding ``moment`` in ``tz``."""
    day = moment.astimezone(tz).date()
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)


def period_label(start: date, period: Period) -> str:
    if period == "week":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return f"{start:%Y-%m}"
    return f"{start.year}-Q{(start.month - 1) // 3 + 1}"


@dataclass(frozen=True)
class PeriodStat:
    label: str
    start: date
    stat: NpsStat


def by_period(answers: Sequence[Answer], period: Period, tz: ZoneInfo) -> list[PeriodStat]:
    """NPS per period, oldest first; periods without answers are left out."""
    starts = {a.response_id: period_start(a.responded_at, period, tz) for a in answers}
    stats = grouped(answers, lambda a: starts[a.response_id].isoformat())
    out = []
    for key in sorted(stats):
        start = date.fromisoformat(key)
        out.append(PeriodStat(label=period_label(start, period), start=start, stat=stats[key]))
    return out


def by_segment(answers: Sequence[Answer], segment: str) -> list[tuple[str, NpsStat]]:
    """NPS per value of a segment (largest groups first)."""
    stats = grouped(answers, lambda a: a.segment(segment))
    return sorted(stats.items(), key=lambda item: (-item[1].responses, item[0]))


@dataclass(frozen=True)
class AccountStat:
    account_id: str
    name: str
    stat: NpsStat


def by_account(answers: Sequence[Answer]) -> list[AccountStat]:
    """Account-level NPS over each of its contacts' latest answers (most answers first)."""
    names: dict[str, str] = {}
    for a in answers:
        if a.account_id:
            names[a.account_id] = a.account_name
    stats = grouped([a for a in answers if a.account_id], lambda a: str(a.account_id))
    rows = [AccountStat(account_id=k, name=names[k], stat=v) for k, v in stats.items()]
    return sorted(rows, key=lambda r: (-r.stat.responses, r.name))
