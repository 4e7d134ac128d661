"""Expired sessions, the daily API allowance, per-record errors and lost answers: work ends complete or
resumable, with nothing lost or duplicated."""

from __future__ import annotations

import time
from datetime import date

import pytest
import time_machine
from structlog.testing import capture_logs

from nps_sync.errors import ConnectorUnavailable, RateLimited
from nps_sync.models import Audience, ContactUpdate, TaskSpec
from tests.connectors.salesforce.fixtures import MakeCrm, SalesforceProbe
from tests.emulators.salesforce import SalesforceEmulator, ValidationRule


def _audience() -> Audience:
    return Audience(program="resilience", filter={"page_size": 500}, channel="email")


def _specs(contact_id: str, count: int, prefix: str = "nps:t") -> list[TaskSpec]:
    return [
        TaskSpec(f"{prefix}:{i}", contact_id, None, None, f"Follow up {i}", "body", date(2026, 12, 1))
        for i in range(count)
    ]


def test_a_session_that_expires_mid_pull_is_renewed_and_the_page_read_again(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    salesforce_emulator.add_contacts(1450)  # 1,500 contacts: 3 pages of 500
    crm = make_salesforce_crm()
    pages = crm.iter_audience(_audience())

    first = next(pages)
    salesforce_emulator.expire_sessions()
    rest = [c for page in pages for c in page]

    ids = [c.id for c in [*first, *rest]]
    assert 1500 == len(ids) == len(set(ids))
    counts = salesforce_emulator.call_counts()
    # queryMore: 2 pages + the one refused with INVALID_SESSION_ID and repeated after a new login.
    assert (2, 1, 3) == (counts["token"], counts["query"], counts["queryMore"])


def test_a_session_that_expires_during_a_bulk_query_restarts_the_job_without_duplicates(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    salesforce_emulator.add_contacts(2950)
    crm = make_salesforce_crm(bulk_query_threshold=100, bulk_page_size=1000)
    pages = crm.iter_audience(Audience(program="bulk", filter={}, channel="email"))

    seen = [c.id for c in next(pages)]
    salesforce_emulator.expire_sessions()
    seen += [c.id for page in pages for c in page]

    assert 3000 == len(seen) == len(set(seen))
    assert (2, 2) == (
        salesforce_emulator.call_counts()["token"],
        salesforce_emulator.call_counts()["bulk_query_create"],
    )


def test_request_limit_exceeded_pauses_with_one_log_line_and_the_retry_writes_everything_once(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    ids = salesforce_emulator.add_contacts(1000)
    crm = make_salesforce_crm(limit_pause="30m")
    salesforce_emulator.daily_allowance = 3  # describe + 2 of the 5 Collections calls
    updates = [ContactUpdate(i, {"score": 7}) for i in ids]

    with capture_logs() as logs, pytest.raises(RateLimited) as refused:
        crm.update_contacts(updates)
    assert 1800.0 == refused.value.retry_after
    assert ["salesforce.paused"] == [e["event"] for e in logs if e["log_level"] == "warning"]

    before = salesforce_emulator.call_counts()
    with pytest.raises(RateLimited):
        crm.update_contacts(updates)
    assert before == salesforce_emulator.call_counts()  # paused: not even one call

    salesforce_emulator.reset_api_usage()
    salesforce_emulator.daily_allowance = 100_000
    with time_machine.travel(time.time() + 1801, tick=True):
        result = crm.update_contacts(updates)
    assert (1000, ()) == (len(result.succeeded), result.failed)
    assert {7.0} == {salesforce_emulator.org.records["Contact"][i]["NPS_Score__c"] for i in ids}
    assert 3 + 5 == salesforce_emulator.call_counts()["collections_update"]


def test_new_work_stops_at_the_configured_share_of_the_daily_allowance(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    crm = make_salesforce_crm(limit_share=0.5)
    salesforce_emulator.daily_allowance = 10
    salesforce_emulator.api_used = 4
    alice = SalesforceProbe(salesforce_emulator).contact_id("alice.smith@northwind.example")

    crm.update_contacts([ContactUpdate(alice, {"score": 9})])  # ends at 6/10 used
    with pytest.raises(RateLimited) as refused:
        crm.update_contacts([ContactUpdate(alice, {"score": 10})])

    assert 3600.0 == refused.value.retry_after
    assert {"token": 1, "describe": 1, "collections_update": 1} == salesforce_emulator.call_counts()


def test_a_validation_rule_fails_only_its_records_and_permanently(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    ids = salesforce_emulator.add_contacts(450)
    bad = {ids[3], ids[250], ids[449]}
    salesforce_emulator.org.validation_rules.append(
        ValidationRule(
            "Contact", lambda r: r["Id"] in bad, "Comment required for detractors", "NPS_Comment__c"
        )
    )
    crm = make_salesforce_crm()

    result = crm.update_contacts([ContactUpdate(i, {"score": 2, "category": "detractor"}) for i in ids])

    assert 447 == len(result.succeeded)
    assert (bad, {False}) == ({f.record_id for f in result.failed}, {f.transient for f in result.failed})
    assert all("Comment required for detractors" in f.reason for f in result.failed)
    assert 3 == salesforce_emulator.call_counts()["collections_update"]


def test_a_locked_row_is_a_transient_failure(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    probe = SalesforceProbe(salesforce_emulator)
    alice, bob = (
        probe.contact_id("alice.smith@northwind.example"),
        probe.contact_id("bob.jones@contoso.example"),
    )
    salesforce_emulator.lock_rows([bob])
    crm = make_salesforce_crm()

    result = crm.update_contacts([ContactUpdate(alice, {"score": 9}), ContactUpdate(bob, {"score": 1})])

    assert (alice,) == result.succeeded
    assert [(bob, True)] == [(f.record_id, f.transient) for f in result.failed]
    assert "UNABLE_TO_LOCK_ROW" in result.failed[0].reason


def test_task_creation_whose_answer_is_lost_finds_the_tasks_by_key_instead_of_duplicating(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    probe = SalesforceProbe(salesforce_emulator)
    contact = probe.contact_id("carla.brown@fabrikam.example")
    crm = make_salesforce_crm()
    specs = _specs(contact, 250)
    salesforce_emulator.drop_next_response("collections_create")

    first = crm.create_tasks(specs)
    again = crm.create_tasks(specs)

    assert 250 == len(probe.tasks()) == len({t.key for t in probe.tasks()})
    assert [r.task_id for r in first] == [r.task_id for r in again]
    assert all(r.existed for r in again)
    counts = salesforce_emulator.call_counts()
    # Lookup per 200 keys (2 + 2), two creates, and one reconciling lookup for the lost batch.
    assert (2, 5) == (counts["collections_create"], counts["query"])


def test_tasks_created_before_a_limit_stop_are_found_not_recreated(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    probe = SalesforceProbe(salesforce_emulator)
    contact = probe.contact_id("carla.brown@fabrikam.example")
    crm = make_salesforce_crm(limit_pause="1m")
    salesforce_emulator.daily_allowance = 5  # 3 lookups + 2 of the 3 creates
    specs = _specs(contact, 600, prefix="nps:limit")

    with pytest.raises(RateLimited):
        crm.create_tasks(specs)
    assert 400 == len(probe.tasks())

    salesforce_emulator.reset_api_usage()
    with time_machine.travel(time.time() + 61, tick=True):
        results = crm.create_tasks(specs)

    assert 600 == len(probe.tasks()) == len({t.key for t in probe.tasks()})
    assert (400, 200) == (sum(r.existed for r in results), sum(not r.existed for r in results))


def test_request_limit_exceeded_mid_pull_is_rate_limited_and_a_later_pull_is_complete(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    salesforce_emulator.add_contacts(1450)
    crm = make_salesforce_crm(limit_pause="10m")
    salesforce_emulator.daily_allowance = 3  # describe + 2 of the 3 pages
    pages = crm.iter_audience(_audience())

    read = [c for page in [next(pages), next(pages)] for c in page]
    with pytest.raises(RateLimited) as refused:
        next(pages)
    assert (1000, 600.0) == (len(read), refused.value.retry_after)

    salesforce_emulator.reset_api_usage()
    with time_machine.travel(time.time() + 601, tick=True):
        again = [c.id for page in crm.iter_audience(_audience()) for c in page]
    assert 1500 == len(again) == len(set(again))


def test_a_5xx_on_a_read_is_retried_but_a_refused_create_is_not(
    salesforce_emulator: SalesforceEmulator, make_salesforce_crm: MakeCrm
) -> None:
    carla = SalesforceProbe(salesforce_emulator).contact_id("carla.brown@fabrikam.example")
    crm = make_salesforce_crm()
    specs = _specs(carla, 3, prefix="nps:5xx")
    salesforce_emulator.fail_next_response("collections_create")

    with pytest.raises(ConnectorUnavailable, match="HTTP 503"):
        crm.create_tasks(specs)
    assert 1 == salesforce_emulator.call_counts()["collections_create"]

    salesforce_emulator.fail_next_response("query")
    results = crm.create_tasks(specs)
    assert 3 == sum(r.task_id is not None and not r.existed for r in results)
    counts = salesforce_emulator.call_counts()
    assert (2, 1 + 2) == (counts["collections_create"], counts["query"])  # the 503 lookup was repeated
