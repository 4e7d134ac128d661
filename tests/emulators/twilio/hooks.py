"""The emulator's webhook side: signed inbound SMS and status callbacks POSTed to the daemon.

Twilio signs the URL *it* called (the public URL configured at Twilio); the request may land on a
different address (the daemon behind a proxy). So every sender takes the URL to sign and the URL to
POST to separately.
"""

from __future__ import annotations

import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit
from xml.etree import ElementTree

from twilio.request_validator import RequestValidator

from tests.emulators.twilio.server import TwilioEmulator
from tests.emulators.twilio.state import (
    HELP_KEYWORDS,
    START_KEYWORDS,
    STOP_KEYWORDS,
    Message,
    new_sid,
    now,
)

INBOUND_PATH = "/hooks/twilio/inbound"
TWILIO_STOP_REPLY = "You have successfully been unsubscribed. You will not receive any more messages from this number. Reply START to resubscribe."  # noqa: E501
TWILIO_START_REPLY = "You have successfully been re-subscribed to messages from this number. Reply HELP for help. Reply STOP to unsubscribe."  # noqa: E501
TWILIO_HELP_REPLY = "Reply STOP to unsubscribe. Msg&Data Rates May Apply."


@dataclass
class Posted:
    status: int
    body: str
    replies: list[str] = field(default_factory=list)


def post_form(
    target: str, params: Mapping[str, str] | list[tuple[str, str]], headers: Mapping[str, str]
) -> tuple[int, str]:
    """POST a form body to ``target`` (127.0.0.1 only) and return (status, body)."""
    if urlsplit(target).hostname != "127.0.0.1":
        raise ValueError(f"webhook target must be on 127.0.0.1, got: {target}")
    data = urlencode(params).encode()
    request = urllib.request.Request(target, data=data, method="POST")  # noqa: S310 -- loopback only
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 -- loopback only
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def twiml_messages(text: str) -> list[str]:
    """The ``<Message>`` texts of a TwiML answer (what Twilio would text back)."""
    if not text.strip():
        return []
    root = ElementTree.fromstring(text)  # noqa: S314 -- our own daemon's answer in tests
    return [el.text or "" for el in root.iter("Message")]


class WebhookSender:
    """Signs and POSTs what Twilio would send to the daemon's webhooks."""

    def __init__(self, emulator: TwilioEmulator, *, target_url: str = "", public_url: str = "") -> None:
        self.em = emulator
        #: Where the daemon (or test app) really listens, e.g. http://127.0.0.1:PORT.
        self.target_url = target_url.rstrip("/")
        #: What Twilio is configured to call (and signs), e.g. https://nps.example.com.
        self.public_url = (public_url or target_url).rstrip("/")
        #: Twilio's opt-out handling answers STOP/START/HELP itself (and Advanced Opt-Out adds
        #: ``OptOutType``); off when ops turned Twilio's replies off.
        self.twilio_answers_keywords = False
        self._queue: queue.Queue[tuple[str, str | None] | None] = queue.Queue()
        self._workers: list[threading.Thread] = []

    def sign(self, url: str, params: Mapping[str, str], token: str | None = None) -> str:
        return str(RequestValidator(token or self.em.state.auth_token).compute_signature(url, params))

    def post_signed(self, path_and_query: str, params: Mapping[str, str]) -> Posted:
        """Sign over the public URL, POST to the target URL."""
        signature = self.sign(self.public_url + path_and_query, params)
        status, body = post_form(self.target_url + path_and_query, params, {"X-Twilio-Signature": signature})
        return Posted(status, body)

    # --- inbound SMS -------------------------------------------------------------------------------

    def inbound(
        self, from_number: str, body: str, *, to: str | None = None, message_sid: str | None = None
    ) -> Posted:
        """The person texts ``body``; Twilio applies its keyword handling, calls the inbound webhook
        and texts back what the TwiML answer says."""
        state = self.em.state
        to = to or self._our_number()
        sid = message_sid or new_sid("SM")
        keyword = body.strip().upper()
        scope = state.scope_of(to)
        with state.lock:
            if keyword in STOP_KEYWORDS:
                state.opt_outs.add((scope, from_number))
            elif keyword in START_KEYWORDS:
                state.opt_outs.discard((scope, from_number))
        params = {
            "ToCountry": "US",
            "SmsMessageSid": sid,
            "NumMedia": "0",
            "SmsSid": sid,
            "SmsStatus": "received",
            "Body": body,
            "To": to,
            "NumSegments": "1",
            "MessageSid": sid,
            "AccountSid": state.account_sid,
            "From": from_number,
            "ApiVersion": "2010-04-01",
        }
        if scope.startswith("MG"):
            params["MessagingServiceSid"] = scope
        own_reply = self._keyword_reply(keyword) if self.twilio_answers_keywords else None
        if own_reply is not None:
            params["OptOutType"] = keyword_type(keyword)
            self._record_reply(to, from_number, own_reply, scope)
        if message_sid is None:
            state.add(
                Message(sid, state.account_sid, to, from_number, body, params.get("MessagingServiceSid"),
                        "received", "inbound", None, now(), now())
            )  # fmt: skip
        posted = self.post_signed(INBOUND_PATH, params)
        state.count("webhooks.inbound")
        if posted.status == 200:
            posted.replies = twiml_messages(posted.body)
            for text in posted.replies:
                self._record_reply(to, from_number, text, scope)
        return posted

    def _our_number(self) -> str:
        state = self.em.state
        for pool in state.services.values():
            return pool[0]
        return sorted(state.numbers)[0]

    @staticmethod
    def _keyword_reply(keyword: str) -> str | None:
        if keyword in STOP_KEYWORDS:
            return TWILIO_STOP_REPLY
        if keyword in START_KEYWORDS:
            return TWILIO_START_REPLY
        if keyword in HELP_KEYWORDS:
            return TWILIO_HELP_REPLY
        return None

    def _record_reply(self, ours: str, person: str, text: str, scope: str) -> None:
        service = scope if scope.startswith("MG") else None
        self.em.state.add(
            Message(new_sid("SM"), self.em.state.account_sid, person, ours, text, service, "sent",
                    "outbound-reply", None, now(), now())
        )  # fmt: skip

    # --- status callbacks --------------------------------------------------------------------------

    def status(self, sid: str, status: str, error_code: str | None = None) -> Posted:
        """Twilio reports ``status`` for a message it accepted, to that message's StatusCallback."""
        message = self.em.state.find(sid)
        if message is None or not message.status_callback:
            raise KeyError(f"no message {sid} with a status callback")
        with self.em.state.lock:
            message.status = status
            if status in {"sent", "delivered"} and message.date_sent is None:
                message.date_sent = now()
            message.error_code = int(error_code) if error_code else None
        params = {
            "SmsSid": sid,
            "SmsStatus": status,
            "MessageStatus": status,
            "To": message.to,
            "MessageSid": sid,
            "AccountSid": message.account_sid,
            "From": message.from_,
            "ApiVersion": "2010-04-01",
        }
        if message.messaging_service_sid:
            params["MessagingServiceSid"] = message.messaging_service_sid
        if error_code:
            params["ErrorCode"] = error_code
        callback = urlsplit(message.status_callback)
        public = f"{callback.scheme}://{callback.netloc}"
        path = callback.path + (f"?{callback.query}" if callback.query else "")
        signature = self.sign(public + path, params)
        code, body = post_form(self.target_url + path, params, {"X-Twilio-Signature": signature})
        self.em.state.count("webhooks.status")
        return Posted(code, body)

    def start_auto_status(self, senders: int = 1) -> None:
        """Report ``sent`` then ``delivered`` for every accepted message, from ``senders`` background
        threads (Twilio posts callbacks for different messages at once; each message's two in order)."""
        if self._workers:
            return
        self.em.on_accept = lambda message: self._queue.put((message.sid, None))
        self._workers = [
            threading.Thread(target=self._run, name=f"twilio-callbacks-{n}", daemon=True)
            for n in range(senders)
        ]
        for worker in self._workers:
            worker.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            for state in ("sent", "delivered"):
                try:
                    self.status(item[0], state)
                except (OSError, KeyError):
                    break
            self._queue.task_done()
        self._queue.task_done()

    def drain(self) -> None:
        """Wait until every queued status callback has been POSTed."""
        self._queue.join()

    def stop(self) -> None:
        if self._workers:
            self.em.on_accept = None
            for _ in self._workers:
                self._queue.put(None)
            for worker in self._workers:
                worker.join(timeout=10)
            self._workers = []


def keyword_type(keyword: str) -> str:
    if keyword in STOP_KEYWORDS:
        return "STOP"
    if keyword in START_KEYWORDS:
        return "START"
    return "HELP"
