"""R11: provider faults between the sender and its provider (the fault proxy, injected errors).

1. Each survey SMS meets one fault on its way (latency, a reset before the request arrives, a black hole,
a reset after Twilio handled the request). Pass: nothing is resent blindly after an ambiguous failure
(the send becomes ``unknown``); reconciliation from Twilio's message list then confirms the ones
Twilio has and sends the others once; in the end every survey reached Twilio exactly once.
2. SendGrid answers 429 with ``Retry-After: 120``: the email channel rests (``Sender.resting``) and its
   send is queued for then; rounds before that moment call SendGrid 0 times; after it, sent once.
3. Twilio answers 500 on every try of a send: the channel rests 30 s (the Sender's breaker: one rest
   per refusal, not a failure count), nothing is tried meanwhile, then the send goes out once.
4. A wave's pull from HubSpot (through the fault proxy) is cut by resets after its first page (and the
   pages read ahead of it): the connector's retries meet resets too and the wave fails; run again with
   the same wave id (what the queue's retry of the wave job does), it resumes and every contact is
   decided and queued once.

Time is moved by passing ``now`` to ``Sender.run_once`` (the rest and ``not_before`` are compared
with it), so no test sleeps through a Retry-After.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from sqlalchemy import func, select

from nps_sync import config as config_mod
from nps_sync.connectors.hubspot.connector import RAW_PAGES_AHEAD
from nps_sync.runtime import Runtime
from nps_sync.store import schema
from nps_sync.store.db import utcnow
from nps_sync.survey import PREFETCH_CONTACTS
from nps_sync.waves import run_wave
from tests.chaos.cluster import SIGNING_KEY, sends_by_state, write_seed
from tests.chaos.conftest import Provider
from tests.chaos.faultproxy import FaultProxy, Mode
from tests.connectors.hubspot.fixtures import TOKEN_ENV, seed_managers
from tests.connectors.sendgrid.fixtures import API_KEY
from tests.e2e.daemon import write_config
from tests.emulators.hubspot import HubSpotEmulator
from tests.emulators.sendgrid.server import SendGridEmulator
from tests.emulators.twilio.server import Fault
from tests.harness import SEED_DIR

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


def one_contact_runtime(tmp_path: Path, sections: list[str], channel: str, env: dict[str, str]) -> Runtime:
    seed = write_seed(tmp_path / "seed", 1)
    path = write_config(
        tmp_path / "config.toml",
        port=8080,
        sections=sections,
        overrides={
            "daemon": {"database_url": f"sqlite:///{tmp_path / 'state.db'}", "run_on_start": False},
            "crm": {"kind": "sandbox", "sandbox": {"seed": str(seed)}},
            "channels": {"email": {"postal_address": "Acme Inc., 1 Main St"}},
            "program": [
                {"name": "p", "channel": channel, "schedule": "0 3 1 1 *", "reminders": {"count": 0}}
            ],
        },
    )
    rt = Runtime(config_mod.load(path), environ={**env, "NPS_SYNC_SIGNING_KEYS": SIGNING_KEY})
    rt.run_wave("p")
    return rt


@pytest.fixture
def sendgrid() -> Iterator[SendGridEmulator]:
    emulator = SendGridEmulator(API_KEY, validate_spec=False).start()
    yield emulator
    emulator.stop()


def test_a_429_with_retry_after_rests_the_channel_until_then_and_sends_once(
    tmp_path: Path, sendgrid: SendGridEmulator
) -> None:
    toml = (
        '[channels.email]\nkind = "sendgrid"\nfrom_address = "nps@acme.test"\n'
        f'sendgrid = {{ base_url = "{sendgrid.url}", api_key_secret = "SENDGRID_API_KEY" }}\n'
    )
    rt = one_contact_runtime(tmp_path, [toml], "email", {"SENDGRID_API_KEY": API_KEY})
    try:
        sendgrid.fail_next(429, retry_after=120)
        start = utcnow()
        tried = [rt.sender.run_once(now=start)]
        rest = (rt.sender.resting["email"] - start).total_seconds()
        calls = [sendgrid.call_counts().get("mail_send", 0)]
        for offset in (1, 60, 119):  # rounds inside the Retry-After
            tried.append(rt.sender.run_once(now=start + timedelta(seconds=offset)))
            calls.append(sendgrid.call_counts().get("mail_send", 0))
        tried.append(rt.sender.run_once(now=start + timedelta(seconds=125)))
        calls.append(sendgrid.call_counts().get("mail_send", 0))
        states = sends_by_state(rt.store)
        print(
            f"\nR11 429: rest={rest:.1f}s attempts per round={tried} SendGrid mail/send calls={calls} "
            f"accepted={len(sendgrid.messages())} states={states}"
        )
        assert 119 <= rest <= 121
        assert [1, 0, 0, 0, 1] == tried
        assert [1, 1, 1, 1, 2] == calls
        assert 1 == len(sendgrid.messages())
        assert {"sent": 1} == states
    finally:
        rt.close()


def test_repeated_5xx_rests_the_channel_then_it_recovers_and_sends_once(
    tmp_path: Path, fast_twilio: Provider
) -> None:
    rt = one_contact_runtime(
        tmp_path,
        [fast_twilio.config_toml + "max_attempts = 3\n"],
        "sms",
        fast_twilio.env,
    )
    try:
        fast_twilio.emulator.inject(Fault("messages.create", status=500, code=20500), times=3)
        start = utcnow()
        tried = [rt.sender.run_once(now=start)]
        rest = (rt.sender.resting["sms"] - start).total_seconds()
        calls = [fast_twilio.emulator.call_counts().get("messages.create", 0)]
        for offset in (5, 29):
            tried.append(rt.sender.run_once(now=start + timedelta(seconds=offset)))
            calls.append(fast_twilio.emulator.call_counts().get("messages.create", 0))
        tried.append(rt.sender.run_once(now=start + timedelta(seconds=35)))
        calls.append(fast_twilio.emulator.call_counts().get("messages.create", 0))
        delivered = at_twilio(fast_twilio)
        states = sends_by_state(rt.store)
        print(
            f"\nR11 5xx: rest={rest:.1f}s attempts per round={tried} Twilio messages.create calls={calls} "
            f"accepted={dict(delivered)} states={states}"
        )
        assert 29 <= rest <= 31
        assert [1, 0, 0, 1] == tried
        assert [3, 3, 3, 4] == calls  # 3 tries refused inside the first round, then one accepted
        assert [1] == list(delivered.values())
        assert {"sent": 1} == states
    finally:
        rt.close()


PAGE = 50
#: Bulk contacts on top of the seed's: more than the wave may hold ahead of its decisions
#: (PREFETCH_CONTACTS) plus the raw pages the connector reads ahead of converting them
#: (RAW_PAGES_AHEAD), so the cut after the first page's decisions lands mid-pull.
PULLED = PREFETCH_CONTACTS + (RAW_PAGES_AHEAD + 10) * PAGE
MAX_ATTEMPTS = 3


def test_a_pull_cut_by_resets_resumes_with_every_contact_decided_once(
    tmp_path: Path, sendgrid: SendGridEmulator
) -> None:
    emu = HubSpotEmulator(seed_dir=SEED_DIR).start()
    proxy = FaultProxy(int(emu.url.rsplit(":", 1)[1])).start()
    try:
        emu.add_contacts(PULLED)
        managers = ", ".join(f'"{k}" = "{v}"' for k, v in seed_managers().items())
        toml = (
            f'[crm]\nkind = "hubspot"\n\n[crm.hubspot]\nbase_url = "{proxy.url}"\n'
            f'access_token_secret = "{TOKEN_ENV}"\nretry_wait_seconds = 0.01\nretry_max_wait_seconds = 0.05\n'
            f"max_attempts = {MAX_ATTEMPTS}\nrate_limit_calls = 100000\nsearch_per_second = 1000\n"
            f"managers = {{ {managers} }}\n"
        )
        email = (
            '[channels.email]\nkind = "sendgrid"\nfrom_address = "nps@acme.test"\n'
            'postal_address = "Acme Inc., 1 Main St"\n'
            f'sendgrid = {{ base_url = "{sendgrid.url}", api_key_secret = "SENDGRID_API_KEY" }}\n'
        )
        path = write_config(
            tmp_path / "config.toml",
            port=8080,
            sections=[toml, email],
            overrides={
                "daemon": {"database_url": f"sqlite:///{tmp_path / 'state.db'}", "run_on_start": False},
                "program": [
                    {
                        "name": "pull",
                        "channel": "email",
                        "schedule": "0 3 1 1 *",
                        "reminders": {"count": 0},
                        "audience": {"all_contacts": True, "page_size": PAGE},
                    }
                ],
            },
        )
        env = {TOKEN_ENV: emu.token, "SENDGRID_API_KEY": API_KEY, "NPS_SYNC_SIGNING_KEYS": SIGNING_KEY}
        rt = Runtime(config_mod.load(path), environ=env)
        program = rt.config.program_named("pull")
        pages: list[int] = []

        def cut_after_first_page(page: list[Any]) -> None:
            pages.append(len(page))
            if len(pages) == 1:
                proxy.set("reset")

        failure = ""
        try:
            run_wave(rt.store, rt.config, rt.crm, program, "pull@cut", on_page=cut_after_first_page)
        except Exception as exc:  # the pull must fail: that is the fault under test
            failure = type(exc).__name__
        resets = proxy.counts["reset"]
        decided_before = _count(rt, schema.wave_decisions)
        proxy.set("pass")
        summary = run_wave(rt.store, rt.config, rt.crm, program, "pull@cut")
        d, s = schema.wave_decisions, schema.sends
        with rt.store.read() as conn:
            per_contact = Counter(
                conn.execute(select(d.c.contact_id).where(d.c.wave_id == "pull@cut")).scalars()
            )
            queued = Counter(conn.execute(select(s.c.contact_id)).scalars())
        with emu.lock:
            in_crm = len(emu.portal.objects["contacts"])
        rt.close()
        print(
            f"\nR11 pull: contacts in HubSpot={in_crm} first run pages={pages} failed with={failure} "
            f"resets={resets} decided before resume={decided_before} decided after={len(per_contact)} "
            f"max decisions per contact={max(per_contact.values())} sends={sum(queued.values())} "
            f"max sends per contact={max(queued.values())} summary={dict(summary.counts)}"
        )
        # The pull reads ahead of the decisions (nps_sync.readahead.prefetched), and the connector
        # reads raw pages ahead of converting them: when the first page's decisions cut the link,
        # what was read still lands — the wave's buffer, the converted page waiting for room in it,
        # the raw buffer and the raw page waiting for room in that.
        assert 1 <= len(pages) <= 3 + PREFETCH_CONTACTS // PAGE + RAW_PAGES_AHEAD
        assert {PAGE} == set(pages)
        assert "" != failure
        assert MAX_ATTEMPTS == resets  # every attempt of the next page met a reset, no more
        assert sum(pages) == decided_before
        assert in_crm == len(per_contact)
        assert {1} == set(per_contact.values())
        assert {1} == set(queued.values())
        assert in_crm == summary.total  # the resumed wave reports the whole wave
        assert summary.counts["eligible"] + summary.counts["outside_window"] == sum(queued.values())
    finally:
        proxy.stop()
        emu.stop()


def _count(rt: Runtime, table: Any) -> int:
    with rt.store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())
