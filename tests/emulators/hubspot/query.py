"""Search filters, sorting and property-value validation, as HubSpot's CRM v3 applies them."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from tests.emulators.hubspot.state import ApiError, CrmObject, PropertyDef

MAX_FILTER_GROUPS = 5
MAX_FILTERS_PER_GROUP = 6
MAX_FILTERS_TOTAL = 18
OPERATORS = {
    "EQ",
    "NEQ",
    "LT",
    "LTE",
    "GT",
    "GTE",
    "BETWEEN",
    "IN",
    "NOT_IN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN",
    "NOT_CONTAINS_TOKEN",
}


def _validation(message: str, **context: list[str]) -> ApiError:
    return ApiError(400, message, "VALIDATION_ERROR", context=context)


def parse_datetime(value: str) -> datetime | None:
    """HubSpot accepts epoch milliseconds or ISO 8601 for datetime values."""
    if value.isdigit():
        return datetime.fromtimestamp(int(value) / 1000, tz=timezone.utc)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _sort_key(prop: PropertyDef | None, value: str | None) -> tuple[int, Any]:
    if value is None or value == "":
        return (1, 0)
    if prop is not None and prop.type == "number":
        try:
            return (0, float(value))
        except ValueError:
            return (0, 0.0)
    if prop is not None and prop.type in ("datetime", "date"):
        parsed = parse_datetime(value)
        return (0, parsed.timestamp() if parsed else 0.0)
    return (0, value.lower())


def _compare(prop: PropertyDef | None, left: str, right: str) -> int:
    a, b = _sort_key(prop, left)[1], _sort_key(prop, right)[1]
    if type(a) is not type(b):
        a, b = str(a), str(b)
    return int(a > b) - int(a < b)


def check_filter_groups(groups: Sequence[Mapping[str, Any]], props: Mapping[str, PropertyDef]) -> None:
    if len(groups) > MAX_FILTER_GROUPS:
        raise _validation(f"Too many filter groups: {len(groups)} (at most {MAX_FILTER_GROUPS}).")
    total = 0
    for group in groups:
        filters = group.get("filters") or []
        total += len(filters)
        if len(filters) > MAX_FILTERS_PER_GROUP:
            raise _validation(
                f"Too many filters in a group: {len(filters)} (at most {MAX_FILTERS_PER_GROUP})."
            )
        for flt in filters:
            op = flt.get("operator", "EQ")
            if op not in OPERATORS:
                raise _validation(f"Unknown operator {op!r}.")
            if flt.get("propertyName") not in props:
                raise _validation(
                    f"Property {flt.get('propertyName')!r} does not exist.",
                    propertyName=[str(flt.get("propertyName"))],
                )
    if total > MAX_FILTERS_TOTAL:
        raise _validation(f"Too many filters: {total} (at most {MAX_FILTERS_TOTAL}).")


def _matches(obj: CrmObject, flt: Mapping[str, Any], props: Mapping[str, PropertyDef]) -> bool:
    name = flt["propertyName"]
    prop = props.get(name)
    op = flt.get("operator", "EQ")
    value = obj.properties.get(name)
    if op == "HAS_PROPERTY":
        return value not in (None, "")
    if op == "NOT_HAS_PROPERTY":
        return value in (None, "")
    if value in (None, ""):
        return op in ("NEQ", "NOT_IN", "NOT_CONTAINS_TOKEN")
    assert value is not None
    if op in ("IN", "NOT_IN"):
        wanted = [str(v) for v in flt.get("values") or []]
        if prop is None or prop.type in ("string", "enumeration", "bool"):
            # HubSpot matches IN on strings against the lowercased value: capitals never match.
            found = value.lower() in wanted
        else:
            found = any(_compare(prop, value, w) == 0 for w in wanted)
        return found if op == "IN" else not found
    target = str(flt.get("value", ""))
    if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        found = target.strip("*").lower() in value.lower()
        return found if op == "CONTAINS_TOKEN" else not found
    if op == "BETWEEN":
        high = str(flt.get("highValue", ""))
        return _compare(prop, value, target) >= 0 and _compare(prop, value, high) <= 0
    c = _compare(prop, value, target)
    return {"EQ": c == 0, "NEQ": c != 0, "LT": c < 0, "LTE": c <= 0, "GT": c > 0, "GTE": c >= 0}[op]


def matches(obj: CrmObject, groups: Sequence[Mapping[str, Any]], props: Mapping[str, PropertyDef]) -> bool:
    """Groups are ORed, filters within a group ANDed; no groups matches everything."""
    if not groups:
        return True
    return any(all(_matches(obj, f, props) for f in g.get("filters") or []) for g in groups)


def sort_objects(
    objs: list[CrmObject], sorts: Sequence[Any], props: Mapping[str, PropertyDef]
) -> list[CrmObject]:
    """``sorts`` items are ``{"propertyName", "direction"}`` or a bare name (``-name`` descending)."""
    result = list(objs)  # callers pass objects in id order
    for item in reversed(list(sorts)):
        if isinstance(item, Mapping):
            name, descending = str(item.get("propertyName")), item.get("direction") == "DESCENDING"
        else:
            text = str(item)
            name, descending = text.lstrip("-"), text.startswith("-")
        if name == "hs_object_id":
            result.sort(key=lambda o: int(o.id), reverse=descending)
            continue
        prop = props.get(name)
        result.sort(key=lambda o: _sort_key(prop, o.properties.get(name)), reverse=descending)
    return result


def normalise_value(
    object_type: str, prop: PropertyDef, value: Any
) -> tuple[str | None, dict[str, Any] | None]:
    """The stored string for a written value, or an error detail naming what is wrong."""
    text = "" if value is None else str(value)

    def bad(code: str, message: str) -> tuple[None, dict[str, Any]]:
        return None, {
            "isValid": False,
            "message": message,
            "error": code,
            "name": prop.name,
            "localizedErrorMessage": message,
        }

    if prop.read_only:
        return bad("READ_ONLY_VALUE", f"{prop.name} is a read only property; its value cannot be set.")
    if text == "":
        return "", None
    if prop.type == "number":
        try:
            float(text)
        except ValueError:
            return bad("INVALID_DECIMAL", f"{text} is not a valid decimal")
    elif prop.type == "enumeration" and prop.options:
        allowed = {o["value"] for o in prop.options}
        parts = text.split(";") if prop.field_type == "checkbox" else [text]
        missing = [p for p in parts if p not in allowed]
        if missing:
            return bad(
                "INVALID_OPTION",
                f"{missing[0]} was not one of the allowed options: {', '.join(sorted(allowed))}",
            )
    elif prop.type == "bool":
        if text.lower() not in ("true", "false"):
            return bad("INVALID_BOOLEAN", f"{text} is not a valid boolean (true or false)")
        text = text.lower()
    elif prop.type == "datetime":
        parsed = parse_datetime(text)
        if parsed is None:
            return bad("INVALID_DATETIME", f"{text} is not a valid datetime (epoch ms or ISO 8601)")
        text = parsed.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    elif prop.type == "date":
        parsed = parse_datetime(text)
        if parsed is None:
            return bad("INVALID_DATE", f"{text} is not a valid date (YYYY-MM-DD or midnight UTC epoch ms)")
        text = parsed.date().isoformat()
    return text, None


def validate_properties(
    object_type: str,
    values: Mapping[str, Any],
    props: Mapping[str, PropertyDef],
    owners: Collection[str] = (),
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Stored values plus the invalid ones (HubSpot reports them all in one VALIDATION_ERROR)."""
    stored: dict[str, str] = {}
    problems: list[dict[str, Any]] = []
    for name, value in values.items():
        prop = props.get(name)
        if prop is None:
            problems.append(
                {
                    "isValid": False,
                    "message": f'Property "{name}" does not exist',
                    "error": "PROPERTY_DOESNT_EXIST",
                    "name": name,
                    "localizedErrorMessage": f'Property "{name}" does not exist',
                }
            )
            continue
        text, problem = normalise_value(object_type, prop, value)
        if problem is None and name == "hubspot_owner_id" and text and text not in owners:
            message = f"{text} is not a valid owner id"
            problem = {"isValid": False, "message": message, "error": "INVALID_OWNER_ID", "name": name,
                       "localizedErrorMessage": message}  # fmt: skip
        if problem is not None:
            problems.append(problem)
        elif text is not None:
            stored[name] = text
    return stored, problems
