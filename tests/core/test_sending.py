"""Sending is at most once per send key: the claim is committed before the provider is called, an
ambiguous outcome is never resent, and a crash is resolved from provider evidence.

The channels written here implement ``nps_sync.abc.Channel`` (the far side of our interface); the
store, the Sender, the outbox and the sandbox CRM are the real ones. This module also holds the small
builders the other ``tests/core`` modules of the send/response path share.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import time_machine
from sqlalchemy import create_engine, event, func, select, text

from nps_sync import config as config_mod
from nps_sync.abc import Channel
from nps_sync.errors import AmbiguousOutcome, AuthFailed, ConnectorUnavailable, RateLimited
from nps_sync.models import ChannelKind, OutboundMessage, PendingSend, SendOutcome
from nps_sync.runtime import Runtime
from nps_sync.sending import Sender, set_paused
from nps_sync.store import schema
from nps_sync.store.db import Store, utcnow
from nps_sync.survey import snapshot
from nps_sync.timezones import normalize_email, normalize_phone
from tests.fixtures import PG_ADMIN_URL, postgres_available

SIGNING_KEY = "0123456789abcdef" * 4
ENV = {"NPS_SYNC_SIGNING_KEYS": SIGNING_KEY}


# --- stores and builders shared by the core tests ---------------------------------------------------


@pytest.fixture(scope="module", name="pg_module_store")
def pg_module_store_fixture() -> Iterator[Store]:
    """One PostgreSQL database per module (migrations are the slow part); emptied before each test."""
    reason = postgres_available()
    if reason:
        pytest.skip(reason)
    name = f"nps_core_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    store = Store(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    store.upgrade()
    try:
        yield store
    finally:
        store.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(name="core_store", params=["sqlite", "postgres"])
def core_store_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, migrated, empty store on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        store = Store(f"sqlite:///{tmp_path / 'state.db'}")
        store.upgrade()
        yield store
        store.dispose()
        return
    store = request.getfixturevalue("pg_module_store")
    with store.begin() as conn:  # DELETE: much faster than TRUNCATE on tables this small
        for table in reversed(schema.metadata.sorted_tables):
            conn.execute(table.delete())
    yield store


def config_data(*, sandbox: dict[str, Any] | None = None, **daemon: Any) -> dict[str, Any]:
    return {
        "daemon": {
            "state_dir": "state",
            "public_url": "http://127.0.0.1:8080",
            "time_zone": "Europe/Berlin",
            "playbooks": [],
            "run_on_start": False,
            **daemon,
        },
        "crm": {"kind": "sandbox", "sandbox": sandbox or {}},
        "channels": {
            "email": {"kind": "outbox", "postal_address": "Example Inc., 1 Main St, Springfield"},
            "sms": {
                "kind": "outbox",
                "help_text": "Example Inc. support: +1 555 0100. Reply STOP to opt out.",
            },
        },
        "program": [{"name": "nps", "channel": "email", "reminders": {"count": 0}}],
    }


def make_runtime(
    tmp_path: Path, store: Store, *, sandbox: dict[str, Any] | None = None, **daemon: Any
) -> Runtime:
    """A Runtime built from a config as the daemon builds it (sandbox CRM, outbox channels)."""
    config = config_mod.parse(config_data(sandbox=sandbox, **daemon), source=tmp_path / "config.toml")
    return Runtime(config, environ=ENV, store=store)


def add_send(
    rt: Runtime,
    contact_id: str,
    *,
    channel: ChannelKind = "email",
    kind: str = "survey",
    state: str = "queued",
    key: str | None = None,
    not_before: datetime | None = None,
    sent_at: datetime | None = None,
    survey_send_id: int | None = None,
    content: dict[str, str] | None = None,
) -> int:
    """Queue a send for a seeded sandbox contact, as a wave would. Returns the send id."""
    contact = rt.crm.get_contacts([contact_id])[contact_id]
    address = contact.email if channel == "email" else contact.phone
    assert address is not None
    now = utcnow()
    values = {
        "send_key": key or f"nps|test|{contact_id}|{channel}|{kind}",
        "program": "nps",
        "wave_id": "nps@test",
        "contact_id": contact.id,
        "account_id": contact.account_id,
        "kind": kind,
        "channel": channel,
        "address": normalize_email(address) if channel == "email" else normalize_phone(address),
        "language": "en",
        "time_zone": "UTC",
        "state": state,
        "not_before": not_before or now - timedelta(seconds=1),
        "sent_at": sent_at,
        "survey_send_id": survey_send_id,
        "content": content,
        "snapshot": snapshot(contact),
        "created_at": now,
        "updated_at": now,
    }
    with rt.store.begin() as conn:
        inserted = conn.execute(schema.sends.insert().values(**values))
        assert inserted.inserted_primary_key is not None
        return int(inserted.inserted_primary_key[0])


def seeded_contacts(rt: Runtime, count: int) -> list[str]:
    """Ids of seeded contacts with a valid email address and a valid phone number."""
    t = schema.sandbox_contacts
    with rt.store.read() as conn:
        rows = conn.execute(select(t.c.id, t.c.email, t.c.phone).order_by(t.c.id)).all()
    found = [r.id for r in rows if normalize_email(r.email) and normalize_phone(r.phone)][:count]
    assert count == len(found), f"the seed has only {len(found)} contacts with valid email and phone"
    return found


def states(store: Store) -> dict[str, str]:
    with store.read() as conn:
        return {
            r.send_key: r.state for r in conn.execute(select(schema.sends.c.send_key, schema.sends.c.state))
        }


def send_row(store: Store, send_key: str) -> dict[str, Any]:
    with store.read() as conn:
        return dict(
            conn.execute(select(schema.sends).where(schema.sends.c.send_key == send_key)).mappings().one()
        )


def outbox_counts(store: Store) -> Counter[str]:
    with store.read() as conn:
        rows = conn.execute(
            select(schema.outbox.c.send_key, func.count())
            .where(schema.outbox.c.direction == "out")
            .group_by(schema.outbox.c.send_key)
        ).all()
    return Counter({r[0]: r[1] for r in rows})


def jobs(store: Store, kind: str | None = None) -> list[dict[str, Any]]:
    query = select(schema.jobs).order_by(schema.jobs.c.id)
    if kind is not None:
        query = query.where(schema.jobs.c.kind == kind)
    with store.read() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def suppressions(store: Store) -> list[tuple[str, str, str]]:
    t = schema.suppressions
    with store.read() as conn:
        rows = conn.execute(select(t.c.channel, t.c.address, t.c.reason).order_by(t.c.id))
        return [(r.channel, r.address, r.reason) for r in rows]


class ScriptedChannel:
    """A provider whose behaviour each test chooses: ``script(messages)`` returns outcomes or raises.
    Records every send key it was handed, so a second hand-over of a key is visible."""

    name = "scripted"
    max_batch = 500

    def __init__(
        self,
        kind: ChannelKind,
        script: Callable[[Sequence[OutboundMessage]], list[SendOutcome]] | None = None,
        *,
        max_batch: int = 500,
    ) -> None:
        self.kind: ChannelKind = kind
        self.max_batch = max_batch
        self.script = script or (
            lambda ms: [SendOutcome(m.send_key, "sent", provider_id=f"p-{m.send_key}") for m in ms]
        )
        self.handed: list[str] = []
        self.calls = 0
        self.lock = threading.Lock()

    def send(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        with self.lock:
            self.calls += 1
            self.handed += [m.send_key for m in messages]
        return self.script(messages)

    def lookup(self, pending: Sequence[PendingSend]) -> dict[str, SendOutcome]:
        return {}

    def routes(self) -> list[Any]:
        return []

    def check(self, *, online: bool) -> list[str]:
        return []

    def close(self) -> None:
        """Nothing to release."""


def sender_with(rt: Runtime, channels: dict[str, Channel], worker_id: str = "test-worker") -> Sender:
    return Sender(rt.store, rt.config, channels, rt.renderer, worker_id=worker_id)


# --- tests ----------------------------------------------------------------------------------------


@pytest.fixture
def rt(tmp_path: Path, core_store: Store) -> Iterator[Runtime]:
    runtime = make_runtime(tmp_path, core_store)
    yield runtime
    runtime.close()


def test_a_claimed_send_is_committed_as_sending_before_the_channel_is_called(rt: Runtime) -> None:
    keys = [f"k{i}" for i in range(3)]
    for i, contact in enumerate(seeded_contacts(rt, 3)):
        add_send(rt, contact, key=keys[i])
    seen: dict[str, tuple[str, str | None]] = {}

    def observe(messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        for m in messages:  # read through another connection: only committed rows are visible
            row = send_row(rt.store, m.send_key)
            seen[m.send_key] = (row["state"], row["claimed_by"])
        return [SendOutcome(m.send_key, "sent", provider_id=f"p-{m.send_key}") for m in messages]

    assert 3 == sender_with(rt, {"email": ScriptedChannel("email", observe)}).run_once()

    assert dict.fromkeys(keys, ("sending", "test-worker")) == seen
    for key in keys:
        row = send_row(rt.store, key)
        assert ("sent", f"p-{key}") == (row["state"], row["provider_id"])
        assert row["sent_at"] is not None


def test_each_outcome_is_recorded_and_a_transient_failure_is_queued_again_later(rt: Runtime) -> None:
    contacts = seeded_contacts(rt, 4)
    for key, contact in zip(("ok", "refused", "ambiguous", "transient"), contacts, strict=True):
        add_send(rt, contact, key=key)

    def script(messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        by_key = {
            "ok": SendOutcome("ok", "sent", provider_id="p-1"),
            "refused": SendOutcome("refused", "failed", reason="invalid address"),
            "ambiguous": SendOutcome("ambiguous", "unknown", reason="timeout after request"),
            "transient": SendOutcome("transient", "failed", reason="429 mid-batch", transient=True),
        }
        return [by_key[m.send_key] for m in messages]

    channel = ScriptedChannel("email", script)
    sender = sender_with(rt, {"email": channel})
    start = utcnow()
    assert 4 == sender.run_once()

    assert {"ok": "sent", "refused": "failed", "ambiguous": "unknown", "transient": "queued"} == states(
        rt.store
    )
    assert "invalid address" == send_row(rt.store, "refused")["error"]
    transient = send_row(rt.store, "transient")
    assert transient["claimed_by"] is None
    assert transient["not_before"] >= start + timedelta(seconds=59)

    assert 0 == sender.run_once()  # nothing is due yet
    with time_machine.travel(utcnow() + timedelta(minutes=2)):
        channel.script = lambda ms: [SendOutcome(m.send_key, "sent") for m in ms]
        assert 1 == sender.run_once()
    assert Counter({"ok": 1, "refused": 1, "ambiguous": 1, "transient": 2}) == Counter(channel.handed)
    assert "sent" == states(rt.store)["transient"]


@pytest.mark.parametrize(
    ("error", "delay"),
    [
        (RateLimited("429 Too Many Requests", retry_after=120.0), 120),
        (RateLimited("429 without Retry-After"), 60),
        (ConnectorUnavailable("503 Service Unavailable"), 30),
    ],
    ids=["rate-limited-retry-after", "rate-limited-default", "unavailable"],
)
def test_a_refused_batch_is_requeued_with_a_delay_and_not_resent_early(
    rt: Runtime, error: Exception, delay: int
) -> None:
    for i, contact in enumerate(seeded_contacts(rt, 2)):
        add_send(rt, contact, key=f"k{i}")

    def refuse(messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        raise error

    channel = ScriptedChannel("email", refuse)
    sender = sender_with(rt, {"email": channel})
    start = utcnow()
    assert 2 == sender.run_once()
    assert {"k0": "queued", "k1": "queued"} == states(rt.store)
    assert send_row(rt.store, "k0")["not_before"] >= start + timedelta(seconds=delay - 1)

    with time_machine.travel(start + timedelta(seconds=delay - 5)):
        assert 0 == sender.run_once()
    assert 1 == channel.calls

    channel.script = lambda ms: [SendOutcome(m.send_key, "sent") for m in ms]
    with time_machine.travel(start + timedelta(seconds=delay + 5)):
        assert 2 == sender.run_once()
    assert {"k0": "sent", "k1": "sent"} == states(rt.store)
    assert Counter({"k0": 2, "k1": 2}) == Counter(channel.handed)  # handed over again only after the delay


def test_auth_failed_disables_that_channel_only(rt: Runtime) -> None:
    contact = seeded_contacts(rt, 1)[0]
    add_send(rt, contact, key="mail", channel="email")
    add_send(rt, contact, key="text", channel="sms")

    def auth_failed(messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        raise AuthFailed("401 bad API key", connector="scripted")

    email = ScriptedChannel("email", auth_failed)
    sms = ScriptedChannel("sms")
    sender = sender_with(rt, {"email": email, "sms": sms})
    assert 2 == sender.run_once()
    assert {"mail": "queued", "text": "sent"} == states(rt.store)
    assert ["email"] == list(sender.disabled)

    add_send(rt, contact, key="text-2", channel="sms")
    assert 1 == sender.run_once()
    assert (1, 2) == (email.calls, sms.calls)
    assert "queued" == states(rt.store)["mail"]  # kept for when ops fix the credentials


@pytest.mark.parametrize(
    "error",
    [RuntimeError("connection reset by peer"), AmbiguousOutcome("read timeout after the request was sent")],
    ids=["unexpected-exception", "ambiguous-outcome"],
)
def test_an_exception_during_the_call_leaves_the_send_unknown_and_it_is_never_resent(
    rt: Runtime, error: Exception
) -> None:
    add_send(rt, seeded_contacts(rt, 1)[0], key="k")

    def boom(messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        raise error

    channel = ScriptedChannel("email", boom)
    sender = sender_with(rt, {"email": channel})
    assert 1 == sender.run_once()
    assert "unknown" == states(rt.store)["k"]
    assert str(error) in send_row(rt.store, "k")["error"]

    with time_machine.travel(utcnow() + timedelta(days=1)):
        assert 0 == sender.run_once()
    assert ["k"] == channel.handed


def test_a_provider_opt_out_adds_a_suppression_and_queues_the_crm_opt_out(rt: Runtime) -> None:
    contact = seeded_contacts(rt, 1)[0]
    add_send(rt, contact, key="k", channel="sms")
    address = send_row(rt.store, "k")["address"]

    channel = ScriptedChannel(
        "sms",
        lambda ms: [
            SendOutcome(m.send_key, "failed", reason="21610 unsubscribed", suppress=True) for m in ms
        ],
    )
    assert 1 == sender_with(rt, {"sms": channel}).run_once()

    assert "failed" == states(rt.store)["k"]
    assert [("sms", address, "provider_refused")] == suppressions(rt.store)
    assert [{"contact_id": contact, "channel": "sms"}] == [
        j["payload"] for j in jobs(rt.store, "crm_opt_out")
    ]


def test_a_send_whose_address_was_suppressed_after_the_wave_is_cancelled_at_claim(rt: Runtime) -> None:
    first, second = seeded_contacts(rt, 2)
    add_send(rt, first, key="suppressed")
    add_send(rt, second, key="fine")
    add_send(rt, first, key="confirmation", kind="confirmation", content={"subject": "s", "text": "bye"})
    address = send_row(rt.store, "suppressed")["address"]
    with rt.store.begin() as conn:
        conn.execute(
            schema.suppressions.insert().values(
                channel="email", address=address, reason="unsubscribed", source="test", created_at=utcnow()
            )
        )

    channel = ScriptedChannel("email")
    assert 2 == sender_with(rt, {"email": channel}).run_once()

    assert {"suppressed": "cancelled", "fine": "sent", "confirmation": "sent"} == states(rt.store)
    assert ["confirmation", "fine"] == sorted(channel.handed)


def test_pause_stops_claiming_until_resumed(rt: Runtime) -> None:
    add_send(rt, seeded_contacts(rt, 1)[0], key="k")
    channel = ScriptedChannel("email")
    sender = sender_with(rt, {"email": channel})

    set_paused(rt.store, True)
    assert 0 == sender.run_once()
    assert ({"k": "queued"}, 0) == (states(rt.store), channel.calls)

    set_paused(rt.store, False)
    assert 1 == sender.run_once()
    assert {"k": "sent"} == states(rt.store)


class CountingOutbox:
    """The real outbox channel behind a small batch size, counting every key handed to it."""

    name = "counting-outbox"

    def __init__(self, inner: Channel, max_batch: int) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.max_batch = max_batch
        self.handed: Counter[str] = Counter()
        self.lock = threading.Lock()

    def send(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        with self.lock:
            self.handed.update(m.send_key for m in messages)
        return self.inner.send(messages)

    def lookup(self, pending: Sequence[PendingSend]) -> dict[str, SendOutcome]:
        return self.inner.lookup(pending)

    def routes(self) -> list[Any]:
        return []

    def check(self, *, online: bool) -> list[str]:
        return []

    def close(self) -> None:
        """The runtime closes the inner channel."""


def test_two_senders_racing_on_one_queue_send_each_key_exactly_once(rt: Runtime) -> None:
    contacts = seeded_contacts(rt, 30)
    for contact in contacts:
        add_send(rt, contact, channel="email")
        add_send(rt, contact, channel="sms")
    email = CountingOutbox(rt.channels["email"], max_batch=3)
    sms = CountingOutbox(rt.channels["sms"], max_batch=3)
    senders = [sender_with(rt, {"email": email, "sms": sms}, worker_id=f"w{i}") for i in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(sender: Sender) -> None:
        try:
            barrier.wait()
            while sender.run_once():
                pass
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in senders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert [] == errors
    keys = set(states(rt.store))
    assert 60 == len(keys)
    assert {"sent"} == set(states(rt.store).values())
    assert dict.fromkeys(keys, 1) == dict(email.handed + sms.handed)
    assert dict.fromkeys(keys, 1) == dict(outbox_counts(rt.store))


class Died(BaseException):
    """The process died mid-batch: nothing after this point runs (no outcome is recorded)."""


def test_a_crash_after_the_claim_is_reconciled_from_the_outbox_and_nothing_is_sent_twice(rt: Runtime) -> None:
    contacts = seeded_contacts(rt, 6)
    for contact in contacts:
        add_send(rt, contact)
    outbox = rt.channels["email"]

    def deliver_half_then_die(messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        outbox.send(messages[:3])  # the provider took these, then the process was killed
        raise Died

    dying = ScriptedChannel("email", deliver_half_then_die)
    with pytest.raises(Died):
        sender_with(rt, {"email": dying}, worker_id="dead").run_once()
    assert {"sending"} == set(states(rt.store).values())

    restarted = CountingOutbox(outbox, max_batch=500)
    sender = sender_with(rt, {"email": restarted}, worker_id="new")
    assert 6 == sender.mark_abandoned()
    assert {"unknown"} == set(states(rt.store).values())
    assert 0 == sender.run_once()  # unknown is never resent blindly

    delivered = set(dying.handed[:3])
    sent, requeued, unresolved = sender.reconcile()
    assert (3, 3, []) == (sent, requeued, unresolved)
    assert {k: ("sent" if k in delivered else "queued") for k in dying.handed} == states(rt.store)

    assert 3 == sender.run_once()
    assert {"sent"} == set(states(rt.store).values())
    assert dict.fromkeys(dying.handed, 1) == dict(outbox_counts(rt.store))
    assert set(dying.handed) - delivered == set(restarted.handed)
    assert all(count == 1 for count in restarted.handed.values())


def test_mark_abandoned_with_worker_ids_leaves_other_workers_claims_alone(rt: Runtime) -> None:
    first, second = seeded_contacts(rt, 2)
    now = datetime.now(timezone.utc)
    add_send(rt, first, key="mine", state="sending")
    add_send(rt, second, key="theirs", state="sending")
    with rt.store.begin() as conn:
        for key, worker in (("mine", "dead"), ("theirs", "alive")):
            conn.execute(
                schema.sends.update()
                .where(schema.sends.c.send_key == key)
                .values(claimed_by=worker, claimed_at=now)
            )
    sender = sender_with(rt, {"email": ScriptedChannel("email")})
    assert 1 == sender.mark_abandoned(worker_ids=["dead"])
    assert {"mine": "unknown", "theirs": "sending"} == states(rt.store)


def test_a_send_the_channel_returned_no_outcome_for_becomes_unknown_not_stuck(rt: Runtime) -> None:
    """A channel that breaks its contract (fewer outcomes than messages) must not leave a send
    ``sending`` forever: it may have gone out, so it is ``unknown``, never resent."""
    for i, contact in enumerate(seeded_contacts(rt, 2)):
        add_send(rt, contact, key=f"k{i}")
    channel = ScriptedChannel("email", lambda ms: [SendOutcome(ms[0].send_key, "sent")])
    sender = sender_with(rt, {"email": channel})

    assert 2 == sender.run_once()
    assert {"k0": "sent", "k1": "unknown"} == states(rt.store)
    assert 0 == sender.run_once()


@pytest.mark.parametrize(
    ("error", "delay"),
    [(RateLimited("429 Too Many Requests", retry_after=120.0), 120), (ConnectorUnavailable("503"), 30)],
    ids=["rate-limited", "unavailable"],
)
def test_a_refused_batch_pauses_the_whole_channel_not_just_its_own_sends(
    rt: Runtime, error: Exception, delay: int
) -> None:
    """Retry-After is about the provider, not about those messages: the next batch of the same
    channel must not be tried (and refused again) before the delay is over."""
    for i, contact in enumerate(seeded_contacts(rt, 3)):
        add_send(rt, contact, key=f"k{i}")
    calls: list[list[str]] = []

    def refuse_then_accept(messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        calls.append([m.send_key for m in messages])
        if len(calls) == 1:
            raise error
        return [SendOutcome(m.send_key, "sent") for m in messages]

    sender = sender_with(rt, {"email": ScriptedChannel("email", refuse_then_accept, max_batch=1)})
    start = utcnow()
    with time_machine.travel(start, tick=False):
        assert 1 == sender.run_once()
        assert 0 == sender.run_once()
    with time_machine.travel(start + timedelta(seconds=delay - 1), tick=False):
        assert 0 == sender.run_once()
    assert [["k0"]] == calls
    with time_machine.travel(start + timedelta(seconds=delay + 1), tick=False):
        while sender.run_once():
            pass
    assert {"k0": "sent", "k1": "sent", "k2": "sent"} == states(rt.store)
    assert ["k0", "k1", "k2"] == sorted(k for call in calls[1:] for k in call)


def test_a_thousand_accepted_sends_are_recorded_in_one_update_per_500_keys(rt: Runtime) -> None:
    """Outcomes are recorded per distinct outcome, 500 keys a statement, not one UPDATE per send."""
    contact = seeded_contacts(rt, 1)[0]
    first = add_send(rt, contact, key="bulk-0")
    with rt.store.begin() as conn:
        row = dict(conn.execute(select(schema.sends).where(schema.sends.c.id == first)).mappings().one())
        del row["id"]
        conn.execute(schema.sends.insert(), [{**row, "send_key": f"bulk-{i}"} for i in range(1, 1001)])
    channel = ScriptedChannel(
        "email",
        lambda ms: [SendOutcome(m.send_key, "sent", provider_id="batch-1") for m in ms],
        max_batch=1001,
    )
    sender = sender_with(rt, {"email": channel})
    updates: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE SENDS"):
            updates.append(statement)

    event.listen(rt.store.engine, "before_cursor_execute", seen)
    try:
        assert 1001 == sender.run_once()
    finally:
        event.remove(rt.store.engine, "before_cursor_execute", seen)

    assert 1 == channel.calls
    # One UPDATE claims the batch; the outcomes take ⌈1001 / 500⌉ = 3.
    assert 4 == len(updates)
    with rt.store.read() as conn:
        rows = conn.execute(
            select(schema.sends.c.state, schema.sends.c.provider_id, schema.sends.c.sent_at)
        ).all()
    assert {("sent", "batch-1")} == {(r.state, r.provider_id) for r in rows}
    assert all(r.sent_at is not None for r in rows)


class CountingSender(Sender):
    """The real sender, counting how often each send's message is rendered."""

    rendered: Counter[str]

    def message_for(self, row: Any) -> OutboundMessage:
        self.rendered[row["send_key"]] += 1
        return super().message_for(row)


def test_a_batch_still_filling_is_rendered_ahead_and_each_message_is_rendered_once(rt: Runtime) -> None:
    """While a wave adds rows, the sender renders them ahead; once the batch is full only the claim and
    the call remain. A row suppressed after it was rendered ahead is still cancelled at the claim."""
    first, second, third = seeded_contacts(rt, 3)
    add_send(rt, first, key="k0")
    add_send(rt, second, key="k1")
    channel = ScriptedChannel("email", max_batch=3)
    sender = CountingSender(rt.store, rt.config, {"email": channel}, rt.renderer, worker_id="test-worker")
    sender.rendered = Counter()

    assert 0 == sender.run_once(linger=True)  # two of three: the batch is filling
    assert Counter({"k0": 1, "k1": 1}) == sender.rendered
    assert 0 == channel.calls

    with rt.store.begin() as conn:
        conn.execute(
            schema.suppressions.insert().values(
                channel="email",
                address=send_row(rt.store, "k1")["address"],
                reason="unsubscribed",
                source="test",
                created_at=utcnow(),
            )
        )
    add_send(rt, third, key="k2")
    assert 2 == sender.run_once(linger=True)  # full: claimed, k1 cancelled, k0 not rendered again

    assert Counter({"k0": 1, "k1": 1, "k2": 1}) == sender.rendered
    assert (1, ["k0", "k2"]) == (channel.calls, sorted(channel.handed))
    assert {"k0": "sent", "k1": "cancelled", "k2": "sent"} == states(rt.store)
