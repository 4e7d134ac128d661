"""The emulator rejects what Salesforce rejects and answers the way simple-salesforce expects."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import jwt
import pytest
import requests
from requests.adapters import HTTPAdapter
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
)
from simple_salesforce.login import SalesforceLogin

from tests.emulators.salesforce import SalesforceEmulator
from tests.emulators.salesforce.org import id18


class _ToEmulator(HTTPAdapter):
    def __init__(self, base: str) -> None:
        self.base = base
        super().__init__()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        request.url = self.base + request.path_url
        return super().send(request, **kwargs)


@pytest.fixture
def http(salesforce_emulator: SalesforceEmulator) -> Iterator[requests.Session]:
    session = requests.Session()
    session.mount("https://", _ToEmulator(salesforce_emulator.url))
    yield session
    session.close()


@pytest.fixture
def sf(salesforce_emulator: SalesforceEmulator, http: requests.Session) -> Salesforce:
    c = salesforce_emulator.credentials
    session_id, instance = SalesforceLogin(
        session=http, username=c.username, consumer_key=c.consumer_key, privatekey=c.private_key_pem
    )
    return Salesforce(session_id=session_id, instance=instance, session=http)


def _ids(sf: Salesforce, soql: str) -> list[str]:
    return [r["LastName"] for r in sf.query_all(soql)["records"]]


def test_ids_are_18_characters_with_salesforce_case_safe_suffix() -> None:
    assert "0015000000Gv7qJAAR" == id18("0015000000Gv7qJ")


def test_soql_where_supports_and_or_parentheses_in_like_null_and_order_limit(sf: Salesforce) -> None:
    soql = (
        "SELECT LastName FROM Contact WHERE (Account.Region__c = 'EMEA' OR Account.Type IN ('Partner')) "
        "AND LastName LIKE 'B%' AND Email != null ORDER BY LastName DESC LIMIT 5"
    )
    assert ["Brown", "Baker"] == _ids(sf, soql)


def test_soql_in_compares_strings_case_insensitively_as_salesforce_does(sf: Salesforce) -> None:
    listed = "SELECT LastName FROM Contact WHERE LastName IN ('brown', 'BAKER', 'nobody') ORDER BY LastName"
    assert ["Baker", "Brown"] == _ids(sf, listed)
    total = sf.query("SELECT COUNT() FROM Contact")["totalSize"]
    others = "SELECT COUNT() FROM Contact WHERE LastName NOT IN ('brown', 'BAKER')"
    assert total - 2 == sf.query(others)["totalSize"]
    within = "SELECT LastName FROM Contact WHERE LastName IN ('Brown') AND (Email IN ('x') OR Email != null)"
    assert ["Brown"] == _ids(sf, within)


def test_soql_count_and_date_literals(sf: Salesforce) -> None:
    assert 50 == sf.query("SELECT COUNT() FROM Contact")["totalSize"]
    assert 50 == sf.query("SELECT COUNT() FROM Contact WHERE CreatedDate = TODAY")["totalSize"]
    assert 0 == sf.query("SELECT COUNT() FROM Contact WHERE CreatedDate < LAST_N_DAYS:30")["totalSize"]
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    soql = f"SELECT COUNT() FROM Contact WHERE CreatedDate < {tomorrow}"  # noqa: S608 - test SOQL
    assert 50 == sf.query(soql)["totalSize"]


def test_soql_string_escapes_are_honoured(sf: Salesforce, salesforce_emulator: SalesforceEmulator) -> None:
    salesforce_emulator.add_contacts(1, LastName="O'Brien \\ Co")
    assert ["O'Brien \\ Co"] == _ids(sf, "SELECT LastName FROM Contact WHERE LastName = 'O\\'Brien \\\\ Co'")


def test_relationship_fields_come_back_nested(sf: Salesforce) -> None:
    record = sf.query(
        "SELECT Account.Owner.Email FROM Contact WHERE Email = 'alice.smith@northwind.example'"
    )["records"][0]
    assert "jonas.weber@example.com" == record["Account"]["Owner"]["Email"]


def test_unknown_fields_in_a_query_are_invalid_field(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as refused:
        sf.query("SELECT Id, Shoe_Size__c FROM Contact")
    assert "INVALID_FIELD" == refused.value.content[0]["errorCode"]


def test_query_pages_honour_the_batch_size_header(
    sf: Salesforce, salesforce_emulator: SalesforceEmulator
) -> None:
    salesforce_emulator.add_contacts(950)
    records = list(
        sf.query_all_iter("SELECT Id FROM Contact", headers={"Sforce-Query-Options": "batchSize=200"})
    )
    assert 1000 == len(records)
    assert {"query": 1, "queryMore": 4} == {
        k: v for k, v in salesforce_emulator.call_counts().items() if "query" in k
    }


def test_collections_refuse_more_than_200_records(sf: Salesforce) -> None:
    records = [{"attributes": {"type": "Contact"}, "LastName": f"X{i}"} for i in range(201)]
    with pytest.raises(SalesforceMalformedRequest) as refused:
        sf.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": records})
    assert "EXCEEDED_ID_LIMIT" == refused.value.content[0]["errorCode"]


def test_collections_refuse_unknown_fields_and_wrong_types(
    sf: Salesforce, salesforce_emulator: SalesforceEmulator
) -> None:
    alice = salesforce_emulator.org.find("Contact", "Email", "alice.smith@northwind.example")[0]["Id"]
    for values, code in (
        ({"Shoe_Size__c": 42}, "INVALID_FIELD"),
        ({"NPS_Score__c": "nine"}, "JSON_PARSER_ERROR"),
    ):
        record = {"attributes": {"type": "Contact"}, "id": alice, **values}
        with pytest.raises(SalesforceMalformedRequest) as refused:
            sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": [record]})
        assert code == refused.value.content[0]["errorCode"]


def test_a_task_without_status_or_priority_fails_per_record(
    sf: Salesforce, salesforce_emulator: SalesforceEmulator
) -> None:
    alice = salesforce_emulator.org.find("Contact", "Email", "alice.smith@northwind.example")[0]["Id"]
    records = [
        {"attributes": {"type": "Task"}, "WhoId": alice, "Subject": "no status", "Priority": "High"},
        {
            "attributes": {"type": "Task"},
            "WhoId": alice,
            "Subject": "ok",
            "Priority": "High",
            "Status": "Not Started",
        },
    ]
    results = sf.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": records})
    assert [False, True] == [r["success"] for r in results]
    assert "REQUIRED_FIELD_MISSING" == results[0]["errors"][0]["statusCode"]


def test_a_task_key_is_refused_while_a_task_holds_it_and_free_once_changed_or_deleted(
    sf: Salesforce, salesforce_emulator: SalesforceEmulator
) -> None:
    alice = salesforce_emulator.org.find("Contact", "Email", "alice.smith@northwind.example")[0]["Id"]

    def tasks(*keys: str) -> list[dict[str, Any]]:
        records = [
            {"attributes": {"type": "Task"}, "WhoId": alice, "Subject": k, "Status": "Not Started",
             "Priority": "High", "NPS_Task_Key__c": k}
            for k in keys
        ]  # fmt: skip
        body = {"allOrNone": False, "records": records}
        return list(sf.restful("composite/sobjects", method="POST", json=body))

    for start in (0, 200):
        assert all(r["success"] for r in tasks(*(f"k{i}" for i in range(start, start + 200))))
    holder = {t["NPS_Task_Key__c"]: t["Id"] for t in salesforce_emulator.org.records["Task"].values()}

    first = tasks("k5", "k400")
    assert [False, True] == [r["success"] for r in first]
    assert "DUPLICATE_VALUE" == first[0]["errors"][0]["statusCode"]
    assert first[0]["errors"][0]["message"].endswith(holder["k5"])

    sf.Task.update(holder["k5"], {"NPS_Task_Key__c": "k5-moved", "Subject": "same task, new key"})
    sf.Task.update(holder["k6"], {"NPS_Task_Key__c": "k6"})  # a task may keep its own key
    sf.Task.delete(holder["k7"])
    assert [True, False, True, False] == [r["success"] for r in tasks("k5", "k5-moved", "k7", "k6")]
    assert 402 == len(salesforce_emulator.org.records["Task"])  # 400 + k400 + k5 + k7 - the deleted k7


def test_every_response_carries_limit_info_and_the_allowance_ends_in_request_limit_exceeded(
    sf: Salesforce, salesforce_emulator: SalesforceEmulator
) -> None:
    salesforce_emulator.daily_allowance = 2
    sf.query("SELECT Id FROM User")
    assert (1, 2) == tuple(sf.api_usage["api-usage"])
    sf.query("SELECT Id FROM User")
    with pytest.raises(SalesforceRefusedRequest) as refused:
        sf.query("SELECT Id FROM User")
    assert "REQUEST_LIMIT_EXCEEDED" == refused.value.content[0]["errorCode"]
    assert 403 == refused.value.status


def test_expired_sessions_get_invalid_session_id(
    sf: Salesforce, salesforce_emulator: SalesforceEmulator
) -> None:
    salesforce_emulator.expire_sessions()
    with pytest.raises(SalesforceExpiredSession) as refused:
        sf.query("SELECT Id FROM User")
    assert "INVALID_SESSION_ID" == refused.value.content[0]["errorCode"]


def _assertion(emulator: SalesforceEmulator, **claims: Any) -> dict[str, Any]:
    c = emulator.credentials
    return {
        "iss": c.consumer_key,
        "sub": c.username,
        "aud": "https://login.salesforce.com",
        "exp": int((datetime.now(timezone.utc) + timedelta(minutes=3)).timestamp()),
        **claims,
    }


@pytest.mark.parametrize(
    ("claims", "description"),
    [
        ({"aud": "https://evil.example"}, "audience is invalid"),
        (
            {"exp": int((datetime.now(timezone.utc) - timedelta(minutes=5)).timestamp())},
            "expired authorization code",
        ),
        ({"sub": "someone@else.example"}, "user hasn't approved this consumer"),
        ({"iss": "another-app"}, "client identifier invalid"),
    ],
)
def test_jwt_bearer_checks_audience_expiry_subject_and_issuer(
    salesforce_emulator: SalesforceEmulator, http: requests.Session, claims: dict[str, Any], description: str
) -> None:
    assertion = jwt.encode(
        _assertion(salesforce_emulator, **claims),
        salesforce_emulator.credentials.private_key_pem,
        algorithm="RS256",
    )
    answer = http.post(
        "https://login.salesforce.com/services/oauth2/token",
        data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion},
    )
    assert (400, description) == (answer.status_code, answer.json()["error_description"])


def test_client_credentials_need_the_right_secret(
    salesforce_emulator: SalesforceEmulator, http: requests.Session
) -> None:
    c = salesforce_emulator.credentials
    with pytest.raises(SalesforceAuthenticationFailed, match="invalid_client"):
        SalesforceLogin(session=http, consumer_key=c.consumer_key, consumer_secret="nope", domain=c.my_domain)


def test_bulk_query_results_page_by_locator_with_record_counts(
    sf: Salesforce, salesforce_emulator: SalesforceEmulator
) -> None:
    salesforce_emulator.add_contacts(2450)
    pages = list(
        sf.bulk2.Contact.query("SELECT Id, Account.OwnerId FROM Contact", max_records=1000, wait=0.01)
    )
    assert [1001, 1001, 501] == [len(p.splitlines()) for p in pages]  # header + rows
    assert "Id,Account.OwnerId" == pages[0].splitlines()[0]


def test_single_record_create_read_update_delete(
    sf: Salesforce, salesforce_emulator: SalesforceEmulator
) -> None:
    created = sf.Contact.create({"LastName": "Single", "Email": "single@example.com"})
    sf.Contact.update(created["id"], {"NPS_Score__c": 6})
    assert (6.0, "Single") == (
        sf.Contact.get(created["id"])["NPS_Score__c"],
        sf.Contact.get(created["id"])["Name"],
    )
    sf.Contact.delete(created["id"])
    assert created["id"] not in salesforce_emulator.org.records["Contact"]
    counts = salesforce_emulator.call_counts()
    assert (1, 2, 1, 1) == tuple(
        counts[k] for k in ("sobject_create", "sobject_get", "sobject_update", "sobject_delete")
    )
