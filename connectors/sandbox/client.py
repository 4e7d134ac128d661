"""The sandbox CRM's storage: tables in the state database, seeded from CSV files.

This is the only module of the sandbox that touches its tables (the role a vendor SDK plays for the
real CRMs).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from nps_sync.errors import ConfigError
from nps_sync.store import schema
from nps_sync.store.db import Store, utcnow

from .mapping import CONTACT_COLUMNS, truthy

SEED_DIR = Path(__file__).parent / "seed"
OWNERS, ACCOUNTS, CONTACTS, TASKS = (
    schema.sandbox_owners,
    schema.sandbox_accounts,
    schema.sandbox_contacts,
    schema.sandbox_tasks,
)
NOTES = schema.sandbox_notes


def task_id_for(key: str) -> str:
    """Task ids derive from our key, so creating the same task twice finds the same row."""
    return "T" + hashlib.sha256(key.encode()).hexdigest()[:12].upper()


class SandboxDb:
    def __init__(self, store: Store) -> None:
        self.store = store

    # --- seeding -----------------------------------------------------------------------------

    def is_empty(self) -> bool:
        with self.store.read() as conn:
            return not conn.execute(select(func.count()).select_from(CONTACTS)).scalar_one()

    def seed(self, folder: Path, *, wipe: bool = False) -> int:
        """Load owners.csv, accounts.csv and contacts.csv from ``folder``. Returns contacts loaded."""
        owners = _read_csv(folder / "owners.csv", ("id", "name"))
        accounts = _read_csv(folder / "accounts.csv", ("id", "name", "owner_id"))
        contacts = _read_csv(folder / "contacts.csv", ("id", "first_name", "last_name"))
        with self.store.begin() as conn:
            if wipe:
                for table in (TASKS, CONTACTS, ACCOUNTS, OWNERS):
                    conn.execute(delete(table))
            conn.execute(
                OWNERS.insert(),
                [
                    {
                        "id": o["id"],
                        "name": o["name"],
                        "email": o.get("email") or None,
                        "username": o.get("username") or None,
                        "manager_id": o.get("manager_id") or None,
                    }
                    for o in owners
                ],
            )
            conn.execute(
                ACCOUNTS.insert(),
                [
                    {
                        "id": a["id"],
                        "name": a["name"],
                        "owner_id": a.get("owner_id") or None,
                        "fields": {k: v for k, v in a.items() if k not in ("id", "name", "owner_id")},
                    }
                    for a in accounts
                ],
            )
            conn.execute(CONTACTS.insert(), [_contact_row(c) for c in contacts])
        return len(contacts)

    # --- reads ------------------------------------------------------------------------------------

    def contact_pages(
        self, where: Mapping[str, str | list[str]], page_size: int
    ) -> Iterator[list[tuple[dict[str, Any], dict[str, Any] | None]]]:
        """Contacts with their accounts, ordered by id, in keyset pages."""
        after = ""
        while True:
            with self.store.read() as conn:
                rows = (
                    conn.execute(
                        select(CONTACTS).where(CONTACTS.c.id > after).order_by(CONTACTS.c.id).limit(page_size)
                    )
                    .mappings()
                    .all()
                )
                accounts = self._accounts(conn, {r["account_id"] for r in rows if r["account_id"]})
            if not rows:
                return
            after = rows[-1]["id"]
            page = [
                (dict(r), accounts.get(r["account_id"]))
                for r in rows
                if _matches(dict(r), accounts.get(r["account_id"]), where)
            ]
            if page:
                yield page
            if len(rows) < page_size:
                return

    def contacts(self, ids: Sequence[str]) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        with self.store.read() as conn:
            rows = conn.execute(select(CONTACTS).where(CONTACTS.c.id.in_(list(ids)))).mappings().all()
            accounts = self._accounts(conn, {r["account_id"] for r in rows if r["account_id"]})
        return [(dict(r), accounts.get(r["account_id"])) for r in rows]

    def _accounts(self, conn: Connection, ids: set[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        rows = conn.execute(select(ACCOUNTS).where(ACCOUNTS.c.id.in_(sorted(ids)))).mappings().all()
        return {r["id"]: dict(r) for r in rows}

    def owners(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            return [
                dict(r) for r in conn.execute(select(OWNERS).where(OWNERS.c.id.in_(list(ids)))).mappings()
            ]

    def owner_by(self, query: str) -> dict[str, Any] | None:
        q = query.strip().lower()
        with self.store.read() as conn:
            row = (
                conn.execute(
                    select(OWNERS).where(
                        (func.lower(OWNERS.c.email) == q) | (func.lower(OWNERS.c.username) == q)
                    )
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def tasks(self, ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        query = select(TASKS).order_by(TASKS.c.created_at, TASKS.c.id)
        if ids is not None:
            query = query.where(TASKS.c.id.in_(list(ids)))
        with self.store.read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    # --- writes -----------------------------------------------------------------------------------

    def write_contact(
        self, conn: Connection, contact_id: str, fields: Mapping[str, str], flags: Mapping[str, bool]
    ) -> bool:
        row = conn.execute(select(CONTACTS.c.fields).where(CONTACTS.c.id == contact_id)).scalar_one_or_none()
        if row is None:
            return False
        conn.execute(
            update(CONTACTS)
            .where(CONTACTS.c.id == contact_id)
            .values(fields={**(row or {}), **fields}, **flags)
        )
        return True

    def write_account(self, conn: Connection, account_id: str, fields: Mapping[str, str]) -> bool:
        row = conn.execute(select(ACCOUNTS.c.fields).where(ACCOUNTS.c.id == account_id)).scalar_one_or_none()
        if row is None:
            return False
        conn.execute(
            update(ACCOUNTS).where(ACCOUNTS.c.id == account_id).values(fields={**(row or {}), **fields})
        )
        return True

    def task_keys(self, conn: Connection, keys: Sequence[str]) -> dict[str, str]:
        rows = conn.execute(select(TASKS.c.key, TASKS.c.id).where(TASKS.c.key.in_(list(keys))))
        return {r.key: r.id for r in rows}

    def insert_task(self, conn: Connection, values: Mapping[str, Any]) -> None:
        conn.execute(TASKS.insert().values(**values, created_at=utcnow()))

    def add_note(self, key: str, contact_id: str, title: str, body: str) -> tuple[str, bool]:
        """Insert the note unless one carries ``key``; returns (note id, whether it existed)."""
        note_id = "N" + hashlib.sha256(key.encode()).hexdigest()[:12].upper()
        with self.store.begin() as conn:
            if conn.execute(select(CONTACTS.c.id).where(CONTACTS.c.id == contact_id)).first() is None:
                return "", False
            existing = conn.execute(select(NOTES.c.id).where(NOTES.c.key == key)).scalar_one_or_none()
            if existing is not None:
                return str(existing), True
            conn.execute(
                NOTES.insert().values(
                    id=note_id, key=key, contact_id=contact_id, title=title, body=body, created_at=utcnow()
                )
            )
        return note_id, False

    def notes(self, contact_id: str | None = None) -> list[dict[str, Any]]:
        query = select(NOTES).order_by(NOTES.c.created_at, NOTES.c.id)
        if contact_id is not None:
            query = query.where(NOTES.c.contact_id == contact_id)
        with self.store.read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def set_task_status(self, task_id: str, completed: bool) -> bool:
        with self.store.begin() as conn:
            result = conn.execute(
                update(TASKS)
                .where(TASKS.c.id == task_id)
                .values(
                    status="completed" if completed else "open",
                    completed_at=utcnow() if completed else None,
                )
            )
        return bool(result.rowcount)


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the sandbox seed file: {exc.strerror}") from exc
    for n, row in enumerate(rows, start=2):
        missing = [c for c in required if not (row.get(c) or "").strip()]
        if missing:
            raise ConfigError(f"{path}: line {n}: missing value for {', '.join(missing)}")
    return rows


def _contact_row(c: Mapping[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {k: (c.get(k) or None) for k in CONTACT_COLUMNS}
    row["first_name"] = c["first_name"]
    row["last_name"] = c["last_name"]
    row["email_opt_out"] = truthy(c.get("email_opt_out", ""))
    row["sms_opt_out"] = truthy(c.get("sms_opt_out", ""))
    known = {*CONTACT_COLUMNS, "email_opt_out", "sms_opt_out"}
    row["fields"] = {k: v for k, v in c.items() if k not in known and v}
    return row


def _matches(
    contact: Mapping[str, Any], account: Mapping[str, Any] | None, where: Mapping[str, str | list[str]]
) -> bool:
    for key, wanted in where.items():
        if key.startswith("account."):
            value = ((account or {}).get("fields") or {}).get(key[len("account.") :])
            if key == "account.name":
                value = (account or {}).get("name")
        elif key in contact and key != "fields":
            value = contact[key]
        else:
            value = (contact.get("fields") or {}).get(key)
        options = wanted if isinstance(wanted, list) else [wanted]
        if str(value if value is not None else "") not in options:
            return False
    return True
