"""R12: PostgreSQL backends terminated mid-transaction while a wave is planned.

A killer thread runs ``pg_terminate_backend`` on every other session of the database at random
moments; the wave is retried with the same wave id until it finishes, as the job queue would.
Pass: no contact gets two surveys, every eligible contact gets one, and the wave ends ``done``.
A resumed wave keeps each contact's first decision and counts the whole wave.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from nps_sync import config as config_mod
from nps_sync.runtime import Runtime
from nps_sync.store import schema
from tests.chaos.cluster import FULL, SIGNING_KEY, write_seed
from tests.e2e.daemon import write_config

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

CONTACTS, KILLS = (3_000, 100) if FULL else (600, 10)
WAVE = "mail@r12"


@pytest.fixture
def rt(tmp_path: Path, pg_url: str) -> Iterator[Runtime]:
    seed = write_seed(tmp_path / "seed", CONTACTS)
    path = write_config(
        tmp_path / "config.toml",
        port=8080,
        sections=[],
        overrides={
            "daemon": {"database_url": pg_url, "run_on_start": False},
            "crm": {"kind": "sandbox", "sandbox": {"seed": str(seed)}},
            "program": [
                {
                    "name": "mail",
                    "schedule": "0 3 1 1 *",
                    "reminders": {"count": 0},
                    "audience": {"page_size": 50},
                }
            ],
        },
    )
    runtime = Runtime(config_mod.load(path), environ={"NPS_SYNC_SIGNING_KEYS": SIGNING_KEY})
    yield runtime
    runtime.close()


def test_terminated_backends_leave_no_duplicate_and_no_missing_survey(rt: Runtime, pg_url: str) -> None:
    killer = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    stop = threading.Event()
    kills = [0]

    def kill() -> None:
        rng = random.Random(12)
        with killer.connect() as conn:
            while not stop.is_set() and kills[0] < KILLS:
                time.sleep(rng.uniform(0.05, 0.15))
                cut = conn.execute(
                    text(
                        "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                        "where datname = current_database() and pid <> pg_backend_pid()"
                    )
                ).scalar_one()
                kills[0] += 1 if cut else 0

    thread = threading.Thread(target=kill)
    thread.start()
    attempts = 0
    errors: list[str] = []
    try:
        while attempts < 200:  # bounded: a wave that can never finish fails the test, not the timeout
            attempts += 1
            try:
                rt.run_wave("mail", wave_id=WAVE)
                break
            except Exception as exc:  # a terminated session: retry the wave, as the job queue does
                errors.append(type(exc).__name__)
    finally:
        stop.set()
        thread.join()
        killer.dispose()

    s, d = schema.sends, schema.wave_decisions
    with rt.store.read() as conn:
        per_contact = {
            str(r[0]): int(r[1])
            for r in conn.execute(
                select(s.c.contact_id, func.count()).where(s.c.wave_id == WAVE).group_by(s.c.contact_id)
            )
        }
        decided = {
            str(r[0]): int(r[1])
            for r in conn.execute(
                select(d.c.contact_id, func.count()).where(d.c.wave_id == WAVE).group_by(d.c.contact_id)
            )
        }
        state, counts = conn.execute(
            select(schema.waves.c.state, schema.waves.c.counts).where(schema.waves.c.id == WAVE)
        ).one()
    doubled = sum(1 for n in per_contact.values() if n > 1)
    redecided = sum(1 for n in decided.values() if n > 1)
    print(
        f"\nR12: contacts={CONTACTS} terminations={kills[0]} wave attempts={attempts} errors={len(errors)} "
        f"surveyed={len(per_contact)} doubled={doubled} decided={len(decided)} decided_twice={redecided} "
        f"wave={state} counts={dict(counts)}"
    )
    assert 0 == doubled
    assert CONTACTS == len(per_contact)
    assert "done" == state
    assert 0 == redecided  # a resumed wave keeps each contact's first decision
    assert CONTACTS == sum(counts.values())  # and its counts describe the whole wave
