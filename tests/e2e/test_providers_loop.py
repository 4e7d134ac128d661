"""The loop with real providers' SDKs on emulators: email through SendGrid (signed event webhook),
SMS through Twilio (signed inbound and status webhooks) → responses → write-back → playbooks."""

from __future__ import annotations

import csv
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from nps_sync.store import schema
from nps_sync.store.db import Store
from tests.connectors.sandbox.fixtures import SandboxProbe
from tests.e2e.daemon import DaemonProcess, afternoon_zone, free_port, wait_for, write_config
from tests.harness import SEED_DIR, E2EChannel

SCORE_LINE = re.compile(r"^(\d+)(?: \([^)]*\))?: (http\S+)$", re.M)
FIRST_ACCOUNTS = ["A01", "A02", "A03", "A04", "A05"]
LAST_ACCOUNTS = ["A06", "A07", "A08", "A09", "A10"]


def seed_in_zone(folder: Path, zone: str) -> Path:
    folder.mkdir()
    for name in ("owners.csv", "accounts.csv"):
        shutil.copy(SEED_DIR / name, folder / name)
    with (SEED_DIR / "contacts.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["time_zone"] = zone
    with (folder / "contacts.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


def program(name: str, channel: str, accounts: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "channel": channel,
        "schedule": "0 3 1 1 *",
        "send_window": "09:00-18:00",
        "default_time_zone": "UTC",
        "reminders": {"count": 0},
        "audience": {"where": {"account_id": accounts}},
    }


@pytest.fixture
def providers(
    tmp_path: Path, channel_e2e_sendgrid: E2EChannel, channel_e2e_twilio: E2EChannel
) -> Iterator[tuple[DaemonProcess, E2EChannel, E2EChannel, Store, SandboxProbe]]:
    port = free_port()
    seed = seed_in_zone(tmp_path / "seed", afternoon_zone())
    config = write_config(
        tmp_path / "config.toml",
        port=port,
        sections=[channel_e2e_sendgrid.config_toml, channel_e2e_twilio.config_toml],
        overrides={
            "crm": {"kind": "sandbox", "sandbox": {"seed": str(seed)}},
            "channels": {"email": {"postal_address": "Acme Inc., 1 Main St"}},
            "program": [program("mail", "email", FIRST_ACCOUNTS), program("text", "sms", LAST_ACCOUNTS)],
        },
    )
    daemon = DaemonProcess(
        config, f"http://127.0.0.1:{port}", env={**channel_e2e_sendgrid.env, **channel_e2e_twilio.env}
    )
    channel_e2e_sendgrid.probe.connect(daemon.url)
    channel_e2e_twilio.probe.connect(daemon.url)
    daemon.start()
    store = Store(f"sqlite:///{tmp_path / 'state' / 'nps-sync.db'}")
    yield daemon, channel_e2e_sendgrid, channel_e2e_twilio, store, SandboxProbe(store)
    assert 0 == daemon.stop(), daemon.log()
    store.dispose()


def count(store: Store, table: Any, *where: Any) -> int:
    with store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def test_loop_through_sendgrid_and_twilio(
    providers: tuple[DaemonProcess, E2EChannel, E2EChannel, Store, SandboxProbe],
) -> None:
    _, email, sms, store, crm = providers
    waves = schema.waves
    wait_for(lambda: count(store, waves, waves.c.state == "done") == 2, what="the two start-up waves")

    # Email: every survey went out through mail/send, grouped (one call per language group).
    expected_emails = count(
        store, schema.sends, schema.sends.c.program == "mail", schema.sends.c.kind == "survey"
    )
    assert expected_emails > 0
    wait_for(lambda: len(email.probe.messages()) == expected_emails, what="all survey emails at SendGrid")
    assert email.probe.call_counts()["mail_send"] <= 2  # en and de groups, ≤ 1,000 recipients each
    # SendGrid's signed events come back through the webhook and are recorded once each.
    wait_for(
        lambda: count(store, schema.inbound_events, schema.inbound_events.c.provider == "sendgrid") > 0,
        what="SendGrid events",
    )

    message = email.probe.messages()[0]
    link = {int(n): url for n, url in SCORE_LINE.findall(message.text)}[2]
    with httpx.Client(timeout=10) as http:
        assert 200 == http.get(link).status_code
        assert 0 == count(store, schema.responses)
        assert 200 == http.post(link, data={"score": "2", "comment": "Billing errors"}).status_code
    detractor = crm.contact_id(message.to)
    wait_for(lambda: crm.contact_value(detractor, "score") == "2", what="the email answer in the CRM")
    wait_for(lambda: [t for t in crm.tasks() if t.contact_id == detractor], what="the callback task")

    # SMS: one Messages.create per survey; replies come back through the signed inbound webhook.
    texts = wait_for(
        lambda: sms.probe.messages() if len(sms.probe.messages()) >= 3 else None, what="survey SMS at Twilio"
    )
    expected_sms = count(
        store, schema.sends, schema.sends.c.program == "text", schema.sends.c.kind == "survey"
    )
    wait_for(lambda: len(sms.probe.messages()) == expected_sms, what="every survey SMS")
    assert expected_sms == sms.probe.call_counts()["messages.create"]

    promoter, quitter = texts[0].to, texts[1].to
    sms.probe.reply(promoter, "9 great service")
    with store.read() as conn:
        row = (
            conn.execute(select(schema.responses).where(schema.responses.c.channel == "sms")).mappings().one()
        )
    assert (9, "promoter", "great service") == (row["score"], row["category"], row["comment"])
    promoter_id = row["contact_id"]
    wait_for(lambda: crm.contact_value(promoter_id, "score") == "9", what="the SMS answer in the CRM")

    # STOP: suppressed at once, exactly one confirmation even when the webhook is replayed.
    sms.probe.reply(quitter, "Stop texting me please")
    sms.probe.reply(quitter, "STOP")
    assert 1 == count(
        store,
        schema.suppressions,
        schema.suppressions.c.address == quitter,
        schema.suppressions.c.channel == "sms",
    )
    replies = sms.probe.replies(quitter)  # type: ignore[attr-defined]
    assert 1 == len(replies) and "unsubscribed" in replies[0]
    quitter_contact = crm.contact_id(_contact_email(store, quitter))
    wait_for(
        lambda: crm.contact_value(quitter_contact, "sms_opt_out") == "true",
        what="the CRM's SMS opt-out field",
    )


def _contact_email(store: Store, phone: str) -> str:
    with store.read() as conn:
        snap = conn.execute(
            select(schema.sends.c.snapshot).where(schema.sends.c.address == phone)
        ).scalar_one()
    return str(snap["email"])
