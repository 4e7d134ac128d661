"""Field values between the org's Python types and the wire: REST JSON and Bulk API 2.0 CSV."""

from __future__ import annotations

import base64
import binascii
from datetime import date, datetime, timezone
from typing import Any

from tests.emulators.salesforce.org import NUMBER_TYPES, TEXT_TYPES, FieldDef


def to_json(d: FieldDef, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    if isinstance(value, date):
        return value.isoformat()
    if d.type in NUMBER_TYPES:
        return float(value)
    return value


def to_csv(d: FieldDef, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    if isinstance(value, date):
        return value.isoformat()
    if d.type in NUMBER_TYPES:
        return repr(float(value))
    return str(value)


def parse_value(d: FieldDef, value: Any, *, from_csv: bool = False) -> Any:
    """Convert an incoming value for field ``d``; raise ValueError with Salesforce's wording."""
    if value is None:
        return None
    kind = d.type
    if kind in TEXT_TYPES:
        if not isinstance(value, str):
            raise ValueError(
                f"Cannot deserialize instance of string from {type(value).__name__} value {value}"
            )
        if d.length and len(value) > d.length:
            raise OverflowError(f"{d.name}: data value too large: {value[:40]} (max length={d.length})")
        if kind == "picklist" and d.picklist and d.name in ("Status", "Priority") and value not in d.picklist:
            raise LookupError(f"bad value for restricted picklist field: {value}")
        return value
    if kind in NUMBER_TYPES:
        if isinstance(value, bool):
            raise ValueError(f"Cannot deserialize instance of double from VALUE_{value} value {value}")
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"Cannot deserialize instance of double from VALUE_STRING value {value} "
                "or request may be missing a required field"
            ) from None
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(f"Cannot deserialize instance of boolean from value {value}")
    if kind == "date":
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            raise ValueError(f"Cannot deserialize instance of date from VALUE_STRING value {value}") from None
    if kind == "datetime":
        text = str(value).replace("Z", "+00:00")
        if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":
            text = text[:-2] + ":" + text[-2:]
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"Cannot deserialize instance of datetime from VALUE_STRING value {value}"
            ) from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    if kind == "base64":
        try:
            return base64.b64decode(str(value), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError(f"Cannot deserialize instance of base64 from value {value[:40]!r}") from None
    raise ValueError(f"unsupported field type {kind}")
