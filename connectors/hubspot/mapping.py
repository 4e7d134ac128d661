"""HubSpot endpoint limits, property definitions and conversions between HubSpot records and our types.

HubSpot sends and takes every property value as a string; conversions happen here and only here.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from nps_sync.models import Category, Contact, Owner, Priority, TaskType

DEFAULT_BASE_URL = "https://api.hubapi.com"

BATCH_LIMIT = 100  # inputs per batch read/update/create
LIST_PAGE_LIMIT = 100  # GET /crm/v3/objects/{type}
MEMBERSHIP_PAGE_LIMIT = 250  # GET /crm/v3/lists/{id}/memberships
SEARCH_PAGE_LIMIT = 200
SEARCH_RESULT_CAP = 10_000  # results per search query; beyond, partition by hs_object_id
MAX_FILTER_GROUPS = 5
MAX_FILTERS_PER_GROUP = 6
MAX_FILTERS_TOTAL = 18
OWNERS_PAGE_LIMIT = 100
IN_VALUES_LIMIT = 100  # values of one IN filter we send per search
#: Property definitions are kept for the process; a write naming a property (or option) the kept list
#: lacks reads it again, at most this often (a property missing for good costs no call per batch).
PROPERTY_RECHECK_SECONDS = 600.0

ASSOC_TASK_TO_CONTACT = 204
ASSOC_TASK_TO_COMPANY = 192
ASSOC_CATEGORY = "HUBSPOT_DEFINED"

OBJECT_ID = "hs_object_id"
OWNER = "hubspot_owner_id"
HUBSPOT_EMAIL_OPT_OUT = "hs_email_optout"  # "Unsubscribed from all email", set by HubSpot only
COMPANY_ID = "associatedcompanyid"  # a contact's primary company, readable without the associations API

CONTACT_BASE_PROPERTIES = (
    "firstname", "lastname", "email", "phone", "mobilephone", "hs_language", "country", OWNER, COMPANY_ID,
)  # fmt: skip
COMPANY_PROPERTIES = ("name", OWNER)

TASK_SUBJECT = "hs_task_subject"
TASK_BODY = "hs_task_body"
TASK_STATUS = "hs_task_status"
TASK_PRIORITY = "hs_task_priority"
TASK_TYPE = "hs_task_type"
TASK_DUE = "hs_timestamp"
TASK_STATE_PROPERTIES = (TASK_STATUS, TASK_DUE, OWNER, TASK_PRIORITY)
TASK_COMPLETED = "COMPLETED"

PRIORITY_TO_HUBSPOT: dict[Priority, str] = {"high": "HIGH", "normal": "MEDIUM", "low": "LOW"}
TYPE_TO_HUBSPOT: dict[TaskType, str] = {"call": "CALL", "todo": "TODO"}

Value = str | int | float | bool | datetime | date | None


@dataclass(frozen=True)
class PropertySpec:
    """A property nps-sync creates with ``setup`` (type and fieldType as the properties API names them)."""

    label: str
    type: str
    field_type: str
    description: str
    options: tuple[str, ...] = ()


#: Logical name → definition, for contacts, companies and tasks.
CONTACT_SPECS: dict[str, PropertySpec] = {
    "score": PropertySpec("NPS score", "number", "number", "Latest NPS score (0–10), written by nps-sync."),
    "category": PropertySpec(
        "NPS category", "enumeration", "select", "Detractor, passive or promoter, written by nps-sync.",
        tuple(c.value for c in Category),
    ),
    "comment": PropertySpec("NPS comment", "string", "textarea", "Latest NPS comment, written by nps-sync."),
    "responded_at": PropertySpec("NPS responded at", "datetime", "date", "When the contact last answered."),
    "surveyed_at": PropertySpec("NPS surveyed at", "datetime", "date", "When the contact was last surveyed."),
    "sms_opt_out": PropertySpec(
        "NPS SMS opt-out", "bool", "booleancheckbox", "The contact texted STOP to the NPS survey.",
        ("true", "false"),
    ),
    "email_opt_out": PropertySpec(
        "NPS e-mail opt-out", "bool", "booleancheckbox", "The contact unsubscribed from NPS e-mails.",
        ("true", "false"),
    ),
}  # fmt: skip
COMPANY_SPECS: dict[str, PropertySpec] = {
    "nps": PropertySpec("Account NPS", "number", "number", "NPS over each contact's latest response."),
    "responses": PropertySpec("Account NPS responses", "number", "number", "Responses in the account NPS."),
}
TASK_KEY_SPEC = PropertySpec("nps-sync task key", "string", "text", "Lets nps-sync find a task it created.")


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``items`` in consecutive slices of at most ``size`` (a batch call's inputs)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def to_value(value: Value) -> str:
    """Our value as the string HubSpot stores: datetimes in UTC ISO 8601, dates as YYYY-MM-DD,
    booleans as true/false, None as "" (which clears the property)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return aware.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def parse_datetime(value: str | None) -> datetime | None:
    """A HubSpot datetime (ISO 8601 or epoch milliseconds) as an aware datetime; None when empty."""
    if not value:
        return None
    if value.isdigit():
        return datetime.fromtimestamp(int(value) / 1000, tz=timezone.utc)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def due_timestamp(due: date, at: time, zone: ZoneInfo) -> str:
    """``hs_timestamp`` for a task due on ``due`` at local time ``at`` in the daemon's zone."""
    return to_value(datetime.combine(due, at, tzinfo=zone))


def due_date(value: str | None, zone: ZoneInfo) -> date | None:
    parsed = parse_datetime(value)
    return parsed.astimezone(zone).date() if parsed else None


@lru_cache(maxsize=1)
def _zones_by_lower() -> dict[str, str]:
    return {name.lower(): name for name in zoneinfo.available_timezones()}


def iana_time_zone(value: str | None) -> str | None:
    """HubSpot's ``hs_timezone`` (``america_slash_los_angeles``) or an IANA name, as the IANA name."""
    if not value:
        return None
    candidate = value.strip().replace("_slash_", "/").lower()
    return _zones_by_lower().get(candidate)


def is_record_id(value: str | None) -> bool:
    """HubSpot record ids are numeric strings; anything else cannot exist there."""
    return bool(value) and str(value).isdigit()


def is_true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def blank(value: str | None) -> str | None:
    return value if value not in (None, "") else None


@dataclass(frozen=True)
class Company:
    id: str
    name: str | None
    owner_id: str | None


def to_contact(
    contact_id: str,
    props: Mapping[str, str | None],
    company: Company | None,
    *,
    email_opt_out: str,
    sms_opt_out: str,
    time_zone: str,
    extra_fields: tuple[str, ...],
) -> Contact:
    return Contact(
        id=contact_id,
        first_name=props.get("firstname") or "",
        last_name=props.get("lastname") or "",
        email=blank(props.get("email")),
        phone=blank(props.get("mobilephone")) or blank(props.get("phone")),
        account_id=company.id if company else blank(props.get(COMPANY_ID)),
        account_name=company.name if company else None,
        owner_id=blank(props.get(OWNER)),
        account_owner_id=company.owner_id if company else None,
        locale=blank(props.get("hs_language")),
        time_zone=iana_time_zone(props.get(time_zone)),
        country=blank(props.get("country")),
        email_opt_out=is_true(props.get(email_opt_out)) or is_true(props.get(HUBSPOT_EMAIL_OPT_OUT)),
        sms_opt_out=is_true(props.get(sms_opt_out)),
        fields={name: props.get(name) or "" for name in extra_fields},
    )


def to_company(company_id: str, props: Mapping[str, str | None]) -> Company:
    return Company(company_id, blank(props.get("name")), blank(props.get(OWNER)))


def to_owner(record: Mapping[str, Any], manager_id: str | None) -> Owner:
    first, last = record.get("first_name") or "", record.get("last_name") or ""
    email = record.get("email") or None
    return Owner(
        id=str(record["id"]),
        name=f"{first} {last}".strip() or (email or str(record["id"])),
        email=email,
        username=email,
        manager_id=manager_id,
    )
