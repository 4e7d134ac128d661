"""Which survey an SMS reply answers: the newest survey *sent* to that number, whatever newer sends
to it were queued, failed or left unknown; found through the (channel, address) index, not by
walking every sent survey (on SQLite without statistics the planner took the state index: ~7 ms an
answer at 10,000 sends, and the answers queued behind one another)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from nps_sync.runtime import Runtime
from nps_sync.store import schema
from nps_sync.store.db import Store, utcnow
from tests.core.test_sending import (  # noqa: F401 - the *_fixture names are fixtures
    add_send,
    core_store_fixture,
    make_runtime,
    pg_module_store_fixture,
    seeded_contacts,
    send_row,
)


@pytest.fixture
def rt(tmp_path: Path, core_store: Store) -> Iterator[Runtime]:
    runtime = make_runtime(tmp_path, core_store)
    yield runtime
    runtime.close()


def answered(rt: Runtime) -> list[tuple[int, int]]:
    r = schema.responses
    with rt.store.read() as conn:
        return [(row.send_id, row.score) for row in conn.execute(select(r.c.send_id, r.c.score))]


def reply(rt: Runtime, phone: str, body: str, sid: str = "SM1") -> str | None:
    return rt.responses.sms_received(
        provider="twilio", event_id=sid, from_number=phone, to_number="+15550100", body=body
    ).text


def test_an_sms_reply_answers_the_newest_survey_sent_to_the_number(rt: Runtime) -> None:
    contact = seeded_contacts(rt, 1)[0]
    now = utcnow()
    add_send(rt, contact, channel="sms", state="sent", sent_at=now - timedelta(days=100), key="old")
    newest = add_send(rt, contact, channel="sms", state="sent", sent_at=now - timedelta(days=1), key="new")
    phone = send_row(rt.store, "new")["address"]

    reply(rt, phone, "8")

    assert [(newest, 8)] == answered(rt)


@pytest.mark.parametrize("state", ["queued", "sending", "failed", "unknown"])
def test_a_newer_send_that_did_not_go_out_is_passed_over(rt: Runtime, state: str) -> None:
    contact = seeded_contacts(rt, 1)[0]
    sent = add_send(
        rt, contact, channel="sms", state="sent", sent_at=utcnow() - timedelta(days=2), key="sent"
    )
    add_send(rt, contact, channel="sms", state=state, key="newer")
    phone = send_row(rt.store, "sent")["address"]

    reply(rt, phone, "3")

    assert [(sent, 3)] == answered(rt)


def test_a_number_with_no_sent_survey_gets_no_answer_recorded_and_no_text(rt: Runtime) -> None:
    contact = seeded_contacts(rt, 1)[0]
    add_send(rt, contact, channel="sms", state="failed", key="failed")
    phone = send_row(rt.store, "failed")["address"]

    assert None is reply(rt, phone, "9")
    assert [] == answered(rt)


def test_the_survey_is_found_through_the_address_index_on_sqlite(rt: Runtime) -> None:
    if not rt.store.is_sqlite:
        pytest.skip("the planner question is SQLite's (PostgreSQL keeps statistics)")
    contacts = seeded_contacts(rt, 3)
    for i, contact in enumerate(contacts):
        add_send(rt, contact, channel="sms", state="sent", sent_at=utcnow(), key=f"k{i}")
    phone = send_row(rt.store, "k1")["address"]
    lookups: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().startswith("SELECT") and "sends.address = ?" in statement:
            lookups.append((statement, parameters))

    event.listen(rt.store.engine, "before_cursor_execute", capture)
    reply(rt, phone, "7")
    event.remove(rt.store.engine, "before_cursor_execute", capture)

    [(statement, parameters)] = lookups
    with rt.store.engine.connect() as conn:
        plan = " | ".join(
            row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        )
    assert "USING INDEX ix_sends_address (channel=? AND address=?)" in plan
