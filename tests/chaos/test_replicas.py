"""Replica bookkeeping on PostgreSQL: start-up recovery touches only dead replicas' sends, and the
leader's one-second schedule resumes where the last leader stopped."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from nps_sync import config as config_mod
from nps_sync.leader import MAINTENANCE, Leadership, Maintenance, Replicas, recover_sends
from nps_sync.runtime import Runtime
from nps_sync.store import schema
from nps_sync.store.db import utcnow
from tests.chaos.cluster import SIGNING_KEY, write_seed
from tests.e2e.daemon import write_config

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]


@pytest.fixture
def rt(tmp_path: Path, pg_url: str) -> Iterator[Runtime]:
    seed = write_seed(tmp_path / "seed", 4)
    path = write_config(
        tmp_path / "config.toml",
        port=8080,
        sections=[],
        overrides={
            "daemon": {"database_url": pg_url, "run_on_start": False},
            "crm": {"kind": "sandbox", "sandbox": {"seed": str(seed)}},
            "program": [{"name": "mail", "schedule": "0 3 1 1 *", "reminders": {"count": 0}}],
        },
    )
    runtime = Runtime(config_mod.load(path), environ={"NPS_SYNC_SIGNING_KEYS": SIGNING_KEY})
    yield runtime
    runtime.close()


def claim(rt: Runtime, contact: str, worker: str, age: timedelta) -> None:
    s = schema.sends
    with rt.store.begin() as conn:
        conn.execute(
            update(s)
            .where(s.c.contact_id == contact)
            .values(state="sending", claimed_by=worker, claimed_at=utcnow() - age)
        )


def states(rt: Runtime) -> dict[str, str]:
    s = schema.sends
    with rt.store.read() as conn:
        return {str(r[0]): str(r[1]) for r in conn.execute(select(s.c.contact_id, s.c.state))}


def test_start_up_recovers_only_the_sends_of_dead_replicas_and_its_own_predecessor(rt: Runtime) -> None:
    rt.run_wave("mail")
    live, dead, me = Replicas(rt.store, "host:1"), Replicas(rt.store, "host:2"), Replicas(rt.store, "host:3")
    live.register()
    dead.register(utcnow() - timedelta(minutes=5))
    me.register()
    claim(rt, "K00000", "host:1", timedelta(minutes=5))  # a live replica's long call: not ours to judge
    claim(rt, "K00001", "host:2", timedelta(minutes=5))  # died mid-call
    claim(rt, "K00002", "cli:9", timedelta(seconds=1))  # a one-shot command, maybe still mid-call
    claim(rt, "K00003", "host:3", timedelta(seconds=1))  # our own id: a predecessor with our pid
    marked = recover_sends(rt, me, startup=True)
    # The outbox never got K00001's and K00003's messages: reconciliation queues them again.
    assert 2 == marked
    assert {"K00000": "sending", "K00001": "queued", "K00002": "sending", "K00003": "queued"} == states(rt)


def test_a_dead_replica_that_held_only_jobs_gets_them_released(rt: Runtime) -> None:
    # A replica killed while recording answers holds running jobs but no sending rows.
    live, dead, leader = (
        Replicas(rt.store, "host:1"),
        Replicas(rt.store, "host:2"),
        Replicas(rt.store, "host:3"),
    )
    live.register()
    dead.register(utcnow() - timedelta(minutes=5))
    leader.register()
    jobs = schema.jobs
    with rt.store.begin() as conn:
        for worker in ("host:1", "host:2", "host:2"):
            conn.execute(
                jobs.insert().values(
                    kind="answer",
                    payload={},
                    state="running",
                    run_at=utcnow(),
                    attempts=1,
                    locked_by=worker,
                    locked_at=utcnow() - timedelta(minutes=1),
                    created_at=utcnow(),
                    updated_at=utcnow(),
                )
            )
    recover_sends(rt, leader)
    with rt.store.read() as conn:
        rows = conn.execute(select(jobs.c.state, jobs.c.locked_by).order_by(jobs.c.id)).all()
    assert [("running", "host:1"), ("queued", None), ("queued", None)] == [tuple(r) for r in rows]


def test_a_new_leader_resumes_the_one_second_schedule_after_the_last_claimed_slot(rt: Runtime) -> None:
    start = utcnow().replace(microsecond=0) - timedelta(seconds=10)
    first = Maintenance(rt.store, "host:1", now=start)
    assert 4 == first.due(start + timedelta(seconds=3))
    # The first leader stops; the next one starts 6 s later and claims the gap, once.
    second = Maintenance(rt.store, "host:2", now=start + timedelta(seconds=9))
    assert 6 == second.due(start + timedelta(seconds=9))
    assert 0 == first.due(start + timedelta(seconds=9))  # the old leader waking up wins nothing
    assert 6 == first.lost
    t = schema.ticks
    with rt.store.read() as conn:
        slots = list(conn.execute(select(t.c.fire_at).where(t.c.schedule == MAINTENANCE)).scalars())
    assert [start + timedelta(seconds=i) for i in range(10)] == sorted(slots)


def test_only_one_of_two_candidates_leads(rt: Runtime) -> None:
    a, b = (
        Leadership(rt.store, Replicas(rt.store, "host:1")),
        Leadership(rt.store, Replicas(rt.store, "host:2")),
    )
    try:
        assert (True, False) == (a.check(), b.check())
        a.release()
        assert True is b.check()
    finally:
        a.release()
        b.release()


def test_status_shows_replicas_the_leader_queue_depth_and_unknown_sends(rt: Runtime, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from nps_sync.cli import main
    from nps_sync.leader import LEADER_SETTING

    rt.run_wave("mail")
    Replicas(rt.store, "host:1").register()
    Replicas(rt.store, "host:2").register(utcnow() - timedelta(minutes=5))
    rt.store.set_setting(LEADER_SETTING, "host:1 4242")
    claim(rt, "K00000", "host:2", timedelta(minutes=5))
    rt.sender.mark_abandoned(worker_ids=["host:2"])
    result = CliRunner().invoke(main, ["status", "--config", str(tmp_path / "config.toml")])
    assert 0 == result.exit_code, result.output
    assert "host:1 (leader)" in result.output
    assert "leader: host:1" in result.output
    assert "queue depth: sends/email: 3" in result.output
    assert "unknown sends: 1 (run `nps-sync reconcile`)" in result.output
    assert ["dead", "alive"] == [w for w in result.output.split() if w in ("alive", "dead")]
