"""Recording answers (web posts, SMS replies) and provider events, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from sqlalchemy import Connection, event, func, select

from nps_sync.errors import NpsSyncError
from nps_sync.models import ProviderEvent
from nps_sync.responses import RecordedResponse, ResponseError, Responses
from nps_sync.runtime import Runtime
from nps_sync.store import schema
from nps_sync.store.db import Store, utcnow
from nps_sync.timezones import normalize_email
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


@pytest.fixture
def rt(tmp_path: Path, core_store: Store) -> Runtime:
    return make_runtime(tmp_path, core_store)


def responses(store: Store) -> list[dict[str, Any]]:
    with store.read() as conn:
        return [
            dict(r) for r in conn.execute(select(schema.responses).order_by(schema.responses.c.id)).mappings()
        ]


def sms_survey(rt: Runtime, contact: str, key: str = "sms-survey") -> tuple[int, str]:
    send_id = add_send(rt, contact, channel="sms", state="sent", sent_at=utcnow(), key=key)
    return send_id, send_row(rt.store, key)["address"]


# --- record / replace -------------------------------------------------------------------------------


def test_an_answer_is_recorded_with_its_writeback_job(rt: Runtime) -> None:
    contact = seeded_contacts(rt, 1)[0]
    send_id = add_send(rt, contact, state="sent", sent_at=utcnow())

    recorded = rt.responses.record(send_id, 9, "  Great support  ", channel="email")

    assert (9, "promoter", None, "Great support", False) == (
        recorded.score,
        recorded.category.value,
        recorded.previous_category,
        recorded.comment,
        recorded.replaced,
    )
    [row] = responses(rt.store)
    assert (send_id, contact, 9, "promoter", "Great support") == (
        row["send_id"],
        row["contact_id"],
        row["score"],
        row["category"],
        row["comment"],
    )
    account = send_row(rt.store, "nps|test|" + contact + "|email|survey")["account_id"]
    assert [{"contact_id": contact, "account_id": account}] == [
        j["payload"] for j in jobs(rt.store, "writeback")
    ]


def test_the_response_and_its_jobs_commit_together(rt: Runtime) -> None:
    """A failure in the playbook hook (inside the transaction) leaves neither response nor job."""
    send_id = add_send(rt, seeded_contacts(rt, 1)[0], state="sent", sent_at=utcnow())

    def failing_hook(conn: Connection, response: RecordedResponse) -> None:
        raise NpsSyncError("playbook engine down")

    broken = Responses(rt.store, rt.config, rt.renderer, on_response=failing_hook)
    with pytest.raises(NpsSyncError):
        broken.record(send_id, 3, "slow", channel="email")
    assert ([], []) == (responses(rt.store), jobs(rt.store))


def test_a_later_answer_replaces_the_earlier_one(rt: Runtime) -> None:
    send_id = add_send(rt, seeded_contacts(rt, 1)[0], state="sent", sent_at=utcnow())
    first = rt.responses.record(send_id, 10, "great", channel="email")
    with time_machine.travel(utcnow() + timedelta(minutes=5)):
        second = rt.responses.record(send_id, 3, "actually, slow", channel="email")

    assert (True, True, first.responded_at) == (second.replaced, second.category_changed, second.responded_at)
    [row] = responses(rt.store)
    assert (first.id, 3, "detractor", "actually, slow") == (
        row["id"],
        row["score"],
        row["category"],
        row["comment"],
    )
    assert 2 == len(jobs(rt.store, "writeback"))


def test_previous_category_comes_from_the_persons_earlier_survey(rt: Runtime) -> None:
    contact, other = seeded_contacts(rt, 2)
    earlier = add_send(rt, contact, key="earlier", state="sent", sent_at=utcnow())
    add_send(rt, other, key="someone-else", state="sent", sent_at=utcnow())
    rt.responses.record(earlier, 9, None, channel="email")
    with time_machine.travel(utcnow() + timedelta(minutes=1)):
        rt.responses.record(send_row(rt.store, "someone-else")["id"], 2, None, channel="email")
    later = add_send(rt, contact, key="later", state="sent", sent_at=utcnow())

    with time_machine.travel(utcnow() + timedelta(days=100)):
        recorded = rt.responses.record(later, 4, None, channel="email")

    assert "promoter" == recorded.previous_category
    assert "promoter" == responses(rt.store)[-1]["previous_category"]


@pytest.mark.parametrize("score", [-1, 11, 100])
def test_a_score_outside_0_to_10_is_refused(rt: Runtime, score: int) -> None:
    send_id = add_send(rt, seeded_contacts(rt, 1)[0], state="sent", sent_at=utcnow())
    with pytest.raises(ResponseError, match=f"score must be an integer from 0 to 10, got: {score}"):
        rt.responses.record(send_id, score, None, channel="email")
    assert ([], []) == (responses(rt.store), jobs(rt.store))


def test_an_unknown_send_or_a_non_survey_send_is_refused(rt: Runtime) -> None:
    playbook = add_send(rt, seeded_contacts(rt, 1)[0], kind="playbook", content={"subject": "s", "text": "t"})
    for send_id in (424242, playbook):
        with pytest.raises(ResponseError, match=f"no survey with id {send_id}"):
            rt.responses.record(send_id, 5, None, channel="email")
    assert [] == responses(rt.store)


# --- SMS replies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "score", "comment"),
    [("9", 9, None), ("9!", 9, None), (" 10 great service", 10, "great service")],
)
def test_an_sms_score_is_recorded(rt: Runtime, body: str, score: int, comment: str | None) -> None:
    send_id, phone = sms_survey(rt, seeded_contacts(rt, 1)[0])

    reply = rt.responses.sms_received(
        provider="twilio", event_id="SM1", from_number=phone, to_number="+15550100", body=body
    )

    [row] = responses(rt.store)
    assert (send_id, score, comment, "sms") == (row["send_id"], row["score"], row["comment"], row["channel"])
    expected = (
        rt.renderer.text("en", "sms_comment_thanks")
        if comment
        else rt.renderer.text("en", "sms_thanks", follow_up=rt.renderer.text("en", "follow_up_promoter"))
    )
    assert expected == reply.text


def test_free_text_within_24_hours_becomes_the_comment_and_later_is_an_invalid_reply(rt: Runtime) -> None:
    _, phone = sms_survey(rt, seeded_contacts(rt, 1)[0])
    sms = rt.responses.sms_received
    sms(provider="twilio", event_id="SM1", from_number=phone, to_number="+15550100", body="6")

    with time_machine.travel(utcnow() + timedelta(hours=23)):
        reply = sms(
            provider="twilio",
            event_id="SM2",
            from_number=phone,
            to_number="+15550100",
            body="Support was slow",
        )
    assert rt.renderer.text("en", "sms_comment_thanks") == reply.text
    assert (6, "Support was slow") == (responses(rt.store)[0]["score"], responses(rt.store)[0]["comment"])

    with time_machine.travel(utcnow() + timedelta(hours=23 + 24 + 2)):
        late = sms(
            provider="twilio", event_id="SM3", from_number=phone, to_number="+15550100", body="Also the app"
        )
    assert rt.renderer.text("en", "sms_invalid") == late.text
    assert "Support was slow" == responses(rt.store)[0]["comment"]


def test_stop_suppresses_queues_the_crm_opt_out_and_confirms_exactly_once(rt: Runtime) -> None:
    contact = seeded_contacts(rt, 1)[0]
    _, phone = sms_survey(rt, contact)
    received = [
        ("SM1", "STOP"),
        ("SM1", "STOP"),  # the provider retried the webhook
        ("SM2", "stop please"),
        ("SM3", "Unsubscribe"),
        ("SM4", "Opt-Out"),
        ("SM5", "10. Stop"),
    ]
    replies = [
        rt.responses.sms_received(
            provider="twilio", event_id=e, from_number=phone, to_number="+15550100", body=b
        ).text
        for e, b in received
    ]

    assert [rt.renderer.text("en", "sms_stop"), None, None, None, None, None] == replies
    assert [("sms", phone, "stop")] == suppressions(rt.store)
    assert [{"contact_id": contact, "channel": "sms"}] == [
        j["payload"] for j in jobs(rt.store, "crm_opt_out")
    ]
    assert [] == responses(rt.store)


def test_start_removes_the_suppression_and_clears_the_crm_opt_out(rt: Runtime) -> None:
    contact = seeded_contacts(rt, 1)[0]
    _, phone = sms_survey(rt, contact)
    sms = rt.responses.sms_received
    sms(provider="twilio", event_id="SM1", from_number=phone, to_number="+15550100", body="STOP")

    reply = sms(provider="twilio", event_id="SM2", from_number=phone, to_number="+15550100", body="start")

    assert rt.renderer.text("en", "sms_start") == reply.text
    assert [] == suppressions(rt.store)
    assert [
        {"contact_id": contact, "channel": "sms"},
        {"contact_id": contact, "channel": "sms", "value": False},
    ] == [j["payload"] for j in jobs(rt.store, "crm_opt_out")]


def test_help_answers_with_the_configured_help_text(rt: Runtime) -> None:
    _, phone = sms_survey(rt, seeded_contacts(rt, 1)[0])
    reply = rt.responses.sms_received(
        provider="twilio", event_id="SM1", from_number=phone, to_number="+15550100", body="HELP"
    )
    assert "Example Inc. support: +1 555 0100. Reply STOP to opt out." == reply.text
    assert ([], []) == (responses(rt.store), suppressions(rt.store))


def test_a_replayed_sms_event_does_nothing(rt: Runtime) -> None:
    _, phone = sms_survey(rt, seeded_contacts(rt, 1)[0])
    sms = rt.responses.sms_received
    sms(provider="twilio", event_id="SM1", from_number=phone, to_number="+15550100", body="9")

    replay = sms(provider="twilio", event_id="SM1", from_number=phone, to_number="+15550100", body="3")

    assert None is replay.text
    assert [9] == [r["score"] for r in responses(rt.store)]
    assert 1 == len(jobs(rt.store, "writeback"))


# --- provider events -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ("bounce", "bounced"),
        ("dropped", "dropped"),
        ("spamreport", "spam_report"),
        ("unsubscribe", "unsubscribed"),
    ],
)
def test_a_suppressing_email_event_suppresses_the_address(rt: Runtime, event: str, reason: str) -> None:
    contact = seeded_contacts(rt, 1)[0]
    add_send(rt, contact, key="k", state="sent", sent_at=utcnow())
    address = send_row(rt.store, "k")["address"]

    assert rt.responses.delivery_event(
        provider="sendgrid", event_id="ev1", event=event, send_key="k", address=address, occurred_at=None
    )
    assert [("email", address, reason)] == suppressions(rt.store)
    assert [{"contact_id": contact, "channel": "email"}] == [
        j["payload"] for j in jobs(rt.store, "crm_opt_out")
    ]


def test_an_event_without_a_send_key_suppresses_the_normalised_address(rt: Runtime) -> None:
    assert rt.responses.delivery_event(
        provider="sendgrid",
        event_id="ev1",
        event="bounce",
        send_key=None,
        address=" Someone@Example.COM ",
        occurred_at=None,
    )
    assert [("email", normalize_email("Someone@Example.COM"), "bounced")] == suppressions(rt.store)


@pytest.mark.parametrize("event", ["delivered", "open", "processed"])
def test_non_suppressing_events_suppress_nothing(rt: Runtime, event: str) -> None:
    add_send(rt, seeded_contacts(rt, 1)[0], key="k", state="sent", sent_at=utcnow())
    assert rt.responses.delivery_event(
        provider="sendgrid", event_id="ev1", event=event, send_key="k", address=None, occurred_at=None
    )
    assert [] == suppressions(rt.store)


def test_delivered_resolves_a_send_left_unknown(rt: Runtime) -> None:
    first, second = seeded_contacts(rt, 2)
    add_send(rt, first, key="delivered", state="unknown")
    add_send(rt, second, key="bounced", state="unknown")

    rt.responses.delivery_event(
        provider="sendgrid",
        event_id="ev1",
        event="delivered",
        send_key="delivered",
        address=None,
        occurred_at=None,
    )
    rt.responses.delivery_event(
        provider="sendgrid",
        event_id="ev2",
        event="bounce",
        send_key="bounced",
        address=None,
        occurred_at=None,
    )

    assert {"delivered": "sent", "bounced": "failed"} == states(rt.store)
    # sent_at drives reminders, re-survey intervals and which survey an SMS reply answers
    assert send_row(rt.store, "delivered")["sent_at"] is not None
    assert send_row(rt.store, "bounced")["sent_at"] is None


def test_twilio_error_21610_suppresses_the_number(rt: Runtime) -> None:
    contact = seeded_contacts(rt, 1)[0]
    add_send(rt, contact, key="k", channel="sms", state="sent", sent_at=utcnow())
    phone = send_row(rt.store, "k")["address"]

    rt.responses.delivery_event(
        provider="twilio",
        event_id="SM1:failed",
        event="failed",
        send_key="k",
        address=phone,
        occurred_at=None,
        detail="21610",
    )
    assert [("sms", phone, "opted_out_at_provider")] == suppressions(rt.store)


def test_a_duplicate_event_returns_false_and_changes_nothing(rt: Runtime) -> None:
    add_send(rt, seeded_contacts(rt, 1)[0], key="k", state="sent", sent_at=utcnow())
    event = {
        "provider": "sendgrid",
        "event_id": "ev1",
        "event": "bounce",
        "send_key": "k",
        "address": None,
        "occurred_at": None,
    }

    assert [True, False, False] == [rt.responses.delivery_event(**event) for _ in range(3)]  # type: ignore[arg-type]
    with rt.store.read() as conn:
        assert 1 == conn.execute(select(func.count()).select_from(schema.inbound_events)).scalar_one()
    assert 1 == len(suppressions(rt.store))
    assert 1 == len(jobs(rt.store, "crm_opt_out"))


def test_a_webhook_batch_commits_once_and_flags_each_event_new_or_seen(rt: Runtime) -> None:
    first, second = seeded_contacts(rt, 2)
    add_send(rt, first, key="k1", state="sent", sent_at=utcnow())
    add_send(rt, second, key="k2", state="sent", sent_at=utcnow())
    rt.responses.delivery_event(
        provider="sendgrid", event_id="ev1", event="delivered", send_key="k1", address=None, occurred_at=None
    )
    commits: list[int] = []
    event.listen(rt.store.engine, "commit", lambda conn: commits.append(1))
    batch = [
        ProviderEvent("sendgrid", "ev1", "delivered", "k1", None, None),  # seen before
        ProviderEvent("sendgrid", "ev2", "delivered", "k2", None, None),
        ProviderEvent("sendgrid", "ev3", "bounce", "k2", None, None),
        ProviderEvent("sendgrid", "ev3", "bounce", "k2", None, None),  # twice in one post
    ]
    assert [False, True, True, False] == rt.responses.delivery_events(batch)
    assert 1 == len(commits)
    assert [("email", send_row(rt.store, "k2")["address"], "bounced")] == suppressions(rt.store)


def test_a_webhook_batch_costs_one_insert_and_a_send_lookup_per_500_keys(rt: Runtime) -> None:
    contact = seeded_contacts(rt, 1)[0]
    keys = [f"k{i}" for i in range(502)]
    for key in keys:
        add_send(rt, contact, key=key, state="unknown" if key == "k7" else "sent", sent_at=utcnow())
    rt.responses.delivery_event(
        provider="sendgrid", event_id="ev0", event="delivered", send_key="k0", address=None, occurred_at=None
    )
    batch = [ProviderEvent("sendgrid", f"ev{i}", "delivered", key, None, None) for i, key in enumerate(keys)]
    batch.insert(4, ProviderEvent("sendgrid", "ev3", "delivered", "k3", None, None))  # twice in one post
    statements: list[str] = []

    def seen(conn: Connection, cursor: Any, statement: str, *args: Any) -> None:
        if " inbound_events " in f"{statement} " or " sends " in f"{statement} ":
            statements.append(statement.split()[0].upper())

    event.listen(rt.store.engine, "before_cursor_execute", seen)
    try:
        fresh = rt.responses.delivery_events(batch)
    finally:
        event.remove(rt.store.engine, "before_cursor_execute", seen)
    assert [False, True, True, True, False] + [True] * 498 == fresh
    # 502 event ids in one INSERT; the 501 new ones' sends, 500 keys a SELECT; one UPDATE for the
    # send left unknown.
    assert ["INSERT", "SELECT", "SELECT", "UPDATE"] == statements
    assert "sent" == send_row(rt.store, "k7")["state"]
    with rt.store.read() as conn:
        assert 502 == conn.execute(select(func.count()).select_from(schema.inbound_events)).scalar_one()


def test_insert_new_tells_which_rows_this_transaction_added(core_store: Store) -> None:
    row = {"provider": "sendgrid", "kind": "delivered", "detail": "", "received_at": utcnow()}
    with core_store.begin() as conn:
        core_store.insert_ignore(
            conn, schema.inbound_events, {**row, "event_id": "a"}, "provider", "event_id"
        )
    with core_store.begin() as conn:
        added = core_store.insert_new(
            conn,
            schema.inbound_events,
            [{**row, "event_id": e} for e in ("a", "b", "c")],
            "provider",
            "event_id",
        )
        assert {("sendgrid", "b"), ("sendgrid", "c")} == added
        assert set() == core_store.insert_new(conn, schema.inbound_events, [], "provider", "event_id")


def test_a_webhook_batch_that_fails_records_none_of_its_events(rt: Runtime) -> None:
    add_send(rt, seeded_contacts(rt, 1)[0], key="k", state="sent", sent_at=utcnow())
    batch = [
        ProviderEvent("sendgrid", "ev1", "bounce", "k", None, None),
        ProviderEvent("sendgrid", "ev2", "delivered", "k", None, None),
    ]
    # A malformed second event fails the batch after the first one's rows were written.
    broken = [batch[0], ProviderEvent("sendgrid", "ev2", "delivered", "k", None, None, detail=None)]  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        rt.responses.delivery_events(broken)
    assert [] == suppressions(rt.store)
    with rt.store.read() as conn:
        assert 0 == conn.execute(select(func.count()).select_from(schema.inbound_events)).scalar_one()
    # The provider's retry of the batch records everything.
    assert [True, True] == rt.responses.delivery_events(batch)


def test_an_sms_answer_that_failed_to_commit_is_recorded_when_the_provider_retries(rt: Runtime) -> None:
    """The event's dedupe row commits with the answer: a failure in between must not leave the event
    marked as seen, or the provider's retry would be dropped and the answer lost."""
    _, phone = sms_survey(rt, seeded_contacts(rt, 1)[0])
    failures = [NpsSyncError("database connection lost mid-commit")]

    def flaky_hook(conn: Connection, response: RecordedResponse) -> None:
        if failures:
            raise failures.pop()

    responder = Responses(rt.store, rt.config, rt.renderer, on_response=flaky_hook)
    receive = {
        "provider": "twilio",
        "event_id": "SM1",
        "from_number": phone,
        "to_number": "+15550100",
        "body": "4",
    }
    with pytest.raises(NpsSyncError):
        responder.sms_received(**receive)

    reply = responder.sms_received(**receive)  # Twilio retries the webhook after the 5xx

    assert [4] == [r["score"] for r in responses(rt.store)]
    assert reply.text is not None and reply.text.startswith("Thank you!")
