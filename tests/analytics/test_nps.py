"""NPS figures over the seeded data set, against values worked out by hand (see seed.py)."""

from __future__ import annotations

import math
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from nps_sync.analytics import build_report, load_answers, parse_since, response_rates
from nps_sync.analytics.nps import (
    NpsStat,
    by_account,
    by_period,
    by_segment,
    overall,
    period_label,
    period_start,
)
from nps_sync.store.db import Store
from tests.analytics.seed import NOW, PROGRAM

UTC = ZoneInfo("UTC")
Seeded = tuple[Store, dict[str, int]]


def stat(store: Store) -> NpsStat:
    with store.read() as conn:
        return overall(load_answers(conn))


def counts(s: NpsStat) -> tuple[int, int, int, int]:
    return s.responses, s.promoters, s.passives, s.detractors


def test_overall_counts_each_person_once_with_their_latest_answer(seeded: Seeded) -> None:
    # Latest answers: C1 6, C2 10, C3 9, C4 9, C5 6, C6 8, C7 10, C8 2, C9 8, C10 9.
    s = stat(seeded[0])
    assert (10, 5, 2, 3) == counts(s)
    assert 20.0 == s.nps


def test_confidence_interval_follows_the_trinomial_variance(seeded: Seeded) -> None:
    # p = 0.5, d = 0.3: Var = (0.5 + 0.3 - 0.2²) / 10 = 0.076; margin = 1.96·√0.076·100 = 54.0335…
    s = stat(seeded[0])
    assert s.ci is not None
    assert s.ci[0] == pytest.approx(20 - 54.0335, abs=1e-3)
    assert s.ci[1] == pytest.approx(20 + 54.0335, abs=1e-3)
    assert math.sqrt(0.076) * 196 == pytest.approx(s.margin)


def test_interval_is_clipped_to_the_scale_and_empty_groups_have_none() -> None:
    assert (-100.0, 100.0) == NpsStat(responses=2, promoters=1, passives=0, detractors=1).ci
    assert (100.0, 100.0) == NpsStat(responses=3, promoters=3, passives=0, detractors=0).ci
    empty = NpsStat(responses=0, promoters=0, passives=0, detractors=0)
    assert (None, None) == (empty.nps, empty.ci)


def test_months_count_a_person_once_with_their_latest_answer_in_the_month(seeded: Seeded) -> None:
    with seeded[0].read() as conn:
        months = by_period(load_answers(conn), "month", UTC)
    assert ["2026-01", "2026-02", "2026-03"] == [m.label for m in months]
    # January: C6 answered 5 then 8: only the 8 counts -> P C1 C2, Pa C4 C5 C6, D C3.
    assert [(6, 2, 3, 1), (5, 2, 0, 3), (4, 3, 1, 0)] == [counts(m.stat) for m in months]
    jan, feb, mar = (m.stat for m in months)
    assert pytest.approx(100 / 6) == jan.nps
    assert -20.0 == feb.nps
    assert 75.0 == mar.nps
    # February: p 0.4, d 0.6 -> margin 1.96·√(0.96/5) = 85.88; the lower bound is clipped at -100.
    assert feb.ci is not None
    assert -100.0 == feb.ci[0]
    assert pytest.approx(-20 + 85.8829, abs=1e-3) == feb.ci[1]
    assert mar.ci is not None
    assert pytest.approx(75 - 42.4352, abs=1e-3) == mar.ci[0]
    assert 100.0 == mar.ci[1]


def test_quarter_and_week_periods(seeded: Seeded) -> None:
    with seeded[0].read() as conn:
        answers = load_answers(conn)
    quarters = by_period(answers, "quarter", UTC)
    assert [("2026-Q1", (10, 5, 2, 3))] == [(q.label, counts(q.stat)) for q in quarters]
    weeks = by_period(answers, "week", UTC)
    # Jan 5–9 (Mon–Fri) is ISO week 2: C1 9, C2 10, C3 3, C4 7, C5 8.
    assert ("2026-W02", (5, 2, 2, 1)) == (weeks[0].label, counts(weeks[0].stat))
    assert ["2026-W02", "2026-W03", "2026-W04", "2026-W06", "2026-W07", "2026-W10"] == [
        w.label for w in weeks
    ]
    # 1 January 2021, a Friday, belongs to ISO week 53 of 2020.
    new_year = period_start(datetime(2021, 1, 1, 12, tzinfo=timezone.utc), "week", UTC)
    assert "2020-W53" == period_label(new_year, "week")


def test_periods_follow_the_given_time_zone() -> None:
    late_january_utc = datetime(2026, 1, 31, 23, 30, tzinfo=timezone.utc)
    assert date(2026, 1, 1) == period_start(late_january_utc, "month", UTC)
    assert date(2026, 2, 1) == period_start(late_january_utc, "month", ZoneInfo("Europe/Berlin"))
    assert date(2026, 1, 1) == period_start(datetime(2026, 3, 31, tzinfo=timezone.utc), "quarter", UTC)
    assert date(2026, 1, 26) == period_start(late_january_utc, "week", UTC)


def test_segments_on_a_crm_field_captured_at_send_time(seeded: Seeded) -> None:
    with seeded[0].read() as conn:
        answers = load_answers(conn)
    plan = dict(by_segment(answers, "plan"))
    assert (6, 3, 1, 2) == counts(plan["pro"])
    assert pytest.approx(100 / 6) == plan["pro"].nps
    assert (4, 2, 1, 1) == counts(plan["basic"])
    assert 25.0 == plan["basic"].nps
    # C4 moved from US to EU between surveys: counted in each region with the answer given there.
    region = dict(by_segment(answers, "region"))
    assert (6, 3, 2, 1) == counts(region["EU"])
    assert (5, 2, 1, 2) == counts(region["US"])
    assert 0.0 == region["US"].nps
    language = dict(by_segment(answers, "language"))
    assert {"en": 9, "de": 1} == {k: v.responses for k, v in language.items()}
    owner = dict(by_segment(answers, "owner_id"))
    assert {"U01": 6, "U02": 4} == {k: v.responses for k, v in owner.items()}
    assert {"(none)": 10} == {k: v.responses for k, v in by_segment(answers, "tier")}


def test_account_nps(seeded: Seeded) -> None:
    with seeded[0].read() as conn:
        accounts = by_account(load_answers(conn))
    got = {a.name: (counts(a.stat), a.stat.nps) for a in accounts}
    assert {
        "Initech": ((4, 2, 1, 1), 25.0),
        "Acme Corp": ((3, 2, 0, 1), pytest.approx(100 / 3)),
        "Globex": ((3, 1, 1, 1), 0.0),
    } == got
    assert "Initech" == accounts[0].name


def test_response_rate_counts_sent_surveys_only(seeded: Seeded) -> None:
    with seeded[0].read() as conn:
        rates = response_rates(conn)
        since = response_rates(conn, since=datetime(2026, 2, 1, tzinfo=timezone.utc))
    # 16 answered + 5 unanswered sent surveys; the failed send and the reminder do not count.
    assert [(PROGRAM, 21, 16)] == [(r.program, r.sent, r.answered) for r in rates]
    assert pytest.approx(16 / 21) == rates[0].rate
    assert [(PROGRAM, 9, 9)] == [(r.program, r.sent, r.answered) for r in since]


def test_since_limits_the_window(seeded: Seeded) -> None:
    since = parse_since("2026-02-01", now=NOW, tz=UTC)
    report = build_report(seeded[0], tz=UTC, now=NOW, since=since)
    # Feb + Mar latest: P C2 C3 C4 C7 C10, Pa C9, D C1 C5 C8.
    assert (9, 5, 1, 3) == counts(report.overall)
    assert pytest.approx(200 / 9) == report.overall.nps
    assert parse_since("30d", now=NOW, tz=UTC) == datetime(2026, 2, 18, 12, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="got: 'lately'"):
        parse_since("lately", now=NOW, tz=UTC)


def test_the_same_figures_on_postgresql(pg_store: Store) -> None:
    from tests.analytics.seed import seed

    seed(pg_store)
    report = build_report(pg_store, tz=UTC, now=NOW, segment="region")
    assert (10, 5, 2, 3) == counts(report.overall)
    assert [(PROGRAM, 21, 16)] == [(r.program, r.sent, r.answered) for r in report.rates]
    assert {"EU": (6, 3, 2, 1), "US": (5, 2, 1, 2)} == {k: counts(v) for k, v in report.segments}
    assert (5, 2, 1, 2) == (
        report.outcomes.callbacks,
        report.outcomes.on_time,
        report.outcomes.late,
        report.outcomes.overdue,
    )
    assert 6 == report.transitions.total
    assert "invoice portal" == report.themes["detractor"][0].term
