"""Shared test harness types: how the contract and end-to-end suites see a CRM or channel under test.

Every CRM backend (the sandbox, and each emulator-backed connector) provides
- a pytest fixture ``crm_under_test_<name>`` returning :class:`CrmUnderTest` (contract suite), and
- a pytest fixture ``crm_e2e_<name>`` returning :class:`E2ECrm` (end-to-end loop through the daemon).
Every channel backend likewise provides ``channel_e2e_<name>`` returning :class:`E2EChannel`.

All backends are seeded with the example data in ``connectors/sandbox/seed/`` (owners, accounts,
contacts), mapped to the vendor's objects, so the same assertions hold everywhere.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import uvicorn

from nps_sync.abc import CRM

SEED_DIR = Path(__file__).resolve().parent.parent / "connectors" / "sandbox" / "seed"
SHARED_SPECS = Path(__file__).resolve().parent.parent.parent / "shared" / "specs"


@dataclass(frozen=True)
class ProbedTask:
    """A task as the backend stores it, in the project's vocabulary."""

    id: str
    key: str | None
    contact_id: str | None
    account_id: str | None
    owner_id: str | None
    subject: str
    body: str
    due: date | None
    completed: bool
    priority: str  # high | normal | low


class CrmProbe(Protocol):
    """Looks straight into the backend (the sandbox tables, the emulator's memory) for assertions."""

    def contact_id(self, email: str) -> str: ...
    def missing_contact_id(self) -> str:
        """An id shaped like the backend's real ones that no contact has."""
        ...

    def account_id(self, name: str) -> str: ...
    def owner_id(self, email: str) -> str: ...
    def contact_value(self, contact_id: str, logical: str) -> str | None:
        """A written field by logical name (score, category, comment, responded_at, surveyed_at,
        sms_opt_out, email_opt_out) as a string; None when empty."""
        ...

    def account_value(self, account_id: str, logical: str) -> str | None:
        """An account roll-up field by logical name (nps, responses) as a string; None when empty."""
        ...

    def tasks(self) -> list[ProbedTask]: ...
    def complete_task(self, task_id: str) -> None: ...
    def call_counts(self) -> Mapping[str, int]:
        """API calls by kind since the backend started (empty for the sandbox)."""
        ...


@dataclass
class CrmUnderTest:
    crm: CRM
    probe: CrmProbe
    #: ``[program.audience]`` table selecting every seeded contact.
    audience_all: Mapping[str, Any]
    #: ``[program.audience]`` table selecting only the contacts of account "Fabrikam GmbH" (A03).
    audience_fabrikam: Mapping[str, Any]


@dataclass
class E2ECrm:
    """A CRM for a daemon started from a config file."""

    #: The ``[crm]`` table and its sub-tables, as TOML text.
    config_toml: str
    probe: CrmProbe
    audience_all: Mapping[str, Any]
    env: Mapping[str, str] = field(default_factory=dict)  # secrets the daemon needs


@dataclass(frozen=True)
class ReceivedMessage:
    to: str
    subject: str
    text: str
    html: str | None
    headers: Mapping[str, str]
    send_key: str | None


class ChannelProbe(Protocol):
    def connect(self, daemon_url: str) -> None:
        """Where the daemon under test listens, so the emulator can call its webhooks."""
        ...

    def messages(self, to: str | None = None) -> Sequence[ReceivedMessage]:
        """Messages the provider accepted, oldest first."""
        ...

    def reply(self, from_number: str, body: str) -> None:
        """SMS only: the person texts ``body``; the provider calls the daemon's inbound webhook."""
        ...

    def call_counts(self) -> Mapping[str, int]: ...


@dataclass
class E2EChannel:
    #: The ``[channels.email]`` or ``[channels.sms]`` table and its sub-table, as TOML text.
    config_toml: str
    probe: ChannelProbe
    env: Mapping[str, str] = field(default_factory=dict)


class Server:
    """The daemon's web app for a Runtime, served by a real uvicorn on 127.0.0.1 in a thread, the way
    the daemon serves it (``proxy_headers=False``: the app sees the TCP peer)."""

    def __init__(self, rt: Any) -> None:
        from nps_sync.web import create_app

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(rt),
            interface="asgi3",
            log_level="warning",
            lifespan="off",
            access_log=False,
            proxy_headers=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self) -> Server:
        self._thread.start()
        for _ in range(1000):
            if self._server.started:
                return self
            time.sleep(0.01)
        raise RuntimeError("uvicorn did not start within 10 s")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
