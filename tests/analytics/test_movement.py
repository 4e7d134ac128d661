"""Transitions between categories, playbook outcomes and comment themes over the seeded data set."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from nps_sync.analytics import load_answers
from nps_sync.analytics.outcomes import load_callbacks, outcomes
from nps_sync.analytics.themes import terms, themes, tokens
from nps_sync.analytics.transitions import transitions
from nps_sync.store.db import Store
from tests.analytics.seed import NOW

UTC = ZoneInfo("UTC")
Seeded = tuple[Store, dict[str, int]]


def test_transition_matrix_of_consecutive_answers(seeded: Seeded) -> None:
    with seeded[0].read() as conn:
        t = transitions(load_answers(conn))
    # C1 P→D, C2 P→P, C3 D→P, C4 Pa→P, C5 Pa→D, C6 D→Pa.
    assert {
        "detractor": {"detractor": 0, "passive": 1, "promoter": 1},
        "passive": {"detractor": 1, "passive": 0, "promoter": 1},
        "promoter": {"detractor": 1, "passive": 0, "promoter": 1},
    } == t.as_dict()["matrix"]
    assert (6, 3, 2) == (t.total, t.improved, t.slipped)
    assert 0.5 == t.share_from("passive", "promoter")


def test_transitions_since_keep_pairs_whose_later_answer_is_in_the_window(seeded: Seeded) -> None:
    with seeded[0].read() as conn:
        t = transitions(load_answers(conn), since=datetime(2026, 2, 1, tzinfo=timezone.utc))
    # C6's pair ends on Jan 20: left out. The other five end in February or March.
    assert 5 == t.total
    assert 0 == t.count("detractor", "passive")


def test_callback_sla_and_later_scores(seeded: Seeded) -> None:
    with seeded[0].read() as conn:
        answers = load_answers(conn)
        callbacks = load_callbacks(conn)
    # Five detractor answers each opened one callback; the escalation and the passive task are not.
    assert ["cb-C1", "cb-C3", "cb-C5", "cb-C6", "cb-C8"] == sorted(c.task_key for c in callbacks)
    o = outcomes(callbacks, answers, tz=UTC, now=NOW)
    d = o.as_dict()
    assert (5, 2, 1, 2, 0) == (o.callbacks, o.on_time, o.late, o.overdue, o.open)
    assert ["cb-C5", "cb-C8"] == [c.task_key for c in o.overdue_tasks]
    # Called back: C3 (next 9), C6 (next 8), C1 (no later answer). Not called back: C5, C8 (none).
    assert {
        "detractors": 3,
        "answered_again": 2,
        "mean_later_score": 8.5,
        "later_nps": {
            "responses": 2,
            "promoters": 1,
            "passives": 1,
            "detractors": 0,
            "nps": 50.0,
            # p = 0.5, d = 0: margin 1.96·√(0.25/2) = 69.3; the upper bound is clipped at 100.
            "ci_low": -19.3,
            "ci_high": 100.0,
        },
    } == d["later_scores"]["called_back"]  # type: ignore[index]
    assert (2, 0, None) == (
        o.not_called_back.detractors,
        o.not_called_back.answered_again,
        o.not_called_back.mean_score,
    )


def test_a_completion_seen_two_days_after_the_due_date_is_not_within_the_sla(seeded: Seeded) -> None:
    with seeded[0].read() as conn:
        callbacks = {c.task_key: c for c in load_callbacks(conn)}
    c1 = callbacks["cb-C1"]
    assert c1.on_time(UTC)
    # The same completion, observed in Honolulu's calendar, is still within a day of the due date.
    assert c1.on_time(ZoneInfo("Pacific/Honolulu"))


def test_tokens_are_unicode_letters_without_stop_words() -> None:
    assert ["rechnungsportal", "lädt", "langsam"] == tokens("Das Rechnungsportal lädt sehr langsam!")
    assert ["support", "slow", "times"] == tokens("The support was SLOW, 2 times")
    assert {"invoice", "portal", "invoice portal"} == terms("the invoice portal")
    assert ["サポート"] == tokens("サポート 123")


def test_detractor_themes_find_the_planted_phrase_with_quotes(seeded: Seeded) -> None:
    with seeded[0].read() as conn:
        answers = load_answers(conn)
    found = themes(answers, "detractor")
    # "invoice portal": 3 of 5 detractor comments, 3 of 15 comments -> lift 3; "support" 2/5 vs 3/15.
    assert [("invoice portal", 3, 3.0), ("support", 2, 2.0)] == [
        (t.term, t.count, round(t.lift, 6)) for t in found
    ]
    assert (
        "Invoice portal lost my data!",
        "Invoice portal keeps timing out",
        "The invoice portal is confusing",
    ) == found[0].examples
    assert [("pricey", 3)] == [(t.term, t.count) for t in themes(answers, "passive")]


def test_a_theme_must_bring_comments_of_its_own(seeded: Seeded) -> None:
    with seeded[0].read() as conn:
        answers = load_answers(conn)
    # "love reports", "reports great" and "love" only repeat comments of "great" or "reports".
    found = themes(answers, "promoter")
    assert [("great", 4), ("reports", 4)] == [(t.term, t.count) for t in found]
    assert ["great", "reports", "love reports", "reports great", "love"] == [
        t.term for t in themes(answers, "promoter", overlap=1.01)
    ]
