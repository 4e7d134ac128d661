"""Property definitions are read once per object type and kept for the process: a long run costs
one ``properties.list`` per object type written, and a property added or removed in HubSpot is
noticed when a write names it (at most once per ``PROPERTY_RECHECK_SECONDS``) or on ``check``."""

from __future__ import annotations

import time

import pytest

from nps_sync.connectors.hubspot import HubSpotCrm
from nps_sync.connectors.hubspot.mapping import PROPERTY_RECHECK_SECONDS
from nps_sync.models import AccountUpdate, ContactUpdate
from tests.connectors.hubspot.fixtures import HubSpotProbe
from tests.emulators.hubspot import HubSpotEmulator
from tests.emulators.hubspot.state import PropertyDef


def later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Move the monotonic clock the connector measures its cache by (time-machine leaves it alone)."""
    real = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real() + seconds)


def test_a_long_run_reads_each_object_types_properties_once(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = HubSpotProbe(hubspot_emulator)
    alice = probe.contact_id("alice.smith@northwind.example")
    northwind = probe.account_id("Northwind Traders")
    for hours in range(4):  # writes spread over three hours of a long wave
        later(monkeypatch, hours * 3600.0)
        assert (alice,) == hubspot_crm.update_contacts([ContactUpdate(alice, {"score": hours})]).succeeded
        assert (northwind,) == hubspot_crm.update_accounts([AccountUpdate(northwind, 10.0, 1)]).succeeded
    assert {"properties.list": 2, "contacts.batch_update": 4, "companies.batch_update": 4} == dict(
        hubspot_emulator.calls
    )


def test_a_property_created_in_hubspot_is_seen_when_a_write_names_it(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = HubSpotProbe(hubspot_emulator)
    alice = probe.contact_id("alice.smith@northwind.example")
    write = [ContactUpdate(alice, {"score": 3, "nps_tier": "gold"})]

    [failure] = hubspot_crm.update_contacts(write).failed
    assert "'nps_tier' does not exist" in failure.reason
    hubspot_emulator.portal.properties["contacts"]["nps_tier"] = PropertyDef(
        "nps_tier", "Tier", "string", "text", "nps", hubspot_defined=False
    )
    assert [alice] == [f.record_id for f in hubspot_crm.update_contacts(write).failed]  # read just now
    assert {"properties.list": 1} == dict(hubspot_emulator.calls)

    later(monkeypatch, PROPERTY_RECHECK_SECONDS)
    assert (alice,) == hubspot_crm.update_contacts(write).succeeded
    assert "gold" == hubspot_emulator.portal.objects["contacts"][alice].properties["nps_tier"]
    # A property that stays missing is not read again on every write.
    assert hubspot_crm.update_contacts([ContactUpdate(alice, {"nps_nothing": "x"})]).failed
    assert {"properties.list": 2, "contacts.batch_update": 1} == dict(hubspot_emulator.calls)


def test_a_property_deleted_in_hubspot_is_read_again_after_the_refused_write(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    probe = HubSpotProbe(hubspot_emulator)
    alice = probe.contact_id("alice.smith@northwind.example")
    hubspot_crm.update_contacts([ContactUpdate(alice, {"score": 1})])
    del hubspot_emulator.portal.properties["contacts"]["nps_comment"]

    refused = hubspot_crm.update_contacts([ContactUpdate(alice, {"comment": "slow"})])
    assert "PROPERTY_DOESNT_EXIST" in refused.failed[0].reason
    again = hubspot_crm.update_contacts([ContactUpdate(alice, {"comment": "slow"})])
    assert "does not exist in HubSpot; run `nps-sync setup hubspot`" in again.failed[0].reason
    # read, write, refused write, read again; the second failure costs no write
    assert {"properties.list": 2, "contacts.batch_update": 2} == dict(hubspot_emulator.calls)


def test_check_reads_the_properties_and_writes_use_what_it_read(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    alice = HubSpotProbe(hubspot_emulator).contact_id("alice.smith@northwind.example")
    hubspot_crm.update_contacts([ContactUpdate(alice, {"score": 1})])
    assert [] == hubspot_crm.check(online=True)
    hubspot_crm.update_contacts([ContactUpdate(alice, {"score": 2})])
    assert {"properties.list": 4, "contacts.batch_update": 2} == dict(hubspot_emulator.calls)
