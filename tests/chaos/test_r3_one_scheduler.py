"""R3: three replicas on one PostgreSQL; the leader is killed (-9) and paused (SIGSTOP).

Every slot of the leader's one-second schedule (and every program fire time) must be claimed exactly
once, with no gap: a new leader resumes from the last claimed slot, and a paused leader that wakes up
finds its slots taken (``leader.tick_lost``) instead of running them again.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from nps_sync.leader import LEADER_SETTING, MAINTENANCE
from nps_sync.store import schema
from nps_sync.store.db import Store
from tests.chaos.cluster import FULL, Cluster, Replica
from tests.e2e.daemon import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

ROUNDS = 4 if FULL else 1


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str) -> Iterator[tuple[Cluster, Store]]:
    cluster = Cluster(
        tmp_path,
        pg_url,
        sections=[],
        overrides={
            "daemon": {"run_on_start": False, "workers": 1},
            "program": [
                {
                    "name": "every-minute",
                    "schedule": "* * * * *",
                    "audience": {"where": {"account_id": ["NOBODY"]}},
                }
            ],
        },
        env={},
    )
    first, *others = cluster.add(3)
    first.start()  # the first one seeds the sandbox alone
    first.wait_healthy()
    for r in others:
        r.start()
    for r in others:
        r.wait_healthy()
    store = Store(pg_url)
    yield cluster, store
    cluster.stop_all()
    store.dispose()


def leader_of(cluster: Cluster, store: Store) -> Replica:
    def find() -> Replica | None:
        holder = (store.get_setting(LEADER_SETTING) or "").split(" ")[0]
        pid = int(holder.rsplit(":", 1)[1]) if ":" in holder else -1
        return next((r for r in cluster.replicas if r.proc is not None and r.proc.pid == pid), None)

    return wait_for(find, timeout=20, interval=0.1, what="a leader")


def test_every_slot_runs_exactly_once_through_kill_and_pause_of_the_leader(
    cluster: tuple[Cluster, Store],
) -> None:
    c, store = cluster
    leader_of(c, store)
    time.sleep(2.5)
    killed = paused = 0
    for _ in range(ROUNDS):
        leader = leader_of(c, store)
        leader.kill()
        killed += 1
        leader.start()  # comes back as a follower
        time.sleep(4)
        leader = leader_of(c, store)
        leader.signal(signal.SIGSTOP)
        paused += 1
        time.sleep(7)
        leader.signal(signal.SIGCONT)
        time.sleep(3)
    c.stop_all()

    ticks = schema.ticks
    with store.read() as conn:
        rows = conn.execute(
            select(ticks.c.fire_at, ticks.c.claimed_at, ticks.c.claimed_by)
            .where(ticks.c.schedule == MAINTENANCE)
            .order_by(ticks.c.fire_at)
        ).all()
        waves = conn.execute(select(schema.jobs.c.attempts).where(schema.jobs.c.kind == "wave")).all()
    slots = [r.fire_at for r in rows]
    expected = [slots[0] + timedelta(seconds=i) for i in range(len(slots))]
    late = [(r.claimed_at - r.fire_at).total_seconds() for r in rows]
    lost = sum(r.log().count("leader.tick_lost") for r in c.replicas)
    fenced = sum(r.log().count("leader.fenced") for r in c.replicas)
    leaders = len({r.claimed_by for r in rows})
    print(
        f"\nR3: slots={len(slots)} distinct={len(set(slots))} gaps={len(set(expected) - set(slots))} "
        f"kills={killed} pauses={paused} leaders={leaders} fenced={fenced} "
        f"double_fires_blocked={lost} max_failover_s={max(late):.2f} "
        f"wave_runs={[w.attempts for w in waves]}"
    )
    assert expected == slots  # one row per second, no gap
    # Failover within 2 intervals (2 s): measured 1.3–1.9 s here, heavy load included; the extra
    # 0.5 s absorbs process-scheduling noise on a loaded CI machine.
    assert max(late) <= 2.5
    assert len(slots) >= 12
    assert leaders >= 2  # the kill and the pause each handed the lead over
    assert all(1 == w.attempts for w in waves)
