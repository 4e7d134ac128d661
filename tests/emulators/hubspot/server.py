"""A HubSpot CRM v3 emulator on 127.0.0.1 that hubspot-api-client talks to over HTTP.

Behaves like the vendor where nps-sync depends on it: cursor paging, 100-input batch caps, search
with filter groups, sorts and the 10,000-result cap, properties with 409 on conflict, inline
associations, owners (trailing slash), list memberships, HubSpot's error bodies, bearer-token auth
with scopes, the 10-second rolling limit with ``X-HubSpot-RateLimit-*`` headers and the search
limit without headers. Calls are counted by kind (``contacts.batch_update``, ``owners.list`` …).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.emulators.hubspot.common import Request, Response
from tests.emulators.hubspot.routes import route
from tests.emulators.hubspot.state import ApiError, Portal, seed
from tests.emulators.listener import EmulatorHTTPServer

ALL_SCOPES = frozenset(
    {
        "crm.objects.contacts.read",
        "crm.objects.contacts.write",
        "crm.objects.companies.read",
        "crm.objects.companies.write",
        "crm.objects.owners.read",
        "crm.schemas.contacts.read",
        "crm.schemas.contacts.write",
        "crm.schemas.companies.read",
        "crm.schemas.companies.write",
        "crm.lists.read",
    }
)


@dataclass
class Fault:
    """A canned failure for the next ``remaining`` requests whose kind starts with ``kind``."""

    kind: str
    remaining: int
    status: int = 429
    retry_after: str | None = None
    #: Process the request, then close the connection without answering (a lost response).
    drop_response: bool = False


class HubSpotEmulator:
    """Start with :meth:`start`, stop with :meth:`stop`; ``url`` is the SDK's ``host``."""

    def __init__(
        self,
        *,
        token: str = "pat-na1-emulator",  # noqa: S107 - the emulator's fake token
        seed_dir: Path | None = None,
        nps_properties: bool = True,
        window_calls: int | None = None,
        window_seconds: float = 10.0,
        search_per_second: int | None = None,
        daily_limit: int = 250_000,
        scopes: frozenset[str] = ALL_SCOPES,
    ) -> None:
        self.token = token
        self.scopes = set(scopes)
        self.portal = Portal()
        if nps_properties:
            self.portal.add_nps_properties()
        if seed_dir is not None:
            seed(self.portal, seed_dir)
        self.window_calls = window_calls
        self.window_seconds = window_seconds
        self.search_per_second = search_per_second
        self.daily_limit = daily_limit
        self.daily_used = 0
        self.calls: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.faults: list[Fault] = []
        self.lock = threading.RLock()
        self._window: deque[float] = deque()
        self._search_window: deque[float] = deque()
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- test controls -------------------------------------------------------------------------

    def start(self) -> HubSpotEmulator:
        handler = _make_handler(self)
        self._server = EmulatorHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def fail_next(
        self,
        kind: str,
        count: int = 1,
        *,
        status: int = 429,
        retry_after: str | None = None,
        drop_response: bool = False,
    ) -> None:
        with self.lock:
            self.faults.append(Fault(kind, count, status, retry_after, drop_response))

    def reset_counts(self) -> None:
        with self.lock:
            self.calls.clear()
            self.rejected.clear()

    def add_list(self, record_ids: list[str]) -> str:
        with self.lock:
            list_id = self.portal.new_id("lists")
            self.portal.lists[list_id] = sorted(record_ids, key=int)
            return list_id

    def add_contacts(self, count: int, *, company_id: str | None = None, **props: str) -> list[str]:
        """Bulk-create contacts straight in memory (for volume tests)."""
        with self.lock:
            ids = []
            for n in range(count):
                values = {"firstname": "Bulk", "lastname": str(n), "email": f"bulk{n}@volume.example"}
                values.update(props)
                obj = self.portal.insert("contacts", values)
                if company_id is not None:
                    self.portal.associate("contacts", obj.id, "companies", company_id, 1)
                ids.append(obj.id)
            return ids

    # -- request processing (called by the handler threads) -------------------------------------

    def _rate_headers(self, now: float) -> dict[str, str]:
        headers = {
            "X-HubSpot-RateLimit-Daily": str(self.daily_limit),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, self.daily_limit - self.daily_used)),
        }
        if self.window_calls is not None:
            self._trim(self._window, now, self.window_seconds)
            headers.update(
                {
                    "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.window_seconds * 1000)),
                    "X-HubSpot-RateLimit-Max": str(self.window_calls),
                    "X-HubSpot-RateLimit-Remaining": str(max(0, self.window_calls - len(self._window))),
                }
            )
        return headers

    @staticmethod
    def _trim(window: deque[float], now: float, span: float) -> None:
        while window and window[0] <= now - span:
            window.popleft()

    def _rate_limited(self, policy: str, message: str, headers: Mapping[str, str]) -> ApiError:
        return ApiError(
            429,
            message,
            "RATE_LIMITS",
            headers=headers,
            extra={"errorType": "RATE_LIMIT", "policyName": policy, "requestId": str(uuid.uuid4())},
        )

    def admit(self, kind: str) -> tuple[dict[str, str], Fault | None]:
        """Count the call, apply canned faults and rate limits; raises ApiError for a refusal."""
        with self.lock:
            self.calls[kind] += 1
            now = time.monotonic()
            is_search = kind.endswith(".search")
            headers = {} if is_search else self._rate_headers(now)
            for fault in self.faults:
                if fault.remaining > 0 and kind.startswith(fault.kind):
                    fault.remaining -= 1
                    if fault.drop_response:
                        return headers, fault
                    self.rejected[kind] += 1
                    if fault.retry_after is not None:
                        headers = {**headers, "Retry-After": fault.retry_after}
                    if fault.status == 429:
                        raise self._rate_limited(
                            "TEN_SECONDLY_ROLLING",
                            "You have reached your ten_secondly_rolling limit.",
                            headers,
                        )
                    raise ApiError(fault.status, "Internal error", "INTERNAL_ERROR", headers=headers)
            if is_search:
                if self.search_per_second is not None:
                    self._trim(self._search_window, now, 1.0)
                    if len(self._search_window) >= self.search_per_second:
                        self.rejected[kind] += 1
                        raise self._rate_limited("SECONDLY", "You have reached your secondly limit.", {})
                    self._search_window.append(now)
                return headers, None
            if self.daily_used >= self.daily_limit:
                self.rejected[kind] += 1
                raise self._rate_limited("DAILY", "You have reached your daily limit.", headers)
            if self.window_calls is not None:
                if len(self._window) >= self.window_calls:
                    self.rejected[kind] += 1
                    raise self._rate_limited(
                        "TEN_SECONDLY_ROLLING", "You have reached your ten_secondly_rolling limit.", headers
                    )
                self._window.append(now)
            self.daily_used += 1
            return self._rate_headers(now), None


def _error_body(err: ApiError) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": "error",
        "message": err.message,
        "correlationId": str(uuid.uuid4()),
        "category": err.category,
    }
    if err.context:
        body["context"] = err.context
    if err.errors:
        body["errors"] = err.errors
    body.update(err.extra)
    return body


def _make_handler(emu: HubSpotEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # One buffered write per response and no Nagle: headers and body in separate small segments
        # would meet the client's delayed ACK and cost 40 ms a call.
        wbufsize = -1
        disable_nagle_algorithm = True

        def _send(self, status: int, body: Any, headers: Mapping[str, str]) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            path = parts.path.rstrip("/") or "/"
            query = parse_qs(parts.query, keep_blank_values=True)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                self._send(400, _error_body(ApiError(400, "Invalid JSON body", "VALIDATION_ERROR")), {})
                return
            request = Request(self.command, path, query, body)
            try:
                handler, kind, scope = route(request)
                auth = self.headers.get("Authorization", "")
                if auth != f"Bearer {emu.token}":
                    raise ApiError(
                        401,
                        "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
                        "INVALID_AUTHENTICATION",
                    )
                if scope not in emu.scopes:
                    raise ApiError(
                        403,
                        f"This app hasn't been granted all required scopes to make this call. "
                        f"Read more about required scopes here: https://developers.hubspot.com/scopes. "
                        f"Required: {scope}",
                        "MISSING_SCOPES",
                        errors=[
                            {
                                "message": "One or more of the following scopes are required.",
                                "context": {"requiredGrantedScopes": [scope]},
                            }
                        ],
                    )
                headers, fault = emu.admit(kind)
                with emu.lock:
                    response: Response = handler(emu.portal, request)
                if fault is not None and fault.drop_response:
                    self.close_connection = True
                    return
                self._send(response.status, response.body, headers)
            except ApiError as err:
                self._send(err.status, _error_body(err), err.headers)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any  # noqa: N815 - http.server's names

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
