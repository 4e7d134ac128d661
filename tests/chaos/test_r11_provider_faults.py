"""R11: provider faults between the sender and Twilio, made by the fault proxy.

Each survey SMS meets one fault on its way (latency, a reset before the request arrives, a black hole,
a reset after Twilio handled the request). Pass: nothing is resent blindly after an ambiguous failure
(the send becomes ``unknown``); reconciliation from Twilio's message list then confirms the ones
Twilio has and sends the others once; in the end every survey reached Twilio exactly once.
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
from tests.chaos.cluster import SIGNING_KEY, sends_by_state, write_seed
from tests.chaos.conftest import Provider
from tests.chaos.faultproxy import FaultProxy, Mode
from tests.e2e.daemon import write_config

pytestmark = pytest.mark.chaos

FAULTS: list[Mode] = ["latency", "reset", "blackhole", "drop_after_request", "pass"]


@pytest.fixture
def proxied(tmp_path: Path, fast_twilio: Provider) -> Iterator[tuple[Runtime, FaultProxy]]:
    proxy = FaultProxy(int(fast_twilio.emulator.url.rsplit(":", 1)[1])).start()
    seed = write_seed(tmp_path / "seed", len(FAULTS))
    toml = fast_twilio.config_toml.replace(fast_twilio.emulator.url, proxy.url)
    path = write_config(
        tmp_path / "config.toml",
        port=8080,
        sections=[toml],
        overrides={
            "daemon": {"database_url": f"sqlite:///{tmp_path / 'state.db'}", "run_on_start": False},
            "crm": {"kind": "sandbox", "sandbox": {"seed": str(seed)}},
            "channels": {
                "sms": {
                    "twilio": {"max_batch": 1, "concurrency": 1, "timeout_seconds": 1.0, "max_attempts": 2}
                }
            },
            "program": [
                {"name": "text", "channel": "sms", "schedule": "0 3 1 1 *", "reminders": {"count": 0}}
            ],
        },
    )
    rt = Runtime(config_mod.load(path), environ={**fast_twilio.env, "NPS_SYNC_SIGNING_KEYS": SIGNING_KEY})
    yield rt, proxy
    rt.close()
    proxy.stop()


def at_twilio(provider: Provider) -> Counter[str]:
    keys: Counter[str] = Counter()
    for m in provider.emulator.messages("outbound-api"):
        found = re.search(r"[?&]k=([^&]+)", m.status_callback or "")
        keys[unquote(found.group(1)) if found else m.sid] += 1
    return keys


def test_ambiguous_failures_are_never_resent_blindly_and_reconcile_to_one_each(
    proxied: tuple[Runtime, FaultProxy], fast_twilio: Provider
) -> None:
    rt, proxy = proxied
    rt.run_wave("text")
    outcome: dict[str, str] = {}
    for fault in FAULTS:
        proxy.set(fault, latency=0.2)
        assert 1 == rt.sender.run_once()
        s = schema.sends
        with rt.store.read() as conn:
            row = conn.execute(
                select(s.c.send_key, s.c.state).order_by(s.c.updated_at.desc(), s.c.id.desc()).limit(1)
            ).one()
        outcome[fault] = row.state
    before = at_twilio(fast_twilio)
    proxy.set("pass")
    sent, requeued, unresolved = rt.sender.reconcile()
    rt.drain()
    after = at_twilio(fast_twilio)
    print(
        f"\nR11: outcome per fault={outcome} proxy connections={dict(proxy.counts)} "
        f"at twilio before reconcile={sum(before.values())} reconciled sent={sent} requeued={requeued} "
        f"unresolved={len(unresolved)} at twilio after={sum(after.values())} "
        f"states={sends_by_state(rt.store)}"
    )
    assert {
        "latency": "sent",
        "reset": "unknown",
        "blackhole": "unknown",
        "drop_after_request": "unknown",
        "pass": "sent",
    } == outcome
    assert 3 == sum(before.values())  # latency, drop_after_request (handled, answer lost), pass
    assert (1, 2, []) == (sent, requeued, unresolved)
    assert {"sent": len(FAULTS)} == sends_by_state(rt.store)
    assert [1] * len(FAULTS) == list(after.values())
