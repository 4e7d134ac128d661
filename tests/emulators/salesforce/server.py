"""A Salesforce REST emulator on 127.0.0.1 that simple-salesforce talks to unchanged (over plain HTTP
through the connector's transport adapter).

Every request is counted by kind (``call_counts()``), every API response carries
``Sforce-Limit-Info``, and the org's daily allowance ends in 403 REQUEST_LIMIT_EXCEEDED. Tests steer
it through plain attributes and methods: ``expire_sessions()``, ``daily_allowance``,
``lock_rows()``, ``drop_next_response()``, ``org.validation_rules``.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections import Counter
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.emulators.listener import EmulatorHTTPServer
from tests.emulators.salesforce import composite
from tests.emulators.salesforce.auth import Credentials, Sessions
from tests.emulators.salesforce.bulk import Bulk
from tests.emulators.salesforce.org import Org, seed
from tests.emulators.salesforce.rest import Rest, error

MAX_URI = 16_384
_DATA = r"/services/data/v(?P<version>\d+\.\d)"


class SalesforceEmulator:
    def __init__(
        self,
        *,
        omit_fields: Mapping[str, set[str]] | None = None,
        daily_allowance: int = 100_000,
        session_ttl: float = 7200.0,
        credentials: Credentials | None = None,
    ) -> None:
        self.org = Org(omit_fields=dict(omit_fields or {}))
        self.seed_ids = seed(self.org)
        self.rest = Rest(self.org)
        self.bulk = Bulk(self.org, self.rest)
        self.credentials = credentials or Credentials()
        self.sessions = Sessions(self.credentials, session_ttl=session_ttl)
        self.daily_allowance = daily_allowance
        self.api_used = 0
        self.counts: Counter[str] = Counter()
        self._drop: Counter[str] = Counter()
        self._fail: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._server: EmulatorHTTPServer | None = None
        self.url = ""

    # --- control for tests -------------------------------------------------------------------------

    def start(self) -> SalesforceEmulator:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in separate writes: without NODELAY each answer waits ~40 ms.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _any(self) -> None:
                emulator._handle(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any  # noqa: N815 - stdlib handler names

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = EmulatorHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="salesforce-emulator",
            daemon=True,
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def call_counts(self) -> dict[str, int]:
        with self._lock:
            return {k: v for k, v in self.counts.items() if v}

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()

    def expire_sessions(self) -> None:
        """Every access token issued so far stops working (as when a session times out)."""
        with self._lock:
            self.sessions.expire_all()

    def reset_api_usage(self) -> None:
        """The rolling 24-hour window has moved on: the allowance is available again."""
        with self._lock:
            self.api_used = 0

    def lock_rows(self, record_ids: list[str], times: int = 1) -> None:
        """The next ``times`` saves of these records fail with UNABLE_TO_LOCK_ROW."""
        with self._lock:
            for record_id in record_ids:
                self.rest.locked[record_id] = times

    def drop_next_response(self, kind: str, times: int = 1) -> None:
        """Process the next ``times`` requests of ``kind`` but close the connection instead of
        answering: the client cannot tell whether its request took effect."""
        with self._lock:
            self._drop[kind] += times

    def fail_next_response(self, kind: str, status: int = 503, times: int = 1) -> None:
        """Refuse the next ``times`` requests of ``kind`` with ``status`` before doing anything."""
        with self._lock:
            self._fail[kind] = (status, times)

    def add_contacts(
        self, count: int, *, account_name: str = "Northwind Traders", **values: Any
    ) -> list[str]:
        """Bulk-insert synthetic contacts into one account (for volume tests)."""
        with self._lock:
            account = self.org.find("Account", "Name", account_name)[0]
            ids = []
            for n in range(count):
                fields = {
                    "FirstName": "Load",
                    "LastName": f"Contact{n:06d}",
                    "Email": f"load{n:06d}@bulk.example",
                    "AccountId": account["Id"],
                    "OwnerId": account["OwnerId"],
                    "MailingCountry": "US",
                }
                fields.update(values)
                ids.append(self.org.insert("Contact", fields))
            return ids

    # --- HTTP --------------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        if len(h.path) > MAX_URI:
            h.send_error(414, "URI Too Long")
            return
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        split = urlsplit(h.path)
        path = split.path.rstrip("/") or "/"
        params = {k: v[0] for k, v in parse_qs(split.query).items()}
        with self._lock:
            kind, status, payload, headers = self._dispatch(h, h.command, path, params, body)
            self.counts[kind] += 1
            drop = self._drop[kind] > 0
            if drop:
                self._drop[kind] -= 1
        if drop:
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if isinstance(payload, (dict, list)):
            data = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json;charset=UTF-8")
        elif isinstance(payload, str):
            data = payload.encode()
            headers.setdefault("Content-Type", "text/csv")
        else:
            data = b""
        h.send_response(status)
        for key, value in headers.items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _limit_header(self) -> dict[str, str]:
        return {"Sforce-Limit-Info": f"api-usage={self.api_used}/{self.daily_allowance}"}

    def _dispatch(
        self, h: BaseHTTPRequestHandler, method: str, path: str, params: dict[str, str], body: bytes
    ) -> tuple[str, int, Any, dict[str, str]]:
        if path == "/services/oauth2/token" and method == "POST":
            status, out = self.sessions.oauth(body, h.headers.get("Authorization"))
            return "token", status, out, {}
        if re.fullmatch(r"/services/Soap/u/\d+\.\d", path) and method == "POST":
            status, text = self.sessions.soap_login(body)
            return "soap_login", status, text, {"Content-Type": "text/xml;charset=UTF-8"}
        m = re.fullmatch(_DATA + r"(?P<rest>/.*)?", path)
        if m is None:
            return "unknown", *error(404, "NOT_FOUND", f"The requested resource does not exist: {path}"), {}
        rest = m["rest"] or "/"
        kind = _kind(method, rest)
        if not self.sessions.valid(h.headers.get("Authorization")):
            return kind, *error(401, "INVALID_SESSION_ID", "Session expired or invalid"), {}
        if self.api_used >= self.daily_allowance:
            status, out = error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            return kind, status, out, self._limit_header()
        status, left = self._fail.get(kind, (0, 0))
        if left > 0:
            self._fail[kind] = (status, left - 1)
            return kind, *error(status, "SERVER_UNAVAILABLE", "Server temporarily unavailable"), {}
        self.api_used += 1
        try:
            json_body = json.loads(body) if body and not rest.endswith("/batches") else None
        except ValueError:
            return kind, *error(400, "JSON_PARSER_ERROR", "Unexpected character in request body"), {}
        status, out, extra = self._route(method, rest, params, json_body, body, h)
        return kind, status, out, {**self._limit_header(), **extra}

    def _route(
        self,
        method: str,
        rest: str,
        params: dict[str, str],
        json_body: Any,
        raw: bytes,
        h: BaseHTTPRequestHandler,
    ) -> tuple[int, Any, dict[str, str]]:
        options = h.headers.get("Sforce-Query-Options")
        routes: list[tuple[str, str, Any]] = [
            ("GET", r"/query", lambda: self.rest.query(params.get("q", ""), options)),
            ("GET", r"/query/(?P<loc>[^/]+)", lambda loc: self.rest.query_more(loc, options)),
            ("GET", r"/sobjects/(?P<t>\w+)/describe", lambda t: self.rest.describe(t)),
            ("POST", r"/sobjects/(?P<t>\w+)", lambda t: self.rest.create_one(t, json_body)),
            ("GET", r"/sobjects/(?P<t>\w+)/(?P<i>\w+)", lambda t, i: self.rest.get_record(t, i)),
            ("PATCH", r"/sobjects/(?P<t>\w+)/(?P<i>\w+)", lambda t, i: self.rest.update_one(t, i, json_body)),
            ("DELETE", r"/sobjects/(?P<t>\w+)/(?P<i>\w+)", lambda t, i: self.rest.delete_one(t, i)),
            ("POST", r"/composite", lambda: composite.run(self.rest, json_body)),
            ("POST", r"/composite/sobjects", lambda: self.rest.collections("POST", json_body)),
            ("PATCH", r"/composite/sobjects", lambda: self.rest.collections("PATCH", json_body)),
            ("GET", r"/limits", lambda: (200, self._limits())),
            ("POST", r"/jobs/query", lambda: self.bulk.create_query(json_body)),
            ("GET", r"/jobs/query/(?P<j>\w+)", lambda j: self.bulk.job_info("query", j)),
            ("PATCH", r"/jobs/query/(?P<j>\w+)", lambda j: self.bulk.set_state(j, json_body)),
            ("POST", r"/jobs/ingest", lambda: self.bulk.create_ingest(json_body)),
            ("GET", r"/jobs/ingest/(?P<j>\w+)", lambda j: self.bulk.job_info("ingest", j)),
            ("PATCH", r"/jobs/ingest/(?P<j>\w+)", lambda j: self.bulk.set_state(j, json_body)),
            ("PUT", r"/jobs/ingest/(?P<j>\w+)/batches", lambda j: self.bulk.upload(j, raw)),
            (
                "GET",
                r"/jobs/ingest/(?P<j>\w+)/(?P<w>failedResults|successfulResults|unprocessedrecords)",
                lambda j, w: self.bulk.ingest_results(j, w),
            ),
        ]
        m = re.fullmatch(r"/jobs/query/(?P<j>\w+)/results", rest)
        if m is not None and method == "GET":
            return self.bulk.query_results(m["j"], params)
        for route_method, pattern, fn in routes:
            m = re.fullmatch(pattern, rest)
            if m is not None and route_method == method:
                status, out = fn(**m.groupdict())
                return status, out, {}
        status, out = error(404, "NOT_FOUND", f"The requested resource does not exist: {method} {rest}")
        return status, out, {}

    def _limits(self) -> dict[str, Any]:
        return {
            "DailyApiRequests": {
                "Max": self.daily_allowance,
                "Remaining": self.daily_allowance - self.api_used,
            }
        }


def _kind(method: str, rest: str) -> str:
    """The call kind tests count: query, queryMore, collections_update, bulk_query_results, …"""
    if rest == "/query":
        return "query"
    if rest.startswith("/query/"):
        return "queryMore"
    if rest.endswith("/describe"):
        return "describe"
    if rest == "/composite":
        return "composite"
    if rest == "/composite/sobjects":
        return "collections_create" if method == "POST" else "collections_update"
    if rest.startswith("/jobs/"):
        parts = rest.split("/")  # ['', 'jobs', 'query'|'ingest', id?, sub?]
        area = parts[2]
        if len(parts) == 3:
            return f"bulk_{area}_create"
        if len(parts) == 5:
            return f"bulk_{area}_{'upload' if parts[4] == 'batches' else 'results'}"
        verb = {"GET": "status", "PATCH": "state", "DELETE": "delete"}.get(method, "other")
        return f"bulk_{area}_{verb}"
    if rest.startswith("/sobjects/"):
        return {"GET": "sobject_get", "POST": "sobject_create", "PATCH": "sobject_update"}.get(
            method, "sobject_delete"
        )
    return rest.strip("/").replace("/", "_") or "root"
