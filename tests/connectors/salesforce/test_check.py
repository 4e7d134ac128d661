"""``check`` tells the admin exactly which fields to create before a wave fails half-way."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from nps_sync.models import Audience
from tests.connectors.salesforce.fixtures import MakeCrm, credentials
from tests.emulators.salesforce import SalesforceEmulator


@pytest.fixture
def bare_emulator() -> Iterator[SalesforceEmulator]:
    """An org where nobody has created the NPS fields yet (apart from the standard ones)."""
    emulator = SalesforceEmulator(
        credentials=credentials(),
        omit_fields={
            "Contact": {"NPS_Score__c", "NPS_Category__c", "NPS_Locale__c"},
            "Account": {"NPS_Responses__c"},
            "Task": {"NPS_Task_Key__c"},
        },
    ).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def salesforce_emulator(bare_emulator: SalesforceEmulator) -> SalesforceEmulator:
    return bare_emulator


def test_check_lists_every_missing_field_with_the_definition_to_create(make_salesforce_crm: MakeCrm) -> None:
    crm = make_salesforce_crm()

    assert [
        "Contact.NPS_Score__c is missing: create Contact.NPS_Score__c as Number(2, 0) (score write-back)",
        "Contact.NPS_Category__c is missing: create Contact.NPS_Category__c as Picklist with values "
        "detractor, passive, promoter (category write-back)",
        "Account.NPS_Responses__c is missing: create Account.NPS_Responses__c as Number(8, 0) "
        "(account response count)",
        "Task.NPS_Task_Key__c is missing: create Task.NPS_Task_Key__c as Text(80), External ID, Unique "
        "(case sensitive) (task de-duplication key)",
        "Contact.NPS_Locale__c is missing: create Contact.NPS_Locale__c as Text(10) (survey language (read))",
    ] == crm.check(online=True)


def test_check_reports_a_field_of_the_wrong_type(make_salesforce_crm: MakeCrm) -> None:
    crm = make_salesforce_crm(
        contact_fields={"score": "Title", "category": "Title"},
        account_fields={"responses": "Name"},
        task_key_field="Subject",
        locale_field="",
    )

    assert [
        "Contact.Title has type 'string', expected one of ['currency', 'double', 'int', 'long', 'percent']: "
        "create Contact.Title as Number(2, 0) (score write-back)",
        "Account.Name has type 'string', expected one of ['currency', 'double', 'int', 'long', 'percent']: "
        "create Account.Name as Number(8, 0) (account response count)",
    ] == crm.check(online=True)


def test_offline_check_names_missing_secrets_without_calling_salesforce(
    make_salesforce_crm: MakeCrm, salesforce_emulator: SalesforceEmulator
) -> None:
    crm = make_salesforce_crm(auth="client_credentials", env={"SALESFORCE_CONSUMER_KEY": "k"})

    assert [
        "[crm.salesforce] auth = 'client_credentials' needs the consumer secret in secret "
        "SALESFORCE_CONSUMER_SECRET (environment variable or "
        "$CREDENTIALS_DIRECTORY/SALESFORCE_CONSUMER_SECRET)"
    ] == crm.check(online=False)
    assert {} == salesforce_emulator.call_counts()


def test_check_reports_refused_credentials(make_salesforce_crm: MakeCrm) -> None:
    crm = make_salesforce_crm(auth="password", env={"SALESFORCE_PASSWORD": "wrong"})

    problems = crm.check(online=True)

    assert 1 == len(problems)
    assert problems[0].startswith("Salesforce: Salesforce refused the password login at login: INVALID_LOGIN")


def test_a_missing_locale_field_reads_as_none_with_one_warning(make_salesforce_crm: MakeCrm) -> None:
    crm = make_salesforce_crm()

    with capture_logs() as logs:
        contacts = [c for page in crm.iter_audience(Audience("p", {}, "email")) for c in page]

    assert {None} == {c.locale for c in contacts}
    assert "Europe/Berlin" in {c.time_zone for c in contacts}
    assert [["NPS_Locale__c"]] == [
        e["fields"] for e in logs if e["event"] == "salesforce.optional_fields_missing"
    ]
