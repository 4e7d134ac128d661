"""Audience, write-back, tasks and owners as a Salesforce admin would see them in the org."""

from __future__ import annotations

from datetime import date

import pytest

from nps_sync.errors import ConfigError, PermanentError
from nps_sync.models import AccountUpdate, Audience, ContactUpdate, TaskSpec
from tests.connectors.salesforce.fixtures import MakeCrm, SalesforceProbe
from tests.emulators.salesforce import SalesforceEmulator


def _pull(crm: object, table: dict[str, object], *extra: str) -> list:  # type: ignore[type-arg]
    audience = Audience(program="p", filter=table, channel="email", extra_fields=extra)
    return [c for page in crm.iter_audience(audience) for c in page]  # type: ignore[attr-defined]


def test_audience_filters_on_relationship_fields_and_copies_extra_fields(
    make_salesforce_crm: MakeCrm,
) -> None:
    crm = make_salesforce_crm()

    contacts = _pull(
        crm, {"soql_where": "Account.Type = 'Partner' AND Title = 'CTO'"}, "Title", "Account.Plan__c"
    )

    assert ["hannah.moore@stark.example", "rosa.hall@stark.example"] == sorted(c.email for c in contacts)
    assert [{"Title": "CTO", "Account.Plan__c": "enterprise"}] == [dict(c.fields) for c in contacts[:1]]


def test_blank_contact_owner_in_the_seed_means_the_account_owner(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    probe = SalesforceProbe(salesforce_emulator)
    crm = make_salesforce_crm()
    bob = crm.get_contacts([probe.contact_id("bob.jones@contoso.example")])
    kenji = crm.get_contacts([probe.contact_id("not-an-email")])

    assert [(probe.owner_id("priya.shah@example.com"),) * 2] == [
        (c.owner_id, c.account_owner_id) for c in bob.values()
    ]
    assert [(probe.owner_id("maria.lopez@example.com"), probe.owner_id("jonas.weber@example.com"))] == [
        (c.owner_id, c.account_owner_id) for c in kenji.values()
    ]


def test_do_not_call_marks_a_contact_sms_opted_out(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    probe = SalesforceProbe(salesforce_emulator)
    alice = probe.contact_id("alice.smith@northwind.example")
    salesforce_emulator.org.update("Contact", alice, {"DoNotCall": True})
    crm = make_salesforce_crm()

    (contact,) = _pull(crm, {"soql_where": "Email = 'alice.smith@northwind.example'"})

    assert (False, True) == (contact.email_opt_out, contact.sms_opt_out)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [("Germany", "DE"), ("de", "DE"), ("United States", "US"), ("Atlantis", "Atlantis")],
)
def test_mailing_country_names_become_iso_codes(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm, stored: str, expected: str
) -> None:
    alice = SalesforceProbe(salesforce_emulator).contact_id("alice.smith@northwind.example")
    salesforce_emulator.org.update("Contact", alice, {"MailingCountry": stored})

    assert expected == make_salesforce_crm().get_contacts([alice])[alice].country


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"soql_where": "Email != null LIMIT 5"}, "no LIMIT"),
        ({"soql_where": "(Account.Type = 'Customer'"}, "unbalanced parentheses"),
        ({"soql_where": "LastName = 'O"}, "unterminated string"),
        ({"page_size": 100}, "greater than or equal to 200"),
        ({"list_id": "7"}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_audience_table_is_a_config_error(
    make_salesforce_crm: MakeCrm, table: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _pull(make_salesforce_crm(), table)


def test_values_in_soql_are_escaped(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    crm = make_salesforce_crm()

    assert crm.find_owner("x' OR Username != 'y") is None
    assert crm.find_owner("%") is None
    assert {} == crm.get_contacts(["003' OR Id != '"])
    # Every query ran (exact match, then the username prefix): none was refused as malformed, and the
    # id that is not an id never reached Salesforce.
    assert {"token": 1, "query": 4} == salesforce_emulator.call_counts()


def test_find_owner_by_username_email_or_unambiguous_short_name(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    probe = SalesforceProbe(salesforce_emulator)
    crm = make_salesforce_crm()
    tom = probe.owner_id("tom.becker@example.com")
    salesforce_emulator.org.update("User", probe.owner_id("sam.carter@example.com"), {"IsActive": False})

    found = [crm.find_owner(q) for q in ("tbecker@example.com", "tom.becker@example.com", "tbecker")]

    assert [tom, tom, tom] == [o.id if o else None for o in found]
    assert crm.find_owner("scarter") is None  # inactive
    assert probe.owner_id("sam.carter@example.com") == crm.get_owners([tom])[tom].manager_id


def test_a_raw_field_a_playbook_names_is_written_and_an_unknown_one_fails_only_its_record(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    probe = SalesforceProbe(salesforce_emulator)
    alice, bob = (
        probe.contact_id("alice.smith@northwind.example"),
        probe.contact_id("bob.jones@contoso.example"),
    )
    crm = make_salesforce_crm()

    result = crm.update_contacts(
        [ContactUpdate(alice, {"Title": "VP Ops", "score": "8"}), ContactUpdate(bob, {"Shoe_Size__c": 44})]
    )

    assert (alice,) == result.succeeded
    assert [(bob, False)] == [(f.record_id, f.transient) for f in result.failed]
    assert "Contact has no field 'Shoe_Size__c'" in result.failed[0].reason
    assert ("VP Ops", "8") == (probe.contact_value(alice, "Title"), probe.contact_value(alice, "score"))
    assert 1 == salesforce_emulator.call_counts()["collections_update"]


def test_a_value_of_the_wrong_type_fails_only_its_record(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    probe = SalesforceProbe(salesforce_emulator)
    alice, bob = (
        probe.contact_id("alice.smith@northwind.example"),
        probe.contact_id("bob.jones@contoso.example"),
    )

    result = make_salesforce_crm().update_contacts(
        [ContactUpdate(alice, {"score": "nine"}), ContactUpdate(bob, {"email_opt_out": True})]
    )

    assert ((bob,), [alice]) == (result.succeeded, [f.record_id for f in result.failed])
    assert "Contact.NPS_Score__c: expected a number, got: 'nine'" == result.failed[0].reason
    assert "true" == probe.contact_value(bob, "email_opt_out")


def test_account_roll_up_can_be_cleared_and_writes_optional_counts(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    probe = SalesforceProbe(salesforce_emulator)
    northwind = probe.account_id("Northwind Traders")
    crm = make_salesforce_crm(account_fields={"promoters": "Plan__c"})

    crm.update_accounts([AccountUpdate(northwind, nps=50.0, responses=4, promoters=3)])
    assert ("50", "4", "3") == tuple(
        probe.account_value(northwind, k) for k in ("nps", "responses", "Plan__c")
    )
    crm.update_accounts([AccountUpdate(northwind, nps=None, responses=0)])
    assert (None, "0") == (probe.account_value(northwind, "nps"), probe.account_value(northwind, "responses"))


def test_tasks_carry_what_an_account_manager_needs(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    probe = SalesforceProbe(salesforce_emulator)
    carla = probe.contact_id("carla.brown@fabrikam.example")
    crm = make_salesforce_crm()
    specs = [
        TaskSpec(
            "k:call",
            carla,
            probe.account_id("Fabrikam GmbH"),
            probe.owner_id("tom.becker@example.com"),
            "Call Carla",
            "NPS 2",
            date(2026, 12, 2),
            "high",
            "call",
        ),
        TaskSpec("k:todo", carla, None, None, "Read comment", "", date(2026, 12, 3), "low", "todo"),
    ]

    results = crm.create_tasks(specs)

    tasks = {t["NPS_Task_Key__c"]: t for t in salesforce_emulator.org.records["Task"].values()}
    call, todo = tasks["k:call"], tasks["k:todo"]
    assert ("Call", "High", "Not Started", "NPS 2") == (
        call["TaskSubtype"],
        call["Priority"],
        call["Status"],
        call["Description"],
    )
    assert ("Task", "Low", None, date(2026, 12, 3)) == (
        todo["TaskSubtype"],
        todo["Priority"],
        todo["WhatId"],
        todo["ActivityDate"],
    )
    assert [call["Id"], todo["Id"]] == [r.task_id for r in results]


def test_a_refused_task_is_reported_and_the_others_created(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    probe = SalesforceProbe(salesforce_emulator)
    carla = probe.contact_id("carla.brown@fabrikam.example")
    inactive = probe.owner_id("sam.carter@example.com")
    salesforce_emulator.org.update("User", inactive, {"IsActive": False})
    specs = [
        TaskSpec("k:1", carla, None, inactive, "a", "", date(2026, 12, 2)),
        TaskSpec("k:2", carla, None, None, "b", "", date(2026, 12, 2)),
    ]

    results = make_salesforce_crm().create_tasks(specs)

    assert [False, True] == [r.task_id is not None for r in results]
    assert "INACTIVE_OWNER_OR_USER" in (results[0].error or "")
    assert not results[0].transient


def test_task_states_are_read_200_ids_a_query(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    carla = SalesforceProbe(salesforce_emulator).contact_id("carla.brown@fabrikam.example")
    crm = make_salesforce_crm()
    ids = [
        r.task_id
        for r in crm.create_tasks(
            [TaskSpec(f"k:{i}", carla, None, None, "s", "", date(2026, 12, 2)) for i in range(450)]
        )
    ]
    salesforce_emulator.reset_counts()

    states = crm.get_tasks([i for i in ids if i])

    assert 450 == len(states)
    assert {"query": 3} == salesforce_emulator.call_counts()


def test_long_task_keys_are_looked_up_in_urls_salesforce_accepts(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    carla = SalesforceProbe(salesforce_emulator).contact_id("carla.brown@fabrikam.example")
    crm = make_salesforce_crm()
    specs = [
        TaskSpec(f"nps:'quarterly':{i:04d}:" + "x" * 55, carla, None, None, "s", "", date(2026, 12, 2))
        for i in range(200)
    ]

    results = crm.create_tasks(specs)

    assert 200 == sum(r.task_id is not None for r in results)
    # 200 keys of 76 characters would make a 23 KB URL: the lookup is split in two.
    assert (2, 1) == (
        salesforce_emulator.call_counts()["query"],
        salesforce_emulator.call_counts()["collections_create"],
    )


def test_extra_fields_must_be_api_names(make_salesforce_crm: MakeCrm) -> None:
    with pytest.raises(ConfigError, match="extra fields must be Salesforce API names"):
        _pull(make_salesforce_crm(), {}, "Title FROM User --")


def test_pages_smaller_than_asked_for_are_followed_to_the_end(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    salesforce_emulator.add_contacts(950)
    salesforce_emulator.rest.server_page_cap = 300  # the server may return fewer records than asked
    crm = make_salesforce_crm()

    pages = list(crm.iter_audience(Audience(program="p", filter={}, channel="email")))

    assert [300, 300, 300, 100] == [len(p) for p in pages]
    assert 1000 == len({c.id for p in pages for c in p})


def test_a_soql_where_salesforce_refuses_names_the_program(make_salesforce_crm: MakeCrm) -> None:
    with pytest.raises(PermanentError, match=r"program 'p': audience soql_where .*INVALID_FIELD.*Plan__c"):
        _pull(make_salesforce_crm(), {"soql_where": "Plan__c = 'pro'"})


def test_first_try_tasks_are_created_without_a_key_lookup(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    carla = SalesforceProbe(salesforce_emulator).contact_id("carla.brown@fabrikam.example")
    crm = make_salesforce_crm()
    crm.create_tasks([TaskSpec("k:warm-up", carla, None, None, "s", "", date(2026, 12, 2))])
    first = [
        TaskSpec(f"k:{i}", carla, None, None, "s", "", date(2026, 12, 2), recheck=False) for i in range(250)
    ]
    salesforce_emulator.reset_counts()

    created = crm.create_tasks(first)

    assert 250 == sum(r.task_id is not None and not r.existed for r in created)
    assert {"collections_create": 2} == salesforce_emulator.call_counts()

    # A retry (recheck) of ten of them and a new one: one look-up finds the ten, one create makes one.
    salesforce_emulator.reset_counts()
    again = crm.create_tasks(
        [TaskSpec(s.key, carla, None, None, "s", "", s.due) for s in first[:10]]
        + [TaskSpec("k:new", carla, None, None, "s", "", date(2026, 12, 2))]
    )

    assert [r.task_id for r in created[:10]] == [r.task_id for r in again[:10] if r.existed]
    assert not again[10].existed and again[10].task_id
    assert {"query": 1, "collections_create": 1} == salesforce_emulator.call_counts()
    assert 252 == len(salesforce_emulator.org.records["Task"])
