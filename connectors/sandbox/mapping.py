"""Field names of the sandbox CRM and conversions between its rows and the project's dataclasses."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from nps_sync.models import Contact, Owner

#: Logical write-back names → keys in the contact's custom fields.
CONTACT_FIELDS = {
    "score": "nps_score",
    "category": "nps_category",
    "comment": "nps_comment",
    "responded_at": "nps_responded_at",
    "surveyed_at": "nps_surveyed_at",
}
#: Logical names written as real columns.
CONTACT_FLAGS = {"email_opt_out": "email_opt_out", "sms_opt_out": "sms_opt_out"}
ACCOUNT_FIELDS = {"nps": "nps_score", "responses": "nps_responses"}
CONTACT_COLUMNS = (
    "id",
    "account_id",
    "owner_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "locale",
    "time_zone",
    "country",
)
ACCOUNT_PREFIX = "account."


def as_text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "y")


def to_contact(row: Mapping[str, Any], account: Mapping[str, Any] | None) -> Contact:
    fields = {k: as_text(v) for k, v in (row["fields"] or {}).items()}
    if account is not None:
        fields.update({f"{ACCOUNT_PREFIX}{k}": as_text(v) for k, v in (account["fields"] or {}).items()})
    return Contact(
        id=row["id"],
        first_name=row["first_name"],
        last_name=row["last_name"],
        email=row["email"] or None,
        phone=row["phone"] or None,
        account_id=row["account_id"],
        account_name=account["name"] if account else None,
        owner_id=row["owner_id"] or (account["owner_id"] if account else None),
        account_owner_id=account["owner_id"] if account else None,
        locale=row["locale"] or None,
        time_zone=row["time_zone"] or None,
        country=row["country"] or None,
        email_opt_out=bool(row["email_opt_out"]),
        sms_opt_out=bool(row["sms_opt_out"]),
        fields=fields,
    )


def to_owner(row: Mapping[str, Any]) -> Owner:
    return Owner(
        id=row["id"],
        name=row["name"],
        email=row["email"],
        username=row["username"],
        manager_id=row["manager_id"] or None,
    )
