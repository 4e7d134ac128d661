"""R2 (part): a real daemon SIGKILLed at points of the send path, held there by the fault proxy.

The table, written before the run:

| crash point                                   | row after crash | after restart + reconcile | at Twilio |
|-----------------------------------------------|-----------------|---------------------------|-----------|
| claim committed, request never reached Twilio | sending         | queued again, then sent   | 1         |
| Twilio accepted, its answer never came back   | sending         | sent (confirmed, no resend)| 1         |
| not claimed yet                               | queued          | sent                      | 1         |

Crashes inside the write-back and task creation need a fault hook in the core (not here yet).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from sqlalchemy import select

from nps_sync import config as config_mod
from nps_sync.runtime import Runtime
from nps_sync.store import schema
from nps_sync.store.db import Store
from tests.chaos.cluster import Cluster, Replica, sends_by_state, write_seed
from tests.chaos.conftest import Provider
from tests.chaos.faultproxy import FaultProxy
from tests.e2e.daemon import wait_for

pytestmark = pytest.mark.chaos


@pytest.fixture
def daemon(tmp_path: Path, fast_twilio: Provider) -> Iterator[tuple[Replica, Store, FaultProxy]]:
    proxy = FaultProxy(int(fast_twilio.emulator.url.rsplit(":", 1)[1])).start()
    seed = write_seed(tmp_path / "seed", 3)
    url = f"sqlite:///{tmp_path / 'replica0' / 'state' / 'nps-sync.db'}"
    cluster = Cluster(
        tmp_path,
        url,
        sections=[fast_twilio.config_toml.replace(fast_twilio.emulator.url, proxy.url)],
        overrides={
            "daemon": {"run_on_start": False, "workers": 1},
            "crm": {"kind": "sandbox", "sandbox": {"seed": str(seed)}},
            "channels": {"sms": {"twilio": {"max_batch": 1, "concurrency": 1, "timeout_seconds": 60}}},
            "program": [
                {"name": "text", "channel": "sms", "schedule": "0 3 1 1 *", "reminders": {"count": 0}}
            ],
        },
        env=fast_twilio.env,
    )
    (replica,) = cluster.add(1)
    rt = Runtime(config_mod.load(replica.folder / "config.toml"), environ=replica.env)
    rt.run_wave("text")
    rt.close()
    store = Store(url)
    yield replica, store, proxy
    replica.stop()
    store.dispose()
    proxy.stop()


def state_of(store: Store) -> dict[str, str]:
    s = schema.sends
    with store.read() as conn:
        return {str(r[0]): str(r[1]) for r in conn.execute(select(s.c.send_key, s.c.state))}


def at_twilio(provider: Provider) -> Counter[str]:
    found: Counter[str] = Counter()
    for m in provider.emulator.messages("outbound-api"):
        key = re.search(r"[?&]k=([^&]+)", m.status_callback or "")
        found[unquote(key.group(1)) if key else m.sid] += 1
    return found


def sending_key(store: Store) -> str:
    return wait_for(
        lambda: next((k for k, v in state_of(store).items() if v == "sending"), None),
        timeout=60,
        what="a send claimed and in flight",
    )


def test_each_crash_point_ends_as_the_table_says(
    daemon: tuple[Replica, Store, FaultProxy], fast_twilio: Provider
) -> None:
    replica, store, proxy = daemon
    # 1. The request never reaches Twilio: the claim is committed, the daemon dies waiting.
    proxy.set("blackhole", methods=("POST",))
    replica.start()
    lost = sending_key(store)
    replica.kill()
    untouched = [k for k, v in state_of(store).items() if v == "queued"]
    crash1 = (state_of(store)[lost], at_twilio(fast_twilio)[lost])

    # 2. Twilio accepts the next message; its answer is held; the daemon dies waiting. On this start
    #    the first send is reconciled: Twilio does not have it, so it is queued again.
    proxy.set("hold_answer", methods=("POST",))
    replica.start()
    wait_for(lambda: sum(at_twilio(fast_twilio).values()) == 1, timeout=60, what="Twilio to accept one")
    accepted = next(iter(at_twilio(fast_twilio)))
    wait_for(lambda: state_of(store)[accepted] == "sending", timeout=30, what="the accepted send in flight")
    replica.kill()
    crash2 = (state_of(store)[accepted], at_twilio(fast_twilio)[accepted])

    # 3. A clean network: the accepted one is confirmed from Twilio's list, the rest go out once.
    proxy.set("pass")
    replica.start()
    wait_for(lambda: sends_by_state(store) == {"sent": 3}, timeout=60, what="every send sent")
    final = at_twilio(fast_twilio)
    logs = replica.log()
    print(
        f"\nR2: crash1(blackholed)={crash1} crash2(answer held)={crash2} untouched={len(untouched)} "
        f"final at twilio={dict(final)} reconciled lines={logs.count('send.reconciled')}"
    )
    assert ("sending", 0) == crash1
    assert ("sending", 1) == crash2
    assert 2 == len(untouched)
    assert dict.fromkeys(state_of(store), 1) == dict(final)
    assert lost in final and accepted in final
