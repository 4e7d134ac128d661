"""The project's own data types. Connectors map SDK objects to these; SDK types never cross over."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

ChannelKind = Literal["email", "sms"]
Priority = Literal["high", "normal", "low"]
TaskType = Literal["call", "todo"]


class Category(str, enum.Enum):
    DETRACTOR = "detractor"
    PASSIVE = "passive"
    PROMOTER = "promoter"

    @classmethod
    def of(cls, score: int) -> Category:
        """Detractor 0–6, passive 7–8, promoter 9–10. Raises ValueError outside 0–10."""
        if not isinstance(score, int) or isinstance(score, bool) or not 0 <= score <= 10:
            raise ValueError(f"score must be an integer from 0 to 10, got: {score!r}")
        if score <= 6:
            return cls.DETRACTOR
        if score <= 8:
            return cls.PASSIVE
        return cls.PROMOTER


@dataclass(frozen=True)
class Owner:
    """A CRM user who can own records and tasks."""

    id: str
    name: str
    email: str | None = None
    username: str | None = None
    manager_id: str | None = None


@dataclass(frozen=True)
class Contact:
    """One person as the CRM knows them, at the time it was read.

    ``fields`` carries any extra CRM fields the program asked for (plan, region, …), as strings,
    for playbook conditions and analytics segments. ``account_owner_id`` is filled by the connector
    so the core never needs a second lookup to route a task.
    """

    id: str
    first_name: str = ""
    last_name: str = ""
    email: str | None = None
    phone: str | None = None
    account_id: str | None = None
    account_name: str | None = None
    owner_id: str | None = None
    account_owner_id: str | None = None
    locale: str | None = None
    time_zone: str | None = None
    country: str | None = None
    email_opt_out: bool = False
    sms_opt_out: bool = False
    fields: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


@dataclass(frozen=True)
class Audience:
    """What to pull for one program.

    ``filter`` is the connector-specific table from ``[program.audience]`` (for example a SOQL WHERE
    fragment for Salesforce, a list id for HubSpot, field equalities for the sandbox). ``channel``
    tells the connector which standard opt-out to honour. ``extra_fields`` are CRM fields to copy into
    ``Contact.fields``.
    """

    program: str
    filter: Mapping[str, Any]
    channel: ChannelKind
    extra_fields: tuple[str, ...] = ()
    page_size: int = 200


@dataclass(frozen=True)
class ContactUpdate:
    """Write-back for one contact. Keys of ``values`` are logical names (``score``, ``category``,
    ``comment``, ``responded_at``, ``surveyed_at``, or a raw CRM field named by a playbook); the
    connector maps them to its field names through its config."""

    contact_id: str
    values: Mapping[str, str | int | float | bool | datetime | date | None]


@dataclass(frozen=True)
class AccountUpdate:
    """The account roll-up: NPS over each contact's latest response in the window."""

    account_id: str
    nps: float | None
    responses: int
    promoters: int = 0
    passives: int = 0
    detractors: int = 0


@dataclass(frozen=True)
class RecordFailure:
    """One record of a batch that failed. ``transient`` failures may be retried; others are reported."""

    record_id: str
    reason: str
    transient: bool = False


@dataclass(frozen=True)
class BatchResult:
    """Outcome of a batch write: the ids written and the per-record failures."""

    succeeded: tuple[str, ...] = ()
    failed: tuple[RecordFailure, ...] = ()


@dataclass(frozen=True)
class TaskSpec:
    """A CRM task to create. ``key`` is ours and unique: the connector stores it on the task so a retry
    can find the task instead of creating a second one. ``recheck`` False says no earlier attempt can
    have created it (the step's first try): the connector may then create it without looking the key
    up first, saving that call."""

    key: str
    contact_id: str
    account_id: str | None
    owner_id: str | None
    subject: str
    body: str
    due: date
    priority: Priority = "normal"
    type: TaskType = "todo"
    recheck: bool = True


@dataclass(frozen=True)
class TaskResult:
    """Outcome for one TaskSpec: ``task_id`` when created (or found), else ``error``."""

    key: str
    task_id: str | None = None
    error: str | None = None
    transient: bool = False
    existed: bool = False


@dataclass(frozen=True)
class TaskState:
    """A task as the CRM shows it now."""

    id: str
    completed: bool
    due: date | None
    owner_id: str | None = None
    status: str = ""

    def overdue(self, today: date) -> bool:
        return not self.completed and self.due is not None and self.due < today


@dataclass(frozen=True)
class TaggedContent:
    """The same message rendered with ``-name-`` tags where per-recipient values go, and the values.

    A provider that sends one body to many recipients (SendGrid ``substitutions``) groups messages by
    ``(subject, text, html)`` and sends each recipient its ``substitutions``; substituting them into the
    tagged content gives exactly the message's own ``subject``/``text``/``html``.
    """

    subject: str
    text: str
    html: str | None
    substitutions: Mapping[str, str]


@dataclass(frozen=True)
class OutboundMessage:
    """One message ready for a provider: rendered text plus everything a provider would get.

    ``template_data`` holds the values the core rendered from (links, names, question), so a channel
    that renders on the provider side (a SendGrid dynamic template) can use them instead.
    """

    send_key: str
    channel: ChannelKind
    to: str
    subject: str
    text: str
    html: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    template_data: Mapping[str, Any] = field(default_factory=dict)
    purpose: str = "survey"  # survey | reminder | playbook | preview | confirmation
    tagged: TaggedContent | None = None
    #: Email: the From header ("Name <address>"); SMS channels use their own configured sender.
    sender: str = ""
    reply_to: str | None = None


@dataclass(frozen=True)
class PendingSend:
    """A send left ``unknown`` (the daemon died or the answer was lost after the request left)."""

    send_key: str
    channel: ChannelKind
    to: str
    claimed_at: datetime


SendStatus = Literal["sent", "failed", "unknown"]


@dataclass(frozen=True)
class SendOutcome:
    """What a provider said about one message.

    - ``sent``: accepted; ``provider_id`` identifies it at the provider.
    - ``failed``: refused for good (``reason``); ``suppress`` when the provider says the address is
      opted out or invalid, so the core adds a suppression.
    - ``unknown``: the outcome is ambiguous (timeout after the request left); reconcile, never resend.

    ``transient`` on a ``failed`` outcome: nothing of this message reached the provider and the
    cause may pass (a 4xx mid-batch), so the core queues it again later.
    """

    send_key: str
    status: SendStatus
    provider_id: str | None = None
    reason: str | None = None
    suppress: bool = False
    transient: bool = False


@dataclass(frozen=True)
class ProviderEvent:
    """A provider's event about a message (delivered, bounce, failed…), as a webhook reports it."""

    provider: str
    event_id: str
    event: str
    send_key: str | None
    address: str | None
    occurred_at: datetime | None
    detail: str = ""
