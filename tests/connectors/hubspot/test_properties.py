"""The NPS properties: check reports what is missing, setup creates it once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nps_sync.connectors.hubspot import HubSpotCrm
from nps_sync.store.db import Store
from tests.connectors.hubspot.fixtures import build_hubspot
from tests.emulators.hubspot import HubSpotEmulator
from tests.harness import SEED_DIR

CREATED = [
    "contacts.nps_score",
    "contacts.nps_category",
    "contacts.nps_comment",
    "contacts.nps_responded_at",
    "contacts.nps_surveyed_at",
    "contacts.nps_sms_opt_out",
    "contacts.nps_email_opt_out",
    "companies.nps_account_score",
    "companies.nps_account_responses",
    "tasks.nps_task_key",
]


@pytest.fixture
def bare() -> Iterator[HubSpotEmulator]:
    emu = HubSpotEmulator(seed_dir=SEED_DIR, nps_properties=False).start()
    yield emu
    emu.stop()


@pytest.fixture
def bare_crm(bare: HubSpotEmulator, sqlite_store: Store, tmp_path: Path) -> HubSpotCrm:
    return build_hubspot(bare, sqlite_store, tmp_path)


def test_check_names_every_missing_property(bare_crm: HubSpotCrm) -> None:
    problems = bare_crm.check(online=True)
    assert 10 == len(problems)
    assert all("nps-sync setup hubspot" in p for p in problems)
    assert ["nps_score", "nps_account_score", "nps_task_key"] == [
        name
        for name in ("nps_score", "nps_account_score", "nps_task_key")
        if any(name in p for p in problems)
    ]


def test_setup_creates_the_group_and_properties_then_check_passes(
    bare: HubSpotEmulator, bare_crm: HubSpotCrm
) -> None:
    assert CREATED == bare_crm.setup()
    assert [] == bare_crm.check(online=True)
    assert {"contacts": "NPS", "companies": "NPS", "tasks": "NPS"} == {
        t: bare.portal.groups[t]["nps"] for t in ("contacts", "companies", "tasks")
    }
    category = bare.portal.properties["contacts"]["nps_category"]
    assert ("enumeration", ["detractor", "passive", "promoter"]) == (
        category.type,
        [o["value"] for o in category.options],
    )
    assert ("datetime", "nps") == (
        bare.portal.properties["contacts"]["nps_responded_at"].type,
        bare.portal.properties["contacts"]["nps_responded_at"].group_name,
    )


def test_setup_is_idempotent(bare: HubSpotEmulator, bare_crm: HubSpotCrm) -> None:
    bare_crm.setup()
    bare.reset_counts()
    assert [] == bare_crm.setup()
    assert {"properties.list": 3} == dict(bare.calls)


def test_an_existing_property_or_group_counts_as_present(bare: HubSpotEmulator, bare_crm: HubSpotCrm) -> None:
    bare_crm.setup()
    bare.reset_counts()
    again = bare_crm.client.create_property(
        "contacts",
        name="nps_score",
        label="x",
        type_="number",
        field_type="number",
        group="nps",
        description="",
    )
    assert (False, False) == (again, bare_crm.client.create_group("contacts", "nps", "NPS"))
    assert {"properties.create": 1, "groups.create": 1} == dict(bare.calls)


def test_check_reports_an_enumeration_lacking_options(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    hubspot_emulator.portal.properties["contacts"]["nps_category"].options.pop()
    [problem] = hubspot_crm.check(online=True)
    assert "nps_category" in problem
    assert "promoter" in problem
