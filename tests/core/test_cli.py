"""The ``nps-sync`` commands, run through click's CliRunner against a config file in the test's folder:
the sandbox CRM and the outbox live in that folder's SQLite state database."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import time_machine
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from nps_sync import config as config_mod
from nps_sync.cli import main
from nps_sync.runtime import Runtime
from nps_sync.sending import is_paused
from nps_sync.store import schema
from nps_sync.store.db import Store
from tests.core import config_data, program, write_config

#: A Tuesday, 18:00 UTC: open (09:00-18:00) in the Americas, closed in Europe, Asia and Australia.
T0 = datetime(2026, 3, 10, 18, 0, tzinfo=timezone.utc)
ROW = re.compile(r"^\S (C\d{3}) +\S .*? \S (send|defer|skip) +\S (\w+) +\S", re.M)


class Cli:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Result:
        return self.runner.invoke(main, [*args, "--config", str(self.path)], catch_exceptions=False)

    def store(self) -> Store:
        return Store(config_mod.load(self.path).database_url)

    def counts(self, *tables: Any) -> list[int]:
        store = self.store()
        try:
            with store.read() as conn:
                return [int(conn.execute(select(func.count()).select_from(t)).scalar_one()) for t in tables]
        finally:
            store.dispose()

    def outbox(self) -> list[dict[str, Any]]:
        store = self.store()
        try:
            with store.read() as conn:
                return [
                    dict(r)
                    for r in conn.execute(select(schema.outbox).order_by(schema.outbox.c.id)).mappings()
                ]
        finally:
            store.dispose()


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    data = config_data(program("rel", send_window="09:00-18:00", default_time_zone="America/New_York"))
    with time_machine.travel(T0):
        yield Cli(write_config(tmp_path, data))


def test_wave_dry_run_prints_every_seeded_contact_with_its_reason_and_the_counts(cli: Cli) -> None:
    result = cli("wave", "rel", "--dry-run")

    rows = {cid: (decision, reason) for cid, decision, reason in ROW.findall(result.stdout)}
    counts = Counter(reason for _, reason in rows.values())
    assert 0 == result.exit_code
    assert [f"C{n:03d}" for n in range(1, 51)] == sorted(rows)
    assert ("skip", "invalid_address") == rows["C011"]
    assert ("defer", "outside_window") == rows["C003"]
    assert ("send", "eligible") == rows["C002"]
    assert {
        "crm_opt_out": 1,
        "eligible": 22,
        "invalid_address": 1,
        "no_address": 1,
        "outside_window": 25,
    } == counts
    counts_line = "crm_opt_out: 1, eligible: 22, invalid_address: 1, no_address: 1, outside_window: 25"
    assert counts_line == result.stdout.strip().splitlines()[-1]
    assert [0, 0, 0] == cli.counts(schema.waves, schema.wave_decisions, schema.sends)


def test_wave_of_an_unknown_program_exits_2_naming_the_configured_ones(cli: Cli) -> None:
    result = cli("wave", "nope", "--dry-run")

    assert 2 == result.exit_code
    assert f"error: {cli.path}: no [[program]] named 'nope'; configured: rel\n" == result.stderr


def test_preview_shows_headers_and_text_and_records_nothing(cli: Cli) -> None:
    result = cli("preview", "rel", "--contact", "C001")

    lines = result.stdout.splitlines()
    assert 0 == result.exit_code
    assert [
        "To: alice.smith@northwind.example",
        "Subject: How likely are you to recommend Example Inc.?",
    ] == lines[:2]
    assert lines[2].startswith("List-Unsubscribe: <https://nps.example.com/u/")
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" == lines[3]
    assert ["", "Hi Alice,"] == lines[4:6]
    assert 11 == len(
        re.findall(r"^\d+(?: \([^)]*\))?: https://nps\.example\.com/r/\S+$", result.stdout, re.M)
    )
    assert [0, 0] == cli.counts(schema.outbox, schema.sends)


def test_preview_to_a_test_address_puts_exactly_one_message_in_the_outbox(cli: Cli) -> None:
    result = cli("preview", "rel", "--contact", "C003", "--to", "qa@example.org")

    assert 0 == result.exit_code
    assert result.stdout.startswith("preview sent to qa@example.org: sent")
    [message] = cli.outbox()
    expected = ("qa@example.org", "preview", "Wie wahrscheinlich ist es, dass Sie Example Inc. empfehlen?")
    assert expected == (message["to_addr"], message["purpose"], message["subject"])
    assert [0] == cli.counts(schema.sends)
    listing = cli("outbox")
    assert "qa@example.org" in listing.stdout
    assert "Wie wahrscheinlich ist es, dass Sie Example Inc. empfehlen?" in listing.stdout


def test_preview_of_an_unknown_contact_exits_2(cli: Cli) -> None:
    result = cli("preview", "rel", "--contact", "C999")

    assert 2 == result.exit_code
    assert "error: no contact 'C999' in the CRM (sandbox)\n" == result.stderr


def test_pause_stops_every_send_across_a_new_store_until_resume(cli: Cli) -> None:
    assert "sending paused" in cli("pause").stdout
    store = cli.store()
    assert is_paused(store)
    rt = Runtime(config_mod.load(cli.path), store=store, environ={})
    try:
        rt.run_wave("rel")
        queued = cli.counts(schema.sends)[0]

        paused_attempts = rt.sender.run_once()
        paused_outbox = cli.counts(schema.outbox)[0]
        status = cli("status").stdout
        assert "sending resumed" in cli("resume").stdout
        resumed_attempts = rt.sender.run_once()
    finally:
        rt.close()

    assert (0, 0) == (paused_attempts, paused_outbox)
    assert "sending: PAUSED" == status.splitlines()[0]
    assert 22 == resumed_attempts
    assert [22] == cli.counts(schema.outbox)
    assert 47 == queued


def test_status_shows_sending_state_sends_by_state_jobs_and_waves(cli: Cli) -> None:
    fresh = cli("status").stdout
    cli("wave", "rel")
    after = cli("status").stdout.splitlines()

    assert ["sending: active", "sends: none", "jobs: none"] == fresh.splitlines()[:3]
    assert ["sending: active", "sends: queued: 25, sent: 22"] == after[:2]
    assert after[2].startswith("jobs: ")
    assert re.fullmatch(r"wave rel@\S+: done \{.*'eligible': 22.*\}", after[3])


def test_db_upgrade_reports_the_current_revision(cli: Cli) -> None:
    result = cli("db", "upgrade")

    store = cli.store()
    try:
        revision = store.current_revision()
    finally:
        store.dispose()
    assert revision is not None
    assert f"database at revision {revision}\n" == result.stdout


def test_playbooks_simulate_shows_the_callback_for_the_account_owner_and_writes_nothing(cli: Cli) -> None:
    tables = (
        schema.playbook_runs,
        schema.playbook_steps,
        schema.jobs,
        schema.crm_tasks,
        schema.sandbox_tasks,
    )

    result = cli("playbooks", "simulate", "--score", "3", "--contact", "C001")

    assert 0 == result.exit_code
    first_step = result.stdout.split("SimulatedStep(")[1]
    assert "playbook='detractor-callback'" in first_step
    assert "action='crm_task'" in first_step
    assert "subject='Call Alice Smith (Northwind Traders): NPS 3'" in first_step
    assert "owner=Owner(id='U02', name='Jonas Weber'" in first_step
    assert [0, 0, 0, 0, 0] == cli.counts(*tables)


def test_sandbox_commands_show_the_task_and_the_fields_nps_sync_wrote(cli: Cli) -> None:
    data = config_data(program("rel", audience={"where": {"id": "C001"}}))
    write_config(cli.path.parent, data)
    rt = Runtime(config_mod.load(cli.path), environ={})
    try:
        rt.run_wave("rel")
        rt.drain()
        with rt.store.read() as conn:
            send_id = conn.execute(select(schema.sends.c.id)).scalar_one()
        rt.responses.record(send_id, 3, "slow support", channel="email")
        rt.drain()
    finally:
        rt.close()

    tasks = cli("sandbox", "tasks").stdout
    contact = cli("sandbox", "contact", "C001").stdout

    assert "Call Alice Smith (Northwind Traders): NPS 3" in tasks
    assert re.search(r"C001 +\S Jonas Weber +\S 2026-03-12 +\S high +\S open", tasks)
    assert re.search(r"nps_score +\S 3 ", contact)
    assert re.search(r"nps_category +\S detractor ", contact)
    assert "Northwind Traders (NPS -100.0, 1 responses)" in contact


def test_sandbox_contact_of_an_unknown_id_exits_2(cli: Cli) -> None:
    result = cli("sandbox", "contact", "C999")

    assert (2, "error: no sandbox contact 'C999'\n") == (result.exit_code, result.stderr)


def test_check_accepts_a_good_file(cli: Cli) -> None:
    result = cli("check")

    assert 0 == result.exit_code
    assert f"{cli.path}: ok — 1 program(s), 3 playbook(s)\n" == result.stdout


def test_resume_undoes_pause_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    data = config_data(program("rel"), daemon={"database_url": pg_url})
    cli = Cli(write_config(tmp_path, data))

    cli("pause")
    cli("resume")

    store = cli.store()
    try:
        assert not is_paused(store)
    finally:
        store.dispose()


def test_preview_keeps_a_header_longer_than_the_terminal_on_one_line(tmp_path: Path) -> None:
    long_url = "https://surveys.customer-feedback.example.com/" + "x" * 150
    data = config_data(program("rel"), daemon={"public_url": long_url})
    cli = Cli(write_config(tmp_path, data))

    lines = cli("preview", "rel", "--contact", "C001").stdout.splitlines()

    assert lines[2].startswith(f"List-Unsubscribe: <{long_url}/u/")
    assert lines[2].endswith(">")
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" == lines[3]
