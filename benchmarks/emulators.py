"""The emulator host: Salesforce, HubSpot, SendGrid and Twilio emulators in one process of their own
(so the daemon's RSS is its own), with a per-call latency and the vendors' published limits, plus a
small JSON control API the runner uses to seed, count calls and watch tasks appear.

Run by the runner as ``python -m benchmarks.emulators --latency-ms 40 --ready-file PATH``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from benchmarks.bounds import soql_job
from tests.connectors.salesforce.fixtures import credentials
from tests.connectors.twilio.fixtures import ACCOUNT_SID, AUTH_TOKEN, SERVICE_NUMBER, SERVICE_SID
from tests.emulators.hubspot import HubSpotEmulator
from tests.emulators.hubspot.state import Owner, hubspot_time_zone, now_iso
from tests.emulators.listener import EmulatorHTTPServer
from tests.emulators.salesforce import SalesforceEmulator
from tests.emulators.sendgrid import SendGridEmulator
from tests.emulators.twilio import TwilioEmulator, WebhookSender

SG_API_KEY = "SG.bench-key"
HUBSPOT_TOKEN = "pat-na1-bench"  # noqa: S105 - the emulator's fake token
#: HubSpot Professional/Enterprise: 190 calls per rolling 10 s; search 5 per second.
HUBSPOT_WINDOW_CALLS = 190
HUBSPOT_SEARCH_PER_SECOND = 5
TWILIO_CONCURRENCY = 100

_LATENCY = [0.0]
#: (arrived, answered, method, path and query) of every call the vendor emulators served since the last
#: reset: the reads' timeline, which splits a wave's paging into time at the emulator and time in the
#: daemon between one page's answer and the next page's request, and the moments a wave's last send
#: and last CRM write were answered.
_SERVED: list[tuple[float, float, str, str]] = []
_orig_parse = BaseHTTPRequestHandler.parse_request
_orig_handle_one = BaseHTTPRequestHandler.handle_one_request


class _AnsweredAfterLatency:
    """The handler's ``wfile``: its first write (the status line and headers) waits until the
    latency has passed since the request arrived. The emulator's own work (reading and checking the
    body, paging, rendering) happens within that time, as the vendor's does within its round trip;
    when the work takes longer, the answer goes when it is done."""

    def __init__(self, raw: Any, due: float) -> None:
        self._raw = raw
        self._due: float | None = due

    def write(self, data: bytes) -> int:
        if self._due is not None:
            wait, self._due = self._due - time.time(), None
            if wait > 0:
                time.sleep(wait)
        return int(self._raw.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def _parse_with_latency(self: BaseHTTPRequestHandler) -> bool:
    """Every emulator answers the configured round-trip latency after a request arrived (not the
    control API)."""
    ok = _orig_parse(self)
    if ok and not getattr(self, "no_latency", False):
        self.arrived = time.time()  # type: ignore[attr-defined]
        if _LATENCY[0]:
            self.wfile = _AnsweredAfterLatency(self.wfile, self.arrived + _LATENCY[0])  # type: ignore[attr-defined,assignment]
    return ok


def _handle_one_timed(self: BaseHTTPRequestHandler) -> None:
    self.arrived = None  # type: ignore[attr-defined]
    try:
        _orig_handle_one(self)
    finally:
        if isinstance(self.wfile, _AnsweredAfterLatency):  # the next request on this connection
            self.wfile = self.wfile._raw
    arrived = getattr(self, "arrived", None)
    if arrived is not None:
        _SERVED.append((arrived, time.time(), self.command, self.path))


BaseHTTPRequestHandler.parse_request = _parse_with_latency  # type: ignore[method-assign]
BaseHTTPRequestHandler.handle_one_request = _handle_one_timed  # type: ignore[method-assign]


def contact_email(n: int) -> str:
    return f"c{n:07d}@bench.example"


def contact_phone(n: int) -> str:
    return f"+1212{2_000_000 + n:07d}"


class Host:
    def __init__(self) -> None:
        self.sf = SalesforceEmulator(credentials=credentials(), daily_allowance=50_000_000).start()
        self.hs = HubSpotEmulator(
            token=HUBSPOT_TOKEN,
            window_calls=HUBSPOT_WINDOW_CALLS,
            search_per_second=HUBSPOT_SEARCH_PER_SECOND,
            daily_limit=50_000_000,
        ).start()
        self.sg = SendGridEmulator(SG_API_KEY, validate_spec=False).start()
        self.tw = TwilioEmulator(
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            concurrency_limit=TWILIO_CONCURRENCY,
            validate_spec=False,
        ).start()
        self.tw.add_service(SERVICE_SID, [SERVICE_NUMBER])
        self.sf_task_queries = 0
        self.sf_user_queries = 0
        rest_query = self.sf.rest.query

        def query(soql: str, options: str | None) -> tuple[int, Any]:
            # Task-key lookups and owners are jobs of their own in the report, apart from reading.
            job = soql_job(soql)
            if job == "task-key lookup":
                self.sf_task_queries += 1
            elif job == "owners":
                self.sf_user_queries += 1
            return rest_query(soql, options)

        self.sf.rest.query = query  # type: ignore[method-assign,assignment]
        self.tw_hooks = WebhookSender(self.tw)
        self.lock = threading.Lock()
        self.task_seen: dict[str, float] = {}  # contact id -> first time a task for it was seen
        self._seen_sf = 0
        self._seen_hs = 0
        self.email_to_contact: dict[str, str] = {}
        self.phone_to_contact: dict[str, str] = {}
        self._base_sf_tasks = 0
        threading.Thread(target=self._watch_tasks, daemon=True).start()

    # --- seeding -----------------------------------------------------------------------------

    def seed(self, crm: str, n: int, zone: str, accounts: int) -> dict[str, Any]:
        self.email_to_contact.clear()
        self.phone_to_contact.clear()
        if crm == "salesforce":
            self._seed_sf(n, zone, accounts)
        else:
            self._seed_hs(n, zone, accounts)
        # The seeded records live until the next seed: out of the collector's sight, a full
        # collection no longer walks them (100-125 ms holding the host's GIL, during which every
        # emulator's answers waited: a delay the vendors do not cause).
        gc.collect()
        gc.freeze()
        return {"contacts": n}

    def _seed_sf(self, n: int, zone: str, accounts: int) -> None:
        org = self.sf.org
        with self.sf._lock:
            org.records["Contact"].clear()
            org.records["Task"].clear()
            users = list(org.records["User"].values())
            account_ids = []
            for a in range(accounts):
                owner = users[a % len(users)]["Id"]
                account_ids.append(org.insert("Account", {"Name": f"Bench {a:05d}", "OwnerId": owner}))
            for i in range(n):
                acc = account_ids[i % accounts]
                cid = org.insert(
                    "Contact",
                    {
                        "FirstName": "Pat",
                        "LastName": f"Bench{i:07d}",
                        "Email": contact_email(i),
                        "MobilePhone": contact_phone(i),
                        "Phone": contact_phone(i),
                        "MailingCountry": "US",
                        "AccountId": acc,
                        "OwnerId": users[i % len(users)]["Id"],
                        "NPS_Time_Zone__c": zone,
                        "NPS_Locale__c": "en",
                    },
                )
                self.email_to_contact[contact_email(i)] = cid
                self.phone_to_contact[contact_phone(i)] = cid
        with self.lock:
            self._seen_sf = 0
            self.task_seen.clear()

    def _seed_hs(self, n: int, zone: str, accounts: int) -> None:
        portal = self.hs.portal
        with self.hs.lock:
            for t in ("contacts", "companies", "tasks"):
                portal.objects[t].clear()
                portal.order[t].clear()
            portal.owners.clear()
            stamp = now_iso()
            owners = []
            for o in range(10):
                oid = portal.new_id("owners")
                portal.owners[oid] = Owner(oid, f"owner{o}@acme.example", "Owner", str(o), 7000 + o, stamp)
                owners.append(oid)
            companies = [
                portal.insert("companies", {"name": f"Bench {a:05d}", "hubspot_owner_id": owners[a % 10]}).id
                for a in range(accounts)
            ]
            hs_zone = hubspot_time_zone(zone)
            for i in range(n):
                obj = portal.insert(
                    "contacts",
                    {
                        "firstname": "Pat",
                        "lastname": f"Bench{i:07d}",
                        "email": contact_email(i),
                        "phone": contact_phone(i),
                        "mobilephone": contact_phone(i),
                        "country": "US",
                        "hs_timezone": hs_zone,
                        "hs_language": "en",
                        "hubspot_owner_id": owners[i % 10],
                    },
                )
                portal.associate("contacts", obj.id, "companies", companies[i % accounts], 1)
                self.email_to_contact[contact_email(i)] = obj.id
                self.phone_to_contact[contact_phone(i)] = obj.id
            portal.search_cache.clear()
        with self.lock:
            self._seen_hs = 0
            self.task_seen.clear()

    # --- observation ---------------------------------------------------------------------------

    def _watch_tasks(self) -> None:
        """Note the first moment a task for each contact exists in either CRM (every 10 ms)."""
        while True:
            time.sleep(0.01)
            now = time.time()
            sf_tasks = self.sf.org.records["Task"]
            hs_tasks = self.hs.portal.objects["tasks"]
            if len(sf_tasks) > self._seen_sf:
                with self.sf._lock:
                    new = list(sf_tasks.values())[self._seen_sf :]
                with self.lock:
                    self._seen_sf += len(new)
                    for t in new:
                        self.task_seen.setdefault(str(t.get("WhoId")), now)
            if len(hs_tasks) > self._seen_hs:
                with self.hs.lock:
                    new_hs = list(hs_tasks.values())[self._seen_hs :]
                    whos = [next(iter(o.associations.get("contacts", {})), "") for o in new_hs]
                with self.lock:
                    self._seen_hs += len(new_hs)
                    for who in whos:
                        self.task_seen.setdefault(str(who), now)

    def counts(self) -> dict[str, dict[str, int]]:
        sf = self.sf.call_counts()
        if self.sf_task_queries:
            sf["query"] = sf.get("query", 0) - self.sf_task_queries
            sf["query_task_keys"] = self.sf_task_queries
        if self.sf_user_queries:
            sf["query"] = sf.get("query", 0) - self.sf_user_queries
            sf["query_owners"] = self.sf_user_queries
        return {
            "salesforce": sf,
            "hubspot": {k: v for k, v in self.hs.calls.items() if v},
            "hubspot_rejected": {k: v for k, v in self.hs.rejected.items() if v},
            "sendgrid": self.sg.call_counts(),
            "twilio": self.tw.call_counts(),
        }

    def reset(self) -> None:
        gc.unfreeze()  # the last seed's records are replaced next: let them be collected
        _SERVED.clear()
        self.sf.reset_counts()
        self.sf_task_queries = 0
        self.sf_user_queries = 0
        self.hs.reset_counts()
        with self.sg._lock:
            self.sg.state.calls.clear()
            self.sg.state.accepted.clear()
            self.sg.state.received.clear()
            self.sg.state.unrendered.clear()
        with self.tw.state.lock:
            self.tw.state.calls.clear()
        self.tw.state.forget_messages()
        self.tw.max_in_flight = 0

    def surveys(self, channel: str, offset: int, limit: int) -> list[dict[str, Any]]:
        """Survey links (email) or numbers (SMS) received so far, with the CRM contact id."""
        out = []
        if channel == "email":
            for m in self.sg.messages()[offset : offset + limit]:
                link = _score_link(m.text, 3)
                out.append({"to": m.to, "link": link, "contact_id": self.email_to_contact.get(m.to)})
        else:
            for sms in self.tw.messages("outbound-api")[offset : offset + limit]:
                out.append({"to": sms.to, "contact_id": self.phone_to_contact.get(sms.to)})
        return out

    def received(self) -> dict[str, int]:
        return {"email": len(self.sg.messages()), "sms": len(self.tw.messages("outbound-api"))}

    def connect(self, daemon_url: str) -> None:
        self.sg.connect(daemon_url, events=("delivered",))
        self.tw_hooks.target_url = daemon_url.rstrip("/")
        self.tw_hooks.public_url = daemon_url.rstrip("/")
        self.tw_hooks.start_auto_status(senders=8)  # Twilio posts callbacks concurrently

    def sms_reply(self, number: str, body: str) -> int:
        return self.tw_hooks.inbound(number, body).status

    def tasks_seen(self, contact_ids: list[str]) -> dict[str, float]:
        with self.lock:
            return {c: self.task_seen[c] for c in contact_ids if c in self.task_seen}

    def task_count(self) -> int:
        with self.lock:
            return len(self.task_seen)


def _score_link(text: str, score: int) -> str | None:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(f"{score}") and "http" in line:
            return line[line.index("http") :].split()[0]
    return None


def serve(host: Host, ready_file: Path) -> None:
    routes: dict[str, Callable[[dict[str, Any]], Any]] = {
        "/seed": lambda b: host.seed(b["crm"], int(b["n"]), b["zone"], int(b["accounts"])),
        "/counts": lambda b: host.counts(),
        "/reset": lambda b: host.reset(),
        "/surveys": lambda b: host.surveys(b["channel"], int(b.get("offset", 0)), int(b.get("limit", 10**9))),
        "/received": lambda b: host.received(),
        "/connect": lambda b: host.connect(b["url"]),
        "/sms_reply": lambda b: host.sms_reply(b["number"], b["body"]),
        "/tasks_seen": lambda b: host.tasks_seen(b["contact_ids"]),
        "/task_count": lambda b: host.task_count(),
        "/rss": lambda b: _rss_kb(os.getpid()),
        "/served": lambda b: list(_SERVED),
    }

    class Control(BaseHTTPRequestHandler):
        no_latency = True
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.loads(raw) if raw else {}
            try:
                status, out = 200, routes[self.path](body)
            except Exception as exc:  # the runner shows it
                status, out = 500, {"error": f"{type(exc).__name__}: {exc}"}
            data = json.dumps(out).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = EmulatorHTTPServer(("127.0.0.1", 0), Control)
    server.daemon_threads = True
    info = {
        "control": f"http://127.0.0.1:{server.server_address[1]}",
        "salesforce": host.sf.url,
        "salesforce_username": host.sf.credentials.username,
        "salesforce_password": host.sf.credentials.password,
        "salesforce_security_token": host.sf.credentials.security_token,
        "salesforce_consumer_key": host.sf.credentials.consumer_key,
        "salesforce_private_key": host.sf.credentials.private_key_pem,
        "hubspot": host.hs.url,
        "hubspot_token": HUBSPOT_TOKEN,
        "sendgrid": host.sg.url,
        "sendgrid_public_key": host.sg.signer.public_key_b64,
        "twilio": host.tw.url,
    }
    tmp = ready_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    tmp.rename(ready_file)
    server.serve_forever(poll_interval=0.1)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.emulators")
    parser.add_argument("--latency-ms", type=float, default=40.0)
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args(argv)
    _LATENCY[0] = args.latency_ms / 1000.0
    serve(Host(), args.ready_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
