"""Salesforce field names, SOQL building and escaping, and conversions to and from our dataclasses."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from nps_sync.connectors.salesforce.config import SalesforceOptions
from nps_sync.models import Contact, TaskState

#: sObject Collections take at most 200 records a call; an IN list of 200 ids keeps a query short.
COLLECTION_SIZE = 200
MAX_QUERY_PAGE = 2000
#: Per-record status codes that a later retry may clear (record locks, timeouts).
TRANSIENT_CODES = frozenset(
    {
        "UNABLE_TO_LOCK_ROW",
        "REQUEST_RUNNING_TOO_LONG",
        "SERVER_UNAVAILABLE",
        "QUERY_TIMEOUT",
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    }
)
PRIORITY = {"high": "High", "normal": "Normal", "low": "Low"}
NUMBER_TYPES = frozenset({"double", "int", "currency", "percent", "long"})
TEXT_TYPES = frozenset(
    {
        "string",
        "textarea",
        "picklist",
        "multipicklist",
        "email",
        "phone",
        "url",
        "id",
        "reference",
        "combobox",
    }
)

#: Country names people type into MailingCountry → ISO 3166-1 alpha-2. Deliberately small.
COUNTRIES = {
    "united states": "US",
    "united states of america": "US",
    "usa": "US",
    "u.s.": "US",
    "u.s.a.": "US",
    "america": "US",
    "canada": "CA",
    "mexico": "MX",
    "brazil": "BR",
    "united kingdom": "GB",
    "uk": "GB",
    "great britain": "GB",
    "england": "GB",
    "ireland": "IE",
    "germany": "DE",
    "deutschland": "DE",
    "austria": "AT",
    "österreich": "AT",
    "switzerland": "CH",
    "schweiz": "CH",
    "suisse": "CH",
    "france": "FR",
    "spain": "ES",
    "españa": "ES",
    "italy": "IT",
    "italia": "IT",
    "netherlands": "NL",
    "the netherlands": "NL",
    "belgium": "BE",
    "sweden": "SE",
    "norway": "NO",
    "denmark": "DK",
    "finland": "FI",
    "poland": "PL",
    "portugal": "PT",
    "japan": "JP",
    "china": "CN",
    "india": "IN",
    "singapore": "SG",
    "australia": "AU",
    "new zealand": "NZ",
    "south africa": "ZA",
}


def escape_soql(value: str) -> str:
    """Escape a string for a single-quoted SOQL literal (Salesforce's reserved characters)."""
    out = value.replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"')
    return (
        out.replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
        .replace("\b", "\\b")
        .replace("\f", "\\f")
    )


def quote(value: str) -> str:
    return f"'{escape_soql(value)}'"


def in_list(values: Iterable[str]) -> str:
    return "(" + ", ".join(quote(v) for v in values) + ")"


def select(fields: Sequence[str], sobject: str, where: str = "") -> str:
    """A SOQL query; every literal in ``where`` must come from :func:`quote` / :func:`in_list`."""
    soql = f"SELECT {', '.join(fields)} FROM {sobject}"  # noqa: S608 - SOQL, literals escaped by quote()
    return f"{soql} WHERE {where}" if where else soql


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def country_code(value: str | None) -> str | None:
    if not value or not value.strip():
        return None
    text = value.strip()
    if len(text) == 2 and text.isalpha():
        return text.upper()
    return COUNTRIES.get(text.lower(), text)


def get_path(record: Mapping[str, Any], path: str) -> Any:
    """``Account.OwnerId`` from a REST record (nested dicts) or a Bulk CSV row (flat keys)."""
    if path in record:
        return record[path]
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def as_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


@dataclass(frozen=True)
class ContactQuery:
    """The Contact fields one read selects, and how they map back."""

    fields: tuple[str, ...]
    locale: str
    time_zone: str
    sms_opt_out: str
    extra: tuple[str, ...]


BASE_CONTACT_FIELDS = (
    "Id",
    "FirstName",
    "LastName",
    "Email",
    "Phone",
    "MobilePhone",
    "MailingCountry",
    "AccountId",
    "Account.Name",
    "Account.OwnerId",
    "OwnerId",
    "HasOptedOutOfEmail",
    "DoNotCall",
)


def contact_query(
    options: SalesforceOptions, existing: set[str] | None, extra: Sequence[str]
) -> ContactQuery:
    """``existing``: the Contact fields the org has (None = unknown); optional ones it lacks are dropped."""

    def keep(name: str) -> str:
        return name if name and (existing is None or name in existing) else ""

    locale = keep(options.locale_field)
    tz = keep(options.time_zone_field)
    sms = keep(options.contact_fields.sms_opt_out)
    fields = list(BASE_CONTACT_FIELDS)
    for name in (locale, tz, sms, *extra):
        if name and name not in fields:
            fields.append(name)
    return ContactQuery(tuple(fields), locale, tz, sms, tuple(extra))


def to_contact(record: Mapping[str, Any], q: ContactQuery) -> Contact:
    extra = {name: text for name in q.extra if (text := as_text(get_path(record, name))) is not None}
    return Contact(
        id=str(record["Id"]),
        first_name=as_text(record.get("FirstName")) or "",
        last_name=as_text(record.get("LastName")) or "",
        email=as_text(record.get("Email")),
        phone=as_text(record.get("MobilePhone")) or as_text(record.get("Phone")),
        account_id=as_text(record.get("AccountId")),
        account_name=as_text(get_path(record, "Account.Name")),
        owner_id=as_text(record.get("OwnerId")),
        account_owner_id=as_text(get_path(record, "Account.OwnerId")),
        locale=as_text(record.get(q.locale)) if q.locale else None,
        time_zone=as_text(record.get(q.time_zone)) if q.time_zone else None,
        country=country_code(as_text(record.get("MailingCountry"))),
        email_opt_out=as_bool(record.get("HasOptedOutOfEmail")),
        sms_opt_out=as_bool(record.get("DoNotCall"))
        or (bool(q.sms_opt_out) and as_bool(record.get(q.sms_opt_out))),
        fields=extra,
    )


def to_task_state(record: Mapping[str, Any]) -> TaskState:
    due = record.get("ActivityDate")
    return TaskState(
        id=str(record["Id"]),
        completed=as_bool(record.get("IsClosed")),
        due=date.fromisoformat(due) if isinstance(due, str) and due else None,
        owner_id=as_text(record.get("OwnerId")),
        status=as_text(record.get("Status")) or "",
    )


def to_wire(value: Any, sf_type: str | None) -> Any:
    """A write-back value as JSON for a field of describe type ``sf_type``.

    Raises ValueError naming the value and the type when it cannot be written there.
    """
    if value is None:
        return None
    if sf_type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError(f"expected true/false for a checkbox field, got: {value!r}")
    if sf_type in NUMBER_TYPES:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"expected a number, got: {value!r}")
        try:
            return float(value) if isinstance(value, str) else value
        except ValueError:
            raise ValueError(f"expected a number, got: {value!r}") from None
    if sf_type == "datetime":
        if isinstance(value, datetime):
            moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
            return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        if isinstance(value, date):
            return f"{value.isoformat()}T00:00:00.000Z"
        return str(value)
    if sf_type == "date":
        if isinstance(value, datetime):
            return value.date().isoformat()
        return value.isoformat() if isinstance(value, date) else str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if sf_type in TEXT_TYPES or sf_type is None else value


def to_csv_cell(value: Any) -> str:
    """A JSON-ready value as a Bulk API 2.0 CSV cell (``#N/A`` clears a field)."""
    if value is None:
        return "#N/A"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class FieldSpec:
    """A field the connector needs, and the definition to create when it is missing."""

    sobject: str
    name: str
    types: frozenset[str]
    definition: str
    purpose: str
    picklist: tuple[str, ...] = ()
    writable: bool = True


def required_fields(options: SalesforceOptions) -> list[FieldSpec]:
    cf, af = options.contact_fields, options.account_fields
    specs = [
        FieldSpec("Contact", cf.score, NUMBER_TYPES, "Number(2, 0)", "score write-back"),
        FieldSpec(
            "Contact",
            cf.category,
            frozenset({"picklist", "string"}),
            "Picklist with values detractor, passive, promoter",
            "category write-back",
            picklist=("detractor", "passive", "promoter"),
        ),
        FieldSpec(
            "Contact",
            cf.comment,
            frozenset({"textarea", "string"}),
            "Long Text Area(32768)",
            "comment write-back",
        ),
        FieldSpec(
            "Contact", cf.responded_at, frozenset({"datetime"}), "Date/Time", "responded_at write-back"
        ),
        FieldSpec("Contact", cf.surveyed_at, frozenset({"datetime"}), "Date/Time", "surveyed_at write-back"),
        FieldSpec(
            "Contact",
            cf.sms_opt_out,
            frozenset({"boolean"}),
            "Checkbox (default unchecked)",
            "SMS opt-out (read and written)",
        ),
        FieldSpec(
            "Contact",
            cf.email_opt_out,
            frozenset({"boolean"}),
            "Checkbox (standard: HasOptedOutOfEmail)",
            "email opt-out (read and written)",
        ),
        FieldSpec(
            "Contact",
            "DoNotCall",
            frozenset({"boolean"}),
            "standard field",
            "SMS opt-out (read)",
            writable=False,
        ),
        FieldSpec("Account", af.nps, NUMBER_TYPES, "Number(4, 1)", "account NPS roll-up"),
        FieldSpec("Account", af.responses, NUMBER_TYPES, "Number(8, 0)", "account response count"),
        FieldSpec(
            "Task",
            options.task_key_field,
            frozenset({"string"}),
            "Text(80), External ID, Unique (case sensitive)",
            "task de-duplication key",
        ),
    ]
    for name in (af.promoters, af.passives, af.detractors):
        if name:
            specs.append(FieldSpec("Account", name, NUMBER_TYPES, "Number(8, 0)", "account roll-up count"))
    if options.locale_field:
        specs.append(
            FieldSpec(
                "Contact",
                options.locale_field,
                frozenset({"string", "picklist"}),
                "Text(10)",
                "survey language (read)",
                writable=False,
            )
        )
    if options.time_zone_field:
        specs.append(
            FieldSpec(
                "Contact",
                options.time_zone_field,
                frozenset({"string", "picklist"}),
                "Text(40), IANA names such as Europe/Berlin",
                "quiet hours (read)",
                writable=False,
            )
        )
    return specs


def check_field(spec: FieldSpec, described: Mapping[str, Mapping[str, Any]]) -> str | None:
    """A problem with one field against a describe result (name → field describe), or None."""
    create = f"create {spec.sobject}.{spec.name} as {spec.definition} ({spec.purpose})"
    field = described.get(spec.name)
    if field is None:
        return f"{spec.sobject}.{spec.name} is missing: {create}"
    if field.get("type") not in spec.types:
        return (
            f"{spec.sobject}.{spec.name} has type {field.get('type')!r}, expected one of "
            f"{sorted(spec.types)}: {create}"
        )
    if spec.picklist and field.get("type") == "picklist":
        values = {v.get("value") for v in field.get("picklistValues") or [] if v.get("active", True)}
        missing = [v for v in spec.picklist if v not in values]
        if missing:
            return f"{spec.sobject}.{spec.name} lacks picklist values {missing}: {create}"
    if spec.writable and not field.get("updateable", True):
        return (
            f"{spec.sobject}.{spec.name} is not editable by the integration user: grant Edit access "
            "in its field-level security"
        )
    return None


# --- notes ---------------------------------------------------------------------------------------

#: ContentNote.Title is at most 255 characters; our key ends it, so a retry can find the note.
NOTE_TITLE_MAX = 255


def note_marker(key: str) -> str:
    return f"[{key}]"


def note_title(title: str, key: str) -> str:
    marker = " " + note_marker(key)
    return title[: NOTE_TITLE_MAX - len(marker)].rstrip() + marker


def note_content(body: str) -> str:
    """ContentNote.Content: base64 of HTML-escaped text (a bare '&' or '<' is refused), lines as <br>."""
    escaped = html.escape(body, quote=False).replace("\r\n", "\n").replace("\n", "<br>")
    return base64.b64encode(escaped.encode("utf-8")).decode("ascii")


def note_request(base: str, key: str, contact_id: str, title: str, body: str) -> dict[str, Any]:
    """The Composite body creating a ContentNote and its link to the contact, all or none. ShareType
    ``I``: whoever can see the contact can see the note, as with notes added by hand."""
    return {
        "allOrNone": True,
        "compositeRequest": [
            {
                "method": "POST",
                "url": f"{base}/sobjects/ContentNote",
                "referenceId": "note",
                "body": {"Title": note_title(title, key), "Content": note_content(body)},
            },
            {
                "method": "POST",
                "url": f"{base}/sobjects/ContentDocumentLink",
                "referenceId": "link",
                "body": {
                    "ContentDocumentId": "@{note.id}",
                    "LinkedEntityId": contact_id,
                    "ShareType": "I",
                    "Visibility": "AllUsers",
                },
            },
        ],
    }
