"""Twilio fixtures: the emulator, channels built through the connector spec, a small web app for the
webhook routes, a recording InboundSink, and the end-to-end channel (``channel_e2e_twilio``)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
import uvicorn
from sqlalchemy import func, select
from starlette.applications import Starlette
from twilio.request_validator import RequestValidator

from nps_sync.abc import ConnectorContext, InboundReply, InboundSink
from nps_sync.connectors.twilio import CONNECTOR, TwilioChannel
from nps_sync.models import ProviderEvent
from nps_sync.secrets import Secrets
from nps_sync.sms_text import parse_sms
from nps_sync.store import schema
from nps_sync.store.db import Store, utcnow
from tests.emulators.twilio import TwilioEmulator, WebhookSender
from tests.emulators.twilio.hooks import post_form
from tests.harness import E2EChannel, ReceivedMessage

ACCOUNT_SID = "AC" + "0a1b2c3d" * 4
AUTH_TOKEN = "emulator-auth-token-0123456789abcd"
SERVICE_SID = "MG" + "5e6f7a8b" * 4
SERVICE_NUMBER = "+14155550100"
FROM_NUMBER = "+14155550199"
API_KEY_SID = "SK" + "9c8d7e6f" * 4
API_KEY_SECRET = "emulator-api-key-secret"
PUBLIC_URL = "https://nps.example.com"

SHARED_KEY = "webhook-shared-key-secret"
INBOUND = "/hooks/twilio/inbound"
STATUS = "/hooks/twilio/status"
SHA256_SETTINGS = "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"

STOP_CONFIRMATION = "You are unsubscribed from NPS surveys. Reply START to resubscribe."
HELP_TEXT = "NPS surveys by Example Corp. Help: support@example.com. Reply STOP to unsubscribe."
START_CONFIRMATION = "You are subscribed to NPS surveys again. Reply STOP to unsubscribe."


class RecordingSink:
    """An InboundSink that records into ``inbound_events`` with ``Store.insert_ignore`` (the
    database dedupes on (provider, event_id)) and answers keywords the way the core does."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.lock = threading.Lock()
        self.calls = 0

    def _record(self, provider: str, event_id: str, kind: str, send_key: str | None, detail: str) -> bool:
        with self.lock:
            self.calls += 1
        with self.store.begin() as conn:
            return self.store.insert_ignore(
                conn,
                schema.inbound_events,
                {"provider": provider, "event_id": event_id, "kind": kind, "send_key": send_key,
                 "detail": detail, "received_at": utcnow()},
                "provider", "event_id",
            )  # fmt: skip

    def sms_received(
        self, *, provider: str, event_id: str, from_number: str, to_number: str, body: str
    ) -> InboundReply:
        if not self._record(provider, event_id, "sms", None, f"{from_number}:{body}"):
            return InboundReply(None)
        kind = parse_sms(body).kind
        text = {"stop": STOP_CONFIRMATION, "help": HELP_TEXT, "start": START_CONFIRMATION}.get(kind)
        return InboundReply(text)

    def delivery_event(
        self,
        *,
        provider: str,
        event_id: str,
        event: str,
        send_key: str | None,
        address: str | None,
        occurred_at: datetime | None,
        detail: str = "",
    ) -> bool:
        return self._record(provider, event_id, event, send_key, f"{address}:{detail}")

    def delivery_events(self, events: Sequence[ProviderEvent]) -> list[bool]:
        return [
            self._record(e.provider, e.event_id, e.event, e.send_key, f"{e.address}:{e.detail}")
            for e in events
        ]

    def events(self) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            rows = conn.execute(select(schema.inbound_events).order_by(schema.inbound_events.c.id))
            return [dict(r) for r in rows.mappings()]

    def count(self) -> int:
        with self.store.read() as conn:
            return int(conn.execute(select(func.count()).select_from(schema.inbound_events)).scalar_one())


def make_channel(
    emulator: TwilioEmulator,
    store: Store,
    *,
    public_url: str = PUBLIC_URL,
    inbound: InboundSink | None = None,
    env: Mapping[str, str] | None = None,
    **options: Any,
) -> TwilioChannel:
    """Build the channel the way the core does: validated options + a context."""
    values: dict[str, Any] = {
        "account_sid": ACCOUNT_SID,
        "messaging_service_sid": SERVICE_SID,
        "base_url": emulator.url,
        "messages_per_second": 1000,
        "concurrency": 4,
    }
    values.update(options)
    validated = CONNECTOR.options.model_validate(values)
    ctx = ConnectorContext(
        role="sms",
        state_dir=Path("."),
        public_url=public_url,
        time_zone=ZoneInfo("UTC"),
        secrets=Secrets(dict(env) if env is not None else {"TWILIO_AUTH_TOKEN": AUTH_TOKEN}),
        store=store,
        inbound=inbound,
    )
    channel = CONNECTOR.factory(validated, ctx)
    assert isinstance(channel, TwilioChannel)
    return channel


class WebApp:
    """The channel's routes in a Starlette app served by uvicorn on 127.0.0.1 (a thread). The port is
    bound first, so a channel can be built for ``url`` before the app starts."""

    def __init__(self, channel: TwilioChannel | None = None) -> None:
        self.channel = channel
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> WebApp:
        assert self.channel is not None, "set WebApp.channel before starting it"
        app = Starlette(routes=list(self.channel.routes()))
        config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        started = threading.Event()
        while not self._server.started and self._thread.is_alive():
            started.wait(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._sock.close()


@pytest.fixture
def twilio_emulator() -> Iterator[TwilioEmulator]:
    emulator = TwilioEmulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    emulator.add_service(SERVICE_SID, [SERVICE_NUMBER])
    emulator.add_number(FROM_NUMBER)
    emulator.add_api_key(API_KEY_SID, API_KEY_SECRET)
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def twilio_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'twilio.db'}")
    store.upgrade()
    yield store
    store.dispose()


@dataclass
class Hooks:
    channel: TwilioChannel
    sink: RecordingSink
    app: WebApp
    sender: WebhookSender
    public_url: str

    def post(
        self,
        path: str,
        params: Mapping[str, str],
        *,
        sign_url: str | None = None,
        sign_params: Mapping[str, str] | None = None,
        token: str = AUTH_TOKEN,
        algorithm: str | None = None,
        headers: Mapping[str, str] | None = None,
        signature: str | None = None,
    ) -> tuple[int, str]:
        """Sign ``sign_params`` (default: ``params``) over ``sign_url`` (default: the public URL +
        path) and POST ``params`` to the app's real loopback address."""
        url = sign_url if sign_url is not None else self.public_url + path
        sig = signature
        if sig is None:
            sig = RequestValidator(token).compute_signature(url, dict(sign_params or params), algorithm)
        sent_headers = {"X-Twilio-Signature": sig, **(headers or {})}
        if signature == "":
            sent_headers.pop("X-Twilio-Signature")
        return post_form(self.app.url + path, params, sent_headers)


@pytest.fixture
def twilio_hooks_factory(
    twilio_emulator: TwilioEmulator, twilio_store: Store
) -> Iterator[Callable[..., Hooks]]:
    opened: list[tuple[TwilioChannel, WebApp]] = []

    def make(public_url: str = PUBLIC_URL, **options: Any) -> Hooks:
        sink = RecordingSink(twilio_store)
        env = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_WEBHOOK_KEY": SHARED_KEY}
        channel = make_channel(
            twilio_emulator, twilio_store, public_url=public_url, inbound=sink, env=env, **options
        )
        app = WebApp(channel).__enter__()
        opened.append((channel, app))
        sender = WebhookSender(twilio_emulator, target_url=app.url, public_url=public_url)
        return Hooks(channel, sink, app, sender, public_url.rstrip("/"))

    yield make
    for channel, app in opened:
        app.__exit__(None, None, None)
        channel.close()


class TwilioProbe:
    """``tests.harness.ChannelProbe`` over the emulator."""

    def __init__(self, emulator: TwilioEmulator) -> None:
        self.emulator = emulator
        self.sender = WebhookSender(emulator)

    def connect(self, daemon_url: str, public_url: str | None = None) -> None:
        """Webhooks go to ``daemon_url``, signed for ``public_url`` (the daemon's configured public
        base URL; the same as ``daemon_url`` unless a proxy sits between)."""
        self.sender.target_url = daemon_url.rstrip("/")
        self.sender.public_url = (public_url or daemon_url).rstrip("/")
        self.sender.start_auto_status()

    def messages(self, to: str | None = None) -> Sequence[ReceivedMessage]:
        """Messages the daemon sent through the API (TwiML replies are in :meth:`replies`)."""
        return [
            ReceivedMessage(m.to, "", m.body, None, {}, _send_key(m.status_callback))
            for m in self.emulator.messages("outbound-api")
            if to is None or m.to == to
        ]

    def replies(self, to: str | None = None) -> list[str]:
        """Texts that reached the person as answers to their SMS (TwiML and Twilio's own)."""
        return [m.body for m in self.emulator.messages("outbound-reply") if to is None or m.to == to]

    def reply(self, from_number: str, body: str) -> None:
        posted = self.sender.inbound(from_number, body)
        if posted.status != 200:
            raise AssertionError(
                f"daemon answered the inbound SMS webhook with {posted.status}: {posted.body}"
            )

    def call_counts(self) -> Mapping[str, int]:
        return self.emulator.call_counts()


def _send_key(callback: str | None) -> str | None:
    if not callback:
        return None
    return parse_qs(urlsplit(callback).query).get("k", [None])[0]


@pytest.fixture
def channel_e2e_twilio(twilio_emulator: TwilioEmulator) -> Iterator[E2EChannel]:
    probe = TwilioProbe(twilio_emulator)
    toml = f"""\
[channels.sms]
kind = "twilio"

[channels.sms.twilio]
account_sid = "{ACCOUNT_SID}"
auth_token_secret = "TWILIO_AUTH_TOKEN"
messaging_service_sid = "{SERVICE_SID}"
base_url = "{twilio_emulator.url}"
messages_per_second = 1000
concurrency = 4
stop_confirmation = "nps-sync"
"""
    yield E2EChannel(config_toml=toml, probe=probe, env={"TWILIO_AUTH_TOKEN": AUTH_TOKEN})
    probe.sender.stop()
