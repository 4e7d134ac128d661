"""Pulling audiences from HubSpot: the list endpoint, lists, searches past the 10,000 cap; call counts."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from pydantic import ValidationError

from nps_sync.connectors.hubspot import HubSpotCrm
from nps_sync.connectors.hubspot.config import HubSpotAudience
from nps_sync.connectors.hubspot.connector import RAW_PAGES_AHEAD
from nps_sync.models import Audience, Contact, ContactUpdate
from nps_sync.store.db import Store
from tests.connectors.hubspot.fixtures import HubSpotProbe, build_hubspot, hubspot_options
from tests.e2e.daemon import wait_for
from tests.emulators.hubspot import HubSpotEmulator


def pull(crm: HubSpotCrm, table: Mapping[str, object], **kw: object) -> list[Contact]:
    audience = Audience(program="p", filter=table, channel="email", **kw)  # type: ignore[arg-type]
    return [c for page in crm.iter_audience(audience) for c in page]


def test_25000_contacts_are_pulled_and_written_back_in_two_calls_per_hundred(
    sqlite_store: Store, tmp_path: Path
) -> None:
    emu = HubSpotEmulator().start()
    try:
        company = emu.portal.insert("companies", {"name": "Volume Inc"})
        emu.add_contacts(25_000, company_id=company.id)
        crm = build_hubspot(emu, sqlite_store, tmp_path)
        contacts = pull(crm, {"all_contacts": True})
        result = crm.update_contacts(
            [ContactUpdate(c.id, {"score": 10, "category": "promoter"}) for c in contacts]
        )
        n = 25_000
        assert n == len({c.id for c in contacts})
        assert {"Volume Inc"} == {c.account_name for c in contacts}
        assert (n, ()) == (len(result.succeeded), result.failed)
        # set-up: one company batch read (all contacts share it) and one property read for validation
        expected = {
            "contacts.list": math.ceil(n / 100),
            "contacts.batch_update": math.ceil(n / 100),
            "companies.batch_read": 1,
            "properties.list": 1,
        }
        assert expected == dict(emu.calls)
        assert "10" == HubSpotProbe(emu).contact_value(contacts[-1].id, "score")
        crm.close()
    finally:
        emu.stop()


def test_raw_pages_are_read_ahead_of_their_conversion_up_to_ten_and_stop_with_the_reader(
    sqlite_store: Store, tmp_path: Path
) -> None:
    emu = HubSpotEmulator().start()
    try:
        emu.add_contacts(3_000)
        crm = build_hubspot(emu, sqlite_store, tmp_path)
        pages = crm.iter_audience(Audience(program="p", filter={"all_contacts": True}, channel="email"))
        assert 100 == len(next(pages))
        # While the first page is worked on: ten pages wait converted-to-be, an eleventh waits for
        # room, the first is out — twelve calls, and no more however long the consumer takes.
        held = 1 + RAW_PAGES_AHEAD + 1
        wait_for(lambda: emu.calls["contacts.list"] >= held, timeout=10, what="the read-ahead")
        time.sleep(0.3)
        assert held == emu.calls["contacts.list"]
        pages.close()  # type: ignore[attr-defined]  # a generator
        time.sleep(0.1)
        assert held == emu.calls["contacts.list"]
        crm.close()
    finally:
        emu.stop()


def test_15000_contact_search_audience_is_partitioned_past_the_10000_cap(
    sqlite_store: Store, tmp_path: Path
) -> None:
    emu = HubSpotEmulator().start()
    try:
        emu.add_contacts(15_000, jobtitle="Buyer")
        emu.add_contacts(500, jobtitle="Engineer")
        crm = build_hubspot(emu, sqlite_store, tmp_path)
        table = {
            "filter_groups": [{"filters": [{"property": "jobtitle", "operator": "EQ", "value": "Buyer"}]}]
        }
        contacts = pull(crm, table, page_size=200)
        assert 15_000 == len({c.id for c in contacts}) == len(contacts)
        # 50 pages reach the cap, a second query after the last id reads the remaining 25 pages
        assert {"contacts.search": math.ceil(15_000 / 200)} == dict(emu.calls)
    finally:
        emu.stop()


def test_list_audience_reads_memberships_then_batches_of_100(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    ids = hubspot_emulator.add_contacts(300)
    list_id = hubspot_emulator.add_list(ids)
    hubspot_emulator.reset_counts()
    contacts = pull(hubspot_crm, {"list_id": list_id})
    assert sorted(ids, key=int) == [c.id for c in contacts]
    # memberships: 250 + 50; batch reads: 100, 100, 50 and 50
    assert {"lists.memberships": 2, "contacts.batch_read": 4} == dict(hubspot_emulator.calls)


def test_contact_without_owner_carries_its_company_owner(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    probe = HubSpotProbe(hubspot_emulator)
    bob_id = probe.contact_id("bob.jones@contoso.example")
    bob = hubspot_crm.get_contacts([bob_id])[bob_id]
    assert (None, probe.owner_id("priya.shah@example.com")) == (bob.owner_id, bob.account_owner_id)
    assert ("Contoso Ltd", probe.account_id("Contoso Ltd")) == (bob.account_name, bob.account_id)
    assert ("en", "America/Los_Angeles", "US") == (bob.locale, bob.time_zone, bob.country)


def test_extra_fields_are_copied_into_contact_fields(hubspot_crm: HubSpotCrm) -> None:
    contacts = pull(hubspot_crm, {"all_contacts": True}, extra_fields=("jobtitle", "hs_language"))
    alice = next(c for c in contacts if c.email == "alice.smith@northwind.example")
    assert {"jobtitle": "Ops Manager", "hs_language": "en"} == dict(alice.fields)


def test_sms_opt_out_property_is_configurable(
    hubspot_emulator: HubSpotEmulator, sqlite_store: Store, tmp_path: Path
) -> None:
    hubspot_emulator.portal.properties["contacts"]["sms_blocked"] = hubspot_emulator.portal.properties[
        "contacts"
    ]["nps_sms_opt_out"]
    probe = HubSpotProbe(hubspot_emulator)
    alice_id = probe.contact_id("alice.smith@northwind.example")
    hubspot_emulator.portal.objects["contacts"][alice_id].properties["sms_blocked"] = "true"
    options = hubspot_options(hubspot_emulator, contact_properties={"sms_opt_out": "sms_blocked"})
    crm = build_hubspot(hubspot_emulator, sqlite_store, tmp_path, options)
    opted_out = [c.email for c in pull(crm, {"all_contacts": True}) if c.sms_opt_out]
    assert ["alice.smith@northwind.example"] == opted_out


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, "exactly one of list_id, filter_groups or all_contacts"),
        ({"list_id": "12", "all_contacts": True}, "got: list_id, all_contacts"),
        ({"list_id": "my-list"}, "numeric ILS id"),
        ({"filter_groups": [{"filters": [{"property": "x", "operator": "IN"}]}]}, "needs 'values'"),
        (
            {"filter_groups": [{"filters": [{"property": f"p{i}", "value": "1"} for i in range(6)]}]},
            "at most 5 filters",
        ),
    ],
)
def test_audience_table_is_validated_with_a_clear_message(table: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        HubSpotAudience.model_validate(table)
