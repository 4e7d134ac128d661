"""Owners (Users) are kept for ``owner_cache_seconds`` (a day): a run that resolves owners for many
playbook batches queries each user once; an id never seen is read on its own; a miss is asked again."""

from __future__ import annotations

import time

import pytest

from nps_sync.models import Audience
from tests.connectors.salesforce.fixtures import MakeCrm, SalesforceProbe
from tests.emulators.salesforce import SalesforceEmulator

UNKNOWN = "005000000000999AAA"


def test_owners_of_later_batches_come_from_the_cache(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    probe = SalesforceProbe(salesforce_emulator)
    tom, sam = probe.owner_id("tom.becker@example.com"), probe.owner_id("sam.carter@example.com")
    crm = make_salesforce_crm()

    batches = [crm.get_owners([tom, sam]), crm.get_owners([tom]), crm.get_owners([sam, tom])]

    assert [["Sam Carter", "Tom Becker"], ["Tom Becker"], ["Sam Carter", "Tom Becker"]] == [
        sorted(o.name for o in b.values()) for b in batches
    ]
    assert sam == batches[2][tom].manager_id
    assert {"token": 1, "query": 1} == salesforce_emulator.call_counts()


def test_an_owner_never_seen_is_read_and_an_unknown_id_is_asked_again(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    probe = SalesforceProbe(salesforce_emulator)
    tom = probe.owner_id("tom.becker@example.com")
    crm = make_salesforce_crm()
    crm.get_owners([tom])
    newcomer = salesforce_emulator.org.insert(
        "User",
        {"FirstName": "Nora", "LastName": "New", "Email": "nora.new@example.com", "IsActive": True},
    )

    found = crm.get_owners([tom, newcomer, UNKNOWN])
    assert {tom, newcomer} == set(found)
    assert "Nora New" == found[newcomer].name
    assert {newcomer} == set(crm.get_owners([newcomer, UNKNOWN]))
    # tom once; then newcomer and the unknown id; then the unknown id alone (not remembered as missing)
    assert {"token": 1, "query": 3} == salesforce_emulator.call_counts()


def test_owners_are_read_again_after_owner_cache_seconds(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    probe = SalesforceProbe(salesforce_emulator)
    tom = probe.owner_id("tom.becker@example.com")
    crm = make_salesforce_crm(owner_cache_seconds=0)

    assert "Tom Becker" == crm.get_owners([tom])[tom].name
    salesforce_emulator.org.update("User", tom, {"LastName": "Becker-Braun"})
    assert "Tom Becker-Braun" == crm.get_owners([tom])[tom].name
    assert {"token": 1, "query": 2} == salesforce_emulator.call_counts()


def test_find_owner_keeps_what_it_found_and_asks_again_for_what_it_did_not(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    probe = SalesforceProbe(salesforce_emulator)
    tom = probe.owner_id("tom.becker@example.com")
    crm = make_salesforce_crm()

    found = [crm.find_owner(q) for q in ("tbecker@example.com", "TBecker@example.com", "tbecker@example.com")]
    assert [tom] * 3 == [o.id if o else None for o in found]
    assert {tom} == set(crm.get_owners([tom]))  # found by find_owner: already known
    assert {"token": 1, "query": 1} == salesforce_emulator.call_counts()

    assert crm.find_owner("nora.new@example.com") is None
    salesforce_emulator.org.insert(
        "User",
        {"FirstName": "Nora", "LastName": "New", "Email": "nora.new@example.com", "IsActive": True},
    )
    found_later = crm.find_owner("nora.new@example.com")
    assert found_later is not None and "Nora New" == found_later.name
    assert {"token": 1, "query": 3} == salesforce_emulator.call_counts()


def later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Move the monotonic clock the connector measures its cache by (time-machine leaves it alone)."""
    real = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real() + seconds)


def test_a_wave_whose_answers_take_hours_reads_each_owner_once_a_day(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default keeps users a day: playbook batches 11 minutes and 5 hours into a wave's answers
    find them in memory; a batch the next day reads them again."""
    probe = SalesforceProbe(salesforce_emulator)
    tom, sam = probe.owner_id("tom.becker@example.com"), probe.owner_id("sam.carter@example.com")
    crm = make_salesforce_crm()

    assert {tom, sam} == set(crm.get_owners([tom, sam]))
    for minutes in (11, 5 * 60):
        later(monkeypatch, minutes * 60.0)
        assert {tom, sam} == set(crm.get_owners([sam, tom]))
    assert {"token": 1, "query": 1} == salesforce_emulator.call_counts()

    later(monkeypatch, 24 * 3600.0 + 1)
    assert {tom} == set(crm.get_owners([tom]))
    assert {"token": 1, "query": 2} == salesforce_emulator.call_counts()


def test_owners_met_in_the_pull_ride_along_in_the_first_owner_query(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    probe = SalesforceProbe(salesforce_emulator)
    crm = make_salesforce_crm()
    audience = Audience(program="p", filter={}, channel="email")
    contacts = [c for page in crm.iter_audience(audience) for c in page]
    pulled = {c.owner_id for c in contacts} | {c.account_owner_id for c in contacts}
    pulled.discard(None)
    jonas = probe.owner_id("jonas.weber@example.com")
    assert jonas in pulled and len(pulled) >= 3
    salesforce_emulator.reset_counts()

    assert set() == set(crm.get_owners([]))  # nothing missing: no query, nothing carried
    first = crm.get_owners([jonas])
    later = crm.get_owners(sorted(pulled))

    assert {jonas} == set(first)  # only what was asked for is answered
    assert pulled == set(later)
    assert {"query": 1} == salesforce_emulator.call_counts()


def test_an_owner_query_carries_pulled_owners_only_in_its_spare_room(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    probe = SalesforceProbe(salesforce_emulator)
    crm = make_salesforce_crm()
    [c for page in crm.iter_audience(Audience(program="p", filter={}, channel="email")) for c in page]
    strangers = [f"005{n:012d}AAA" for n in range(200)]  # a full query of ids Salesforce lacks
    salesforce_emulator.reset_counts()

    assert {} == crm.get_owners(strangers)
    assert {"query": 1} == salesforce_emulator.call_counts()
    # The pulled owners were not carried (no room), so asking for one still costs its query.
    crm.get_owners([probe.owner_id("jonas.weber@example.com")])
    assert {"query": 2} == salesforce_emulator.call_counts()
