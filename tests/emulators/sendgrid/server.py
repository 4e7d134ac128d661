"""A SendGrid v3 emulator on 127.0.0.1: ``POST /v3/mail/send`` and ``GET /v3/scopes``.

It behaves like the vendor where nps-sync depends on it: Bearer auth (401), the documented
``mail/send`` limits and content rules (400 with ``{"errors": [{"message", "field", "help"}]}``),
202 with ``X-Message-Id``, sandbox mode (200, nothing delivered), injected 429/500 and connection
resets. Every request is validated against the official OpenAPI document when ``../shared/specs``
exists. Accepted mail is recorded per recipient with substitutions (or dynamic templates) applied,
and, once :meth:`connect` named a daemon, answered with signed events posted to its webhook.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.emulators.listener import EmulatorHTTPServer
from tests.emulators.sendgrid import render, spec
from tests.emulators.sendgrid.events import EventSigner, make_event, post
from tests.harness import ReceivedMessage

HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
SEND_KEY_ARG = "nps_send_key"


class Refused(Exception):
    def __init__(self, status: int, errors: list[dict[str, Any]]) -> None:
        self.status = status
        self.errors = errors
        super().__init__(errors)


def _error(message: str, field_name: str | None, anchor: str = "") -> dict[str, Any]:
    return {"message": message, "field": field_name, "help": f"{HELP}#{anchor}" if anchor else None}


@dataclass
class Accepted:
    """One accepted request: its ``X-Message-Id`` and the raw body."""

    message_id: str
    body: dict[str, Any]


@dataclass
class Fault:
    #: 429, 500, 503, …; 0: accept, then drop the connection; 1: accept, then stall ``seconds``.
    status: int
    retry_after: int | None = None
    seconds: float = 0.0


@dataclass
class EmulatorState:
    api_key: str
    scopes: list[str] = field(default_factory=lambda: ["mail.send", "scopes.read"])
    #: Dynamic templates SendGrid knows: id → (subject, text, html) in a small Handlebars subset.
    templates: dict[str, tuple[str, str, str | None]] = field(default_factory=dict)
    faults: list[Fault | None] = field(default_factory=list)  # None: let that request through
    calls: Counter[str] = field(default_factory=Counter)
    accepted: list[Accepted] = field(default_factory=list)
    received: list[ReceivedMessage] = field(default_factory=list)
    #: Accepted bodies not rendered yet, with the templates of that moment: SendGrid answers 202 and
    #: renders afterwards, so the emulator renders when ``messages()`` is asked, not within the call.
    unrendered: list[tuple[dict[str, Any], dict[str, tuple[str, str, str | None]]]] = field(
        default_factory=list
    )
    #: Requests that broke the OpenAPI document (each also answered 400).
    spec_violations: list[list[dict[str, Any]]] = field(default_factory=list)
    spec_skipped: str | None = None
    webhook_url: str | None = None
    auto_events: tuple[str, ...] = ("delivered", "open")
    webhook_statuses: list[int] = field(default_factory=list)


class SendGridEmulator:
    """Start with :meth:`start`, stop with :meth:`stop`; ``url`` is the SDK's ``host``."""

    def __init__(self, api_key: str = "SG.test-key", *, validate_spec: bool = True) -> None:
        self.state = EmulatorState(api_key=api_key)
        self.signer = EventSigner()
        self._lock = threading.Lock()
        self._senders: list[threading.Thread] = []
        self._validate = validate_spec and spec.spec_skip_reason() is None
        if validate_spec and not self._validate:
            self.state.spec_skipped = spec.spec_skip_reason()
        self._server = EmulatorHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    # --- lifecycle and test controls --------------------------------------------------------

    def start(self) -> SendGridEmulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.wait_events()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        after: int = 0,
        retry_after: int | None = None,
        seconds: float = 0.0,
    ) -> None:
        """After ``after`` normal mail/send requests, the next ``times`` are answered ``status``
        (0: accepted, then the connection is reset; 1: accepted, then no answer for ``seconds``)."""
        with self._lock:
            self.state.faults.extend([None] * after)
            self.state.faults.extend(Fault(status, retry_after, seconds) for _ in range(times))

    def connect(self, daemon_url: str, events: Sequence[str] = ("delivered", "open")) -> None:
        """Post signed ``events`` for every recipient of accepted mail to the daemon's webhook."""
        self.state.webhook_url = daemon_url.rstrip("/") + "/hooks/sendgrid/events"
        self.state.auto_events = tuple(events)

    def wait_events(self) -> None:
        """Wait until the event posts started so far have been answered."""
        with self._lock:
            senders, self._senders = self._senders, []
        for sender in senders:
            sender.join(timeout=30)

    def call_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.state.calls)

    def messages(self, to: str | None = None) -> list[ReceivedMessage]:
        with self._lock:
            for body, templates in self.state.unrendered:
                self.state.received.extend(expand(body, p, templates) for p in body["personalizations"])
            self.state.unrendered.clear()
            return [m for m in self.state.received if to is None or m.to.lower() == to.lower()]

    # --- the vendor's behaviour -------------------------------------------------------------

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        return headers.get("Authorization") == f"Bearer {self.state.api_key}"

    def _mail_send(self, headers: Mapping[str, str], raw: bytes) -> tuple[int, dict[str, str], Any]:
        if not self._authorized(headers):
            raise Refused(
                401, [_error("The provided authorization grant is invalid, expired, or revoked", None)]
            )
        with self._lock:
            fault = self.state.faults.pop(0) if self.state.faults else None
        if fault is not None and fault.status == 429:
            extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            return 429, extra, {"errors": [{"field": None, "message": "too many requests"}]}
        if fault is not None and fault.status >= 500:
            return fault.status, {}, {"errors": [{"field": None, "message": "internal error", "help": None}]}
        try:
            body = json.loads(raw)
        except ValueError:
            raise Refused(400, [_error("Bad Request", None)]) from None
        if self._validate:
            violations = spec.validate("POST", "/v3/mail/send", headers, raw)
            if violations:
                with self._lock:
                    self.state.spec_violations.append(violations)
                raise Refused(400, violations)
        check_mail(body, self.state.templates)
        sandbox = bool(((body.get("mail_settings") or {}).get("sandbox_mode") or {}).get("enable"))
        if sandbox:
            return 200, {}, None
        message_id = secrets.token_urlsafe(16)
        self._record(message_id, body)
        if fault is not None and fault.status == 0:
            return -1, {}, None
        if fault is not None and fault.status == 1:
            time.sleep(fault.seconds)
        return 202, {"X-Message-Id": message_id}, None

    def _record(self, message_id: str, body: dict[str, Any]) -> None:
        with self._lock:
            self.state.accepted.append(Accepted(message_id, body))
            self.state.unrendered.append((body, dict(self.state.templates)))
            url, kinds = self.state.webhook_url, self.state.auto_events
        if url and kinds:
            sender = threading.Thread(
                target=self._post_events, args=(url, kinds, message_id, body), daemon=True
            )
            with self._lock:
                self._senders.append(sender)
            sender.start()

    def _post_events(self, url: str, kinds: Sequence[str], message_id: str, body: dict[str, Any]) -> None:
        events = [
            make_event(kind, p["to"][0]["email"], message_id=message_id, custom_args=p.get("custom_args", {}))
            for p in body["personalizations"]
            for kind in kinds
        ]
        for start in range(0, len(events), 500):
            raw, headers = self.signer.signed_request(events[start : start + 500])
            status = post(url, raw, headers)
            with self._lock:
                self.state.webhook_statuses.append(status)

    def _scopes(self, headers: Mapping[str, str]) -> tuple[int, dict[str, str], Any]:
        if not self._authorized(headers):
            raise Refused(401, [_error("authorization required", None)])
        return 200, {}, {"scopes": list(self.state.scopes)}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0].rstrip("/")
                route = (self.command, path)
                headers = dict(self.headers.items())
                kind = {("POST", "/v3/mail/send"): "mail_send", ("GET", "/v3/scopes"): "scopes"}.get(route)
                if kind is None:
                    self._answer(404, {}, {"errors": [_error("not found", None)]})
                    return
                with emulator._lock:
                    emulator.state.calls[kind] += 1
                try:
                    if kind == "mail_send":
                        status, extra, out = emulator._mail_send(headers, raw)
                    else:
                        status, extra, out = emulator._scopes(headers)
                except Refused as exc:
                    status, extra, out = exc.status, {}, {"errors": exc.errors}
                if status == -1:
                    self.close_connection = True
                    self.connection.close()  # the request was taken; the answer is lost
                    return
                self._answer(status, extra, out)

            def _answer(self, status: int, extra: Mapping[str, str], out: Any) -> None:
                data = b"" if out is None else json.dumps(out).encode()
                self.send_response(status)
                if out is not None:
                    self.send_header("Content-Type", "application/json")
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815 - http.server names

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def check_mail(body: dict[str, Any], templates: Mapping[str, Any]) -> None:
    """SendGrid's own rules beyond the schema (documented limits and content requirements)."""
    errors: list[dict[str, Any]] = []
    people = body.get("personalizations")
    if not isinstance(people, list) or not people:
        raise Refused(
            400,
            [
                _error(
                    "The personalizations field is required and must have at least one personalization.",
                    "personalizations",
                    "message.personalizations",
                )
            ],
        )
    if len(people) > MAX_PERSONALIZATIONS:
        errors.append(
            _error(
                f"The personalizations array exceeds the maximum of {MAX_PERSONALIZATIONS} "
                "personalizations per request.",
                "personalizations",
                "message.personalizations",
            )
        )
    seen: set[str] = set()
    recipients = 0
    for i, person in enumerate(people):
        for role in ("to", "cc", "bcc"):
            for j, rcpt in enumerate(person.get(role) or []):
                recipients += 1
                email = str(rcpt.get("email", ""))
                local, _, domain = email.partition("@")
                if not local or "." not in domain or " " in email:
                    errors.append(
                        _error(
                            "Does not contain a valid address.",
                            f"personalizations.{i}.{role}.{j}.email",
                            "message.personalizations",
                        )
                    )
                elif email.lower() in seen:
                    errors.append(
                        _error(
                            "Each email address in the personalization block should be unique between to, "
                            f"cc, and bcc. We found the first duplicate instance of [{email}] in the "
                            f"personalizations.{i}.{role} field.",
                            f"personalizations.{i}.{role}",
                            "message.recipient_errors",
                        )
                    )
                seen.add(email.lower())
        for name, value in (person.get("custom_args") or {}).items():
            if not isinstance(value, str):
                errors.append(
                    _error("Custom args must be strings.", f"personalizations.{i}.custom_args.{name}")
                )
    if recipients > MAX_RECIPIENTS:
        errors.append(
            _error(
                f"The total number of recipients must be less than {MAX_RECIPIENTS + 1}.",
                "personalizations",
                "message.recipient_errors",
            )
        )
    sender = str((body.get("from") or {}).get("email", ""))
    if "@" not in sender:
        errors.append(
            _error("The from email does not contain a valid address.", "from.email", "message.from")
        )
    template_id = body.get("template_id")
    if template_id is not None and template_id not in templates:
        errors.append(
            _error(
                "The template_id must be a valid GUID, you provided '" + str(template_id) + "'.",
                "template_id",
                "message.template_id",
            )
        )
    content = body.get("content") or []
    if template_id is None:
        if not content:
            errors.append(
                _error(
                    "Unless a valid template_id is provided, the content parameter is required. "
                    "There must be at least one defined content block.",
                    "content",
                    "message.content",
                )
            )
        if not body.get("subject") and not all(p.get("subject") for p in people):
            errors.append(
                _error(
                    "The subject is required. You can get around this requirement if you use a "
                    "template with a subject defined or if every personalization has a subject "
                    "defined.",
                    "subject",
                    "message.subject",
                )
            )
    types = [c.get("type") for c in content]
    if (
        "text/html" in types
        and "text/plain" in types
        and types.index("text/plain") > types.index("text/html")
    ):
        errors.append(
            _error(
                "If present, text/plain and text/html may only be provided in that order.",
                "content",
                "message.content.type",
            )
        )
    if len(body.get("categories") or []) > 10:
        errors.append(_error("Too many categories: at most 10.", "categories", "message.categories"))
    if errors:
        raise Refused(400, errors)


def expand(
    body: Mapping[str, Any], person: Mapping[str, Any], templates: Mapping[str, Any]
) -> ReceivedMessage:
    """What this personalization's recipient receives."""
    subs = person.get("substitutions") or {}
    headers = {**(body.get("headers") or {}), **(person.get("headers") or {})}
    shared_args = body.get("custom_args")
    custom = {**(shared_args if isinstance(shared_args, dict) else {}), **(person.get("custom_args") or {})}
    template_id = body.get("template_id")
    if template_id is not None:
        data = person.get("dynamic_template_data") or {}
        t_subject, t_text, t_html = templates[template_id]
        subject, text = render.handlebars(t_subject, data), render.handlebars(t_text, data)
        html = render.handlebars(t_html, data) if t_html is not None else None
    else:
        parts = {c["type"]: c["value"] for c in body.get("content") or []}
        subject = render.substitute(str(person.get("subject") or body.get("subject") or ""), subs)
        text = render.substitute(parts.get("text/plain", ""), subs)
        html = render.substitute(parts["text/html"], subs) if "text/html" in parts else None
    return ReceivedMessage(
        to=person["to"][0]["email"],
        subject=subject,
        text=text,
        html=html,
        headers=headers,
        send_key=custom.get(SEND_KEY_ARG),
    )
