"""Writing NPS results to HubSpot: batches of 100, values as strings, one bad record fails alone."""

from __future__ import annotations

from datetime import datetime, timezone

from nps_sync.connectors.hubspot import HubSpotCrm
from nps_sync.models import AccountUpdate, Category, ContactUpdate
from tests.connectors.hubspot.fixtures import HubSpotProbe
from tests.emulators.hubspot import HubSpotEmulator


def test_values_are_written_as_hubspot_strings(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    probe = HubSpotProbe(hubspot_emulator)
    alice = probe.contact_id("alice.smith@northwind.example")
    when = datetime(2026, 11, 20, 14, 30, 5, tzinfo=timezone.utc)
    result = hubspot_crm.update_contacts(
        [
            ContactUpdate(
                alice, {"score": 7, "category": Category.PASSIVE, "surveyed_at": when, "sms_opt_out": False}
            )
        ]
    )
    assert ((alice,), ()) == (result.succeeded, result.failed)
    assert ("7", "passive", "2026-11-20T14:30:05.000Z", "false") == (
        probe.contact_value(alice, "score"),
        probe.contact_value(alice, "category"),
        probe.contact_value(alice, "surveyed_at"),
        probe.contact_value(alice, "sms_opt_out"),
    )


def test_an_unknown_category_is_refused_before_any_call(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    probe = HubSpotProbe(hubspot_emulator)
    alice = probe.contact_id("alice.smith@northwind.example")
    bob = probe.contact_id("bob.jones@contoso.example")
    hubspot_crm.update_contacts([ContactUpdate(alice, {"score": 1})])  # loads the property options
    hubspot_emulator.reset_counts()
    result = hubspot_crm.update_contacts(
        [ContactUpdate(alice, {"category": "fan"}), ContactUpdate(bob, {"category": "promoter"})]
    )
    assert (bob,) == result.succeeded
    assert [alice] == [f.record_id for f in result.failed]
    assert "detractor, passive, promoter" in result.failed[0].reason
    assert {"contacts.batch_update": 1} == dict(hubspot_emulator.calls)


def test_read_only_and_unknown_properties_fail_their_record_only(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    probe = HubSpotProbe(hubspot_emulator)
    alice = probe.contact_id("alice.smith@northwind.example")
    bob = probe.contact_id("bob.jones@contoso.example")
    carla = probe.contact_id("carla.brown@fabrikam.example")
    result = hubspot_crm.update_contacts(
        [
            ContactUpdate(alice, {"hs_email_optout": True}),
            ContactUpdate(bob, {"no_such_property": "x"}),
            ContactUpdate(carla, {"nps_comment": "raw property name"}),
        ]
    )
    assert (carla,) == result.succeeded
    reasons = {f.record_id: f.reason for f in result.failed}
    assert "read-only" in reasons[alice]
    assert "does not exist" in reasons[bob]
    assert "raw property name" == probe.contact_value(carla, "comment")


def test_missing_ids_in_a_large_write_are_isolated_with_one_extra_call(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    ids = hubspot_emulator.add_contacts(250)
    ids[120] = "99999999"
    hubspot_crm.update_contacts([ContactUpdate(ids[0], {"score": 1})])
    hubspot_emulator.reset_counts()
    result = hubspot_crm.update_contacts([ContactUpdate(i, {"score": 9}) for i in ids])
    assert 249 == len(result.succeeded)
    assert ["99999999"] == [f.record_id for f in result.failed]
    # three batches, the one HubSpot refused is sent again without the id it named
    assert {"contacts.batch_update": 4} == dict(hubspot_emulator.calls)


def test_a_value_hubspot_refuses_is_narrowed_down_by_halves(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    ids = hubspot_emulator.add_contacts(4)
    hubspot_crm.update_contacts([ContactUpdate(ids[0], {"score": 1})])
    hubspot_emulator.reset_counts()
    updates = [ContactUpdate(i, {"score": "not-a-number" if n == 3 else n}) for n, i in enumerate(ids)]
    result = hubspot_crm.update_contacts(updates)
    assert ids[:3] == sorted(result.succeeded, key=int)
    assert [ids[3]] == [f.record_id for f in result.failed]
    assert "not a valid decimal" in result.failed[0].reason
    # 4 refused; halves of 2 (one written, one refused); halves of 1
    assert {"contacts.batch_update": 5} == dict(hubspot_emulator.calls)


def test_account_roll_up_clears_the_score_when_there_is_none(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    probe = HubSpotProbe(hubspot_emulator)
    northwind = probe.account_id("Northwind Traders")
    hubspot_crm.update_accounts([AccountUpdate(northwind, nps=-12.345, responses=8)])
    assert ("-12.3", "8") == (
        probe.account_value(northwind, "nps"),
        probe.account_value(northwind, "responses"),
    )
    hubspot_crm.update_accounts([AccountUpdate(northwind, nps=None, responses=0)])
    assert (None, "0") == (probe.account_value(northwind, "nps"), probe.account_value(northwind, "responses"))


def test_an_email_unsubscribe_is_mirrored_and_read_back_as_an_opt_out(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    probe = HubSpotProbe(hubspot_emulator)
    alice = probe.contact_id("alice.smith@northwind.example")
    marco = probe.contact_id("marco.rossi@fabrikam.example")  # unsubscribed in HubSpot itself
    result = hubspot_crm.update_contacts([ContactUpdate(alice, {"email_opt_out": True})])
    assert ((alice,), "true") == (result.succeeded, probe.contact_value(alice, "email_opt_out"))
    contacts = hubspot_crm.get_contacts([alice, marco])
    assert (True, True) == (contacts[alice].email_opt_out, contacts[marco].email_opt_out)
