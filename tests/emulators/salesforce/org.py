"""The emulated org: sObject schemas, records with Salesforce-style 18-character ids, seed data.

Values are held as Python types (str, float, bool, date, datetime, None) and converted at the edges:
JSON for REST, CSV for Bulk API 2.0.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

SEED_DIR = Path(__file__).resolve().parents[3] / "connectors" / "sandbox" / "seed"
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
PREFIXES = {
    "User": "005",
    "Account": "001",
    "Contact": "003",
    "Task": "00T",
    # Lightning notes: a ContentNote is a ContentDocument (069), shown on records it is linked to.
    "ContentNote": "069",
    "ContentDocumentLink": "06A",
}
TEXT_TYPES = {"id", "string", "textarea", "picklist", "reference", "email", "phone", "url"}
NUMBER_TYPES = {"double", "int", "currency", "percent"}


def id18(id15: str) -> str:
    """Salesforce's case-safe suffix: one character per 5-character chunk, a bit per uppercase letter."""
    suffix = ""
    for chunk in range(3):
        bits = sum(1 << i for i, ch in enumerate(id15[chunk * 5 : chunk * 5 + 5]) if ch.isupper())
        suffix += _SUFFIX[bits]
    return id15 + suffix


@dataclass(frozen=True)
class FieldDef:
    name: str
    type: str
    length: int = 0
    precision: int = 0
    scale: int = 0
    reference_to: str | None = None
    picklist: tuple[str, ...] = ()
    updateable: bool = True
    external_id: bool = False
    unique: bool = False
    required: bool = False

    @property
    def relationship_name(self) -> str | None:
        if self.reference_to is None:
            return None
        return self.name[:-2] if self.name.endswith("Id") else self.name.replace("__c", "__r")

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.name.replace("__c", "").replace("_", " "),
            "type": self.type,
            "length": self.length,
            "precision": self.precision,
            "scale": self.scale,
            "digits": 0,
            "picklistValues": [
                {"value": v, "label": v, "active": True, "defaultValue": False} for v in self.picklist
            ],
            "referenceTo": [self.reference_to] if self.reference_to else [],
            "relationshipName": self.relationship_name,
            "updateable": self.updateable,
            "createable": self.updateable,
            "nillable": not self.required and self.type != "boolean",
            "externalId": self.external_id,
            "unique": self.unique,
            "calculated": False,
            "custom": self.name.endswith("__c"),
        }


def _f(name: str, type_: str, **kw: Any) -> FieldDef:
    return FieldDef(name, type_, **kw)


def _system() -> list[FieldDef]:
    return [
        _f("Id", "id", length=18, updateable=False),
        _f("CreatedDate", "datetime", updateable=False),
        _f("LastModifiedDate", "datetime", updateable=False),
        _f("SystemModstamp", "datetime", updateable=False),
    ]


#: The NPS custom fields the connector expects; a test may omit some to exercise ``check``.
NPS_FIELDS: dict[str, list[FieldDef]] = {
    "Contact": [
        _f("NPS_Score__c", "double", precision=2, scale=0),
        _f("NPS_Category__c", "picklist", length=255, picklist=("detractor", "passive", "promoter")),
        _f("NPS_Comment__c", "textarea", length=32768),
        _f("NPS_Responded_At__c", "datetime"),
        _f("NPS_Surveyed_At__c", "datetime"),
        _f("NPS_SMS_Opt_Out__c", "boolean"),
        _f("NPS_Locale__c", "string", length=10),
        _f("NPS_Time_Zone__c", "string", length=40),
    ],
    "Account": [
        _f("NPS_Score__c", "double", precision=5, scale=1),
        _f("NPS_Responses__c", "double", precision=8, scale=0),
    ],
    "Task": [_f("NPS_Task_Key__c", "string", length=80, external_id=True, unique=True)],
}

STANDARD_FIELDS: dict[str, list[FieldDef]] = {
    "User": [
        _f("Name", "string", length=121, updateable=False),
        _f("FirstName", "string", length=40),
        _f("LastName", "string", length=80, required=True),
        _f("Email", "email", length=128),
        _f("Username", "string", length=80),
        _f("ManagerId", "reference", length=18, reference_to="User"),
        _f("IsActive", "boolean"),
    ],
    "Account": [
        _f("Name", "string", length=255, required=True),
        _f("OwnerId", "reference", length=18, reference_to="User"),
        _f("Type", "picklist", length=255, picklist=("Customer", "Partner", "Prospect", "Other")),
        _f("Plan__c", "string", length=40),
        _f("Region__c", "string", length=40),
    ],
    "Contact": [
        _f("Name", "string", length=121, updateable=False),
        _f("FirstName", "string", length=40),
        _f("LastName", "string", length=80, required=True),
        _f("Email", "email", length=80),
        _f("Phone", "phone", length=40),
        _f("MobilePhone", "phone", length=40),
        _f("Title", "string", length=128),
        _f("MailingCountry", "string", length=80),
        _f("AccountId", "reference", length=18, reference_to="Account"),
        _f("OwnerId", "reference", length=18, reference_to="User"),
        _f("HasOptedOutOfEmail", "boolean"),
        _f("DoNotCall", "boolean"),
    ],
    "Task": [
        _f("WhoId", "reference", length=18, reference_to="Contact"),
        _f("WhatId", "reference", length=18, reference_to="Account"),
        _f("OwnerId", "reference", length=18, reference_to="User"),
        _f("Subject", "string", length=255),
        _f("Description", "textarea", length=32000),
        _f("ActivityDate", "date"),
        _f("Priority", "picklist", length=40, picklist=("High", "Normal", "Low"), required=True),
        _f(
            "Status",
            "picklist",
            length=40,
            picklist=("Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"),
            required=True,
        ),
        _f("IsClosed", "boolean", updateable=False),
        _f("TaskSubtype", "picklist", length=40, picklist=("Task", "Email", "Call", "ListEmail")),
    ],
    "ContentNote": [
        _f("Title", "string", length=255, required=True),
        _f("Content", "base64"),
        _f("TextPreview", "string", length=255, updateable=False),
        _f("OwnerId", "reference", length=18, reference_to="User", updateable=False),
    ],
    "ContentDocumentLink": [
        # Polymorphic in Salesforce (any record); the emulated org links notes to contacts.
        _f("ContentDocumentId", "reference", length=18, reference_to="ContentNote", required=True),
        _f("LinkedEntityId", "reference", length=18, reference_to="Contact", required=True),
        _f("ShareType", "picklist", length=40, picklist=("V", "C", "I"), required=True),
        _f("Visibility", "picklist", length=40, picklist=("AllUsers", "InternalUsers", "SharedUsers")),
    ],
}


@dataclass
class ValidationRule:
    """A validation rule on one sObject: ``error_when(record)`` true refuses the save."""

    sobject: str
    error_when: Callable[[dict[str, Any]], bool]
    message: str = "This record failed a validation rule."
    field: str | None = None


@dataclass
class Org:
    omit_fields: dict[str, set[str]] = field(default_factory=dict)
    schemas: dict[str, dict[str, FieldDef]] = field(default_factory=dict)
    records: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    validation_rules: list[ValidationRule] = field(default_factory=list)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    #: Unique fields' values → ids of records that held them when written through ``insert`` or
    #: ``update``, as Salesforce indexes unique and external-id fields. ``find`` checks each
    #: candidate against ``records`` (which tests and the benchmarks' seeding change directly).
    _unique: dict[tuple[str, str], dict[Any, set[str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for sobject in PREFIXES:
            defs = _system() + STANDARD_FIELDS[sobject] + NPS_FIELDS.get(sobject, [])
            omitted = self.omit_fields.get(sobject, set())
            self.schemas[sobject] = {d.name: d for d in defs if d.name not in omitted}
            self.records[sobject] = {}
            for d in self.schemas[sobject].values():
                if d.unique:
                    self._unique[(sobject, d.name)] = {}

    def new_id(self, sobject: str) -> str:
        n = next(self._counter)
        # Mixed case in the body makes the case-safe suffix meaningful, as in real ids.
        return id18(f"{PREFIXES[sobject]}Dx{n:010d}")

    def field_def(self, sobject: str, name: str) -> FieldDef | None:
        schema = self.schemas[sobject]
        if name in schema:
            return schema[name]
        lowered = name.lower()
        return next((d for d in schema.values() if d.name.lower() == lowered), None)

    def relationship(self, sobject: str, rel: str) -> FieldDef | None:
        lowered = rel.lower()
        return next(
            (d for d in self.schemas[sobject].values() if (d.relationship_name or "").lower() == lowered),
            None,
        )

    def insert(self, sobject: str, values: dict[str, Any]) -> str:
        now = datetime.now(timezone.utc)
        new_id = self.new_id(sobject)
        record: dict[str, Any] = dict.fromkeys(self.schemas[sobject])
        for name, d in self.schemas[sobject].items():
            if d.type == "boolean":
                record[name] = False
        record.update(values)
        record.update(Id=new_id, CreatedDate=now, LastModifiedDate=now, SystemModstamp=now)
        self._derive(sobject, record)
        self.records[sobject][new_id] = record
        self._index(sobject, new_id, record)
        return new_id

    def update(self, sobject: str, record_id: str, values: dict[str, Any]) -> None:
        record = self.records[sobject][record_id]
        record.update(values)
        record["LastModifiedDate"] = record["SystemModstamp"] = datetime.now(timezone.utc)
        self._derive(sobject, record)
        self._index(sobject, record_id, values)

    def _index(self, sobject: str, record_id: str, values: dict[str, Any]) -> None:
        for (indexed, name), by_value in self._unique.items():
            if indexed == sobject and values.get(name) is not None:
                by_value.setdefault(values[name], set()).add(record_id)

    def _derive(self, sobject: str, record: dict[str, Any]) -> None:
        if "Name" in record and sobject in ("Contact", "User"):
            record["Name"] = f"{record.get('FirstName') or ''} {record.get('LastName') or ''}".strip()
        if sobject == "Task":
            record["IsClosed"] = record.get("Status") == "Completed"
        if sobject == "ContentNote":
            record["TextPreview"] = (record.get("Content") or "")[:255]

    def resolve(self, sobject: str, record: dict[str, Any], path: str) -> Any:
        """``Account.Owner.Email`` → the value, following references; a missing parent gives None."""
        head, _, rest = path.partition(".")
        if not rest:
            d = self.field_def(sobject, head)
            return None if d is None else record.get(d.name)
        d = self.relationship(sobject, head)
        if d is None or d.reference_to is None:
            return None
        parent = self.records[d.reference_to].get(record.get(d.name) or "")
        return None if parent is None else self.resolve(d.reference_to, parent, rest)

    def check_path(self, sobject: str, path: str) -> None:
        """Raise KeyError naming the part of ``path`` that is not a field or relationship of ``sobject``."""
        head, _, rest = path.partition(".")
        if not rest:
            if self.field_def(sobject, head) is None:
                raise KeyError(f"No such column '{head}' on entity '{sobject}'")
            return
        d = self.relationship(sobject, head)
        if d is None or d.reference_to is None:
            raise KeyError(f"Didn't understand relationship '{head}' in field path on entity '{sobject}'")
        self.check_path(d.reference_to, rest)

    def find(self, sobject: str, name: str, value: Any) -> list[dict[str, Any]]:
        """Records whose ``name`` equals ``value``: a look-up for unique fields, a scan otherwise."""
        by_value = self._unique.get((sobject, name))
        if by_value is None:
            return [r for r in self.records[sobject].values() if r.get(name) == value]
        table = self.records[sobject]
        found = []
        for record_id in sorted(by_value.get(value, ())):
            record = table.get(record_id)
            if record is not None and record.get(name) == value:
                found.append(record)
            else:  # deleted or changed since: forget it
                by_value[value].discard(record_id)
        return found


def _rows(name: str) -> Iterable[dict[str, str]]:
    with (SEED_DIR / f"{name}.csv").open(newline="", encoding="utf-8") as fh:
        yield from csv.DictReader(fh)


def seed(org: Org) -> dict[str, str]:
    """Load the sandbox seed; return seed id (U01, A01, C001) → Salesforce id."""
    ids: dict[str, str] = {}
    owners = list(_rows("owners"))
    for row in owners:
        first, _, last = row["name"].partition(" ")
        ids[row["id"]] = org.insert(
            "User",
            {
                "FirstName": first,
                "LastName": last,
                "Email": row["email"],
                "Username": f"{row['username']}@example.com",
                "IsActive": True,
            },
        )
    for row in owners:
        if row["manager_id"]:
            org.update("User", ids[row["id"]], {"ManagerId": ids[row["manager_id"]]})
    for row in _rows("accounts"):
        ids[row["id"]] = org.insert(
            "Account",
            {
                "Name": row["name"],
                "OwnerId": ids[row["owner_id"]],
                "Type": row["type"],
                "Plan__c": row["plan"],
                "Region__c": row["region"],
            },
        )
    account_owner = {
        seed_id: org.records["Account"][sf_id]["OwnerId"]
        for seed_id, sf_id in ids.items()
        if sf_id.startswith("001")
    }
    for row in _rows("contacts"):
        values: dict[str, Any] = {
            "FirstName": row["first_name"],
            "LastName": row["last_name"],
            "Email": row["email"] or None,
            "MobilePhone": row["phone"] or None,
            "Title": row["title"] or None,
            "MailingCountry": row["country"] or None,
            "AccountId": ids[row["account_id"]],
            # Salesforce always has a contact owner; a blank seed owner means "the account's owner".
            "OwnerId": ids[row["owner_id"]] if row["owner_id"] else account_owner[row["account_id"]],
            "HasOptedOutOfEmail": row["email_opt_out"] == "true",
            "DoNotCall": False,
            "NPS_SMS_Opt_Out__c": row["sms_opt_out"] == "true",
            "NPS_Locale__c": row["locale"] or None,
            "NPS_Time_Zone__c": row["time_zone"] or None,
        }
        schema = org.schemas["Contact"]
        ids[row["id"]] = org.insert("Contact", {k: v for k, v in values.items() if k in schema})
    return ids


def as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))
