"""Signed webhooks (R6 for Twilio): forgeries get 403 and record nothing; genuine requests, including
behind a proxy, are accepted; replays have one effect."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from twilio.request_validator import RequestValidator

from tests.connectors.twilio.fixtures import (
    AUTH_TOKEN,
    INBOUND,
    PUBLIC_URL,
    SERVICE_NUMBER,
    SHA256_SETTINGS,
    SHARED_KEY,
    STATUS,
    Hooks,
)


@pytest.fixture
def hooks(twilio_hooks_factory: Callable[..., Hooks]) -> Hooks:
    return twilio_hooks_factory(webhook_key_secret="TWILIO_WEBHOOK_KEY")


def inbound_params(body: str = "9 great support", sid: str = "SM" + "1" * 32) -> dict[str, str]:
    return {
        "MessageSid": sid, "SmsSid": sid, "AccountSid": "AC" + "0a1b2c3d" * 4, "From": "+14155550001",
        "To": SERVICE_NUMBER, "Body": body, "NumMedia": "0", "NumSegments": "1", "ApiVersion": "2010-04-01",
    }  # fmt: skip


def status_params(state: str = "delivered") -> dict[str, str]:
    sid = "SM" + "2" * 32
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": state,
        "To": "+14155550001",
        "From": SERVICE_NUMBER,
    }


def tampered(params: dict[str, str], **changes: str) -> dict[str, str]:
    return {**params, **changes}


def without(params: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in params.items() if k != name}


P = inbound_params()
S = status_params()
SHA256 = {"X-Twilio-Webhooks-Signature-Settings": SHA256_SETTINGS}
MD5 = {"X-Twilio-Webhooks-Signature-Settings": "key=k,algorithm=HMAC_MD5"}
K1 = f"{STATUS}?k=wave1%3AC1"
SIGNED_K1 = PUBLIC_URL + K1
OTHER = inbound_params(sid="SM" + "3" * 32)
FAILED = tampered(S, MessageStatus="failed", ErrorCode="21610")
ARRIVAL = "http://127.0.0.1:{port}"

FORGERIES: dict[str, dict[str, Any]] = {
    "wrong auth token": {"params": P, "token": "not-the-token"},
    "another account's token": {"params": P, "token": AUTH_TOKEN[::-1]},
    "tampered Body": {"params": tampered(P, Body="0 terrible"), "sign_params": P},
    "tampered From": {"params": tampered(P, From="+14155559999"), "sign_params": P},
    "tampered MessageSid": {"params": tampered(P, MessageSid="SM" + "9" * 32), "sign_params": P},
    "param added after signing": {"params": {**P, "OptOutType": "STOP"}, "sign_params": P},
    "param removed after signing": {"params": without(P, "NumMedia"), "sign_params": P},
    "missing signature header": {"params": P, "signature": ""},
    "garbage signature": {"params": P, "signature": "bm90IGEgc2lnbmF0dXJl"},
    "truncated signature": {"params": P, "signature": "__truncate__"},
    "signed for the internal 127.0.0.1 URL": {"params": P, "sign_url": "__arrival__"},
    "signed for http instead of https": {"params": P, "sign_url": "http://nps.example.com" + INBOUND},
    "signed for another host": {"params": P, "sign_url": "https://evil.example.com" + INBOUND},
    "signed for another port": {"params": P, "sign_url": "https://nps.example.com:8443" + INBOUND},
    "signed for the status path": {"params": P, "sign_url": PUBLIC_URL + STATUS},
    "signature of another message replayed": {"params": P, "sign_params": OTHER},
    "HMAC-SHA256 header with an SHA1 signature": {"params": P, "headers": SHA256},
    "HMAC-SHA256 signed with the auth token instead of the shared key": {
        "params": P, "algorithm": "HMAC_SHA256", "headers": SHA256},
    "SHA1 signed with the shared key": {"params": P, "token": SHARED_KEY},
    "unsupported algorithm": {"params": P, "headers": MD5},
}  # fmt: skip


@pytest.mark.parametrize("case", list(FORGERIES))
def test_forged_inbound_sms_is_rejected_with_403_and_nothing_is_recorded(hooks: Hooks, case: str) -> None:
    spec = dict(FORGERIES[case])
    if spec.get("sign_url") == "__arrival__":
        spec["sign_url"] = hooks.app.url + INBOUND
    if spec.get("signature") == "__truncate__":
        spec["signature"] = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL + INBOUND, P)[:-4]
    params = spec.pop("params")

    status, _ = hooks.post(INBOUND, params, **spec)

    assert (status, hooks.sink.calls, hooks.sink.count()) == (403, 0, 0)


STATUS_FORGERIES: dict[str, dict[str, Any]] = {
    "send key changed in the query": {"path": f"{STATUS}?k=wave1%3AC2", "sign_url": SIGNED_K1},
    "send key removed from the query": {"path": STATUS, "sign_url": SIGNED_K1},
    "query added after signing": {"path": f"{K1}&x=1", "sign_url": SIGNED_K1},
    "status changed after signing": {"path": K1, "sign_url": SIGNED_K1,
                                     "params": FAILED, "sign_params": S},
    "signed for the internal URL": {"path": K1, "sign_url": "__arrival__"},
}  # fmt: skip


@pytest.mark.parametrize("case", list(STATUS_FORGERIES))
def test_forged_status_callback_is_rejected_with_403_and_nothing_is_recorded(hooks: Hooks, case: str) -> None:
    spec = dict(STATUS_FORGERIES[case])
    path = spec.pop("path")
    if spec["sign_url"] == "__arrival__":
        spec["sign_url"] = hooks.app.url + path
    params = spec.pop("params", S)

    status, _ = hooks.post(path, params, **spec)

    assert (status, hooks.sink.count()) == (403, 0)


GENUINE: dict[str, dict[str, Any]] = {
    "signed for the public https URL (app on http loopback behind a proxy)": {},
    "signed with the default port :443 spelled out": {"sign_url": "https://nps.example.com:443" + INBOUND},
    "unicode body": {"params": inbound_params("10 — très bien 👍 <&>")},
    "Advanced Opt-Out parameters": {"params": {**P, "OptOutType": "HELP", "Body": "HELP"}},
    "HMAC-SHA256 with the shared key": {
        "token": SHARED_KEY, "algorithm": "HMAC_SHA256", "headers": SHA256},
}  # fmt: skip


@pytest.mark.parametrize("case", list(GENUINE))
def test_genuine_inbound_sms_is_accepted_and_recorded_once(hooks: Hooks, case: str) -> None:
    spec = dict(GENUINE[case])
    params = spec.pop("params", P)

    status, body = hooks.post(INBOUND, params, **spec)

    assert status == 200
    assert body.startswith('<?xml version="1.0" encoding="UTF-8"?><Response')
    assert [("twilio", params["MessageSid"], "sms")] == [
        (e["provider"], e["event_id"], e["kind"]) for e in hooks.sink.events()
    ]


@pytest.mark.parametrize(
    "public_url", ["https://nps.example.com/", "https://example.com/nps", "http://127.0.0.1:9"]
)
def test_genuine_requests_validate_against_whatever_public_url_is_configured(
    twilio_hooks_factory: Callable[..., Hooks], public_url: str
) -> None:
    hooks = twilio_hooks_factory(public_url=public_url)

    posted = hooks.sender.inbound("+14155550001", "8")

    assert (posted.status, hooks.sink.count()) == (200, 1)


def test_status_callback_records_the_event_with_our_send_key(hooks: Hooks) -> None:
    status, _ = hooks.post(
        f"{STATUS}?k=wave1%3AC1%3Asms", {**S, "MessageStatus": "undelivered", "ErrorCode": "30003"}
    )

    assert status == 204
    [event] = hooks.sink.events()
    expected = (
        "twilio",
        f"{S['MessageSid']}:undelivered",
        "undelivered",
        "wave1:C1:sms",
        "+14155550001:30003",
    )
    assert expected == (
        event["provider"],
        event["event_id"],
        event["kind"],
        event["send_key"],
        event["detail"],
    )


def test_status_callbacks_from_the_emulator_map_back_to_the_send(hooks: Hooks) -> None:
    from nps_sync.models import OutboundMessage

    [outcome] = hooks.channel.send(
        [OutboundMessage("wave2:C7:sms", "sms", "+14155550007", "", "Rate us 0-10")]
    )
    assert outcome.provider_id is not None

    sent, delivered = (
        hooks.sender.status(outcome.provider_id, "sent"),
        hooks.sender.status(outcome.provider_id, "delivered"),
    )

    assert (sent.status, delivered.status) == (204, 204)
    assert [(e["kind"], e["send_key"]) for e in hooks.sink.events()] == [
        ("sent", "wave2:C7:sms"),
        ("delivered", "wave2:C7:sms"),
    ]


def test_a_message_sid_replayed_5_times_concurrently_has_one_effect_and_one_confirmation(
    twilio_hooks_factory: Callable[..., Hooks],
) -> None:
    hooks = twilio_hooks_factory(stop_confirmation="nps-sync")
    params = inbound_params("STOP", sid="SM" + "4" * 32)
    results: list[tuple[int, str]] = []
    barrier = threading.Barrier(5)

    def replay() -> None:
        barrier.wait()
        results.append(hooks.post(INBOUND, params))

    threads = [threading.Thread(target=replay) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [status for status, _ in results] == 5 * [200]
    assert hooks.sink.count() == 1
    assert sum(body.count("<Message>") for _, body in results) == 1


def test_oversized_body_is_refused_with_413_before_anything_is_recorded(hooks: Hooks) -> None:
    params = inbound_params("9" + "x" * 70_000)

    status, _ = hooks.post(INBOUND, params)

    assert (status, hooks.sink.count()) == (413, 0)


def test_non_form_body_is_refused_with_415(hooks: Hooks) -> None:
    status, _ = hooks.post(INBOUND, P, headers={"Content-Type": "application/json"})

    assert (status, hooks.sink.count()) == (415, 0)


def test_signed_request_without_message_sid_is_refused_with_400(hooks: Hooks) -> None:
    status, _ = hooks.post(INBOUND, without(P, "MessageSid"))

    assert (status, hooks.sink.count()) == (400, 0)
