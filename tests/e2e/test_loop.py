"""The whole loop over HTTP against a running daemon: wave → message → GET of a score link records
nothing → the person's POST records it → contact fields and account roll-up in the CRM → a detractor
callback task owned by the account owner, due one business day later; a passive gets the offer email,
a promoter the testimonial request. Runs over every CRM backend that has ``crm_e2e_<name>``."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import func, select

from nps_sync.business_time import BusinessCalendar
from nps_sync.store import schema
from nps_sync.store.db import Store
from tests.conftest import CRM_BACKENDS
from tests.e2e.daemon import DaemonProcess, free_port, wait_for, write_config
from tests.harness import SEED_DIR, E2EChannel, E2ECrm, ReceivedMessage

SCORE_LINE = re.compile(r"^(\d+)(?: \([^)]*\))?: (http\S+)$", re.M)


def always_open_window() -> str:
    """A 23-hour window: the one closed hour is twelve hours away from now in UTC, so most contacts
    (spread over many zones) are inside it whenever the test runs."""
    gap = (datetime.now(timezone.utc).hour + 12) % 24
    return f"{(gap + 1) % 24:02d}:00-{gap:02d}:00"


def program(audience: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": "loop",
        "channel": "email",
        "schedule": "0 3 1 1 *",
        "send_window": always_open_window(),
        "default_time_zone": "UTC",
        "reminders": {"count": 0},
        "audience": dict(audience),
    }


def seed_owner_email(account_id: str) -> str:
    with (SEED_DIR / "accounts.csv").open() as f:
        owner = next(r["owner_id"] for r in csv.DictReader(f) if r["id"] == account_id)
    with (SEED_DIR / "owners.csv").open() as f:
        return next(r["email"] for r in csv.DictReader(f) if r["id"] == owner)


def seed_account_of(email: str) -> tuple[str, str]:
    with (SEED_DIR / "contacts.csv").open() as f:
        row = next(r for r in csv.DictReader(f) if r["email"] == email)
    with (SEED_DIR / "accounts.csv").open() as f:
        name = next(r["name"] for r in csv.DictReader(f) if r["id"] == row["account_id"])
    return row["account_id"], name


def score_links(message: ReceivedMessage) -> dict[int, str]:
    return {int(n): url for n, url in SCORE_LINE.findall(message.text)}


@pytest.fixture(params=CRM_BACKENDS)
def loop(
    request: pytest.FixtureRequest, tmp_path: Path, channel_e2e_outbox: E2EChannel
) -> Iterator[tuple[DaemonProcess, E2ECrm, E2EChannel, Store]]:
    crm: E2ECrm = request.getfixturevalue(f"crm_e2e_{request.param}")
    channel = channel_e2e_outbox
    port = free_port()
    audience = crm.audience_all
    config = write_config(
        tmp_path / "config.toml",
        port=port,
        sections=[crm.config_toml, channel.config_toml],
        overrides={
            "channels": {"email": {"postal_address": "Example Inc., 1 Main St"}},
            "program": [program(audience)],
        },
    )
    daemon = DaemonProcess(config, f"http://127.0.0.1:{port}", env=dict(crm.env) | dict(channel.env))
    daemon.start()
    store = Store(f"sqlite:///{tmp_path / 'state' / 'nps-sync.db'}")
    if crm.probe is None:  # the sandbox lives in the daemon's own database
        from tests.connectors.sandbox.fixtures import SandboxProbe

        crm.probe = SandboxProbe(store)
    attach = getattr(channel.probe, "attach", None)
    if attach is not None:  # probes that read the daemon's own database
        attach(store)
    channel.probe.connect(daemon.url)
    yield daemon, crm, channel, store
    assert 0 == daemon.stop(), daemon.log()
    store.dispose()


def test_the_whole_loop_over_http(loop: tuple[DaemonProcess, E2ECrm, E2EChannel, Store]) -> None:
    _, crm, channel, store = loop
    probe = crm.probe

    surveys = wait_for(
        lambda: (
            [m for m in channel.probe.messages() if len(score_links(m)) == 11]
            if len(channel.probe.messages()) >= 3
            else None
        ),
        what="three survey emails",
    )
    detractor, passive, promoter = surveys[0], surveys[1], surveys[2]
    for message in surveys:
        assert "List-Unsubscribe=One-Click" == message.headers["List-Unsubscribe-Post"]
        assert re.match(
            r"<http://127\.0\.0\.1:\d+/u/[^>]+>, <mailto:[^>]+>", message.headers["List-Unsubscribe"]
        )

    def responses() -> int:
        with store.read() as conn:
            return int(conn.execute(select(func.count()).select_from(schema.responses)).scalar_one())

    # A link scanner opens every link: nothing may be recorded by a GET.
    with httpx.Client(timeout=10) as http:
        for url in score_links(detractor).values():
            assert 200 == http.get(url).status_code
        assert 0 == responses()

        page = http.get(score_links(detractor)[3])
        assert 'value="3" checked' in page.text
        assert "What could we have done better?" in page.text

        answered_at = datetime.now(timezone.utc)
        posted = http.post(
            score_links(detractor)[3], data={"score": "3", "comment": "Support took a week to answer."}
        )
        assert 200 == posted.status_code and "We recorded your score of 3." in posted.text
        assert 200 == http.post(score_links(passive)[7], data={"score": "7", "comment": ""}).status_code
        assert (
            200
            == http.post(score_links(promoter)[10], data={"score": "10", "comment": "Great team"}).status_code
        )
        # A later answer to the same survey replaces the earlier one.
        assert (
            200
            == http.post(score_links(promoter)[9], data={"score": "9", "comment": "Great team!"}).status_code
        )
        # The daemon answers once an answer is committed; a worker records it moments later.
        wait_for(lambda: responses() == 3, what="three recorded responses")

        # A tampered link gets a friendly 4xx page and records nothing.
        path, _, query = score_links(detractor)[3].partition("?")
        bad = http.post(f"{path[:-3]}xyz?{query}", data={"score": "0"})
        assert 400 == bad.status_code and "not valid" in bad.text
        assert 3 == responses()

    # Contact fields written back.
    det_id = probe.contact_id(detractor.to)
    wait_for(lambda: probe.contact_value(det_id, "score") == "3", what="the detractor's score in the CRM")
    assert "detractor" == probe.contact_value(det_id, "category")
    assert "Support took a week to answer." == probe.contact_value(det_id, "comment")
    pro_id = probe.contact_id(promoter.to)
    wait_for(lambda: probe.contact_value(pro_id, "score") == "9", what="the promoter's replaced score")
    assert "promoter" == probe.contact_value(pro_id, "category")

    # Account roll-up: NPS over each contact's latest response, per account.
    by_account: dict[str, list[int]] = {}
    for message, score in ((detractor, 3), (passive, 7), (promoter, 9)):
        by_account.setdefault(seed_account_of(message.to)[1], []).append(score)
    for account_name, scores in by_account.items():
        expected = 100.0 * (sum(s >= 9 for s in scores) - sum(s <= 6 for s in scores)) / len(scores)
        account_id = probe.account_id(account_name)
        expected_count = str(len(scores))

        def rolled_up(account: str = account_id, count: str = expected_count) -> bool:
            return probe.account_value(account, "responses") == count

        wait_for(rolled_up, what=f"roll-up of {account_name}")
        assert expected == pytest.approx(float(probe.account_value(account_id, "nps") or "nan"), abs=0.05)

    # The detractor's callback: owned by the account owner, due one business day after the answer.
    account_code, account_name = seed_account_of(detractor.to)
    owner = probe.owner_id(seed_owner_email(account_code))
    tasks = wait_for(lambda: [t for t in probe.tasks() if t.contact_id == det_id], what="the callback task")
    assert 1 == len(tasks)
    task = tasks[0]
    calendar = BusinessCalendar(tz=ZoneInfo("Europe/Berlin"))
    assert (owner, probe.account_id(account_name), "high", False) == (
        task.owner_id,
        task.account_id,
        task.priority,
        task.completed,
    )
    assert calendar.due_date(answered_at, 1) == task.due
    assert "Support took a week to answer." in task.body

    # The passive gets the offer email, the promoter the testimonial request (the shipped playbook
    # waits an hour, in case the person changes their answer: fast-forward the queued wait).
    def fast_forward() -> int:
        with store.begin() as conn:
            runs = schema.playbook_runs
            conn.execute(
                runs.update()
                .where(runs.c.state == "running")
                .values(created_at=datetime.now(timezone.utc) - timedelta(hours=2))
            )
            return int(
                conn.execute(
                    schema.jobs.update()
                    .where(
                        schema.jobs.c.kind == "playbook_step",
                        schema.jobs.c.state == "queued",
                        schema.jobs.c.run_at > datetime.now(timezone.utc),
                    )
                    .values(run_at=datetime.now(timezone.utc))
                ).rowcount
            )

    wait_for(fast_forward, what="the promoter playbook's queued wait")
    wait_for(
        lambda: [
            m for m in channel.probe.messages(passive.to) if m.subject.startswith("Thanks for your feedback")
        ],
        what="the passive's offer email",
    )
    wait_for(
        lambda: [
            m
            for m in channel.probe.messages(promoter.to)
            if m.subject.startswith("Would you share a few words")
        ],
        what="the promoter's testimonial request",
    )
    assert [] == [t for t in probe.tasks() if t.contact_id == pro_id and "Call" in t.subject]


def test_one_click_unsubscribe_suppresses_at_once(
    loop: tuple[DaemonProcess, E2ECrm, E2EChannel, Store],
) -> None:
    _, crm, channel, store = loop
    message = wait_for(lambda: next(iter(channel.probe.messages()), None), what="a survey email")
    url = message.headers["List-Unsubscribe"].split(">")[0].lstrip("<")
    with httpx.Client(timeout=10) as http:
        assert 200 == http.get(url).status_code  # the confirmation page changes nothing
        with store.read() as conn:
            assert 0 == conn.execute(select(func.count()).select_from(schema.suppressions)).scalar_one()
        answer = http.post(
            url,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert 200 == answer.status_code
    with store.read() as conn:
        rows = conn.execute(select(schema.suppressions)).mappings().all()
    assert [("email", message.to.lower(), "unsubscribed", "one_click")] == [
        (r["channel"], r["address"], r["reason"], r["source"]) for r in rows
    ]
    contact = crm.probe.contact_id(message.to)
    wait_for(
        lambda: crm.probe.contact_value(contact, "email_opt_out") == "true", what="the CRM opt-out field"
    )
