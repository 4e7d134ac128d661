"""Twilio status callbacks into the real core (``Responses``), on SQLite and PostgreSQL: callbacks
arriving together share one transaction (group commit), each is answered only once its event is
committed, replays are stored once, and a callback whose event cannot be stored fails alone."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text

from nps_sync.connectors.twilio import TwilioChannel
from nps_sync.models import OutboundMessage
from nps_sync.runtime import Runtime
from nps_sync.store import schema
from nps_sync.store.db import Store
from tests.connectors.twilio.fixtures import PUBLIC_URL, WebApp, make_channel
from tests.core.test_sending import (  # noqa: F401 - the *_fixture names are fixtures
    add_send,
    core_store_fixture,
    jobs,
    make_runtime,
    pg_module_store_fixture,
    seeded_contacts,
    send_row,
    states,
    suppressions,
)
from tests.e2e.daemon import wait_for
from tests.emulators.twilio import TwilioEmulator, WebhookSender


@dataclass
class Wired:
    rt: Runtime
    channel: TwilioChannel
    sender: WebhookSender

    @property
    def store(self) -> Store:
        return self.rt.store

    def send(self, count: int) -> list[tuple[str, str]]:
        """``count`` SMS surveys through the emulator, their sends left ``unknown`` (as after a crash,
        so that a callback's effect shows). Returns (message sid, send key) pairs."""
        out = []
        for i, contact in enumerate(seeded_contacts(self.rt, count)):
            key = f"nps|test|{contact}|sms|{i}"
            add_send(self.rt, contact, channel="sms", state="unknown", key=key)
            phone = self.rt.crm.get_contacts([contact])[contact].phone
            assert phone is not None
            [outcome] = self.channel.send([OutboundMessage(key, "sms", phone, "", "Rate us 0-10")])
            assert outcome.provider_id is not None
            out.append((outcome.provider_id, key))
        return out


@pytest.fixture(name="wired")
def wired_fixture(tmp_path: Path, core_store: Store, twilio_emulator: TwilioEmulator) -> Iterator[Wired]:
    rt = make_runtime(tmp_path, core_store)
    channel = make_channel(twilio_emulator, core_store, inbound=rt.responses)
    app = WebApp(channel).__enter__()
    try:
        yield Wired(rt, channel, WebhookSender(twilio_emulator, target_url=app.url, public_url=PUBLIC_URL))
    finally:
        app.__exit__(None, None, None)
        channel.close()
        rt.close()


@contextmanager
def writer_held(store: Store) -> Iterator[None]:
    """Another transaction holds the way to ``inbound_events``: SQLite's one writer, or on
    PostgreSQL a lock that makes every INSERT into the table wait."""
    with store.begin() as conn:
        if not store.is_sqlite:
            conn.execute(text("LOCK TABLE inbound_events IN SHARE MODE"))
        yield


def stored(store: Store) -> list[tuple[str, str]]:
    t = schema.inbound_events
    with store.read() as conn:
        return sorted((r.event_id, r.kind) for r in conn.execute(select(t.c.event_id, t.c.kind)))


def commits_of(store: Store) -> list[int]:
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda conn: commits.append(1))
    return commits


class InThreads:
    """Calls made at once, each from a thread of its own, as Twilio makes its requests: key → what the
    call returned."""

    def __init__(self) -> None:
        self.results: dict[Any, Any] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self, key: Any, call: Callable[[], Any]) -> None:
        def run() -> None:
            result = call()
            with self._lock:
                self.results[key] = result

        thread = threading.Thread(target=run)
        thread.start()
        self._threads.append(thread)

    def join(self) -> dict[Any, Any]:
        for thread in self._threads:
            thread.join(timeout=30)
        return self.results


class Posts(InThreads):
    """Status callbacks posted at once: (sid, state) → HTTP status."""

    def __init__(self, sender: WebhookSender) -> None:
        super().__init__()
        self.sender = sender

    def post(self, sid: str, state: str, error_code: str | None = None) -> None:
        self.start((sid, state), lambda: self.sender.status(sid, state, error_code).status)


def test_status_callbacks_arriving_together_share_one_transaction_and_each_is_answered_after_it(
    wired: Wired,
) -> None:
    messages = wired.send(10)
    callbacks = [(sid, state) for sid, _ in messages for state in ("sent", "delivered")]
    group = wired.rt.responses.event_commits
    commits = commits_of(wired.store)
    posts = Posts(wired.sender)

    with writer_held(wired.store):
        posts.post(*callbacks[0])
        # Its request leads: it took a batch of one and waits for the writer.
        wait_for(lambda: group.waiting == 1 and group.queued == 0, what="the first callback to lead")
        for sid, state in callbacks[1:]:
            posts.post(sid, state)
        wait_for(lambda: group.queued == 19, what="19 callbacks queued behind the leader")
        answered_while_held = dict(posts.results)
        stored_while_held = stored(wired.store)

    status = posts.join()

    assert ({}, []) == (answered_while_held, stored_while_held)
    assert dict.fromkeys(callbacks, 204) == status
    # The holder's transaction, the leader's batch of one, then the 19 that waited: in one.
    assert 3 == len(commits)
    assert sorted((f"{sid}:{state}", state) for sid, state in callbacks) == stored(wired.store)
    assert {key: "sent" for _, key in messages} == states(wired.store)


def test_a_status_callback_replayed_concurrently_and_later_is_stored_once_and_suppresses_once(
    wired: Wired,
) -> None:
    [(sid, key)] = wired.send(1)
    barrier = threading.Barrier(5)
    codes: list[int] = []

    def replay() -> None:
        barrier.wait()
        codes.append(wired.sender.status(sid, "failed", "21610").status)

    threads = [threading.Thread(target=replay) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    codes.append(wired.sender.status(sid, "failed", "21610").status)

    assert 6 * [204] == codes
    assert [(f"{sid}:failed", "failed")] == stored(wired.store)
    assert [("sms", send_row(wired.store, key)["address"], "opted_out_at_provider")] == suppressions(
        wired.store
    )
    assert 1 == len(jobs(wired.store, "crm_opt_out"))
    assert {key: "failed"} == states(wired.store)


def test_a_callback_whose_event_cannot_be_stored_fails_alone_and_its_retry_is_stored(
    wired: Wired,
) -> None:
    messages = wired.send(4)
    broken = f"{messages[2][0]}:delivered"

    def disk_error(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "inbound_events" in statement and broken in repr(parameters):
            raise OSError("disk I/O error")

    event.listen(wired.store.engine, "before_cursor_execute", disk_error)
    group = wired.rt.responses.event_commits
    posts = Posts(wired.sender)
    with writer_held(wired.store):
        posts.post(messages[0][0], "delivered")
        wait_for(lambda: group.waiting == 1 and group.queued == 0, what="the first callback to lead")
        for sid, _ in messages[1:]:
            posts.post(sid, "delivered")
        # The broken one shares its batch with two good ones.
        wait_for(lambda: group.queued == 3, what="3 callbacks queued behind the leader")
    status = posts.join()
    event.remove(wired.store.engine, "before_cursor_execute", disk_error)

    assert {(sid, "delivered"): 500 if i == 2 else 204 for i, (sid, _) in enumerate(messages)} == status
    good = [m for i, m in enumerate(messages) if i != 2]
    assert sorted((f"{sid}:delivered", "delivered") for sid, _ in good) == stored(wired.store)
    assert {key: "sent" if i != 2 else "unknown" for i, (_, key) in enumerate(messages)} == states(
        wired.store
    )

    retried = wired.sender.status(messages[2][0], "delivered")  # a retry (Twilio connection overrides)

    assert 204 == retried.status
    assert sorted((f"{sid}:delivered", "delivered") for sid, _ in messages) == stored(wired.store)
    assert {key: "sent" for _, key in messages} == states(wired.store)
