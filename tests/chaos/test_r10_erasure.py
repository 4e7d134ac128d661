"""R10: ``forget`` erases a person from every table and the outbox; a CRM re-import does not bring
them back (the wave planner matches the hashed tombstone)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner
from sqlalchemy import inspect, select

from nps_sync import config as config_mod
from nps_sync.cli import main
from nps_sync.forget import TOMBSTONE_PREFIX, forget
from nps_sync.runtime import Runtime
from nps_sync.store import schema
from nps_sync.store.db import Store
from tests.chaos.cluster import SIGNING_KEY, write_seed
from tests.connectors.sandbox.fixtures import SandboxProbe
from tests.e2e.daemon import write_config

pytestmark = pytest.mark.chaos

PERSON = "K00003"
EMAIL = "pat3@example.com"
PHONE = "+12122000003"


@pytest.fixture(params=["sqlite", "postgres"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Runtime, Path]]:
    url = (
        f"sqlite:///{tmp_path / 'state.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    seed = write_seed(tmp_path / "seed", 8)
    path = write_config(
        tmp_path / "config.toml",
        port=8080,
        sections=[],
        overrides={
            "daemon": {"database_url": url, "run_on_start": False},
            "crm": {"kind": "sandbox", "sandbox": {"seed": str(seed)}},
            "program": [
                {"name": "mail", "channel": "email", "schedule": "0 3 1 1 *", "reminders": {"count": 0}},
                {"name": "text", "channel": "sms", "schedule": "0 3 1 1 *", "reminders": {"count": 0}},
            ],
        },
    )
    rt = Runtime(config_mod.load(path), environ={"NPS_SYNC_SIGNING_KEYS": SIGNING_KEY})
    yield rt, seed
    rt.close()


def traces(store: Store, *needles: str) -> dict[str, int]:
    """Rows of any table whose text mentions one of ``needles``."""
    found: dict[str, int] = {}
    with store.read() as conn:
        for name in inspect(conn).get_table_names():
            table = schema.metadata.tables.get(name)
            if table is None:
                continue
            for row in conn.execute(select(table)).mappings():
                text = json.dumps({k: str(v) for k, v in row.items()})
                if any(n in text for n in needles):
                    found[name] = found.get(name, 0) + 1
    return found


def survey_id(store: Store, contact: str, channel: str) -> int:
    s = schema.sends
    with store.read() as conn:
        return int(
            conn.execute(
                select(s.c.id).where(s.c.contact_id == contact, s.c.channel == channel, s.c.kind == "survey")
            ).scalar_one()
        )


def test_forget_leaves_no_trace_and_a_reimport_does_not_resurrect(runtime: tuple[Runtime, Path]) -> None:
    rt, seed = runtime
    rt.run_wave("mail")
    rt.run_wave("text")
    rt.drain()
    # An answer (write-back, playbook run and CRM task follow) and an SMS reply from the same person.
    rt.responses.record(survey_id(rt.store, PERSON, "email"), 2, "call me", channel="email")
    rt.responses.sms_received(
        provider="twilio", event_id="SM1", from_number=PHONE, to_number="+14155550100", body="8 ok"
    )
    rt.drain()
    before = traces(rt.store, EMAIL, PHONE, PERSON)
    assert {"sends", "responses", "outbox", "sandbox_contacts", "wave_decisions"} <= set(before)

    with structlog.testing.capture_logs() as logs:
        erased = forget(rt.store, email=EMAIL, phone=PHONE)
    after = traces(rt.store, EMAIL, PHONE, PERSON)
    print(f"\nR10: rows before={before} deleted={erased.deleted} after={after}")
    assert {} == after
    assert {PERSON} == erased.contact_ids
    assert 2 == erased.tombstones
    assert not [e for e in logs if any(n in json.dumps(e, default=str) for n in (EMAIL, PHONE, PERSON))]
    with rt.store.read() as conn:
        kept = conn.execute(select(schema.suppressions).where(schema.suppressions.c.reason == "erased")).all()
    assert {("email", "forget"), ("sms", "forget")} == {(r.channel, r.source) for r in kept}
    assert all(r.address.startswith(TOMBSTONE_PREFIX) for r in kept)

    # The CRM re-imports the person; the next waves skip them as suppressed, and send nothing.
    rt.crm.db.seed(seed, wipe=True)  # type: ignore[attr-defined]  # the sandbox CRM's own store
    for program in ("mail", "text"):
        decisions = {d.contact.id: d.reason for d in rt.run_wave(program, dry_run=True).decisions}
        assert "suppressed" == decisions[PERSON]
        rt.run_wave(program, wave_id=f"{program}@again")
    rt.drain()
    s = schema.sends
    with rt.store.read() as conn:
        again = conn.execute(select(s.c.id).where(s.c.contact_id == PERSON)).all()
    assert [] == again


def test_forget_queues_the_roll_up_of_the_account_the_person_answered_for(
    runtime: tuple[Runtime, Path],
) -> None:
    rt, _ = runtime
    rt.run_wave("mail")
    rt.drain()
    for contact in (PERSON, "K00002", "K00004"):
        rt.responses.record(survey_id(rt.store, contact, "email"), 2, None, channel="email")
    rt.drain()
    s, jobs = schema.sends, schema.jobs
    with rt.store.read() as conn:
        account = conn.execute(
            select(s.c.account_id).where(s.c.contact_id == PERSON, s.c.kind == "survey")
        ).scalar_one()
    probe = SandboxProbe(rt.store)
    assert ("-100.0", "1") == (probe.account_value(account, "nps"), probe.account_value(account, "responses"))

    forget(rt.store, email=EMAIL, phone=PHONE)
    with rt.store.read() as conn:
        queued = conn.execute(
            select(jobs.c.kind, jobs.c.payload).where(
                jobs.c.state == "queued", jobs.c.kind == "account_rollup"
            )
        ).all()
    assert [("account_rollup", {"account_id": account})] == [(k, dict(p)) for k, p in queued]
    rt.drain()
    # No answer left in the account: its NPS is cleared and it counts no response.
    assert (None, "0") == (probe.account_value(account, "nps"), probe.account_value(account, "responses"))


def test_forget_is_idempotent_and_names_what_it_needs(runtime: tuple[Runtime, Path]) -> None:
    rt, _ = runtime
    first = forget(rt.store, email=EMAIL)
    second = forget(rt.store, email=EMAIL)
    assert (1, 0) == (first.tombstones, second.tombstones)
    with pytest.raises(Exception, match="expected an email address, got: 'not-an-email'"):
        forget(rt.store, email="not-an-email")


def test_cli_forget_prints_counts_only(runtime: tuple[Runtime, Path], tmp_path: Path) -> None:
    rt, _ = runtime
    rt.run_wave("mail")
    result = CliRunner().invoke(main, ["forget", "--config", str(tmp_path / "config.toml"), "--email", EMAIL])
    assert 0 == result.exit_code, result.output
    assert EMAIL not in result.output
    assert "tombstones kept: 1" in result.output
