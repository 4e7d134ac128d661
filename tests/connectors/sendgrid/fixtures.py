"""Fixtures for the SendGrid channel: the emulator, a store-backed inbound sink, the channel built
the way the core builds it, and ``channel_e2e_sendgrid`` for the end-to-end suite."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from nps_sync.abc import ConnectorContext, InboundReply
from nps_sync.connectors.sendgrid import CONNECTOR, SendGridChannel
from nps_sync.models import OutboundMessage, ProviderEvent, TaggedContent
from nps_sync.secrets import Secrets
from nps_sync.store import schema
from nps_sync.store.db import Store, utcnow
from tests.emulators.sendgrid import SendGridEmulator
from tests.harness import E2EChannel, ReceivedMessage

# Loopback only, even when this module is loaded on its own (``-p``) without tests/conftest.py.
for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = "127.0.0.1,localhost"

API_KEY = "SG.emulator-test-key"
PUBLIC_URL = "https://nps.acme.test"
SENDER = "Acme Customer Team <nps@acme.test>"


class StoreSink:
    """A real :class:`~nps_sync.abc.InboundSink` for these tests: events go to ``inbound_events``,
    deduplicated by the database on ``(provider, event_id)``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.fail = False

    def sms_received(
        self, *, provider: str, event_id: str, from_number: str, to_number: str, body: str
    ) -> InboundReply:
        raise NotImplementedError("the SendGrid tests receive no SMS")

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
        return self.delivery_events(
            [ProviderEvent(provider, event_id, event, send_key, address, occurred_at, detail)]
        )[0]

    def delivery_events(self, events: Sequence[ProviderEvent]) -> list[bool]:
        if self.fail:
            raise RuntimeError("database is down")
        with self.store.begin() as conn:
            return [
                self.store.insert_ignore(
                    conn,
                    schema.inbound_events,
                    {
                        "provider": e.provider,
                        "event_id": e.event_id,
                        "kind": e.event,
                        "send_key": e.send_key,
                        "detail": e.detail,
                        "received_at": utcnow(),
                    },
                    "provider",
                    "event_id",
                )
                for e in events
            ]

    def rows(self) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            return [dict(r._mapping) for r in conn.execute(schema.inbound_events.select())]


def tagged_message(
    number: int,
    *,
    to: str | None = None,
    language: str = "en",
    purpose: str = "survey",
    first_name: str | None = None,
) -> OutboundMessage:
    """A survey email as the core renders it: own links per recipient, tagged twin, one-click headers."""
    token = f"tok{number:05d}"
    name = first_name if first_name is not None else f"Person{number}"
    links = [f"{PUBLIC_URL}/s/{token}/{score}" for score in range(11)]
    unsubscribe = f"{PUBLIC_URL}/u/{token}"
    greeting = "Hello" if language == "en" else "Hallo"
    question = "How likely are you to recommend Acme?" if language == "en" else "Wie wahrscheinlich …?"
    tags = {"-first_name-": name, "-unsubscribe_url-": unsubscribe}
    tags.update({f"-score_{score}-": link for score, link in enumerate(links)})

    def text(values: Mapping[str, str]) -> str:
        scores = " ".join(values[f"-score_{s}-"] for s in range(11))
        return (
            f"{greeting} {values['-first_name-']},\n{question}\n{scores}\n"
            f"Unsubscribe: {values['-unsubscribe_url-']}\nAcme Inc., 1 Main St, Springfield"
        )

    def html(values: Mapping[str, str]) -> str:
        anchors = "".join(f'<a href="{values[f"-score_{s}-"]}">{s}</a>' for s in range(11))
        return f"<p>{greeting} {values['-first_name-']}</p><p>{anchors}</p>"

    identity = {k: k for k in tags}
    return OutboundMessage(
        send_key=f"wave1:C{number:05d}:{purpose}",
        channel="email",
        to=to or f"person{number}@example.test",
        subject=f"{greeting} {name}, one question",
        text=text(tags),
        html=html(tags),
        headers={
            "List-Unsubscribe": f"<{unsubscribe}>, <mailto:unsubscribe@acme.test?subject={token}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        template_data={
            "first_name": name,
            "question": question,
            "score_links": links,
            "unsubscribe_url": unsubscribe,
            "language": language,
            "purpose": purpose,
        },
        purpose=purpose,
        tagged=TaggedContent(
            subject=f"{greeting} -first_name-, one question",
            text=text(identity),
            html=html(identity),
            substitutions=tags,
        ),
        sender=SENDER,
        reply_to="Support <support@acme.test>",
    )


@pytest.fixture
def sendgrid_emulator() -> Iterator[SendGridEmulator]:
    emulator = SendGridEmulator(API_KEY).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def sendgrid_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    schema.metadata.create_all(store.engine)
    yield store
    store.dispose()


@pytest.fixture
def sendgrid_sink(sendgrid_store: Store) -> StoreSink:
    return StoreSink(sendgrid_store)


ChannelFactory = Callable[..., SendGridChannel]


@pytest.fixture
def make_sendgrid_channel(
    sendgrid_emulator: SendGridEmulator, sendgrid_store: Store, sendgrid_sink: StoreSink, tmp_path: Path
) -> Iterator[ChannelFactory]:
    """Build the channel through ``CONNECTOR`` as the core does; keyword arguments are options."""
    built: list[SendGridChannel] = []

    def build(env: Mapping[str, str] | None = None, **options: Any) -> SendGridChannel:
        environ = {
            "SENDGRID_API_KEY": API_KEY,
            "SENDGRID_WEBHOOK_PUBLIC_KEY": sendgrid_emulator.signer.public_key_b64,
            **(env or {}),
        }
        ctx = ConnectorContext(
            role="email",
            state_dir=tmp_path,
            public_url=PUBLIC_URL,
            time_zone=ZoneInfo("UTC"),
            secrets=Secrets({k: v for k, v in environ.items() if v}),
            store=sendgrid_store,
            inbound=sendgrid_sink,
            overrides={"retry_wait": 0.01},
        )
        parsed = CONNECTOR.options.model_validate({"base_url": sendgrid_emulator.url, **options})
        channel = CONNECTOR.factory(parsed, ctx)
        assert isinstance(channel, SendGridChannel)
        built.append(channel)
        return channel

    yield build
    for channel in built:
        channel.close()


class WebServer:
    """A real uvicorn server on 127.0.0.1 in a thread, whose routes a test can swap (the way the
    daemon mounts a channel's ``routes()``), so webhook tests go over real HTTP with raw bytes."""

    def __init__(self) -> None:
        self._app: ASGIApp = Starlette()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(
            self._asgi, interface="asgi3", log_level="warning", lifespan="off", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    def mount(self, routes: Sequence[BaseRoute]) -> None:
        self._app = Starlette(routes=list(routes))

    def start(self) -> WebServer:
        self._thread.start()
        for _ in range(500):
            if self._server.started:
                return self
            time.sleep(0.01)
        raise RuntimeError("uvicorn did not start within 5 s")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


@pytest.fixture(scope="session")
def sendgrid_web_server() -> Iterator[WebServer]:
    server = WebServer().start()
    yield server
    server.stop()


class SendGridProbe:
    """:class:`tests.harness.ChannelProbe` over the emulator."""

    def __init__(self, emulator: SendGridEmulator) -> None:
        self.emulator = emulator

    def connect(self, daemon_url: str) -> None:
        self.emulator.connect(daemon_url, events=("delivered", "open"))

    def messages(self, to: str | None = None) -> Sequence[ReceivedMessage]:
        return self.emulator.messages(to)

    def reply(self, from_number: str, body: str) -> None:
        raise NotImplementedError("SendGrid is an email channel: people do not text it")

    def call_counts(self) -> Mapping[str, int]:
        return self.emulator.call_counts()

    def attach(self, store: Store) -> None:
        """Nothing to attach: the mail is in the emulator, not in the daemon's database."""


@pytest.fixture
def channel_e2e_sendgrid(sendgrid_emulator: SendGridEmulator) -> E2EChannel:
    """The ``[channels.email]`` tables pointing at the emulator, and the secrets the daemon needs."""
    # The sub-table is written inline so that keys a harness appends after this text (such as
    # ``postal_address``) still land in ``[channels.email]``, not in the connector's own table.
    toml = (
        "[channels.email]\n"
        'kind = "sendgrid"\n'
        'from_address = "nps@acme.test"\n'
        'from_name = "Acme Customer Team"\n'
        f'sendgrid = {{ base_url = "{sendgrid_emulator.url}", api_key_secret = "SENDGRID_API_KEY", '
        'webhook_public_key_secret = "SENDGRID_WEBHOOK_PUBLIC_KEY" }\n'
    )
    return E2EChannel(
        config_toml=toml,
        probe=SendGridProbe(sendgrid_emulator),
        env={
            "SENDGRID_API_KEY": API_KEY,
            "SENDGRID_WEBHOOK_PUBLIC_KEY": sendgrid_emulator.signer.public_key_b64,
        },
    )
