"""What glue tools do: one API call per record for reads, writes, sends and tasks — a small script on
the same SDKs against the same emulators, so the ratio is measured side by side.

It discovers record ids with the cheapest listing (id-only pages), then reads each contact by id,
sends each survey alone, and for each respondent updates the contact and its account and creates one
task, each a call of its own. ``CONCURRENCY`` threads work in parallel, as a glue tool's runners do;
HubSpot calls wait for the same 190-per-10-s window the daemon honours (a glue tool that ignored it
would only add 429s).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import requests
from hubspot import HubSpot
from hubspot.crm.companies import BatchInputSimplePublicObjectBatchInput as CompanyBatchInput
from hubspot.crm.contacts import BatchInputSimplePublicObjectBatchInput
from hubspot.crm.objects.tasks import SimplePublicObjectInputForCreate
from requests.adapters import HTTPAdapter
from sendgrid import SendGridAPIClient
from simple_salesforce.api import Salesforce
from simple_salesforce.login import SalesforceLogin
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client as TwilioClient

from benchmarks.harness import Emulators
from benchmarks.scenario import RESPONSE_SHARE, Result, _calls
from nps_sync.connectors.hubspot.ratelimit import SlidingWindow
from tests.connectors.twilio.fixtures import ACCOUNT_SID, AUTH_TOKEN, SERVICE_SID
from tests.e2e.daemon import afternoon_zone

CONCURRENCY = 8


class _Redirect(HTTPAdapter):
    """simple-salesforce builds https URLs; send them to the emulator (as the connector does)."""

    def __init__(self, base: str) -> None:
        self.base = base
        super().__init__(pool_maxsize=CONCURRENCY * 2)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        request.url = self.base + request.path_url
        return super().send(request, **kwargs)


class _TwilioHttp(TwilioHttpClient):  # type: ignore[misc]
    def __init__(self, base: str) -> None:
        super().__init__(pool_connections=True, max_retries=None)
        self.base = base

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        path = "/" + url.split("/", 3)[3]
        return super().request(method, self.base + path, *args, **kwargs)


def run_baseline(emu: Emulators, crm: str, channel: str, n: int) -> Result:
    emu.call("/reset")
    emu.call("/seed", crm=crm, n=n, zone=afternoon_zone(), accounts=max(10, n // 100))
    emu.call("/reset")
    result = Result(f"baseline-{crm}-{channel}-{n}", crm, channel, n, "baseline")
    started = time.monotonic()
    glue = _SalesforceGlue(emu) if crm == "salesforce" else _HubSpotGlue(emu)
    ids = glue.list_ids()
    contacts = _parallel(glue.read, ids)
    sender = _email_sender(emu) if channel == "email" else _sms_sender(emu)
    _parallel(sender, contacts)
    respondents = contacts[:: max(1, round(1 / RESPONSE_SHARE))][: int(n * RESPONSE_SHARE)]
    _parallel(glue.write_back, respondents)
    _parallel(glue.task, respondents)
    result.wall_seconds = time.monotonic() - started
    result.responses = result.tasks = len(respondents)
    result.calls = _calls(emu.call("/counts"), crm, channel)
    return result


def _parallel(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return list(pool.map(fn, items))


class _SalesforceGlue:
    def __init__(self, emu: Emulators) -> None:
        i = emu.info
        session = requests.Session()
        session.mount("https://", _Redirect(i["salesforce"]))
        sid, instance = SalesforceLogin(
            username=i["salesforce_username"],
            password=i["salesforce_password"],
            security_token=i["salesforce_security_token"],
            session=session,
        )
        self.sf: Any = Salesforce(session_id=sid, instance=instance, session=session)

    def list_ids(self) -> list[str]:
        return [r["Id"] for r in self.sf.query_all("SELECT Id FROM Contact")["records"]]

    def read(self, cid: str) -> dict[str, Any]:
        r = self.sf.Contact.get(cid)
        return {
            "id": cid,
            "email": r["Email"],
            "phone": r["MobilePhone"],
            "account": r["AccountId"],
            "owner": r["OwnerId"],
        }

    def write_back(self, c: dict[str, Any]) -> None:
        self.sf.Contact.update(c["id"], {"NPS_Score__c": 3, "NPS_Category__c": "detractor"})
        self.sf.Account.update(c["account"], {"NPS_Score__c": -100})

    def task(self, c: dict[str, Any]) -> None:
        self.sf.Task.create(
            {
                "WhoId": c["id"],
                "WhatId": c["account"],
                "OwnerId": c["owner"],
                "Subject": "Call detractor",
                "Priority": "High",
                "Status": "Not Started",
            }
        )


class _HubSpotGlue:
    def __init__(self, emu: Emulators) -> None:
        self.api = HubSpot(access_token=emu.info["hubspot_token"], host=emu.info["hubspot"])
        self.window = SlidingWindow(190, 10.0)

    def _limited(self, fn: Callable[[], Any]) -> Any:
        slot = self.window.acquire()
        try:
            return fn()
        finally:
            self.window.done(slot)

    def list_ids(self) -> list[str]:
        ids: list[str] = []
        after = None
        while True:
            page = self._limited(partial(self.api.crm.contacts.basic_api.get_page, limit=100, after=after))
            ids.extend(r.id for r in page.results)
            if page.paging is None or page.paging.next is None:
                return ids
            after = page.paging.next.after

    def read(self, cid: str) -> dict[str, Any]:
        r = self._limited(
            lambda: self.api.crm.contacts.basic_api.get_by_id(
                cid, properties=["email", "phone", "associatedcompanyid", "hubspot_owner_id"]
            )
        )
        p = r.properties
        return {
            "id": cid,
            "email": p.get("email"),
            "phone": p.get("phone"),
            "account": p.get("associatedcompanyid"),
            "owner": p.get("hubspot_owner_id"),
        }

    def write_back(self, c: dict[str, Any]) -> None:
        # One record per call. The emulator has no single-object PATCH, so a one-input batch stands in
        # for it: the same one call per record.
        contact = BatchInputSimplePublicObjectBatchInput(
            inputs=[{"id": c["id"], "properties": {"nps_score": "3", "nps_category": "detractor"}}]
        )
        self._limited(lambda: self.api.crm.contacts.batch_api.update(contact))
        company = CompanyBatchInput(
            inputs=[{"id": c["account"], "properties": {"nps_account_score": "-100"}}]
        )
        self._limited(lambda: self.api.crm.companies.batch_api.update(company))

    def task(self, c: dict[str, Any]) -> None:
        body = SimplePublicObjectInputForCreate(
            properties={
                "hs_task_subject": "Call detractor",
                "hs_task_priority": "HIGH",
                "hs_timestamp": str(int(time.time() * 1000)),
                "hubspot_owner_id": c["owner"],
            },
            associations=[
                {
                    "to": {"id": c["id"]},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}],
                }
            ],
        )
        self._limited(lambda: self.api.crm.objects.tasks.basic_api.create(body))


def _email_sender(emu: Emulators) -> Callable[[dict[str, Any]], None]:
    sg = SendGridAPIClient(api_key="SG.bench-key", host=emu.info["sendgrid"])

    def send(c: dict[str, Any]) -> None:
        sg.client.mail.send.post(
            request_body={
                "personalizations": [{"to": [{"email": c["email"]}]}],
                "from": {"email": "nps@acme.test"},
                "subject": "How likely are you to recommend us?",
                "content": [{"type": "text/plain", "value": "0-10: http://127.0.0.1/r/x"}],
            }
        )

    return send


def _sms_sender(emu: Emulators) -> Callable[[dict[str, Any]], None]:
    client = TwilioClient(ACCOUNT_SID, AUTH_TOKEN, http_client=_TwilioHttp(emu.info["twilio"]))

    def send(c: dict[str, Any]) -> None:
        client.messages.create(
            to=c["phone"],
            messaging_service_sid=SERVICE_SID,
            body="How likely are you to recommend us? Reply 0-10.",
        )

    return send
