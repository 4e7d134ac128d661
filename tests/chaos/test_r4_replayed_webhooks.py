"""R4: webhooks replayed across two replicas on one PostgreSQL.

Each Twilio inbound SMS (a score reply) is posted 5 times at once, alternating between the replicas;
one signed SendGrid event batch is posted 46 times (SendGrid was seen delivering one event 46 times).
Pass: exactly one response and one inbound event per MessageSid, one event per sg_event_id, and one
write-back job per answer — no extra write-back.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from nps_sync import config as config_mod
from nps_sync.runtime import Runtime
from nps_sync.store import schema
from nps_sync.store.db import Store
from tests.chaos.cluster import Cluster, write_seed
from tests.chaos.conftest import Provider
from tests.emulators.sendgrid import SendGridEmulator
from tests.emulators.sendgrid.events import make_event, post
from tests.emulators.twilio.hooks import WebhookSender
from tests.harness import E2EChannel

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

TEXTERS = 12
MAILED = 12
TWILIO_REPLAYS = 5
SENDGRID_REPLAYS = 46


def program(name: str, channel: str, accounts: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "channel": channel,
        "schedule": "0 3 1 1 *",
        "reminders": {"count": 0},
        "audience": {"where": {"account_id": accounts}},
    }


@pytest.fixture
def replicas(
    tmp_path: Path, pg_url: str, fast_twilio: Provider, channel_e2e_sendgrid: E2EChannel
) -> Iterator[tuple[Cluster, Store]]:
    seed = write_seed(tmp_path / "seed", TEXTERS + MAILED)
    accounts = [f"B{i:05d}" for i in range(TEXTERS + MAILED)]
    cluster = Cluster(
        tmp_path,
        pg_url,
        sections=[fast_twilio.config_toml, channel_e2e_sendgrid.config_toml],
        overrides={
            "daemon": {"run_on_start": False, "workers": 2},
            "crm": {"kind": "sandbox", "sandbox": {"seed": str(seed)}},
            "channels": {"email": {"postal_address": "Acme Inc., 1 Main St"}},
            "program": [
                program("text", "sms", accounts[:TEXTERS]),
                program("mail", "email", accounts[TEXTERS:]),
            ],
        },
        env={**fast_twilio.env, **channel_e2e_sendgrid.env},
    )
    cluster.add(2)
    rt = Runtime(
        config_mod.load(cluster.replicas[0].folder / "config.toml"),
        environ={**cluster.replicas[0].env},
    )
    rt.run_wave("text")
    rt.run_wave("mail")
    rt.drain()
    rt.close()
    cluster.start_all()
    store = Store(pg_url)
    yield cluster, store
    cluster.stop_all()
    store.dispose()


def rows(store: Store, table: Any, *where: Any) -> int:
    with store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def test_replayed_webhooks_count_once_across_replicas(
    replicas: tuple[Cluster, Store], fast_twilio: Provider, sendgrid_emulator: SendGridEmulator
) -> None:
    cluster, store = replicas
    public = cluster.replicas[0].url
    senders = [
        WebhookSender(fast_twilio.emulator, target_url=r.url, public_url=public) for r in cluster.replicas
    ]
    texted = list(fast_twilio.emulator.messages("outbound-api"))
    assert TEXTERS == len(texted)

    def reply(i: int, to: str, sid: str) -> int:
        params = {
            "MessageSid": sid,
            "SmsSid": sid,
            "SmsMessageSid": sid,
            "AccountSid": fast_twilio.emulator.state.account_sid,
            "From": to,
            "To": texted[0].from_,
            "Body": f"{i % 11} thanks",
            "NumMedia": "0",
            "ApiVersion": "2010-04-01",
        }
        return senders[i % 2].post_signed("/hooks/twilio/inbound", params).status

    jobs = []
    for n, message in enumerate(texted):
        sid = f"SM{n:032x}"
        jobs += [(n * TWILIO_REPLAYS + k, message.to, sid) for k in range(TWILIO_REPLAYS)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        codes = list(pool.map(lambda j: reply(*j), jobs))

    with store.read() as conn:
        keys = list(
            conn.execute(
                select(schema.sends.c.send_key, schema.sends.c.address).where(
                    schema.sends.c.channel == "email"
                )
            )
        )
    events = [
        make_event(kind, address, message_id=f"msg{i}", custom_args={"nps_send_key": key})
        for i, (key, address) in enumerate(keys)
        for kind in ("processed", "delivered", "open")
    ]
    body, headers = sendgrid_emulator.signer.signed_request(events)
    urls = [f"{r.url}/hooks/sendgrid/events" for r in cluster.replicas]
    with ThreadPoolExecutor(max_workers=8) as pool:
        sg_codes = list(pool.map(lambda i: post(urls[i % 2], body, headers), range(SENDGRID_REPLAYS)))

    responses = rows(store, schema.responses)
    sms_events = rows(store, schema.inbound_events, schema.inbound_events.c.provider == "twilio")
    sg_events = rows(store, schema.inbound_events, schema.inbound_events.c.provider == "sendgrid")
    writebacks = rows(store, schema.jobs, schema.jobs.c.kind == "writeback")
    print(
        f"\nR4: twilio posts={len(codes)} (2xx={sum(c == 200 for c in codes)}) responses={responses} "
        f"sms_events={sms_events} writeback_jobs={writebacks}; sendgrid posts={len(sg_codes)} "
        f"events_per_batch={len(events)} stored={sg_events}"
    )
    assert [200] * len(codes) == codes
    assert [200] * SENDGRID_REPLAYS == sg_codes
    assert TEXTERS == responses
    assert TEXTERS == sms_events
    assert TEXTERS == writebacks
    assert len(events) == sg_events
