"""Call budgets at volume: 25,000 contacts pulled and written back with the fewest calls the API allows."""

from __future__ import annotations

import math

from nps_sync.models import Audience, ContactUpdate
from tests.connectors.salesforce.fixtures import MakeCrm
from tests.emulators.salesforce import SalesforceEmulator, ValidationRule

N = 25_000


def _audience() -> Audience:
    return Audience(program="volume", filter={}, channel="email")


def test_25000_contacts_are_pulled_in_ceil_n_over_2000_queries_and_written_in_ceil_n_over_200_calls(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    salesforce_emulator.add_contacts(N - len(salesforce_emulator.org.records["Contact"]))
    crm = make_salesforce_crm(bulk_query_threshold=N, bulk_write_threshold=N)

    pages = list(crm.iter_audience(_audience()))
    contacts = [c for page in pages for c in page]
    counts = salesforce_emulator.call_counts()
    assert N == len({c.id for c in contacts}) == len(contacts)
    assert math.ceil(N / 2000) == counts["query"] + counts["queryMore"]
    assert {"token": 1, "describe": 1, "query": 1, "queryMore": math.ceil(N / 2000) - 1} == counts

    salesforce_emulator.reset_counts()
    result = crm.update_contacts(
        [ContactUpdate(c.id, {"score": 9, "category": "promoter"}) for c in contacts]
    )
    assert (N, ()) == (len(result.succeeded), result.failed)
    assert {"collections_update": math.ceil(N / 200)} == salesforce_emulator.call_counts()
    scores = {r["NPS_Score__c"] for r in salesforce_emulator.org.records["Contact"].values()}
    assert {9.0} == scores


def test_audiences_above_the_threshold_are_read_through_bulk_api_2(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    salesforce_emulator.add_contacts(4950)
    crm = make_salesforce_crm(bulk_query_threshold=1000, bulk_page_size=2000)

    contacts = [c for page in crm.iter_audience(_audience()) for c in page]

    assert 5000 == len({c.id for c in contacts}) == len(contacts)
    assert {
        "token": 1,
        "describe": 1,
        "query": 1,  # the first REST page tells the size; nothing else runs on the REST path
        "bulk_query_create": 1,
        "bulk_query_status": 1,
        "bulk_query_results": 3,
    } == salesforce_emulator.call_counts()
    alice = next(c for c in contacts if c.email == "alice.smith@northwind.example")
    assert ("Northwind Traders", "US", "en") == (alice.account_name, alice.country, alice.locale)
    assert alice.account_owner_id == alice.owner_id is not None


def test_write_backs_above_the_threshold_use_one_bulk_ingest_job(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    ids = salesforce_emulator.add_contacts(1200)
    crm = make_salesforce_crm(bulk_write_threshold=1000)

    result = crm.update_contacts([ContactUpdate(i, {"score": 4, "comment": None}) for i in ids])

    assert (1200, ()) == (len(result.succeeded), result.failed)
    assert {
        "token": 1,
        "describe": 1,
        "bulk_ingest_create": 1,
        "bulk_ingest_upload": 1,
        "bulk_ingest_state": 1,
        "bulk_ingest_status": 2,  # one poll, and the SDK's final read of the job
    } == salesforce_emulator.call_counts()
    assert {4.0} == {salesforce_emulator.org.records["Contact"][i]["NPS_Score__c"] for i in ids}


def test_bulk_ingest_reports_each_failed_row(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    ids = salesforce_emulator.add_contacts(30)
    salesforce_emulator.org.validation_rules.append(
        ValidationRule("Contact", lambda r: r["LastName"] == "Contact000007", "Score locked for this contact")
    )
    crm = make_salesforce_crm(bulk_write_threshold=10)

    result = crm.update_contacts([ContactUpdate(i, {"score": 10}) for i in ids])

    assert 29 == len(result.succeeded)
    assert [(ids[7], False)] == [(f.record_id, f.transient) for f in result.failed]
    assert "FIELD_CUSTOM_VALIDATION_EXCEPTION" in result.failed[0].reason
    assert 1 == salesforce_emulator.call_counts()["bulk_ingest_results"]


def test_an_audience_read_through_bulk_last_time_goes_straight_to_bulk(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    """The daily wave over a large audience: its size is remembered in the state database, so the
    REST page that only told it is read on the first pull alone."""
    salesforce_emulator.add_contacts(4950)
    crm = make_salesforce_crm(bulk_query_threshold=1000, bulk_page_size=2000)
    assert 5000 == len([c for page in crm.iter_audience(_audience()) for c in page])
    salesforce_emulator.reset_counts()

    again = make_salesforce_crm(bulk_query_threshold=1000, bulk_page_size=2000)  # a restarted daemon
    contacts = [c for page in again.iter_audience(_audience()) for c in page]

    assert 5000 == len({c.id for c in contacts}) == len(contacts)
    assert {
        "token": 1,
        "describe": 1,
        "bulk_query_create": 1,
        "bulk_query_status": 1,
        "bulk_query_results": 3,
    } == salesforce_emulator.call_counts()


def test_an_audience_that_shrank_below_the_threshold_goes_back_to_rest_on_the_next_pull(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    ids = salesforce_emulator.add_contacts(1200)
    crm = make_salesforce_crm(bulk_query_threshold=1000, bulk_page_size=2000)
    assert 1250 == len([c for page in crm.iter_audience(_audience()) for c in page])
    for contact_id in ids[:300]:
        del salesforce_emulator.org.records["Contact"][contact_id]
    salesforce_emulator.reset_counts()

    shrunk = [c for page in crm.iter_audience(_audience()) for c in page]  # Bulk, by the last size
    after = salesforce_emulator.call_counts()
    salesforce_emulator.reset_counts()
    rest = [c for page in crm.iter_audience(_audience()) for c in page]

    assert (950, 950) == (len(shrunk), len(rest))
    assert {"bulk_query_create": 1, "bulk_query_status": 1, "bulk_query_results": 1} == after
    assert {"query": 1} == salesforce_emulator.call_counts()


def test_each_audience_condition_has_its_own_remembered_size(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    salesforce_emulator.add_contacts(1200)
    crm = make_salesforce_crm(bulk_query_threshold=1000, bulk_page_size=2000)
    assert 1250 == len([c for page in crm.iter_audience(_audience()) for c in page])
    salesforce_emulator.reset_counts()

    fabrikam = Audience(
        program="volume", filter={"soql_where": "Account.Name = 'Fabrikam GmbH'"}, channel="email"
    )
    found = [c for page in crm.iter_audience(fabrikam) for c in page]

    assert found and {"Fabrikam GmbH"} == {c.account_name for c in found}
    assert {"query": 1} == salesforce_emulator.call_counts()  # REST: this condition was never pulled
