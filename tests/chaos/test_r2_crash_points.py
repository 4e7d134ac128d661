"""R2: a real daemon (SQLite) dies at each point of the send path, is restarted, and settles.

The crash is ``os._exit(137)`` at a named hook (nps_sync.faults, ``NPS_SYNC_CRASH_AT``), except
``send.after_request``: Twilio accepted the message and the fault proxy holds its answer, then the
daemon is SIGKILLed (our code never saw the answer; a hook after ``channel.send`` returned would be
``send.before_record`` again). Twilio's emulator, in a thread of the test, witnesses every send; the
sandbox CRM's tasks table (same database) witnesses every task.

The table, written before the run (one contact, one survey SMS; CRM points: one detractor answer):

| point                       | after the crash             | after restart and settling                   |
|-----------------------------|-----------------------------|----------------------------------------------|
| send.claimed_uncommitted    | queued, 0 at Twilio         | sent, 1 at Twilio (never claimed before)     |
| send.claimed                | sending, 0 at Twilio        | unknown → reconciled: requeued, sent, 1      |
| send.after_request          | sending, 1 at Twilio        | unknown → reconciled: sent, 1 (no resend)    |
| send.before_record          | sending, 1 at Twilio        | unknown → reconciled: sent, 1 (no resend)    |
| send.recorded               | sent, 1 at Twilio           | sent, 1                                      |
| writeback.after_crm         | fields written, job running | fields written once more, job done           |
| playbook.after_create_tasks | 1 CRM task, 0 recorded      | 1 CRM task with that key, recorded, job done |

A crashed job's row stays ``running``; the restarted daemon puts it back in the queue at start-up
(``JobQueue.release_abandoned``), so it runs again at once instead of after its 10-minute lease.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from sqlalchemy import select

from nps_sync import config as config_mod
from nps_sync.runtime import Runtime
from nps_sync.store import schema
from nps_sync.store.db import Store
from tests.chaos.cluster import Cluster, Replica, count, sends_by_state, write_seed
from tests.chaos.conftest import Provider
from tests.chaos.faultproxy import FaultProxy
from tests.e2e.daemon import REPO, wait_for

pytestmark = pytest.mark.chaos

CRASHED = 137
REPEATS = 20

#: point → (send state after the crash, at Twilio after the crash, at Twilio at the end)
SEND_TABLE: dict[str, tuple[str, int, int]] = {
    "send.claimed_uncommitted": ("queued", 0, 1),
    "send.claimed": ("sending", 0, 1),
    "send.after_request": ("sending", 1, 1),
    "send.before_record": ("sending", 1, 1),
    "send.recorded": ("sent", 1, 1),
}
#: point → what the test reads after the crash and at the end (see _crm_state)
CRM_TABLE: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "writeback.after_crm": (
        {"nps_score": "3", "writeback_job": "running", "writeback_done_lines": 0},
        {"nps_score": "3", "writeback_job": "done", "writeback_done_lines": 1},
    ),
    "playbook.after_create_tasks": (
        {"crm_tasks": 1, "recorded_tasks": 0, "steps": 0, "playbook_job": "running"},
        {"crm_tasks": 1, "recorded_tasks": 1, "steps": 1, "playbook_job": "done"},
    ),
}


@dataclass
class World:
    replica: Replica
    store: Store
    proxy: FaultProxy
    twilio: Provider

    def runtime(self) -> Runtime:
        return Runtime(config_mod.load(self.replica.folder / "config.toml"), environ=self.replica.env)


def make_world(root: Path, twilio: Provider, contacts: int) -> tuple[World, Cluster]:
    proxy = FaultProxy(int(twilio.emulator.url.rsplit(":", 1)[1])).start()
    seed = write_seed(root / "seed", contacts)
    url = f"sqlite:///{root / 'replica0' / 'state' / 'nps-sync.db'}"
    cluster = Cluster(
        root,
        url,
        sections=[twilio.config_toml.replace(twilio.emulator.url, proxy.url)],
        overrides={
            "daemon": {"run_on_start": False, "workers": 1},
            "crm": {"kind": "sandbox", "sandbox": {"seed": str(seed)}},
            "channels": {"sms": {"twilio": {"max_batch": 1, "concurrency": 1, "timeout_seconds": 60}}},
            "program": [
                {"name": "text", "channel": "sms", "schedule": "0 3 1 1 *", "reminders": {"count": 0}}
            ],
        },
        env=twilio.env,
    )
    (replica,) = cluster.add(1)
    return World(replica, Store(url), proxy, twilio), cluster


@pytest.fixture
def world(tmp_path: Path, fast_twilio: Provider) -> Iterator[World]:
    w, _ = make_world(tmp_path, fast_twilio, 1)
    yield w
    w.replica.kill()
    w.store.dispose()
    w.proxy.stop()


def at_twilio(provider: Provider) -> Counter[str]:
    found: Counter[str] = Counter()
    for m in provider.emulator.messages("outbound-api"):
        key = re.search(r"[?&]k=([^&]+)", m.status_callback or "")
        found[unquote(key.group(1)) if key else m.sid] += 1
    return found


def only_send(store: Store) -> tuple[int, str, str]:
    s = schema.sends
    with store.read() as conn:
        row = conn.execute(select(s.c.id, s.c.send_key, s.c.state).where(s.c.kind == "survey")).one()
    return int(row.id), str(row.send_key), str(row.state)


def job_state(store: Store, kind: str) -> str:
    """The state of the first job of ``kind`` (the playbook's second step, a wait, is queued later)."""
    j = schema.jobs
    with store.read() as conn:
        return str(
            conn.execute(select(j.c.state).where(j.c.kind == kind).order_by(j.c.id).limit(1)).scalar_one()
        )


def crash_run(replica: Replica, point: str) -> int:
    replica.env["NPS_SYNC_CRASH_AT"] = point
    try:
        replica.start()
        assert replica.proc is not None
        code = replica.proc.wait(timeout=60)
    finally:
        del replica.env["NPS_SYNC_CRASH_AT"]
        replica.kill()  # a daemon that never reached the point is not left running
    return code


def restart(replica: Replica) -> None:
    """Start again and wait for ``daemon.ready`` (signal handlers installed: SIGTERM stops cleanly)."""
    ready = replica.log().count('"daemon.ready"')
    replica.start()
    wait_for(lambda: replica.log().count('"daemon.ready"') > ready, timeout=60, what="daemon.ready")


def crm_state(w: World, point: str) -> dict[str, Any]:
    if point == "writeback.after_crm":
        c = schema.sandbox_contacts
        with w.store.read() as conn:
            fields = conn.execute(select(c.c.fields).where(c.c.id == "K00000")).scalar_one()
        return {
            "nps_score": fields.get("nps_score"),
            "writeback_job": job_state(w.store, "writeback"),
            "writeback_done_lines": w.replica.log().count('"writeback.done"'),
        }
    return {
        "crm_tasks": count(w.store, schema.sandbox_tasks, schema.sandbox_tasks.c.contact_id == "K00000"),
        "recorded_tasks": count(w.store, schema.crm_tasks),
        "steps": count(w.store, schema.playbook_steps),
        "playbook_job": job_state(w.store, "playbook_step"),
    }


@pytest.mark.parametrize("point", list(SEND_TABLE))
def test_a_crash_at_each_send_point_ends_as_the_table_says(world: World, point: str) -> None:
    rt = world.runtime()
    rt.run_wave("text")
    rt.close()
    replica, store = world.replica, world.store
    if point == "send.after_request":
        world.proxy.set("hold_answer", methods=("POST",))
        replica.start()
        wait_for(lambda: sum(at_twilio(world.twilio).values()) == 1, timeout=60, what="Twilio to accept")
        assert replica.proc is not None
        replica.proc.send_signal(signal.SIGKILL)
        code = -replica.proc.wait()
        replica.proc = None
        world.proxy.set("pass")
    else:
        code = crash_run(replica, point)
    _, key, state = only_send(store)
    crashed = (state, at_twilio(world.twilio)[key])

    restart(replica)
    wait_for(lambda: sends_by_state(store) == {"sent": 1}, timeout=60, what="the send to settle as sent")
    assert 0 == replica.stop()
    final = at_twilio(world.twilio)
    reconciled = replica.log().count('"send.reconciled"')
    print(f"\nR2 {point}: exit={code} after crash={crashed} at twilio={dict(final)} reconciled={reconciled}")
    expected_state, expected_at_crash, expected_final = SEND_TABLE[point]
    assert (CRASHED if point != "send.after_request" else signal.SIGKILL) == code
    assert (expected_state, expected_at_crash) == crashed
    assert {key: expected_final} == dict(final)


@pytest.mark.parametrize("point", list(CRM_TABLE))
def test_a_crash_in_crm_work_ends_as_the_table_says(world: World, point: str) -> None:
    rt = world.runtime()
    rt.run_wave("text")
    rt.drain()
    send_id, _, _ = only_send(world.store)
    rt.responses.record(send_id, 3, "Support took a week.", channel="sms")
    rt.close()

    code = crash_run(world.replica, point)
    crashed = crm_state(world, point)
    restart(world.replica)
    wait_for(
        lambda: (
            job_state(world.store, "writeback") == "done"
            and job_state(world.store, "playbook_step") == "done"
        ),
        timeout=60,
        what="the write-back and the playbook step to be done",
    )
    assert 0 == world.replica.stop()
    final = crm_state(world, point)
    print(f"\nR2 {point}: exit={code} after crash={crashed} end={final}")
    assert CRASHED == code
    assert CRM_TABLE[point] == (crashed, final)
    assert {"sent": 1} == sends_by_state(world.store)
    assert 1 == sum(at_twilio(world.twilio).values())


DRIVER = """
import sys
from pathlib import Path
from nps_sync import config
from nps_sync.runtime import Runtime
rt = Runtime(config.load(Path(sys.argv[1])))
rt.queue.run_once("playbook_step", linger=False)
rt.close()
"""


def test_twenty_crashes_after_create_tasks_leave_exactly_one_task_each(
    tmp_path: Path, fast_twilio: Provider
) -> None:
    w, _ = make_world(tmp_path, fast_twilio, REPEATS)
    try:
        rt = w.runtime()
        rt.run_wave("text")
        rt.drain()
        s = schema.sends
        with w.store.read() as conn:
            sends = conn.execute(select(s.c.id, s.c.contact_id).order_by(s.c.id)).all()
        env = {**w.replica.env, "PYTHONPATH": str(REPO), "NPS_SYNC_CRASH_AT": "playbook.after_create_tasks"}
        tasks = schema.sandbox_tasks
        per_repeat: list[tuple[int, int, int, int]] = []
        for send_id, contact in sends:
            rt.responses.record(send_id, 2, None, channel="sms")
            code = subprocess.run(
                [sys.executable, "-c", DRIVER, str(w.replica.folder / "config.toml")],
                env=env,
                cwd=w.replica.folder,
                capture_output=True,
                check=False,
                timeout=60,
            ).returncode
            after_crash = count(w.store, tasks, tasks.c.contact_id == contact)
            assert 1 == rt.queue.release_abandoned()  # what the next daemon does at start-up
            assert 1 == rt.queue.run_once("playbook_step", linger=False)
            with w.store.read() as conn:
                keys = conn.execute(select(tasks.c.key).where(tasks.c.contact_id == contact)).scalars().all()
                recorded = (
                    conn.execute(
                        select(schema.crm_tasks.c.key).where(schema.crm_tasks.c.contact_id == contact)
                    )
                    .scalars()
                    .all()
                )
            per_repeat.append((code, after_crash, len(keys), int(keys == recorded)))
            assert (CRASHED, 1, 1, 1) == per_repeat[-1]
        rt.close()
        total = count(w.store, tasks)
        print(
            f"\nR2 x{REPEATS} playbook.after_create_tasks: (exit, tasks after crash, tasks, recorded)="
            f"{dict(Counter(per_repeat))} total tasks={total}"
        )
        assert REPEATS == total
        assert REPEATS == count(w.store, schema.crm_tasks)
    finally:
        w.store.dispose()
        w.proxy.stop()
