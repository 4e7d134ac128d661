"""Owners through HubSpot's owners API; managers from the ``managers`` table."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nps_sync.connectors.hubspot import HubSpotCrm
from nps_sync.connectors.hubspot.config import HubSpotOptions
from nps_sync.models import Owner
from tests.connectors.hubspot.fixtures import HubSpotProbe
from tests.emulators.hubspot import HubSpotEmulator


def test_owners_carry_names_and_managers_from_one_cached_read(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    probe = HubSpotProbe(hubspot_emulator)
    tom, sam = probe.owner_id("tom.becker@example.com"), probe.owner_id("sam.carter@example.com")
    first = hubspot_crm.get_owners([tom, sam, "4242"])
    second = hubspot_crm.get_owners([tom])
    assert Owner(tom, "Tom Becker", "tom.becker@example.com", "tom.becker@example.com", sam) == first[tom]
    assert (None, first[tom]) == (first[sam].manager_id, second[tom])
    assert {"owners.list": 1} == dict(hubspot_emulator.calls)


def test_find_owner_by_email_uses_the_email_filter(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    found = hubspot_crm.find_owner("Priya.Shah@example.com")
    assert found is not None
    assert (HubSpotProbe(hubspot_emulator).owner_id("priya.shah@example.com"), "Priya Shah") == (
        found.id,
        found.name,
    )
    # one filtered read, one full read for the manager's id
    assert {"owners.list": 2} == dict(hubspot_emulator.calls)


def test_find_owner_by_name(hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm) -> None:
    found = hubspot_crm.find_owner("aiko tanaka")
    assert found is not None
    assert "aiko.tanaka@example.com" == found.email
    assert None is hubspot_crm.find_owner("Nobody Here")


def test_managers_table_maps_emails_to_emails() -> None:
    with pytest.raises(ValidationError, match="owner email to manager email"):
        HubSpotOptions.model_validate({"managers": {"tbecker": "sam.carter@example.com"}})
