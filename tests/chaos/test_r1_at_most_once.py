"""R1: a survey wave sent by replicas that are SIGKILLed at random, witnessed by the provider.

The Twilio emulator runs in this (pytest) process, apart from the daemons, and records every message
it accepted with our send key (in the status-callback URL): it is the honest witness of duplicates.
The wave is planned before the replicas start; what is under fire is the send path.

Pass (../shared/docs/reliability-and-compliance.md §7 R1): 0 duplicate sends at the provider; after
reconciliation 0 contacts unreached and 0 sends non-terminal; sends left unknown ≤ kills; on SQLite
``PRAGMA integrity_check`` says ok.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from nps_sync import config as config_mod
from nps_sync.runtime import Runtime
from nps_sync.store.db import Store, sqlite_path
from tests.chaos.cluster import FULL, SIGNING_KEY, Cluster, sends_by_state, write_seed
from tests.chaos.conftest import Provider
from tests.e2e.daemon import wait_for
from tests.emulators.twilio import TwilioEmulator

pytestmark = pytest.mark.chaos

NON_TERMINAL = ("queued", "sending", "unknown")


def build(
    tmp_path: Path, database_url: str, channel: Provider, contacts: int, replicas: int
) -> tuple[Cluster, Store]:
    seed = write_seed(tmp_path / "seed", contacts)
    cluster = Cluster(
        tmp_path,
        database_url,
        sections=[channel.config_toml],
        overrides={
            "daemon": {"run_on_start": False, "workers": 1},
            "crm": {"kind": "sandbox", "sandbox": {"seed": str(seed)}},
            # One message per claim and per call: a kill can strand at most the one in flight.
            "channels": {"sms": {"twilio": {"max_batch": 1, "concurrency": 1}}},
            "program": [
                {
                    "name": "r1",
                    "channel": "sms",
                    "schedule": "0 3 1 1 *",
                    "reminders": {"count": 0},
                    "send_window": "09:00-18:00",
                }
            ],
        },
        env=channel.env,
    )
    cluster.add(replicas)
    # Seed the sandbox and plan the wave once, before any replica runs.
    cfg = config_mod.load(cluster.replicas[0].folder / "config.toml")
    rt = Runtime(cfg, environ={**channel.env, "NPS_SYNC_SIGNING_KEYS": SIGNING_KEY})
    summary = rt.run_wave("r1")
    store = Store(rt.config.database_url)
    rt.close()
    assert {"eligible": contacts} == dict(summary.counts)
    return cluster, store


def hammer(cluster: Cluster, kills: int, rng: random.Random) -> int:
    """SIGKILL a random running replica every 50–200 ms and restart it at once."""
    done = 0
    while done < kills:
        time.sleep(rng.uniform(0.05, 0.2))
        victim = cluster.random_running(rng)
        victim.kill()
        done += 1
        victim.start()
    return done


def provider_keys(emulator: TwilioEmulator) -> Counter[str]:
    keys: Counter[str] = Counter()
    for m in emulator.messages("outbound-api"):
        found = re.search(r"[?&]k=([^&]+)", m.status_callback or "")
        keys[unquote(found.group(1)) if found else f"(no key) {m.sid}"] += 1
    return keys


def settle(cluster: Cluster, store: Store, contacts: int) -> dict[str, int]:
    """Wait until the survivors recovered the dead replicas' sends and nothing is left in flight."""

    def quiet() -> dict[str, int] | None:
        states = sends_by_state(store)
        return states if not any(states.get(s) for s in NON_TERMINAL) else None

    # The full-size run (10,000 sends) needs far longer to settle than the short one.
    settle = 900 if FULL else 120
    return wait_for(quiet, timeout=settle, interval=0.5, what=f"every send terminal:\n{cluster.logs()}")


def events(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    found = []
    for replica in cluster.replicas:
        for line in replica.log().splitlines():
            if f'"{name}"' in line and line.startswith("{"):
                found.append(json.loads(line))
    return found


def figures(cluster: Cluster, emulator: TwilioEmulator, states: dict[str, int], kills: int) -> dict[str, Any]:
    keys = provider_keys(emulator)
    unknown = sum(e.get("count", 0) for e in events(cluster, "send.unknown_after_crash"))
    return {
        "kills": kills,
        "accepted_by_provider": sum(keys.values()),
        "distinct_keys": len(keys),
        "duplicates": sum(n - 1 for n in keys.values() if n > 1),
        "unknown": unknown,
        "states": states,
    }


def test_postgres_replicas_killed_at_random_send_each_survey_at_most_once(
    tmp_path: Path, pg_url: str, fast_twilio: Provider
) -> None:
    contacts, replicas, kills = (10_000, 4, 50) if FULL else (2_000, 3, 15)
    cluster, store = build(tmp_path, pg_url, fast_twilio, contacts, replicas)
    try:
        cluster.start_all()
        done = hammer(cluster, kills, random.Random(1))
        states = settle(cluster, store, contacts)
        result = figures(cluster, fast_twilio.emulator, states, done)
    finally:
        cluster.stop_all()
        store.dispose()
    print(f"\nR1 postgres ({contacts} contacts, {replicas} replicas): {result}")
    assert 0 == result["duplicates"]
    assert contacts == result["distinct_keys"]  # nobody unreached
    assert {"sent": contacts} == states  # every send terminal, and sent
    assert result["unknown"] <= kills


def test_sqlite_daemon_killed_and_restarted_sends_each_survey_at_most_once(
    tmp_path: Path, fast_twilio: Provider
) -> None:
    contacts, kills = (3_000, 20) if FULL else (400, 5)
    url = f"sqlite:///{tmp_path / 'replica0' / 'state' / 'nps-sync.db'}"
    cluster, store = build(tmp_path, url, fast_twilio, contacts, 1)
    (daemon,) = cluster.replicas
    rng = random.Random(2)
    try:
        daemon.start()
        for _ in range(kills):
            daemon.wait_healthy()
            time.sleep(rng.uniform(0.05, 0.2))
            daemon.kill()
            daemon.start()
        daemon.wait_healthy()
        states = settle(cluster, store, contacts)
        result = figures(cluster, fast_twilio.emulator, states, kills)
    finally:
        cluster.stop_all()
        store.dispose()
    path = sqlite_path(url)
    assert path is not None
    with sqlite3.connect(path) as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    print(f"\nR1 sqlite ({contacts} contacts, 1 daemon): {result} integrity={integrity}")
    assert 0 == result["duplicates"]
    assert contacts == result["distinct_keys"]
    assert {"sent": contacts} == states
    assert result["unknown"] <= kills
    assert "ok" == integrity
