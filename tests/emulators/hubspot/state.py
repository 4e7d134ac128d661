"""The emulator's memory: CRM objects, property definitions, owners, lists; seeded from the sandbox CSVs.

Everything here is plain Python under one lock held by the server; HTTP concerns live in ``server.py``.
Values are stored as HubSpot stores them: strings (or absent), datetimes normalised to ISO 8601 UTC.
"""

from __future__ import annotations

import csv
import itertools
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

OBJECT_TYPES = ("contacts", "companies", "tasks", "notes")

#: HubSpot-defined association type ids (v4 numbering) that the emulator accepts on create.
ASSOCIATION_TYPES: dict[tuple[str, str], set[int]] = {
    ("tasks", "contacts"): {204},
    ("tasks", "companies"): {192},
    ("contacts", "companies"): {1, 279},
    ("companies", "contacts"): {2, 280},
    ("contacts", "tasks"): {203},
    ("companies", "tasks"): {191},
    ("notes", "contacts"): {202},
    ("contacts", "notes"): {201},
}
#: The type id used for the reverse direction when an association is created.
REVERSE_TYPE = {204: 203, 192: 191, 1: 2, 279: 280, 202: 201}


class ApiError(Exception):
    """An error the server turns into HubSpot's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        category: str,
        *,
        context: Mapping[str, list[str]] | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.category = category
        self.context = dict(context or {})
        self.errors = list(errors or [])
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


@dataclass
class PropertyDef:
    name: str
    label: str
    type: str  # string | number | date | datetime | enumeration | bool
    field_type: str
    group_name: str
    options: list[dict[str, Any]] = field(default_factory=list)
    read_only: bool = False
    hubspot_defined: bool = True
    description: str = ""

    def to_json(self, created: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "groupName": self.group_name,
            "description": self.description,
            "options": self.options,
            "displayOrder": -1,
            "calculated": False,
            "externalOptions": False,
            "hasUniqueValue": False,
            "hidden": False,
            "hubspotDefined": self.hubspot_defined,
            "formField": False,
            "archived": False,
            "createdAt": created,
            "updatedAt": created,
            "modificationMetadata": {
                "archivable": not self.hubspot_defined,
                "readOnlyDefinition": self.hubspot_defined,
                "readOnlyValue": self.read_only,
            },
        }


@dataclass
class CrmObject:
    id: str
    properties: dict[str, str]
    created_at: str
    updated_at: str
    #: to-object type → {to id: set of association type ids}
    associations: dict[str, dict[str, set[int]]] = field(default_factory=dict)


@dataclass
class Owner:
    id: str
    email: str
    first_name: str
    last_name: str
    user_id: int
    created_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "userId": self.user_id,
            "userIdIncludingInactive": self.user_id,
            "type": "PERSON",
            "archived": False,
            "teams": [],
            "createdAt": self.created_at,
            "updatedAt": self.created_at,
        }


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _enum(values: Iterable[str]) -> list[dict[str, Any]]:
    return [
        {"value": v, "label": v.replace("_", " ").title(), "displayOrder": i, "hidden": False}
        for i, v in enumerate(values)
    ]


def _bool_options() -> list[dict[str, Any]]:
    return _enum(["true", "false"])


def _p(name: str, type_: str = "string", field_type: str = "text", **kw: Any) -> PropertyDef:
    group = kw.pop("group", "contactinformation")
    return PropertyDef(name, kw.pop("label", name), type_, field_type, group, **kw)


def builtin_properties() -> dict[str, dict[str, PropertyDef]]:
    """HubSpot's own properties that nps-sync reads (a subset of the real portal's)."""
    ro = {"read_only": True}
    tz_values = sorted(hubspot_time_zone(z) for z in zoneinfo.available_timezones())
    contacts = [
        _p("hs_object_id", "number", "number", **ro),
        _p("createdate", "datetime", "date", **ro),
        _p("lastmodifieddate", "datetime", "date", **ro),
        _p("firstname"),
        _p("lastname"),
        _p("email"),
        _p("phone"),
        _p("mobilephone"),
        _p("jobtitle"),
        _p("country"),
        _p("hs_language", "enumeration", "select", options=_enum(["en", "de", "fr", "es", "ja"])),
        _p("hs_timezone", "enumeration", "select", options=_enum(tz_values)),
        _p("hubspot_owner_id", "enumeration", "select"),
        _p("associatedcompanyid", "number", "number"),
        # HubSpot sets this from subscription preferences; the contacts API cannot write it.
        _p("hs_email_optout", "bool", "booleancheckbox", options=_bool_options(), **ro),
    ]
    companies = [
        _p("hs_object_id", "number", "number", group="companyinformation", **ro),
        _p("createdate", "datetime", "date", group="companyinformation", **ro),
        _p("name", group="companyinformation"),
        _p("domain", group="companyinformation"),
        _p(
            "type",
            "enumeration",
            "select",
            group="companyinformation",
            options=_enum(["PROSPECT", "PARTNER", "RESELLER", "VENDOR", "OTHER", "CUSTOMER"]),
        ),
        _p("hubspot_owner_id", "enumeration", "select", group="companyinformation"),
        _p("plan", group="companyinformation", hubspot_defined=False),
        _p("region", group="companyinformation", hubspot_defined=False),
    ]
    tasks = [
        _p("hs_object_id", "number", "number", group="task", **ro),
        _p("hs_timestamp", "datetime", "date", group="task"),
        _p("hs_task_subject", group="task"),
        _p("hs_task_body", "string", "textarea", group="task"),
        _p(
            "hs_task_status",
            "enumeration",
            "select",
            group="task",
            options=_enum(["NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED"]),
        ),
        _p(
            "hs_task_priority",
            "enumeration",
            "select",
            group="task",
            options=_enum(["NONE", "LOW", "MEDIUM", "HIGH"]),
        ),
        _p(
            "hs_task_type",
            "enumeration",
            "select",
            group="task",
            options=_enum(["CALL", "EMAIL", "TODO", "LINKED_IN_CONNECT", "LINKED_IN_MESSAGE"]),
        ),
        _p("hubspot_owner_id", "enumeration", "select", group="task"),
    ]
    notes = [
        _p("hs_object_id", "number", "number", group="note", **ro),
        _p("hs_timestamp", "datetime", "date", group="note"),
        _p("hs_note_body", "string", "html", group="note"),
        _p("hubspot_owner_id", "enumeration", "select", group="note"),
    ]
    return {
        "contacts": {p.name: p for p in contacts},
        "companies": {p.name: p for p in companies},
        "tasks": {p.name: p for p in tasks},
        "notes": {p.name: p for p in notes},
    }


def nps_properties() -> dict[str, list[PropertyDef]]:
    """The properties nps-sync's ``setup`` creates, for portals seeded as already set up."""

    def custom(name: str, type_: str, field_type: str, **kw: Any) -> PropertyDef:
        return PropertyDef(name, name, type_, field_type, "nps", hubspot_defined=False, **kw)

    return {
        "contacts": [
            custom("nps_score", "number", "number"),
            custom(
                "nps_category", "enumeration", "select", options=_enum(["detractor", "passive", "promoter"])
            ),
            custom("nps_comment", "string", "textarea"),
            custom("nps_responded_at", "datetime", "date"),
            custom("nps_surveyed_at", "datetime", "date"),
            custom("nps_sms_opt_out", "bool", "booleancheckbox", options=_bool_options()),
            custom("nps_email_opt_out", "bool", "booleancheckbox", options=_bool_options()),
        ],
        "companies": [
            custom("nps_account_score", "number", "number"),
            custom("nps_account_responses", "number", "number"),
        ],
        "tasks": [custom("nps_task_key", "string", "text")],
    }


def hubspot_time_zone(iana: str) -> str:
    """HubSpot stores ``hs_timezone`` as e.g. ``america_slash_los_angeles``."""
    return iana.lower().replace("/", "_slash_")


@dataclass
class Portal:
    """One HubSpot account's CRM data."""

    objects: dict[str, dict[str, CrmObject]] = field(default_factory=dict)
    properties: dict[str, dict[str, PropertyDef]] = field(default_factory=dict)
    groups: dict[str, dict[str, str]] = field(default_factory=dict)
    owners: dict[str, Owner] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)
    #: Ids per object type in creation order, which is ascending numeric order (cursor paging).
    order: dict[str, list[int]] = field(default_factory=dict)
    _ids: dict[str, itertools.count[int]] = field(default_factory=dict)
    #: Bumped on every write; search results are cached per query while it stays the same.
    version: int = 0
    search_cache: dict[str, tuple[int, list[CrmObject]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for t in OBJECT_TYPES:
            self.objects.setdefault(t, {})
            self.order.setdefault(t, [])
        self.properties = builtin_properties()
        self.groups = {
            "contacts": {"contactinformation": "Contact information"},
            "companies": {"companyinformation": "Company information"},
            "tasks": {"task": "Task information"},
            "notes": {"note": "Note information"},
        }

    def new_id(self, object_type: str) -> str:
        base = {
            "contacts": 100,
            "companies": 5000,
            "tasks": 90000,
            "notes": 70000,
            "owners": 1000,
            "lists": 10,
        }
        counter = self._ids.setdefault(object_type, itertools.count(1))
        return str(base[object_type] + next(counter))

    def touch(self) -> None:
        """Call after changing objects directly (tests do), so searches see the change."""
        self.version += 1

    def add_nps_properties(self) -> None:
        for object_type, defs in nps_properties().items():
            self.groups[object_type]["nps"] = "NPS"
            for prop in defs:
                self.properties[object_type][prop.name] = prop

    def insert(self, object_type: str, properties: Mapping[str, str]) -> CrmObject:
        stamp = now_iso()
        oid = self.new_id(object_type)
        props = {k: v for k, v in properties.items() if v != ""}
        props.update(hs_object_id=oid, createdate=stamp, lastmodifieddate=stamp)
        obj = CrmObject(oid, props, stamp, stamp)
        self.objects[object_type][oid] = obj
        self.order[object_type].append(int(oid))
        self.version += 1
        return obj

    def associate(self, from_type: str, from_id: str, to_type: str, to_id: str, type_id: int) -> None:
        self.version += 1
        src = self.objects[from_type][from_id]
        dst = self.objects[to_type][to_id]
        src.associations.setdefault(to_type, {}).setdefault(to_id, set()).add(type_id)
        reverse = REVERSE_TYPE.get(type_id)
        if reverse is not None:
            dst.associations.setdefault(from_type, {}).setdefault(from_id, set()).add(reverse)
        if from_type == "contacts" and to_type == "companies" and type_id == 1:
            src.properties["associatedcompanyid"] = to_id


def seed(portal: Portal, seed_dir: Path) -> None:
    """Owners, companies and contacts (with their primary company) from the sandbox seed."""
    stamp = now_iso()
    owner_ids: dict[str, str] = {}
    with (seed_dir / "owners.csv").open(newline="") as f:
        for n, row in enumerate(csv.DictReader(f)):
            first, _, last = row["name"].partition(" ")
            oid = portal.new_id("owners")
            portal.owners[oid] = Owner(oid, row["email"], first, last, 7000 + n, stamp)
            owner_ids[row["id"]] = oid
    company_ids: dict[str, str] = {}
    with (seed_dir / "accounts.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            company = portal.insert(
                "companies",
                {
                    "name": row["name"],
                    "hubspot_owner_id": owner_ids.get(row["owner_id"], ""),
                    "type": row["type"].upper(),
                    "plan": row["plan"],
                    "region": row["region"],
                },
            )
            company_ids[row["id"]] = company.id
    with (seed_dir / "contacts.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            known = portal.properties["contacts"]
            values = {
                "firstname": row["first_name"],
                "lastname": row["last_name"],
                "email": row["email"],
                "phone": row["phone"],
                "hs_language": row["locale"],
                "hs_timezone": hubspot_time_zone(row["time_zone"]) if row["time_zone"] else "",
                "country": row["country"],
                "jobtitle": row["title"],
                "hubspot_owner_id": owner_ids.get(row["owner_id"], ""),
                "hs_email_optout": row["email_opt_out"],
                "nps_sms_opt_out": row["sms_opt_out"],
            }
            contact = portal.insert("contacts", {k: v for k, v in values.items() if k in known})
            if row["account_id"] in company_ids:
                portal.associate("contacts", contact.id, "companies", company_ids[row["account_id"]], 1)
