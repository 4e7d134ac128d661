"""Trigger and condition matching."""

# The house style is `assert expected == actual`, which SIM300 calls a Yoda condition.

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from nps_sync.models import Contact
from nps_sync.playbooks.conditions import conditions_hold, field_holds
from nps_sync.playbooks.events import PlaybookEvent
from nps_sync.playbooks.model import Conditions, FieldCondition

CONTACT = Contact(id="C1", fields={"plan": "Enterprise", "seats": "250", "account.region": "EMEA"})


def event(**kwargs: object) -> PlaybookEvent:
    values: dict[str, object] = {
        "trigger": "response",
        "contact": CONTACT,
        "program": "relationship",
        "occurred_at": datetime(2026, 1, 9, tzinfo=timezone.utc),
        "score": 3,
        "category": "detractor",
        "comment": "We may CANCEL next month",
    }
    values.update(kwargs)
    return PlaybookEvent(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("op", "value", "field", "expected"),
    [
        ("==", "enterprise", "plan", True),
        ("!=", "enterprise", "plan", False),
        ("in", ["pro", "enterprise"], "plan", True),
        ("not_in", ["pro", "enterprise"], "plan", False),
        ("contains", "prise", "plan", True),
        (">", 100, "seats", True),
        ("<=", 100, "seats", False),
        ("==", 250, "seats", True),
        (">", 1, "plan", False),  # not a number
        ("in", ["EMEA"], "account.region", True),
        ("==", "x", "missing", False),
        ("!=", "x", "missing", True),
        ("not_in", ["x"], "missing", True),
    ],
)
def test_field_comparisons(op: str, value: object, field: str, expected: bool) -> None:
    cond = FieldCondition.model_validate({"field": field, "op": op, "value": value})

    assert expected is field_holds(cond, CONTACT.fields.get(field))


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ({}, True),
        ({"category": ["detractor"]}, True),
        ({"category": ["promoter", "passive"]}, False),
        ({"score": "0-4"}, True),
        ({"score": 4}, False),
        ({"score": [3, 3]}, True),
        ({"comment_contains": ["cancel", "refund"]}, True),
        ({"comment_contains": ["refund"]}, False),
        ({"programs": ["onboarding"]}, False),
        ({"previous_category": ["promoter"]}, False),
        ({"category": ["detractor"], "field": [{"field": "plan", "op": "==", "value": "pro"}]}, False),
    ],
)
def test_conditions_must_all_hold(conditions: dict[str, object], expected: bool) -> None:
    assert expected is conditions_hold(Conditions.model_validate(conditions), event())
