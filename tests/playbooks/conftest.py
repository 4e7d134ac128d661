"""A playbook world for tests: a real SQLite store, the sandbox CRM in it, a business calendar, the
job queue, and time driven by time-machine (the engine and the queue read the same clock)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
import time_machine
from sqlalchemy import Connection, func, select

from nps_sync.abc import ConnectorContext
from nps_sync.business_time import BusinessCalendar
from nps_sync.connectors.sandbox import CONNECTOR, SandboxCrm
from nps_sync.connectors.sandbox.config import SandboxOptions
from nps_sync.models import (
    AccountUpdate,
    BatchResult,
    Category,
    Contact,
    ContactUpdate,
    Owner,
    TaskResult,
    TaskSpec,
    TaskState,
)
from nps_sync.playbooks import (
    PlaybookEngine,
    PlaybookEvent,
    PlaybookMessage,
    PlaybookServices,
    load_playbooks,
)
from nps_sync.queue import JobQueue
from nps_sync.secrets import Secrets
from nps_sync.store import schema
from nps_sync.store.db import Store

SHIPPED = Path(__file__).resolve().parents[2] / "playbooks"
BERLIN = ZoneInfo("Europe/Berlin")
PUBLIC_URL = "https://nps.example.com"
#: Friday 9 January 2026, 10:00 in Berlin.
FRIDAY_10 = datetime(2026, 1, 9, 10, 0, tzinfo=BERLIN)


class CountingCrm:
    """The sandbox CRM with a call counter per method (the sandbox itself counts nothing).

    ``refuse_tasks_for`` makes ``create_tasks`` refuse tasks of those contacts the way a CRM refuses a
    record (a validation rule), ``busy_for`` answers a transient per-record error (a row lock), and
    ``lose_next_create`` drops the answer of the next call after the CRM did the work (a connection
    reset after the request left)."""

    name = "sandbox"

    def __init__(self, inner: SandboxCrm) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.refuse_tasks_for: set[str] = set()
        self.busy_for: set[str] = set()
        self.lose_next_create = False
        #: Every ``create_tasks`` call's specs, in order (their ``recheck`` says what the runner knew).
        self.task_calls: list[list[TaskSpec]] = []

    def get_owners(self, ids: Sequence[str]) -> dict[str, Owner]:
        self.calls["get_owners"] += 1
        return self.inner.get_owners(ids)

    def find_owner(self, query: str) -> Owner | None:
        self.calls["find_owner"] += 1
        return self.inner.find_owner(query)

    def get_contacts(self, ids: Sequence[str]) -> dict[str, Contact]:
        self.calls["get_contacts"] += 1
        return self.inner.get_contacts(ids)

    def update_contacts(self, updates: Sequence[ContactUpdate]) -> BatchResult:
        self.calls["update_contacts"] += 1
        return self.inner.update_contacts(updates)

    def update_accounts(self, updates: Sequence[AccountUpdate]) -> BatchResult:
        self.calls["update_accounts"] += 1
        return self.inner.update_accounts(updates)

    def create_tasks(self, tasks: Sequence[TaskSpec]) -> list[TaskResult]:
        from nps_sync.errors import ConnectorUnavailable

        self.calls["create_tasks"] += 1
        self.task_calls.append(list(tasks))
        allowed = [t for t in tasks if t.contact_id not in self.refuse_tasks_for | self.busy_for]
        created = {r.key: r for r in self.inner.create_tasks(allowed)} if allowed else {}
        if self.lose_next_create:
            self.lose_next_create = False
            raise ConnectorUnavailable("connection reset after the request was sent", connector="sandbox")
        return [
            created.get(t.key)
            or (
                TaskResult(t.key, error="UNABLE_TO_LOCK_ROW", transient=True)
                if t.contact_id in self.busy_for
                else TaskResult(t.key, error="FIELD_CUSTOM_VALIDATION_EXCEPTION: closed account")
            )
            for t in tasks
        ]

    def get_tasks(self, ids: Sequence[str]) -> dict[str, TaskState]:
        self.calls["get_tasks"] += 1
        return self.inner.get_tasks(ids)

    def complete_task(self, task_id: str) -> bool:
        return self.inner.complete_task(task_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class World:
    store: Store
    crm: CountingCrm
    services: PlaybookServices
    traveller: Any
    messages: list[PlaybookMessage] = field(default_factory=list)
    engine: PlaybookEngine | None = None
    queue: JobQueue | None = None

    def use(self, paths: Sequence[Path]) -> PlaybookEngine:
        self.engine = PlaybookEngine(load_playbooks(paths), self.services)
        self.queue = JobQueue(
            self.store, {"playbook_step": self.engine.run_steps}, batch_sizes={"playbook_step": 100}
        )
        return self.engine

    def move_to(self, when: datetime) -> None:
        self.traveller.move_to(when)

    def drain(self) -> int:
        assert self.queue is not None
        return self.queue.drain()

    def contact(self, contact_id: str) -> Contact:
        return self.crm.inner.get_contacts([contact_id])[contact_id]

    def answer(
        self,
        contact_id: str,
        score: int,
        comment: str | None = None,
        *,
        program: str = "relationship",
        previous_category: str | None = None,
        send_id: int | None = None,
    ) -> PlaybookEvent:
        """Record a survey send and its response as the core does, and start playbooks in the same
        transaction. ``send_id`` answers an existing send again (the answer replaces the earlier one)."""
        assert self.engine is not None
        contact = self.contact(contact_id)
        now = datetime.now(timezone.utc)
        category = Category.of(score).value
        with self.store.begin() as conn:
            if send_id is None:
                send_id = insert_send(conn, contact, program, now - timedelta(hours=1))
            existing = conn.execute(
                select(schema.responses.c.id).where(schema.responses.c.send_id == send_id)
            ).scalar_one_or_none()
            values = {
                "score": score,
                "category": category,
                "comment": comment,
                "updated_at": now,
                "responded_at": now,
                "previous_category": previous_category,
            }
            if existing is None:
                response_id = conn.execute(
                    schema.responses.insert().values(
                        send_id=send_id,
                        program=program,
                        contact_id=contact.id,
                        account_id=contact.account_id,
                        channel="email",
                        **values,
                    )
                ).inserted_primary_key[0]
            else:
                conn.execute(
                    schema.responses.update().where(schema.responses.c.id == existing).values(**values)
                )
                response_id = existing
            event = PlaybookEvent(
                trigger="response",
                contact=contact,
                program=program,
                occurred_at=now,
                send_id=send_id,
                response_id=response_id,
                score=score,
                category=category,
                previous_category=previous_category,
                comment=comment,
            )
            self.engine.on_event(conn, event)
        return event

    def tasks(self) -> list[dict[str, Any]]:
        t = schema.sandbox_tasks
        with self.store.read() as conn:
            return [dict(r) for r in conn.execute(select(t).order_by(t.c.created_at, t.c.id)).mappings()]

    def rows(self, table: Any) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            return [
                dict(r) for r in conn.execute(select(table).order_by(*table.primary_key.columns)).mappings()
            ]

    def counts(self) -> dict[str, int]:
        with self.store.read() as conn:
            return {
                name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for name, table in schema.metadata.tables.items()
            }


def insert_send(conn: Connection, contact: Contact, program: str, sent_at: datetime) -> int:
    key = f"survey:{program}:{contact.id}:{sent_at.isoformat()}"
    return int(
        conn.execute(
            schema.sends.insert().values(
                send_key=key,
                program=program,
                contact_id=contact.id,
                account_id=contact.account_id,
                kind="survey",
                channel="email",
                address=contact.email or "",
                language="en",
                time_zone="UTC",
                state="sent",
                not_before=sent_at,
                sent_at=sent_at,
                snapshot=_snapshot(contact),
                created_at=sent_at,
                updated_at=sent_at,
            )
        ).inserted_primary_key[0]
    )


def _snapshot(contact: Contact) -> dict[str, Any]:
    from nps_sync.playbooks.events import contact_to_json

    return contact_to_json(contact)


def store_message(store: Store, sink: list[PlaybookMessage]) -> Any:
    """What the core's send_message does, reduced to its contract: one ``sends`` row per key, in the
    caller's transaction (a second call with the same key adds nothing)."""

    def send_message(conn: Connection, msg: PlaybookMessage) -> None:
        now = datetime.now(timezone.utc)
        added = store.insert_ignore(
            conn,
            schema.sends,
            {
                "send_key": msg.key,
                "program": msg.program,
                "contact_id": msg.contact.id,
                "account_id": msg.contact.account_id,
                "kind": "playbook",
                "channel": msg.channel,
                "address": (msg.contact.email if msg.channel == "email" else msg.contact.phone) or "",
                "language": "en",
                "time_zone": "UTC",
                "state": "queued",
                "not_before": now,
                "survey_send_id": msg.survey_send_id,
                "template": msg.playbook,
                "content": {"subject": msg.subject, "text": msg.text},
                "snapshot": _snapshot(msg.contact),
                "created_at": now,
                "updated_at": now,
            },
            "send_key",
        )
        if added:
            sink.append(msg)

    return send_message


#: Run a test on SQLite and on PostgreSQL (skipped with a reason where PostgreSQL is absent). Only the
#: tests whose point is database behaviour (dedupe keys, retries, scans) take the second store.
BOTH_STORES = pytest.mark.parametrize(
    "world", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """The playbook world on SQLite (``BOTH_STORES`` adds PostgreSQL)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        store = Store("sqlite:///" + str(tmp_path / "s.db"))
        store.upgrade()
    else:
        store = request.getfixturevalue("pg_store")
    ctx = ConnectorContext(
        role="crm",
        state_dir=tmp_path,
        public_url=PUBLIC_URL,
        time_zone=BERLIN,
        secrets=Secrets(environ={}),
        store=store,
    )
    sandbox = CONNECTOR.factory(SandboxOptions(), ctx)
    assert isinstance(sandbox, SandboxCrm)
    crm = CountingCrm(sandbox)
    messages: list[PlaybookMessage] = []
    session = requests.Session()
    with time_machine.travel(FRIDAY_10, tick=False) as traveller:
        services = PlaybookServices(
            store=store,
            crm=crm,
            calendar=BusinessCalendar(BERLIN),
            public_url=PUBLIC_URL,  # type: ignore[arg-type]
            send_message=store_message(store, messages),
            http=session,
            now=lambda: datetime.now(timezone.utc),
            webhook_attempts=3,
            webhook_backoff=0.01,
        )
        yield World(store=store, crm=crm, services=services, traveller=traveller, messages=messages)
    session.close()
    store.dispose()


def on(day: int, hour: int = 10, minute: int = 0) -> datetime:
    """A moment in January 2026, Berlin time."""
    return datetime(2026, 1, day, hour, minute, tzinfo=BERLIN)


def d(day: int) -> date:
    return date(2026, 1, day)
