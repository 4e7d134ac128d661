"""The CRM contract: what every CRM connector does, checked the same way on each backend.

A backend joins by providing the fixture ``crm_under_test_<name>`` (see tests/harness.py); all are
seeded with connectors/sandbox/seed/*.csv.
"""

from __future__ import annotations

import csv
from datetime import date, datetime, timezone

import pytest

from nps_sync.models import AccountUpdate, Audience, ContactUpdate, TaskSpec
from tests.conftest import CRM_BACKENDS
from tests.harness import SEED_DIR, CrmUnderTest


def seed_rows(name: str) -> list[dict[str, str]]:
    with (SEED_DIR / name).open(newline="") as handle:
        return list(csv.DictReader(handle))


SEED_CONTACTS = seed_rows("contacts.csv")
SEED_EMAILS = sorted(r["email"].lower() for r in SEED_CONTACTS if r["email"])


@pytest.fixture(params=CRM_BACKENDS)
def crm_under_test(request: pytest.FixtureRequest) -> CrmUnderTest:
    backend: CrmUnderTest = request.getfixturevalue(f"crm_under_test_{request.param}")
    return backend


def pull(cut: CrmUnderTest, audience_filter: object, channel: str = "email", page_size: int = 200) -> list:
    audience = Audience(program="contract", filter=audience_filter, channel=channel, page_size=page_size)  # type: ignore[arg-type]
    return [contact for page in cut.crm.iter_audience(audience) for contact in page]


def test_audience_yields_every_seeded_contact_exactly_once(crm_under_test: CrmUnderTest) -> None:
    contacts = pull(crm_under_test, crm_under_test.audience_all)
    ids = [c.id for c in contacts]
    assert len(SEED_CONTACTS) == len(ids)
    assert len(ids) == len(set(ids))
    assert SEED_EMAILS == sorted(c.email.lower() for c in contacts if c.email)


def test_audience_filter_selects_one_account(crm_under_test: CrmUnderTest) -> None:
    contacts = pull(crm_under_test, crm_under_test.audience_fabrikam)
    expected = sorted(r["email"] for r in SEED_CONTACTS if r["account_id"] == "A03" and r["email"])
    assert expected == sorted(c.email for c in contacts if c.email)
    assert {"Fabrikam GmbH"} == {c.account_name for c in contacts}


def test_contact_carries_account_owner_and_names(crm_under_test: CrmUnderTest) -> None:
    probe = crm_under_test.probe
    alice_id = probe.contact_id("alice.smith@northwind.example")
    alice = crm_under_test.crm.get_contacts([alice_id])[alice_id]
    assert ("Alice", "Smith") == (alice.first_name, alice.last_name)
    assert "Northwind Traders" == alice.account_name
    assert probe.account_id("Northwind Traders") == alice.account_id
    assert probe.owner_id("jonas.weber@example.com") == alice.account_owner_id
    assert probe.owner_id("jonas.weber@example.com") == alice.owner_id
    assert "+12125551000" == alice.phone


def test_crm_opt_outs_are_reported_not_hidden(crm_under_test: CrmUnderTest) -> None:
    by_email = {c.email: c for c in pull(crm_under_test, crm_under_test.audience_all) if c.email}
    email_out = next(r["email"] for r in SEED_CONTACTS if r["email_opt_out"] == "true")
    sms_out = next(r["email"] for r in SEED_CONTACTS if r["sms_opt_out"] == "true")
    assert (True, False) == (by_email[email_out].email_opt_out, by_email[email_out].sms_opt_out)
    assert (False, True) == (by_email[sms_out].email_opt_out, by_email[sms_out].sms_opt_out)
    assert 2 == sum(1 for c in by_email.values() if c.email_opt_out or c.sms_opt_out)


def test_get_contacts_leaves_out_unknown_ids(crm_under_test: CrmUnderTest) -> None:
    alice_id = crm_under_test.probe.contact_id("alice.smith@northwind.example")
    found = crm_under_test.crm.get_contacts([alice_id, "does-not-exist-000"])
    assert [alice_id] == list(found)


def test_contact_fields_are_written_back(crm_under_test: CrmUnderTest) -> None:
    probe = crm_under_test.probe
    alice = probe.contact_id("alice.smith@northwind.example")
    bob = probe.contact_id("bob.jones@contoso.example")
    when = datetime(2026, 11, 20, 14, 30, tzinfo=timezone.utc)
    result = crm_under_test.crm.update_contacts(
        [
            ContactUpdate(
                alice, {"score": 9, "category": "promoter", "comment": "Great – danke!", "responded_at": when}
            ),
            ContactUpdate(bob, {"score": 3, "category": "detractor", "surveyed_at": when}),
        ]
    )
    assert (sorted([alice, bob]), ()) == (sorted(result.succeeded), result.failed)
    assert ("9", "promoter", "Great – danke!") == (
        probe.contact_value(alice, "score"),
        probe.contact_value(alice, "category"),
        probe.contact_value(alice, "comment"),
    )
    assert ("3", "detractor") == (probe.contact_value(bob, "score"), probe.contact_value(bob, "category"))
    responded = probe.contact_value(alice, "responded_at")
    assert responded is not None and responded.startswith("2026-11-20")


def test_opt_out_flag_is_written_back(crm_under_test: CrmUnderTest) -> None:
    probe = crm_under_test.probe
    carla = probe.contact_id("carla.brown@fabrikam.example")
    result = crm_under_test.crm.update_contacts([ContactUpdate(carla, {"sms_opt_out": True})])
    assert (carla,) == result.succeeded
    assert "true" == probe.contact_value(carla, "sms_opt_out")


def test_one_bad_record_does_not_fail_the_batch(crm_under_test: CrmUnderTest) -> None:
    probe = crm_under_test.probe
    alice = probe.contact_id("alice.smith@northwind.example")
    missing = probe.missing_contact_id()
    result = crm_under_test.crm.update_contacts(
        [ContactUpdate(missing, {"score": 5}), ContactUpdate(alice, {"score": 8})]
    )
    assert (alice,) == result.succeeded
    assert [missing] == [f.record_id for f in result.failed]
    assert "8" == probe.contact_value(alice, "score")


def test_account_roll_up_is_written(crm_under_test: CrmUnderTest) -> None:
    probe = crm_under_test.probe
    northwind = probe.account_id("Northwind Traders")
    result = crm_under_test.crm.update_accounts(
        [AccountUpdate(northwind, nps=33.3, responses=3, promoters=2, passives=0, detractors=1)]
    )
    assert (northwind,) == result.succeeded
    nps = probe.account_value(northwind, "nps")
    assert nps is not None and 33.3 == pytest.approx(float(nps), abs=0.05)
    assert "3" == probe.account_value(northwind, "responses")


def test_tasks_are_created_once_with_owner_account_and_due_date(crm_under_test: CrmUnderTest) -> None:
    probe = crm_under_test.probe
    crm = crm_under_test.crm
    alice = crm.get_contacts([probe.contact_id("alice.smith@northwind.example")])
    contact = next(iter(alice.values()))
    spec = TaskSpec(
        key="nps:contract:1",
        contact_id=contact.id,
        account_id=contact.account_id,
        owner_id=contact.account_owner_id,
        subject="Call Alice Smith: NPS 3",
        body="Score 3. Comment: too slow.",
        due=date(2026, 11, 24),
        priority="high",
        type="call",
    )
    first = crm.create_tasks([spec])
    assert 1 == len(first) and first[0].task_id and not first[0].existed
    again = crm.create_tasks([spec])
    assert (first[0].task_id, True) == (again[0].task_id, again[0].existed)
    tasks = [t for t in probe.tasks() if t.key == "nps:contract:1"]
    assert 1 == len(tasks)
    task = tasks[0]
    assert (contact.id, contact.account_id, contact.account_owner_id) == (
        task.contact_id,
        task.account_id,
        task.owner_id,
    )
    assert (date(2026, 11, 24), "high", False) == (task.due, task.priority, task.completed)
    assert "Call Alice Smith: NPS 3" == task.subject


def test_task_state_follows_the_crm(crm_under_test: CrmUnderTest) -> None:
    crm = crm_under_test.crm
    probe = crm_under_test.probe
    contact_id = probe.contact_id("bob.jones@contoso.example")
    contact = crm.get_contacts([contact_id])[contact_id]
    specs = [
        TaskSpec(
            f"nps:contract:state:{i}",
            contact.id,
            contact.account_id,
            contact.account_owner_id,
            f"Task {i}",
            "",
            date(2026, 11, 25),
        )
        for i in range(3)
    ]
    ids = [r.task_id for r in crm.create_tasks(specs)]
    assert all(ids)
    probe.complete_task(ids[1])  # type: ignore[arg-type]
    states = crm.get_tasks([i for i in ids if i])
    assert [False, True, False] == [states[i].completed for i in ids if i]  # type: ignore[index]
    assert states[ids[0]].overdue(date(2026, 11, 26)) and not states[ids[0]].overdue(date(2026, 11, 25))  # type: ignore[index]


def test_owners_are_found_with_their_managers(crm_under_test: CrmUnderTest) -> None:
    crm = crm_under_test.crm
    probe = crm_under_test.probe
    jonas = crm.find_owner("jonas.weber@example.com")
    assert jonas is not None
    assert probe.owner_id("jonas.weber@example.com") == jonas.id
    assert probe.owner_id("maria.lopez@example.com") == jonas.manager_id
    assert crm.find_owner("nobody@example.com") is None
    owners = crm.get_owners([jonas.id])
    assert "Jonas Weber" == owners[jonas.id].name


def test_setup_check_passes_on_a_prepared_crm(crm_under_test: CrmUnderTest) -> None:
    assert [] == crm_under_test.crm.check(online=True)


def test_notes_are_added_once_by_key_and_refused_for_an_unknown_contact(crm_under_test: CrmUnderTest) -> None:
    from nps_sync.errors import PermanentError

    crm = crm_under_test.crm
    probe = crm_under_test.probe
    alice = probe.contact_id("alice.smith@northwind.example")
    title = "NPS testimonial: consent to publish"
    body = 'Quote: "Fast & friendly <3"\nShown as: Alice Smith, Ops Manager'
    first = crm.add_note("nps:testimonial:contract:consent", alice, title, body)
    again = crm.add_note("nps:testimonial:contract:consent", alice, title, body)
    assert first and first == again
    other = crm.add_note(
        "nps:testimonial:contract:withdrawn", alice, "NPS testimonial: consent withdrawn", "-"
    )
    assert other and other != first
    with pytest.raises(PermanentError):
        crm.add_note("nps:testimonial:contract:missing", probe.missing_contact_id(), title, body)
