"""The HubSpot connector on the HubSpot emulator, for the contract and end-to-end suites."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from nps_sync.abc import ConnectorContext
from nps_sync.connectors.hubspot import CONNECTOR, HubSpotCrm
from nps_sync.connectors.hubspot.config import HubSpotOptions
from nps_sync.connectors.hubspot.mapping import due_date
from nps_sync.secrets import Secrets
from nps_sync.store.db import Store
from tests.emulators.hubspot import HubSpotEmulator
from tests.harness import SEED_DIR, CrmUnderTest, E2ECrm, ProbedTask

TOKEN_ENV = "HUBSPOT_ACCESS_TOKEN"
TIME_ZONE = ZoneInfo("Europe/Berlin")
PRIORITIES = {"HIGH": "high", "MEDIUM": "normal", "LOW": "low"}


def seed_managers() -> dict[str, str]:
    """The seed's owner → manager relation as the ``managers`` table (HubSpot has none)."""
    with (SEED_DIR / "owners.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    email = {r["id"]: r["email"] for r in rows}
    return {r["email"]: email[r["manager_id"]] for r in rows if r["manager_id"] in email}


class HubSpotProbe:
    """Looks into the emulator's memory."""

    def __init__(self, emu: HubSpotEmulator, options: HubSpotOptions | None = None) -> None:
        self.emu = emu
        self.options = options or HubSpotOptions()

    def _find(self, object_type: str, prop: str, value: str) -> str:
        with self.emu.lock:
            for obj in self.emu.portal.objects[object_type].values():
                if obj.properties.get(prop) == value:
                    return obj.id
        raise LookupError(f"no {object_type} with {prop} = {value!r} in the emulator")

    def contact_id(self, email: str) -> str:
        return self._find("contacts", "email", email)

    def missing_contact_id(self) -> str:
        return "99999999"

    def account_id(self, name: str) -> str:
        return self._find("companies", "name", name)

    def owner_id(self, email: str) -> str:
        with self.emu.lock:
            return next(o.id for o in self.emu.portal.owners.values() if o.email == email)

    def _value(self, object_type: str, record_id: str, prop: str) -> str | None:
        with self.emu.lock:
            return self.emu.portal.objects[object_type][record_id].properties.get(prop) or None

    def contact_value(self, contact_id: str, logical: str) -> str | None:
        names: Mapping[str, Any] = self.options.contact_properties.model_dump()
        return self._value("contacts", contact_id, str(names.get(logical, logical)))

    def account_value(self, account_id: str, logical: str) -> str | None:
        names: Mapping[str, Any] = self.options.company_properties.model_dump()
        return self._value("companies", account_id, str(names.get(logical, logical)))

    def tasks(self) -> list[ProbedTask]:
        key_prop = self.options.task_key_property
        with self.emu.lock:
            objs = sorted(self.emu.portal.objects["tasks"].values(), key=lambda o: int(o.id))
            out = []
            for obj in objs:
                p = obj.properties
                contacts = sorted(obj.associations.get("contacts", {}), key=int)
                companies = sorted(obj.associations.get("companies", {}), key=int)
                out.append(
                    ProbedTask(
                        id=obj.id,
                        key=p.get(key_prop),
                        contact_id=contacts[0] if contacts else None,
                        account_id=companies[0] if companies else None,
                        owner_id=p.get("hubspot_owner_id"),
                        subject=p.get("hs_task_subject", ""),
                        body=p.get("hs_task_body", ""),
                        due=due_date(p.get("hs_timestamp"), TIME_ZONE),
                        completed=p.get("hs_task_status") == "COMPLETED",
                        priority=PRIORITIES.get(p.get("hs_task_priority", ""), "normal"),
                    )
                )
            return out

    def task_associations(self, task_id: str) -> dict[str, dict[str, set[int]]]:
        with self.emu.lock:
            return {k: dict(v) for k, v in self.emu.portal.objects["tasks"][task_id].associations.items()}

    def complete_task(self, task_id: str) -> None:
        with self.emu.lock:
            self.emu.portal.objects["tasks"][task_id].properties["hs_task_status"] = "COMPLETED"
            self.emu.portal.touch()

    def call_counts(self) -> Mapping[str, int]:
        with self.emu.lock:
            return dict(self.emu.calls)


def hubspot_options(emu: HubSpotEmulator, **overrides: Any) -> HubSpotOptions:
    """Options for a connector on ``emu``: fast retries, the seed's managers, limits from overrides."""
    values: dict[str, Any] = {
        "base_url": emu.url,
        "access_token_secret": TOKEN_ENV,
        "retry_wait_seconds": 0.01,
        "retry_max_wait_seconds": 0.2,
        "managers": seed_managers(),
        "rate_limit_calls": 100_000,
        "search_per_second": 1_000,
    }
    values.update(overrides)
    return HubSpotOptions.model_validate(values)


def build_hubspot(
    emu: HubSpotEmulator, store: Store, state_dir: Path, options: HubSpotOptions | None = None
) -> HubSpotCrm:
    ctx = ConnectorContext(
        role="crm",
        state_dir=state_dir,
        public_url="http://127.0.0.1:8080",
        time_zone=TIME_ZONE,
        secrets=Secrets(environ={TOKEN_ENV: emu.token}),
        store=store,
    )
    crm = CONNECTOR.factory(options or hubspot_options(emu), ctx)
    assert isinstance(crm, HubSpotCrm)
    return crm


def fabrikam_audience(emu: HubSpotEmulator) -> dict[str, Any]:
    company_id = HubSpotProbe(emu).account_id("Fabrikam GmbH")
    return {
        "filter_groups": [
            {"filters": [{"property": "associatedcompanyid", "operator": "EQ", "value": company_id}]}
        ]
    }


@pytest.fixture
def hubspot_emulator() -> Iterator[HubSpotEmulator]:
    emu = HubSpotEmulator(seed_dir=SEED_DIR).start()
    yield emu
    emu.stop()


@pytest.fixture
def hubspot_crm(
    hubspot_emulator: HubSpotEmulator, sqlite_store: Store, tmp_path: Path
) -> Iterator[HubSpotCrm]:
    crm = build_hubspot(hubspot_emulator, sqlite_store, tmp_path)
    yield crm
    crm.close()


@pytest.fixture
def crm_under_test_hubspot(hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm) -> CrmUnderTest:
    return CrmUnderTest(
        crm=hubspot_crm,
        probe=HubSpotProbe(hubspot_emulator),
        audience_all={"all_contacts": True},
        audience_fabrikam=fabrikam_audience(hubspot_emulator),
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml_value(v)}' for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture
def crm_e2e_hubspot(hubspot_emulator: HubSpotEmulator) -> E2ECrm:
    table = {
        "base_url": hubspot_emulator.url,
        "access_token_secret": TOKEN_ENV,
        "retry_wait_seconds": 0.05,
        "managers": seed_managers(),
    }
    body = "\n".join(f"{k} = {_toml_value(v)}" for k, v in table.items())
    return E2ECrm(
        config_toml=f'[crm]\nkind = "hubspot"\n\n[crm.hubspot]\n{body}\n',
        probe=HubSpotProbe(hubspot_emulator),
        audience_all={"all_contacts": True},
        env={TOKEN_ENV: hubspot_emulator.token},
    )
