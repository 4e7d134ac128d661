"""Inbound texts arriving together (a burst of SMS answers) share one transaction, on SQLite and
PostgreSQL, through the real webhook and the real core: each is answered only once committed, with
its own reply, and a text that cannot be stored fails only its own webhook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, func, select

from nps_sync.errors import NpsSyncError
from nps_sync.responses import RecordedResponse
from nps_sync.store import schema
from nps_sync.store.db import utcnow
from tests.connectors.twilio.test_status_callbacks import (  # noqa: F401 - wired_fixture is a fixture
    InThreads,
    Wired,
    commits_of,
    wired_fixture,
    writer_held,
)
from tests.core.test_sending import (  # noqa: F401 - the *_fixture names are fixtures
    add_send,
    core_store_fixture,
    jobs,
    pg_module_store_fixture,
    seeded_contacts,
    send_row,
    suppressions,
)
from tests.e2e.daemon import wait_for


def phones(wired: Wired, count: int) -> list[str]:
    """``count`` people who were sent an SMS survey: their numbers."""
    out = []
    for i, contact in enumerate(seeded_contacts(wired.rt, count)):
        add_send(wired.rt, contact, channel="sms", state="sent", sent_at=utcnow(), key=f"sms-{i}")
        out.append(send_row(wired.store, f"sms-{i}")["address"])
    return out


def scores(wired: Wired) -> dict[str, tuple[int, str | None]]:
    r, s = schema.responses, schema.sends
    with wired.store.read() as conn:
        rows = conn.execute(select(s.c.address, r.c.score, r.c.comment).join(s, s.c.id == r.c.send_id))
        return {row.address: (row.score, row.comment) for row in rows}


def text(wired: Wired, sid: str, phone: str, body: str) -> Callable[[], Any]:
    """The person at ``phone`` texts ``body``: the call returns the TwiML's texts, or the HTTP status
    when the webhook failed."""

    def send() -> Any:
        posted = wired.sender.inbound(phone, body, message_sid=sid)
        return posted.replies if posted.status == 200 else posted.status

    return send


def test_texts_arriving_together_share_one_transaction_and_each_gets_its_own_reply(wired: Wired) -> None:
    p = phones(wired, 5)
    texts = [
        ("SM0", p[0], "9"),
        ("SM1", p[1], "3 too slow"),
        ("SM2", p[2], "STOP"),
        ("SM3", p[3], "HELP"),
        ("SM4", p[4], "7"),
        ("SM0", p[0], "9"),  # Twilio's retry of the first, arriving with the rest
        ("SM5", "+14155550199", "10"),  # nobody we surveyed
    ]
    group = wired.rt.responses.sms_commits
    commits = commits_of(wired.store)
    sent = InThreads()

    with writer_held(wired.store):
        sent.start(0, text(wired, *texts[0]))
        wait_for(lambda: group.waiting == 1 and group.queued == 0, what="the first text to lead")
        for i, one in enumerate(texts[1:], start=1):
            sent.start(i, text(wired, *one))
        wait_for(lambda: group.queued == len(texts) - 1, what="six texts queued behind the leader")
        answered_while_held = dict(sent.results)
    replies = sent.join()

    assert {} == answered_while_held
    # The holder's transaction, the leader's text alone, then the six that waited: in one.
    assert 3 == len(commits)
    render = wired.rt.renderer.text
    promoter = render("en", "sms_thanks", follow_up=render("en", "follow_up_promoter"))
    passive = render("en", "sms_thanks", follow_up=render("en", "follow_up_passive"))
    assert [
        [promoter],
        [render("en", "sms_comment_thanks")],
        [],  # the STOP confirmation is left to Twilio here (the channel's default)
        ["Example Inc. support: +1 555 0100. Reply STOP to opt out."],
        [passive],
        [],  # Twilio's replay of the first: already recorded
        [],
    ] == [replies[i] for i in range(len(texts))]
    assert {p[0]: (9, None), p[1]: (3, "too slow"), p[4]: (7, None)} == scores(wired)
    assert [("sms", p[2], "stop")] == suppressions(wired.store)
    assert 3 == len(jobs(wired.store, "writeback"))
    with wired.store.read() as conn:
        assert 6 == conn.execute(select(func.count()).select_from(schema.inbound_events)).scalar_one()


def test_a_text_that_cannot_be_stored_fails_only_its_own_webhook_and_its_retry_is_recorded(
    wired: Wired,
) -> None:
    p = phones(wired, 4)
    broken = {p[2]}
    contacts = {send_row(wired.store, f"sms-{i}")["contact_id"]: phone for i, phone in enumerate(p)}

    def flaky_hook(conn: Connection, response: RecordedResponse) -> None:
        if contacts[response.contact_id] in broken:
            raise NpsSyncError("the playbook's insert failed")

    wired.rt.responses.on_response = flaky_hook
    group = wired.rt.responses.sms_commits
    sent = InThreads()
    with writer_held(wired.store):
        sent.start(0, text(wired, "SM0", p[0], "8"))
        wait_for(lambda: group.waiting == 1 and group.queued == 0, what="the first text to lead")
        for i in (1, 2, 3):
            sent.start(i, text(wired, f"SM{i}", p[i], str(i)))
        wait_for(lambda: group.queued == 3, what="three texts queued behind the leader")
    replies = sent.join()

    assert 500 == replies[2]
    assert [True, True, True] == [isinstance(replies[i], list) and len(replies[i]) == 1 for i in (0, 1, 3)]
    assert {p[0]: (8, None), p[1]: (1, None), p[3]: (3, None)} == scores(wired)

    broken.clear()
    retry = wired.sender.inbound(p[2], "2", message_sid="SM2")  # Twilio retries after the 500

    assert 200 == retry.status
    assert (2, None) == scores(wired)[p[2]]
