"""Follow-up tasks in HubSpot: associations, owner, due time, created once even across lost answers."""

from __future__ import annotations

import dataclasses
from datetime import date

from nps_sync.connectors.hubspot import HubSpotCrm
from nps_sync.models import TaskSpec
from tests.connectors.hubspot.fixtures import HubSpotProbe
from tests.emulators.hubspot import HubSpotEmulator


def specs_for(crm: HubSpotCrm, probe: HubSpotProbe, count: int, prefix: str = "nps:t") -> list[TaskSpec]:
    emails = ["alice.smith@northwind.example", "bob.jones@contoso.example", "carla.brown@fabrikam.example"]
    contacts = crm.get_contacts([probe.contact_id(e) for e in emails])
    people = list(contacts.values())
    return [
        TaskSpec(
            key=f"{prefix}:{n}",
            contact_id=people[n % 3].id,
            account_id=people[n % 3].account_id,
            owner_id=people[n % 3].owner_id or people[n % 3].account_owner_id,
            subject=f"Call back #{n}",
            body="Detractor follow-up",
            due=date(2026, 12, 1),
            priority="high" if n % 2 else "low",
            type="call",
        )
        for n in range(count)
    ]


def test_every_task_is_associated_with_contact_and_company_and_has_the_owner(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    probe = HubSpotProbe(hubspot_emulator)
    specs = specs_for(hubspot_crm, probe, 150)
    hubspot_emulator.reset_counts()
    results = hubspot_crm.create_tasks(specs)
    assert [s.key for s in specs] == [r.key for r in results]
    assert all(r.task_id and not r.existed and r.error is None for r in results)
    by_id = {t.id: t for t in probe.tasks()}
    for spec, result in zip(specs, results, strict=True):
        task = by_id[str(result.task_id)]
        assert (spec.key, spec.contact_id, spec.account_id, spec.owner_id) == (
            task.key,
            task.contact_id,
            task.account_id,
            task.owner_id,
        )
        associations = probe.task_associations(task.id)
        assert {spec.contact_id: {204}} == associations["contacts"]
        assert {str(spec.account_id): {192}} == associations["companies"]
    # 2 key lookups (100 keys each) and 2 batch creates (100 inputs each)
    assert {"tasks.search": 2, "tasks.batch_create": 2} == dict(hubspot_emulator.calls)


def test_task_fields_follow_hubspot_conventions(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    probe = HubSpotProbe(hubspot_emulator)
    spec = specs_for(hubspot_crm, probe, 2)[1]
    [result] = hubspot_crm.create_tasks([spec])
    props = hubspot_emulator.portal.objects["tasks"][str(result.task_id)].properties
    # 17:00 in Europe/Berlin (the daemon's zone in these tests) is 16:00 UTC in December
    assert {
        "hs_timestamp": "2026-12-01T16:00:00.000Z",
        "hs_task_priority": "HIGH",
        "hs_task_type": "CALL",
        "hs_task_status": "NOT_STARTED",
        "hs_task_subject": "Call back #1",
        "hs_task_body": "Detractor follow-up",
        "nps_task_key": "nps:t:1",
    } == {k: props[k] for k in ("hs_timestamp", "hs_task_priority", "hs_task_type", "hs_task_status",
                                "hs_task_subject", "hs_task_body", "nps_task_key")}  # fmt: skip


def test_a_repeated_create_finds_the_tasks_by_key_without_creating(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    specs = specs_for(hubspot_crm, HubSpotProbe(hubspot_emulator), 5)
    first = hubspot_crm.create_tasks(specs)
    hubspot_emulator.reset_counts()
    again = hubspot_crm.create_tasks(specs)
    assert [(r.task_id, True) for r in first] == [(r.task_id, r.existed) for r in again]
    assert {"tasks.search": 1} == dict(hubspot_emulator.calls)
    assert 5 == len(hubspot_emulator.portal.objects["tasks"])


def test_a_lost_create_answer_is_resolved_by_the_key_lookup_not_a_repeat(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    specs = specs_for(hubspot_crm, HubSpotProbe(hubspot_emulator), 3)
    hubspot_emulator.fail_next("tasks.batch_create", drop_response=True)
    hubspot_emulator.reset_counts()
    results = hubspot_crm.create_tasks(specs)
    stored = hubspot_emulator.portal.objects["tasks"]
    assert 3 == len(stored)
    assert sorted(stored) == sorted(str(r.task_id) for r in results)
    assert [True] * 3 == [r.existed for r in results]
    # lookup, the create whose answer was lost, then the lookup that found them
    assert {"tasks.search": 2, "tasks.batch_create": 1} == dict(hubspot_emulator.calls)


def test_a_task_without_account_is_associated_with_the_contact_only(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    probe = HubSpotProbe(hubspot_emulator)
    spec = specs_for(hubspot_crm, probe, 1)[0]
    lone = TaskSpec(spec.key, spec.contact_id, None, None, "s", "b", spec.due)
    [result] = hubspot_crm.create_tasks([lone])
    assert {"contacts": {spec.contact_id: {204}}} == probe.task_associations(str(result.task_id))
    assert None is hubspot_emulator.portal.objects["tasks"][str(result.task_id)].properties.get(
        "hubspot_owner_id"
    )


def test_a_task_refused_by_hubspot_fails_alone(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    specs = specs_for(hubspot_crm, HubSpotProbe(hubspot_emulator), 4)
    bad = TaskSpec("nps:t:bad", "99999999", None, None, "s", "b", specs[0].due)
    results = hubspot_crm.create_tasks([specs[0], bad, *specs[1:]])
    assert [True, False, True, True, True] == [r.task_id is not None for r in results]
    assert "99999999" in str(results[1].error)
    assert not results[1].transient
    assert 4 == len(hubspot_emulator.portal.objects["tasks"])


def test_task_state_reports_completion_and_due_date(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    probe = HubSpotProbe(hubspot_emulator)
    ids = [str(r.task_id) for r in hubspot_crm.create_tasks(specs_for(hubspot_crm, probe, 3))]
    probe.complete_task(ids[0])
    hubspot_emulator.reset_counts()
    states = hubspot_crm.get_tasks([*ids, "99999999"])
    assert [True, False, False] == [states[i].completed for i in ids]
    assert {date(2026, 12, 1)} == {s.due for s in states.values()}
    assert {"tasks.batch_read": 1} == dict(hubspot_emulator.calls)


def test_a_key_with_capitals_is_found_again(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    spec = specs_for(hubspot_crm, HubSpotProbe(hubspot_emulator), 1)[0]
    capital = TaskSpec("NPS:Q4:Alice", spec.contact_id, spec.account_id, spec.owner_id, "s", "b", spec.due)
    [first] = hubspot_crm.create_tasks([capital])
    [again] = hubspot_crm.create_tasks([capital])
    assert (first.task_id, True, 1) == (
        again.task_id,
        again.existed,
        len(hubspot_emulator.portal.objects["tasks"]),
    )


def test_a_task_for_an_unknown_owner_is_refused_alone(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    good = specs_for(hubspot_crm, HubSpotProbe(hubspot_emulator), 2)
    ghost = TaskSpec("nps:t:ghost", good[0].contact_id, good[0].account_id, "4242", "s", "b", good[0].due)
    results = hubspot_crm.create_tasks([*good, ghost])
    assert [True, True, False] == [r.task_id is not None for r in results]
    assert "4242 is not a valid owner id" in str(results[2].error)


def test_first_try_tasks_are_created_without_a_key_search(
    hubspot_emulator: HubSpotEmulator, hubspot_crm: HubSpotCrm
) -> None:
    specs = [
        dataclasses.replace(s, recheck=False)
        for s in specs_for(hubspot_crm, HubSpotProbe(hubspot_emulator), 150)
    ]
    hubspot_emulator.reset_counts()

    created = hubspot_crm.create_tasks(specs)

    assert 150 == sum(r.task_id is not None and not r.existed for r in created)
    assert {"tasks.batch_create": 2} == dict(hubspot_emulator.calls)

    # A retry (recheck) of five of them: one search finds them, nothing is created.
    hubspot_emulator.reset_counts()
    again = hubspot_crm.create_tasks([dataclasses.replace(s, recheck=True) for s in specs[:5]])

    assert [(r.task_id, True) for r in created[:5]] == [(r.task_id, r.existed) for r in again]
    assert {"tasks.search": 1} == dict(hubspot_emulator.calls)
    assert 150 == len(hubspot_emulator.portal.objects["tasks"])
