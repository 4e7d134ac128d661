"""Guards added after review: admin pages against DNS rebinding and cross-site posts, late provider
answers after recovery, SMS comment threads, START confirmations, and ops visibility of a channel
disabled for refused credentials."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select

from nps_sync.models import SendOutcome, TaskSpec
from nps_sync.runtime import Runtime
from nps_sync.store import schema
from nps_sync.store.db import Store, utcnow
from tests.core.test_sending import add_send, make_runtime, seeded_contacts, send_row
from tests.core.test_web import Web, web  # noqa: F401 - the fixture is used by name

PHONE = "+12125551000"  # C001 in the seed


@pytest.fixture
def rt(tmp_path: Path, sqlite_store: Store) -> Iterator[Runtime]:
    runtime = make_runtime(tmp_path, sqlite_store)
    yield runtime
    runtime.close()


def test_admin_pages_refuse_a_foreign_host_name_even_from_loopback(web: Web) -> None:  # noqa: F811
    """A page on evil.example whose DNS name was rebound to 127.0.0.1 still sends Host: evil.example."""
    assert 200 == web.http.get("/outbox").status_code
    assert 403 == web.http.get("/outbox", headers={"Host": "evil.example:8080"}).status_code
    assert 403 == web.http.get("/sandbox/tasks", headers={"Host": "evil.example"}).status_code


def test_admin_form_posts_from_another_site_are_refused(web: Web) -> None:  # noqa: F811
    contact = seeded_contacts(web.rt, 1)[0]
    spec_key = "nps:hardening:1"
    found = web.rt.crm.get_contacts([contact])[contact]
    task_id = web.rt.crm.create_tasks(
        [TaskSpec(spec_key, contact, found.account_id, found.account_owner_id, "Call", "", date(2026, 12, 1))]
    )[0].task_id
    url = f"/sandbox/tasks/{task_id}/complete"
    assert 403 == web.http.post(url, headers={"Origin": "https://evil.example"}).status_code
    assert not web.rt.crm.get_tasks([task_id])[task_id].completed  # type: ignore[index]
    assert 303 == web.http.post(url, headers={"Origin": web.url}).status_code
    assert web.rt.crm.get_tasks([task_id])[task_id].completed  # type: ignore[index]


def test_a_late_outcome_does_not_overwrite_a_send_recovery_already_resolved(rt: Runtime) -> None:
    """A paused replica wakes up after its sends were marked unknown and reconciled to sent: its late
    'failed' must not undo that."""
    add_send(rt, seeded_contacts(rt, 1)[0], state="sent", key="late", sent_at=utcnow())
    rt.sender.record([SendOutcome("late", "failed", reason="late answer")])
    assert "sent" == send_row(rt.store, "late")["state"]


def test_several_sms_comments_in_a_row_are_kept_in_order(rt: Runtime) -> None:
    add_send(rt, "C001", channel="sms", state="sent", key="sms-survey", sent_at=utcnow())
    sms = rt.responses.sms_received
    sms(provider="t", event_id="1", from_number=PHONE, to_number="+15550100", body="4")
    sms(provider="t", event_id="2", from_number=PHONE, to_number="+15550100", body="Support was slow.")
    sms(provider="t", event_id="3", from_number=PHONE, to_number="+15550100", body="And billing was wrong.")
    with rt.store.read() as conn:
        comment = conn.execute(select(schema.responses.c.comment)).scalar_one()
    assert "Support was slow.\nAnd billing was wrong." == comment


def test_start_is_confirmed_only_when_it_resubscribes(rt: Runtime) -> None:
    add_send(rt, "C001", channel="sms", state="sent", key="sms-survey", sent_at=utcnow())
    sms = rt.responses.sms_received
    assert sms(provider="t", event_id="a", from_number=PHONE, to_number="+1", body="START").text is None
    assert sms(provider="t", event_id="b", from_number=PHONE, to_number="+1", body="STOP").text is not None
    assert sms(provider="t", event_id="c", from_number=PHONE, to_number="+1", body="START").text is not None
    assert sms(provider="t", event_id="d", from_number=PHONE, to_number="+1", body="YES").text is None


def test_healthz_reports_a_channel_disabled_for_refused_credentials(web: Web) -> None:  # noqa: F811
    assert {"status": "ok", "paused": False} == web.http.get("/healthz").json()
    web.rt.sender.disabled["email"] = "SendGrid refused the API key (401)"
    assert {
        "status": "degraded",
        "paused": False,
        "disabled_channels": {"email": "SendGrid refused the API key (401)"},
    } == web.http.get("/healthz").json()
