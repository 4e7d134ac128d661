"""Twilio REST emulator on 127.0.0.1 for the real twilio SDK: Messages create/list/fetch, Account,
Messaging Service; legacy error bodies, a concurrency cap (20429), opt-outs (21610), spec checks."""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.emulators.listener import EmulatorHTTPServer
from tests.emulators.twilio.spec import SpecCheck
from tests.emulators.twilio.state import E164, Message, TwilioState, new_sid, now

API = "/2010-04-01/Accounts/"
MESSAGES = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json$")
MESSAGE = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages/(?P<sid>[^/]+)\.json$")
ACCOUNT = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)\.json$")
SERVICE = re.compile(r"^/v1/Services/(?P<sid>[^/]+)$")


class ApiError(Exception):
    """Answered with Twilio's legacy error body ``{code, message, more_info, status}``."""

    def __init__(self, status: int, code: int, message: str) -> None:
        self.status, self.code, self.message = status, code, message
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


@dataclass
class Fault:
    """An injected failure for the next matching call: ``status`` answers with that error before
    anything is recorded; ``drop`` records the message and then closes the connection unanswered;
    ``stall`` records it and answers only after that many seconds (past the client's timeout)."""

    kind: str
    status: int = 0
    code: int = 0
    drop: bool = False
    stall: float = 0.0


class TwilioEmulator:
    """Start with :meth:`start`, stop with :meth:`stop`. ``url`` is the base to give the SDK."""

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        concurrency_limit: int = 100,
        create_delay: float = 0.0,
        validate_spec: bool = True,
    ) -> None:
        self.state = TwilioState(account_sid=account_sid, auth_token=auth_token)
        self.concurrency_limit = concurrency_limit
        #: Seconds a create holds its slot: makes in-flight overlap (and the cap) observable.
        self.create_delay = create_delay
        self.spec = SpecCheck() if validate_spec else None
        self.spec_problems: list[str] = []
        self.max_in_flight = 0
        #: When set, a create waits (up to ``gather_timeout`` s) until this many requests have been in
        #: flight at once: a client's concurrency is then observable without relying on timing.
        self.gather_in_flight = 0
        self.gather_timeout = 5.0
        self._in_flight = 0
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._in_flight_changed = threading.Condition(self._lock)
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        #: Called with each accepted outbound-api message (the webhook side uses it for callbacks).
        self.on_accept: Callable[[Message], None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> TwilioEmulator:
        emulator = self

        class Handler(_Handler):
            em = emulator

        self._server = EmulatorHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="twilio-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- knobs for tests ---------------------------------------------------------------------------

    def add_service(self, sid: str, numbers: list[str]) -> None:
        self.state.services[sid] = list(numbers)

    def add_number(self, number: str) -> None:
        self.state.numbers.add(number)

    def add_api_key(self, sid: str, secret: str) -> None:
        self.state.api_keys[sid] = secret

    def opt_out(self, sender: str, number: str) -> None:
        """``number`` texted STOP to ``sender`` (a number, or a whole Messaging Service SID)."""
        scope = sender if sender.startswith("MG") else self.state.scope_of(sender)
        with self.state.lock:
            self.state.opt_outs.add((scope, number))

    def opt_in(self, sender: str, number: str) -> None:
        scope = sender if sender.startswith("MG") else self.state.scope_of(sender)
        with self.state.lock:
            self.state.opt_outs.discard((scope, number))

    def inject(self, fault: Fault, times: int = 1) -> None:
        with self._lock:
            self._faults.extend([fault] * times)

    def call_counts(self) -> dict[str, int]:
        with self.state.lock:
            return dict(self.state.calls)

    def messages(self, direction: str | None = None) -> list[Message]:
        with self.state.lock:
            return [m for m in self.state.messages if direction is None or m.direction == direction]

    # --- request handling ----------------------------------------------------------------------------

    def _take_fault(self, kind: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind == kind:
                    self._faults.remove(fault)
                    return fault
        return None

    def enter(self) -> bool:
        """Count a request in flight; False when over the account's concurrency cap."""
        with self._lock:
            if self._in_flight >= self.concurrency_limit:
                return False
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            self._in_flight_changed.notify_all()
            return True

    def gather(self) -> None:
        """Wait until ``gather_in_flight`` requests have been in flight together; once that happened or
        one wait timed out, creates no longer wait."""
        with self._lock:
            if not self.gather_in_flight:
                return
            met = self._in_flight_changed.wait_for(
                lambda: self.max_in_flight >= self.gather_in_flight, timeout=self.gather_timeout
            )
            if not met:
                self.gather_in_flight = 0

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def authenticate(self, header: str | None, account: str) -> None:
        if not header or not header.startswith("Basic "):
            raise ApiError(401, 20003, "Authenticate")
        try:
            user, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError as exc:
            raise ApiError(401, 20003, "Authenticate") from exc
        state = self.state
        good = (user == state.account_sid and secret == state.auth_token) or (
            user in state.api_keys and secret == state.api_keys[user]
        )
        if not good:
            raise ApiError(401, 20003, "Authenticate")
        if account != state.account_sid:
            raise ApiError(404, 20404, f"The requested resource /2010-04-01/Accounts/{account} was not found")

    def create(self, form: dict[str, str]) -> Message:
        state = self.state
        to, body = form.get("To", ""), form.get("Body", "")
        service, sender = form.get("MessagingServiceSid"), form.get("From")
        if not to:
            raise ApiError(400, 21604, "A 'To' phone number is required.")
        if not body:
            raise ApiError(400, 21602, "Message body is required.")
        if not service and not sender:
            raise ApiError(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required")
        if service and service not in state.services:
            raise ApiError(400, 21705, f"The Messaging Service Sid {service} is invalid.")
        if sender and not service and sender not in state.numbers and state.scope_of(sender) == sender:
            raise ApiError(
                400,
                21606,
                f"The From phone number {sender} is not a valid, SMS-capable inbound phone number "
                "or short code for your account.",
            )
        if not E164.match(to):
            raise ApiError(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if to in state.landlines:
            raise ApiError(400, 21614, f"'To' number {to} is not a valid mobile number")
        if len(body) > 1600:
            raise ApiError(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        from_number = state.services[service][0] if service else str(sender)
        scope = service or state.scope_of(from_number)
        with state.lock:
            opted_out = (scope, to) in state.opt_outs
        if opted_out:
            raise ApiError(400, 21610, "Attempt to send to unsubscribed recipient")
        message = Message(
            sid=new_sid("SM"),
            account_sid=state.account_sid,
            to=to,
            from_=from_number,
            body=body,
            messaging_service_sid=service,
            status="accepted" if service else "queued",
            direction="outbound-api",
            status_callback=form.get("StatusCallback"),
            date_created=now(),
        )
        state.add(message)
        return message

    def list_page(self, account: str, query: dict[str, list[str]]) -> dict[str, Any]:
        def one(name: str) -> str | None:
            return query[name][-1] if name in query else None

        page_size = int(one("PageSize") or 50)
        if not 1 <= page_size <= 1000:
            raise ApiError(400, 20001, f"PageSize must be between 1 and 1000, got {page_size}")
        page = int(one("Page") or 0)
        offset = int((one("PageToken") or "PA0")[2:] or 0) if one("PageToken") else page * page_size
        with self.state.lock:
            found = [m for m in self.state.messages if _matches(m, one)]
        found.sort(key=lambda m: m.date_created, reverse=True)
        chunk = found[offset : offset + page_size]
        filters = {k: v[-1] for k, v in query.items() if k not in {"PageSize", "Page", "PageToken"}}
        base = f"/2010-04-01/Accounts/{account}/Messages.json"

        def uri(page_no: int, start: int) -> str:
            params = {**filters, "PageSize": page_size, "Page": page_no, "PageToken": f"PA{start}"}
            return f"{base}?{urlencode(params)}"

        more = offset + page_size < len(found)
        return {
            "messages": [m.resource() for m in chunk],
            "page": page,
            "page_size": page_size,
            "start": offset,
            "end": offset + len(chunk) - 1 if chunk else offset,
            "first_page_uri": f"{base}?{urlencode({**filters, 'PageSize': page_size, 'Page': 0})}",
            "next_page_uri": uri(page + 1, offset + page_size) if more else None,
            "previous_page_uri": uri(page - 1, max(0, offset - page_size)) if page > 0 else None,
            "uri": f"{base}?{urlencode({**filters, 'PageSize': page_size, 'Page': page})}",
        }


def _date_filter(value: str) -> tuple[bool, datetime]:
    """(date only?, moment) for a DateSent value (``YYYY-MM-DD`` or an ISO 8601 date-time)."""
    if len(value) == 10:
        return True, datetime.combine(date.fromisoformat(value), datetime.min.time(), timezone.utc)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return False, parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _matches(message: Message, one: Callable[[str], str | None]) -> bool:
    if one("To") and message.to != one("To"):
        return False
    if one("From") and message.from_ != one("From"):
        return False
    tests: tuple[tuple[str, Callable[[Any, Any], bool]], ...] = (
        ("DateSent", lambda a, b: a == b),
        ("DateSent<", lambda a, b: a <= b),
        ("DateSent>", lambda a, b: a >= b),
    )
    for name, test in tests:
        value = one(name)
        if value is None:
            continue
        if message.date_sent is None:
            return False
        date_only, moment = _date_filter(value)
        sent: Any = message.date_sent.date() if date_only else message.date_sent
        if not test(sent, moment.date() if date_only else moment):
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    em: TwilioEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _reply(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Twilio-Concurrent-Requests", str(self.em.in_flight))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        em = self.em
        if not em.enter():
            em.state.count("rejected.20429")
            self._reply(429, ApiError(429, 20429, "Too Many Requests").body())
            return
        try:
            self._route(method, raw)
        except ApiError as exc:
            self._reply(exc.status, exc.body())
        finally:
            em.leave()

    def _route(self, method: str, raw: bytes) -> None:
        em = self.em
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        query = parse_qs(parts.query, keep_blank_values=True)
        if (match := MESSAGES.match(path)) and method == "POST":
            kind = "messages.create"
        elif match and method == "GET":
            kind = "messages.list"
        elif (match := MESSAGE.match(path)) and method == "GET":
            kind = "messages.fetch"
        elif (match := ACCOUNT.match(path)) and method == "GET":
            kind = "accounts.fetch"
        elif (service := SERVICE.match(path)) and method == "GET":
            em.state.count("services.fetch")
            em.authenticate(self.headers.get("Authorization"), em.state.account_sid)
            self._service(service["sid"])
            return
        else:
            raise ApiError(404, 20404, f"The requested resource {path} was not found")
        em.state.count(kind)
        em.authenticate(self.headers.get("Authorization"), match["account"])
        if kind.startswith("messages.") and em.spec is not None:
            problem = em.spec.problem(
                method=method, path=path, query=query, headers=dict(self.headers.items()), body=raw
            )
            if problem:
                em.spec_problems.append(problem)
                raise ApiError(400, 20001, f"Request does not match the API: {problem}")
        fault = em._take_fault(kind)
        if fault is not None and fault.status:
            raise ApiError(fault.status, fault.code, f"Injected fault {fault.status}")
        if kind == "messages.create":
            form = {k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
            em.gather()
            if em.create_delay:
                threading.Event().wait(em.create_delay)
            message = em.create(form)
            em.state.count("messages.accepted")
            if em.on_accept is not None:
                em.on_accept(message)
            if fault is not None and fault.drop:
                # The request was processed; the answer is lost on the way back.
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault is not None and fault.stall:
                threading.Event().wait(fault.stall)
            self._reply(201, message.resource())
        elif kind == "messages.list":
            self._reply(200, em.list_page(match["account"], query))
        elif kind == "messages.fetch":
            found = em.state.find(match["sid"])
            if found is None:
                raise ApiError(404, 20404, f"The requested resource {path} was not found")
            self._reply(200, found.resource())
        else:
            self._reply(
                200,
                {
                    "sid": em.state.account_sid,
                    "friendly_name": "nps-sync test account",
                    "status": "active",
                    "type": "Full",
                    "uri": f"/2010-04-01/Accounts/{em.state.account_sid}.json",
                },
            )

    def _service(self, sid: str) -> None:
        if sid not in self.em.state.services:
            raise ApiError(404, 20404, f"The requested resource /Services/{sid} was not found")
        self._reply(
            200,
            {
                "sid": sid,
                "account_sid": self.em.state.account_sid,
                "friendly_name": "NPS surveys",
                "url": f"https://messaging.twilio.com/v1/Services/{sid}",
            },
        )
