"""What the engine takes in and gives out: events, messages, services, previews, and the JSON form
of an event kept in ``playbook_runs.context`` (so a run resumes after a restart from its own row)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal

import requests

from nps_sync.models import Contact, Owner

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from nps_sync.abc import CRM
    from nps_sync.business_time import BusinessCalendar
    from nps_sync.store.db import Store

TriggerKind = Literal["response", "no_response", "category_changed", "task_overdue"]
_CONTACT_FIELDS = {f.name for f in dataclasses.fields(Contact)}


@dataclass(frozen=True)
class PlaybookEvent:
    trigger: TriggerKind
    contact: Contact
    program: str
    occurred_at: datetime
    send_id: int | None = None
    response_id: int | None = None
    score: int | None = None
    category: str | None = None
    previous_category: str | None = None
    comment: str | None = None
    task_key: str | None = None


@dataclass(frozen=True)
class PlaybookMessage:
    key: str
    contact: Contact
    program: str
    channel: Literal["email", "sms"]
    subject: str
    text: str
    survey_send_id: int | None
    playbook: str


@dataclass
class PlaybookServices:
    store: Store
    crm: CRM
    calendar: BusinessCalendar
    public_url: str
    send_message: Callable[[Connection, PlaybookMessage], None]
    http: requests.Session
    now: Callable[[], datetime]
    #: Webhook POSTs: tries per call and the first backoff in seconds (tests shorten it).
    webhook_attempts: int = 4
    webhook_backoff: float = 1.0
    #: Extra template variables for an answered event, by response id (``testimonial_url``).
    links: Callable[[int], Mapping[str, str]] | None = None


@dataclass(frozen=True)
class SimulatedStep:
    """What one step would do for an event (``PlaybookEngine.simulate``); nothing is written."""

    playbook: str
    step: int
    action: str
    run_at: datetime
    wait: str | None
    unless: tuple[str, ...]
    subject: str | None = None
    body: str | None = None
    owner: Owner | None = None
    due: date | None = None
    priority: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


def contact_to_json(contact: Contact) -> dict[str, Any]:
    data = dataclasses.asdict(contact)
    data["fields"] = dict(contact.fields)
    return data


def contact_from_json(data: Mapping[str, Any]) -> Contact:
    """A contact from a stored snapshot (unknown keys ignored, so old snapshots stay readable)."""
    values = {k: v for k, v in data.items() if k in _CONTACT_FIELDS}
    values["fields"] = {str(k): str(v) for k, v in (values.get("fields") or {}).items()}
    return Contact(**values)


def event_to_json(event: PlaybookEvent) -> dict[str, Any]:
    data = {f.name: getattr(event, f.name) for f in dataclasses.fields(event) if f.name != "contact"}
    data["occurred_at"] = event.occurred_at.isoformat()
    return {"event": data, "contact": contact_to_json(event.contact)}


def event_from_json(context: Mapping[str, Any]) -> PlaybookEvent:
    data = dict(context["event"])
    data["occurred_at"] = datetime.fromisoformat(data["occurred_at"])
    return PlaybookEvent(contact=contact_from_json(context["contact"]), **data)
