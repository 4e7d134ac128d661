"""What a CRM connector and a channel must do, and what the core offers them.

Every connector (built in or a plugin found through the ``nps_sync.connectors`` entry-point group)
exports one :class:`ConnectorSpec`. The core builds the connector from its validated options and a
:class:`ConnectorContext`, then talks to it only through :class:`CRM` or :class:`Channel`.

Errors: connectors raise only :mod:`nps_sync.errors` kinds (``ConnectorUnavailable`` / ``RateLimited``
for transient trouble, ``AuthFailed``, ``PermanentError``, ``AmbiguousOutcome``) and never leak SDK
exceptions. Per-record problems inside a batch are *returned* (``BatchResult``, ``TaskResult``), not
raised, so one bad record never fails the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from nps_sync.models import (
    AccountUpdate,
    Audience,
    BatchResult,
    ChannelKind,
    Contact,
    ContactUpdate,
    OutboundMessage,
    Owner,
    PendingSend,
    ProviderEvent,
    SendOutcome,
    TaskResult,
    TaskSpec,
    TaskState,
)

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from nps_sync.secrets import Secrets
    from nps_sync.store.db import Store


@runtime_checkable
class CRM(Protocol):
    """A customer database: where the audience comes from and where results and tasks go."""

    name: str

    def iter_audience(self, audience: Audience) -> Iterator[Sequence[Contact]]:
        """Yield the program's contacts page by page (never the whole audience at once).

        Contacts opted out of ``audience.channel`` by the CRM's standard field are still yielded,
        with ``email_opt_out`` / ``sms_opt_out`` set, so the core can record why they were skipped.
        Read-only and safe to repeat. Raises ``ConnectorUnavailable`` / ``AuthFailed``.
        """
        ...

    def get_contacts(self, ids: Sequence[str]) -> dict[str, Contact]:
        """Return the contacts that exist among ``ids`` (missing ids are absent). Read-only."""
        ...

    def get_owners(self, ids: Sequence[str]) -> dict[str, Owner]:
        """Return the users among ``ids``, with ``manager_id`` filled where the CRM knows it."""
        ...

    def find_owner(self, query: str) -> Owner | None:
        """Find an active user by username or email; ``None`` when there is none. Read-only."""
        ...

    def update_contacts(self, updates: Sequence[ContactUpdate]) -> BatchResult:
        """Write fields on contacts, batching as the API allows. Idempotent (plain field writes).

        Per-record failures are returned; only whole-call trouble raises.
        """
        ...

    def update_accounts(self, updates: Sequence[AccountUpdate]) -> BatchResult:
        """Write the NPS roll-up fields on accounts. Idempotent. Same error contract as contacts."""
        ...

    def create_tasks(self, tasks: Sequence[TaskSpec]) -> list[TaskResult]:
        """Create tasks, one result per spec in the same order.

        Idempotent by ``TaskSpec.key``: a task that already carries the key is returned with
        ``existed=True`` instead of being created again. Keys of specs with ``recheck=False`` (the
        step's first try: no task can carry them yet) need not be looked up first.
        """
        ...

    def get_tasks(self, ids: Sequence[str]) -> dict[str, TaskState]:
        """Return the current state of the tasks among ``ids``. Read-only, batched."""
        ...

    def add_note(self, key: str, contact_id: str, title: str, body: str) -> str:
        """Attach a plain-text note to the contact (where account managers see its history) and
        return the note's CRM id.

        Idempotent by ``key``, a key of ours like ``TaskSpec.key``: a note that already carries the
        key is not created again and its id is returned. Raises ``ConnectorUnavailable`` /
        ``RateLimited`` (safe to retry), ``AuthFailed``, or ``PermanentError`` (no such contact).
        """
        ...

    def check(self, *, online: bool) -> list[str]:
        """Return problems with the setup (empty when fine). ``online`` may call the API."""
        ...

    def routes(self) -> Sequence[BaseRoute]:
        """Extra web routes (the sandbox's pages); most CRMs return an empty list."""
        ...

    def close(self) -> None:
        """Release connections. Safe to call twice."""
        ...


@runtime_checkable
class Channel(Protocol):
    """A way to reach a person: email or SMS."""

    name: str
    kind: ChannelKind
    #: The most messages ``send`` should be given at once (1 for one-request-per-message providers).
    max_batch: int

    def send(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        """Hand messages to the provider; one outcome per message, in order.

        NOT idempotent: the core records each send key before calling and never calls twice for one
        key. A call whose outcome is unknown returns ``unknown`` outcomes (or raises
        ``AmbiguousOutcome``); a call refused before anything was accepted raises
        ``ConnectorUnavailable`` / ``RateLimited`` (safe to retry) or ``AuthFailed``.
        """
        ...

    def lookup(self, pending: Sequence[PendingSend]) -> dict[str, SendOutcome]:
        """Provider evidence for sends left ``unknown`` by a crash, by send key: ``sent`` when the
        provider has the message, ``failed`` when it provably does not. Keys without evidence either
        way are absent (the core lists them for ops). Read-only."""
        ...

    def routes(self) -> Sequence[BaseRoute]:
        """Webhook routes (inbound replies, delivery events) mounted on the daemon's web server."""
        ...

    def check(self, *, online: bool) -> list[str]:
        """Return problems with the setup (empty when fine)."""
        ...

    def close(self) -> None:
        """Release connections. Safe to call twice."""
        ...


@dataclass(frozen=True)
class InboundReply:
    """Text to answer an inbound SMS with (a STOP confirmation, the HELP text), or nothing."""

    text: str | None


DeliveryEvent = Literal[
    "delivered",
    "open",
    "click",
    "bounce",
    "dropped",
    "spamreport",
    "unsubscribe",
    "group_unsubscribe",
    "deferred",
    "processed",
    "sent",
    "undelivered",
    "failed",
]


class InboundSink(Protocol):
    """What the core offers channels' webhooks. Every method deduplicates in the database on
    ``(provider, event_id)`` and is safe to call many times with the same event."""

    def sms_received(
        self, *, provider: str, event_id: str, from_number: str, to_number: str, body: str
    ) -> InboundReply:
        """An SMS came in: a score, a comment, or a keyword (STOP/START/HELP…)."""
        ...

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
        """Record a provider event; suppress the address when the event calls for it.
        Returns False when the event was seen before."""
        ...

    def delivery_events(self, events: Sequence[ProviderEvent]) -> list[bool]:
        """``delivery_event`` for a webhook's batch of events, in one transaction: all are recorded
        or none (the provider retries the batch). One flag per event: False when seen before."""
        ...


@dataclass
class ConnectorContext:
    """What the core hands a connector when building it."""

    role: Literal["crm", "email", "sms"]
    state_dir: Path
    public_url: str
    time_zone: ZoneInfo
    secrets: Secrets
    store: Store
    inbound: InboundSink | None = None
    #: Set in tests and benchmarks: extra keyword arguments a connector may accept (for example an
    #: injected ``requests.Session``). Production config never sets it.
    overrides: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ConnectorSpec:
    """How the core finds and builds a connector."""

    name: str
    role: Literal["crm", "channel"]
    #: Channel kinds the connector serves (``("email",)``, ``("sms",)``); empty for CRMs.
    kinds: tuple[ChannelKind, ...]
    #: The connector's own table (``[crm.<name>]``, ``[channels.email.<name>]``): a frozen pydantic
    #: model with ``extra="forbid"``.
    options: type[BaseModel]
    factory: Callable[[Any, ConnectorContext], CRM | Channel]
    #: CRMs: the model for a program's ``[program.audience]`` table, validated by ``nps-sync check``.
    audience: type[BaseModel] | None = None
