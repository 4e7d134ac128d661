"""Which playbooks an event starts: trigger kind, category transition and ``[conditions]``.

Field comparisons read ``Contact.fields`` (the CRM fields the program copies into the snapshot,
as strings). A field the contact lacks fails ``==``, ``in``, ``contains`` and the numeric
comparisons, and passes ``!=`` and ``not_in``. ``==``/``!=``/``in``/``not_in`` compare
case-insensitively as text (``true`` equals ``True``; ``5`` equals ``5.0`` for numbers);
``contains`` is a case-insensitive substring test; ``>``/``<``/``>=``/``<=`` compare as numbers and
fail when the field is not a number.
"""

from __future__ import annotations

from nps_sync.playbooks.events import PlaybookEvent
from nps_sync.playbooks.model import Conditions, FieldCondition, Playbook, Scalar


def matches(playbook: Playbook, event: PlaybookEvent, trigger: str) -> bool:
    """Whether ``playbook`` starts for ``event`` seen as ``trigger`` (a response is also seen as a
    ``category_changed`` when the previous category differs)."""
    if not playbook.enabled or playbook.trigger.on != trigger:
        return False
    if trigger == "category_changed":
        if event.previous_category is None or event.previous_category == event.category:
            return False
        if playbook.trigger.from_ and event.previous_category not in playbook.trigger.from_:
            return False
        if playbook.trigger.to and event.category not in playbook.trigger.to:
            return False
    return conditions_hold(playbook.conditions, event)


def conditions_hold(cond: Conditions, event: PlaybookEvent) -> bool:
    if cond.programs and event.program not in cond.programs:
        return False
    if cond.category and event.category not in cond.category:
        return False
    if cond.previous_category and event.previous_category not in cond.previous_category:
        return False
    if cond.score is not None and (event.score is None or not cond.score[0] <= event.score <= cond.score[1]):
        return False
    if cond.comment_contains:
        comment = (event.comment or "").casefold()
        if not any(word.casefold() in comment for word in cond.comment_contains):
            return False
    return all(field_holds(f, event.contact.fields.get(f.field)) for f in cond.field)


def field_holds(cond: FieldCondition, actual: str | None) -> bool:
    op = cond.op
    if actual is None:
        return op in ("!=", "not_in")
    if op == "==":
        return _same(actual, cond.value)
    if op == "!=":
        return not _same(actual, cond.value)
    if op == "in":
        return any(_same(actual, v) for v in _as_tuple(cond.value))
    if op == "not_in":
        return not any(_same(actual, v) for v in _as_tuple(cond.value))
    if op == "contains":
        return _text(cond.value).casefold() in actual.casefold()
    number = _number(actual)
    if number is None or isinstance(cond.value, (tuple, str)):
        return False
    limit = float(cond.value)
    return {">": number > limit, "<": number < limit, ">=": number >= limit, "<=": number <= limit}[op]


def _as_tuple(value: Scalar | tuple[Scalar, ...]) -> tuple[Scalar, ...]:
    return value if isinstance(value, tuple) else (value,)


def _text(value: Scalar | tuple[Scalar, ...]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _same(actual: str, expected: Scalar | tuple[Scalar, ...]) -> bool:
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        number = _number(actual)
        return number is not None and number == float(expected)
    return actual.strip().casefold() == _text(expected).strip().casefold()


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
