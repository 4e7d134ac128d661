"""Hostile requests against the real app (survey pages, unsubscribe, Twilio and SendGrid webhooks):
random bodies get a 4xx without a traceback and change nothing; oversized bodies get 413 before any
handler runs; a client over its per-IP budget gets 429 with Retry-After."""

from __future__ import annotations

import json
import socket
import string
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from starlette.types import ASGIApp

from nps_sync import config as config_mod
from nps_sync.runtime import Runtime
from nps_sync.store import schema
from nps_sync.web import create_app
from tests.e2e.daemon import write_config
from tests.harness import E2EChannel

SIGNING_KEY = "fuzz-signing-key-" + "f" * 32
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
WATCHED = (schema.responses, schema.inbound_events, schema.suppressions, schema.sends, schema.jobs)


class Served:
    """The app behind a real uvicorn on 127.0.0.1 (a thread), and an httpx client for it."""

    def __init__(self, app: ASGIApp) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        )
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> httpx.Client:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        port = self.sock.getsockname()[1]
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def build(tmp_path: Path, channels: list[E2EChannel], limits: dict[str, Any]) -> Runtime:
    path = write_config(
        tmp_path / "config.toml",
        port=8080,
        sections=[c.config_toml for c in channels],
        overrides={
            "daemon": {
                "database_url": f"sqlite:///{tmp_path / 'state.db'}",
                "run_on_start": False,
                "limits": limits,
            },
            "channels": {"email": {"postal_address": "Acme Inc., 1 Main St"}},
            "program": [{"name": "mail", "schedule": "0 3 1 1 *", "reminders": {"count": 0}}],
        },
    )
    env = {"NPS_SYNC_SIGNING_KEYS": SIGNING_KEY}
    for c in channels:
        env.update(c.env)
    return Runtime(config_mod.load(path), environ=env)


@pytest.fixture
def app(
    tmp_path: Path, channel_e2e_sendgrid: E2EChannel, channel_e2e_twilio: E2EChannel
) -> Iterator[tuple[Runtime, httpx.Client]]:
    rt = build(
        tmp_path,
        [channel_e2e_sendgrid, channel_e2e_twilio],
        {"requests_per_minute": 1_000_000, "webhook_requests_per_minute": 1_000_000},
    )
    with Served(create_app(rt)) as client:
        yield rt, client
    rt.close()


def snapshot(rt: Runtime) -> dict[str, int]:
    with rt.store.read() as conn:
        return {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one()) for t in WATCHED}


PATHS = ["/hooks/twilio/inbound", "/hooks/twilio/status", "/hooks/sendgrid/events", "/r/{t}", "/u/{t}"]
words = st.text(string.printable, max_size=40)
forms = st.dictionaries(
    st.one_of(st.sampled_from(["From", "To", "Body", "MessageSid", "SmsSid", "score", "comment"]), words),
    st.one_of(words, st.text(max_size=40)),
    max_size=6,
)


@FUZZ
@given(
    path=st.sampled_from(PATHS),
    token=st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=80),
    form=forms,
    raw=st.one_of(st.none(), st.binary(max_size=300)),
    content_type=st.sampled_from(
        ["application/x-www-form-urlencoded", "application/json", "multipart/form-data", "text/plain", ""]
    ),
    signature=st.one_of(
        st.none(), st.text(string.ascii_letters + string.digits + "+/=", min_size=1, max_size=60)
    ),
)
def test_random_bodies_get_a_4xx_without_traceback_and_change_nothing(
    app: tuple[Runtime, httpx.Client],
    path: str,
    token: str,
    form: dict[str, str],
    raw: bytes | None,
    content_type: str,
    signature: str | None,
) -> None:
    rt, client = app
    before = snapshot(rt)
    body = raw if raw is not None else urlencode(form).encode()
    headers = {"content-type": content_type} if content_type else {}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
        headers["X-Twilio-Email-Event-Webhook-Signature"] = signature
        headers["X-Twilio-Email-Event-Webhook-Timestamp"] = "1700000000"
    reply = client.post(path.format(t=token), content=body, headers=headers)
    assert 400 <= reply.status_code < 500, (reply.status_code, reply.text[:300])
    assert "Traceback" not in reply.text
    assert before == snapshot(rt)


def test_an_oversized_body_is_refused_before_any_handler(tmp_path: Path) -> None:
    rt = build(tmp_path, [], {"max_body_bytes": 2048})
    rt.run_wave("mail")
    with rt.store.read() as conn:
        send_id = conn.execute(select(schema.sends.c.id).limit(1)).scalar_one()
    link = "/r/" + rt.tokens.sign("survey", {"s": send_id})
    with Served(create_app(rt)) as client:
        before = snapshot(rt)
        big = client.post(link, content=b"score=3&comment=" + b"x" * 4096, headers=_form())
        lying = _raw_status(client, f"POST {link} HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n")
        chunked = client.post(link, content=iter([b"score=3&comment="] + [b"y" * 1024] * 4), headers=_form())
        assert (413, 413, 413) == (big.status_code, lying, chunked.status_code)
        assert before == snapshot(rt)
        ok = client.post(link, content=b"score=3&comment=fine", headers=_form())
        assert 200 == ok.status_code
        rt.drain()  # a worker records the accepted answer
        assert before["responses"] + 1 == snapshot(rt)["responses"]
    rt.close()


def test_a_client_over_its_budget_gets_429_and_others_do_not(tmp_path: Path) -> None:
    rt = build(tmp_path, [], {"requests_per_minute": 5})
    with Served(create_app(rt)) as client:
        codes = [client.get("/r/not-a-token").status_code for _ in range(7)]
        assert [400] * 5 + [429] * 2 == codes
        limited = client.get("/r/not-a-token")
        assert limited.headers["retry-after"].isdigit()
        assert 200 == client.get("/healthz").status_code  # monitoring is never limited
    rt.close()


def _form() -> dict[str, str]:
    return {"content-type": "application/x-www-form-urlencoded"}


def _raw_status(client: httpx.Client, head: str) -> int:
    """Send only a request head (a body promised and never sent) and read the status code."""
    with socket.create_connection((client.base_url.host, client.base_url.port or 80), timeout=10) as sock:
        sock.sendall(head.encode())
        return int(sock.recv(1024).split(b" ", 2)[1])


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=15,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "email": st.one_of(st.text(max_size=30), st.just("pat@example.com")),
        "event": st.sampled_from(
            ["delivered", "open", "bounce", "dropped", "spamreport", "unsubscribe", "?"]
        ),
        "sg_event_id": st.text(max_size=30),
        "timestamp": st.one_of(st.integers(), st.text(max_size=10)),
        "nps_send_key": st.text(max_size=30),
        "reason": st.text(max_size=30),
    },
)


@FUZZ
@given(payload=st.one_of(json_values, st.lists(st.one_of(event_like, json_values), max_size=5)))
def test_signed_but_strange_sendgrid_batches_never_break_the_endpoint(
    app: tuple[Runtime, httpx.Client], sendgrid_emulator: Any, payload: Any
) -> None:
    """Genuinely signed bodies reach the parser: whatever they hold, the answer is no 5xx."""
    _, client = app
    body, headers = sendgrid_emulator.signer.signed_request(body=json.dumps(payload).encode())
    reply = client.post("/hooks/sendgrid/events", content=body, headers=headers)
    assert reply.status_code < 500, (reply.status_code, reply.text[:300])
    assert 403 != reply.status_code  # the signature was genuine: the body itself was judged
    assert "Traceback" not in reply.text


@FUZZ
@given(
    params=st.dictionaries(
        st.sampled_from(
            ["From", "To", "Body", "MessageSid", "SmsSid", "NumMedia", "OptOutType", "AccountSid"]
        ),
        st.text(string.printable, max_size=40),
        max_size=8,
    )
)
def test_signed_but_strange_twilio_inbound_never_breaks_the_endpoint(
    app: tuple[Runtime, httpx.Client], channel_e2e_twilio: E2EChannel, params: dict[str, str]
) -> None:
    _, client = app
    from twilio.request_validator import RequestValidator

    token = channel_e2e_twilio.env["TWILIO_AUTH_TOKEN"]
    public = "http://127.0.0.1:8080/hooks/twilio/inbound"
    signature = RequestValidator(token).compute_signature(public, params)
    reply = client.post(
        "/hooks/twilio/inbound",
        content=urlencode(params).encode(),
        headers={"content-type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature},
    )
    assert reply.status_code < 500, (reply.status_code, reply.text[:300])
    assert 403 != reply.status_code  # the signature was genuine: the body itself was judged
    assert "Traceback" not in reply.text
