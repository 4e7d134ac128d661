"""The sandbox CRM under the contract and end-to-end suites."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from nps_sync.abc import ConnectorContext
from nps_sync.connectors.sandbox import CONNECTOR, SandboxCrm
from nps_sync.connectors.sandbox.config import SandboxOptions
from nps_sync.connectors.sandbox.mapping import ACCOUNT_FIELDS, CONTACT_FIELDS, CONTACT_FLAGS
from nps_sync.secrets import Secrets
from nps_sync.store import schema
from nps_sync.store.db import Store
from tests.harness import CrmUnderTest, E2ECrm, ProbedTask


class SandboxProbe:
    """Reads the sandbox tables directly (through a store on the same database file)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _one(self, query: object) -> object:
        with self.store.read() as conn:
            return conn.execute(query).scalar_one()  # type: ignore[call-overload]

    def contact_id(self, email: str) -> str:
        return str(
            self._one(select(schema.sandbox_contacts.c.id).where(schema.sandbox_contacts.c.email == email))
        )

    def missing_contact_id(self) -> str:
        return "C999"

    def account_id(self, name: str) -> str:
        return str(
            self._one(select(schema.sandbox_accounts.c.id).where(schema.sandbox_accounts.c.name == name))
        )

    def owner_id(self, email: str) -> str:
        return str(
            self._one(select(schema.sandbox_owners.c.id).where(schema.sandbox_owners.c.email == email))
        )

    def contact_value(self, contact_id: str, logical: str) -> str | None:
        t = schema.sandbox_contacts
        with self.store.read() as conn:
            row = conn.execute(select(t).where(t.c.id == contact_id)).mappings().one()
        if logical in CONTACT_FLAGS:
            return "true" if row[CONTACT_FLAGS[logical]] else "false"
        value = (row["fields"] or {}).get(CONTACT_FIELDS.get(logical, logical))
        return value or None

    def account_value(self, account_id: str, logical: str) -> str | None:
        t = schema.sandbox_accounts
        with self.store.read() as conn:
            fields = conn.execute(select(t.c.fields).where(t.c.id == account_id)).scalar_one()
        return (fields or {}).get(ACCOUNT_FIELDS.get(logical, logical)) or None

    def tasks(self) -> list[ProbedTask]:
        t = schema.sandbox_tasks
        with self.store.read() as conn:
            rows = conn.execute(select(t).order_by(t.c.created_at, t.c.id)).mappings().all()
        return [
            ProbedTask(
                id=r["id"],
                key=r["key"],
                contact_id=r["contact_id"],
                account_id=r["account_id"],
                owner_id=r["owner_id"],
                subject=r["subject"],
                body=r["body"],
                due=r["due"],
                completed=r["status"] == "completed",
                priority=r["priority"],
            )
            for r in rows
        ]

    def complete_task(self, task_id: str) -> None:
        t = schema.sandbox_tasks
        with self.store.begin() as conn:
            conn.execute(t.update().where(t.c.id == task_id).values(status="completed"))

    def call_counts(self) -> Mapping[str, int]:
        return {}


def build_sandbox(store: Store, tmp_path: Path) -> SandboxCrm:
    ctx = ConnectorContext(
        role="crm",
        state_dir=tmp_path,
        public_url="http://127.0.0.1:8080",
        time_zone=ZoneInfo("Europe/Berlin"),
        secrets=Secrets(environ={}),
        store=store,
    )
    crm = CONNECTOR.factory(SandboxOptions(), ctx)
    assert isinstance(crm, SandboxCrm)
    return crm


@pytest.fixture
def crm_under_test_sandbox(sqlite_store: Store, tmp_path: Path) -> CrmUnderTest:
    return CrmUnderTest(
        crm=build_sandbox(sqlite_store, tmp_path),
        probe=SandboxProbe(sqlite_store),
        audience_all={},
        audience_fabrikam={"where": {"account_id": "A03"}},
    )


@pytest.fixture
def crm_e2e_sandbox() -> E2ECrm:
    """The daemon's own state database holds the sandbox; the probe is attached by the e2e harness."""
    return E2ECrm(config_toml='[crm]\nkind = "sandbox"\n', probe=None, audience_all={})  # type: ignore[arg-type]
