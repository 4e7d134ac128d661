"""R6 for SendGrid: the signed Event Webhook rejects every forgery and accepts every genuine batch."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from nps_sync.connectors.sendgrid import SendGridChannel
from nps_sync.connectors.sendgrid.client import SignatureVerifier
from tests.connectors.sendgrid.fixtures import ChannelFactory, StoreSink, WebServer
from tests.emulators.sendgrid import EventSigner, SendGridEmulator, make_event

PATH = "/hooks/sendgrid/events"
SIG = "X-Twilio-Email-Event-Webhook-Signature"
TS = "X-Twilio-Email-Event-Webhook-Timestamp"

Request = tuple[bytes, dict[str, str]]


def events(count: int = 3, kind: str = "delivered") -> list[dict[str, Any]]:
    return [
        make_event(kind, f"p{n}@example.test", message_id="MSGID", custom_args={"nps_send_key": f"k{n}"})
        for n in range(count)
    ]


@pytest.fixture
def serve(sendgrid_web_server: WebServer) -> Iterator[Callable[[SendGridChannel], httpx.Client]]:
    """Mount a channel's routes on the real web server; an HTTP client pointed at it."""
    clients: list[httpx.Client] = []

    def mount(channel: SendGridChannel) -> httpx.Client:
        sendgrid_web_server.mount(channel.routes())
        clients.append(httpx.Client(base_url=sendgrid_web_server.url, timeout=10))
        return clients[-1]

    yield mount
    for http in clients:
        http.close()


@pytest.fixture
def client(
    make_sendgrid_channel: ChannelFactory, serve: Callable[[SendGridChannel], httpx.Client]
) -> httpx.Client:
    return serve(make_sendgrid_channel())


@pytest.fixture
def signer(sendgrid_emulator: SendGridEmulator) -> EventSigner:
    return sendgrid_emulator.signer


def _replace(headers: dict[str, str], **changes: str | None) -> dict[str, str]:
    out = dict(headers)
    for name, value in changes.items():
        header = {"sig": SIG, "ts": TS}[name]
        if value is None:
            out.pop(header)
        else:
            out[header] = value
    return out


def forged_with_other_key(signer: EventSigner) -> Request:
    return EventSigner().signed_request(events())


def tampered_body(signer: EventSigner) -> Request:
    body, headers = signer.signed_request(events())
    return body.replace(b"delivered", b"bounce", 1), headers


def reserialized_json(signer: EventSigner) -> Request:
    body, headers = signer.signed_request(events())
    return json.dumps(json.loads(body), indent=1).encode(), headers


def crlf_stripped(signer: EventSigner) -> Request:
    body, headers = signer.signed_request(events())
    return body.rstrip(b"\r\n"), headers


def appended_event(signer: EventSigner) -> Request:
    body, headers = signer.signed_request(events())
    return body[:-3] + b',{"event":"spamreport","email":"x@example.test","sg_event_id":"z"}]\r\n', headers


def stale_timestamp(signer: EventSigner) -> Request:
    return signer.signed_request(events(), timestamp=int(time.time()) - 301)


def thirty_day_old_replay(signer: EventSigner) -> Request:
    return signer.signed_request(events(), timestamp=int(time.time()) - 30 * 86400)


def future_timestamp(signer: EventSigner) -> Request:
    return signer.signed_request(events(), timestamp=int(time.time()) + 301)


def missing_signature(signer: EventSigner) -> Request:
    body, headers = signer.signed_request(events())
    return body, _replace(headers, sig=None)


def missing_timestamp(signer: EventSigner) -> Request:
    body, headers = signer.signed_request(events())
    return body, _replace(headers, ts=None)


def missing_both_headers(signer: EventSigner) -> Request:
    body, headers = signer.signed_request(events())
    return body, _replace(headers, sig=None, ts=None)


def empty_signature(signer: EventSigner) -> Request:
    body, headers = signer.signed_request(events())
    return body, _replace(headers, sig="")


def signature_not_base64(signer: EventSigner) -> Request:
    body, headers = signer.signed_request(events())
    return body, _replace(headers, sig="%%%not base64!!")


def truncated_signature(signer: EventSigner) -> Request:
    body, headers = signer.signed_request(events())
    return body, _replace(headers, sig=headers[SIG][:-8])


def signature_bytes_flipped(signer: EventSigner) -> Request:
    body, headers = signer.signed_request(events())
    raw = bytearray(base64.b64decode(headers[SIG]))
    raw[-1] ^= 0x01
    return body, _replace(headers, sig=base64.b64encode(bytes(raw)).decode())


def timestamp_changed_after_signing(signer: EventSigner) -> Request:
    body, headers = signer.signed_request(events())
    return body, _replace(headers, ts=str(int(headers[TS]) - 1))


def timestamp_not_a_number(signer: EventSigner) -> Request:
    body, headers = signer.signed_request(events())
    return body, _replace(headers, ts="yesterday")


def timestamp_in_milliseconds(signer: EventSigner) -> Request:
    ts = str(int(time.time() * 1000))
    body = signer.signed_request(events())[0]
    return body, {**signer.signed_request(body=body)[1], TS: ts, SIG: signer.sign(body, ts)}


def signed_body_without_timestamp(signer: EventSigner) -> Request:
    body, headers = signer.signed_request(events())
    return body, _replace(headers, sig=signer.sign(body, ""))


def signature_from_another_request(signer: EventSigner) -> Request:
    other_headers = signer.signed_request(events(1, "open"))[1]
    body, headers = signer.signed_request(events())
    return body, _replace(headers, sig=other_headers[SIG])


def signature_of_the_public_key_holder_swapped(signer: EventSigner) -> Request:
    body, headers = signer.signed_request(events())
    forged = EventSigner().sign(body, headers[TS])
    return body, _replace(headers, sig=forged)


def non_utf8_body(signer: EventSigner) -> Request:
    return signer.signed_request(body=b'[{"event":"delivered","email":"\xff\xfe"}]')


FORGERIES: list[Callable[[EventSigner], Request]] = [
    forged_with_other_key,
    tampered_body,
    reserialized_json,
    crlf_stripped,
    appended_event,
    stale_timestamp,
    thirty_day_old_replay,
    future_timestamp,
    missing_signature,
    missing_timestamp,
    missing_both_headers,
    empty_signature,
    signature_not_base64,
    truncated_signature,
    signature_bytes_flipped,
    timestamp_changed_after_signing,
    timestamp_not_a_number,
    timestamp_in_milliseconds,
    signed_body_without_timestamp,
    signature_from_another_request,
    signature_of_the_public_key_holder_swapped,
    non_utf8_body,
]


@pytest.mark.parametrize("forgery", FORGERIES, ids=[f.__name__ for f in FORGERIES])
def test_forged_or_stale_requests_are_refused_and_nothing_is_recorded(
    forgery: Callable[[EventSigner], Request],
    signer: EventSigner,
    client: httpx.Client,
    sendgrid_sink: StoreSink,
) -> None:
    body, headers = forgery(signer)

    response = client.post(PATH, content=body, headers=headers)

    assert 403 == response.status_code
    assert [] == sendgrid_sink.rows()
    assert "Traceback" not in response.text


def test_a_genuine_batch_is_accepted_and_each_event_recorded_with_its_send_key(
    signer: EventSigner, client: httpx.Client, sendgrid_sink: StoreSink
) -> None:
    bounce = make_event("bounce", "p9@example.test", message_id="M", custom_args={"nps_send_key": "k9"})
    batch = [*events(3), bounce]
    body, headers = signer.signed_request(batch)

    response = client.post(PATH, content=body, headers=headers)

    assert (200, {"recorded": 4, "duplicates": 0, "skipped": 0}) == (response.status_code, response.json())
    rows = sorted(sendgrid_sink.rows(), key=lambda r: r["send_key"])
    assert [("k0", "delivered"), ("k1", "delivered"), ("k2", "delivered"), ("k9", "bounce")] == [
        (r["send_key"], r["kind"]) for r in rows
    ]
    assert {e["sg_event_id"] for e in batch} == {r["event_id"] for r in rows}
    assert rows[-1]["detail"].startswith("550 5.1.1")


@pytest.mark.parametrize("age", [-290, 0, 290])
def test_a_genuine_batch_inside_the_window_is_accepted(
    age: int, signer: EventSigner, client: httpx.Client, sendgrid_sink: StoreSink
) -> None:
    body, headers = signer.signed_request(events(1), timestamp=int(time.time()) - age)

    assert 200 == client.post(PATH, content=body, headers=headers).status_code
    assert 1 == len(sendgrid_sink.rows())


def test_a_batch_replayed_46_times_records_each_event_once(
    signer: EventSigner, client: httpx.Client, sendgrid_sink: StoreSink
) -> None:
    body, headers = signer.signed_request(events(5))

    answers = [client.post(PATH, content=body, headers=headers) for _ in range(46)]

    assert [200] * 46 == [a.status_code for a in answers]
    assert [5] + [0] * 45 == [a.json()["recorded"] for a in answers]
    assert 5 == len(sendgrid_sink.rows())


def test_a_genuine_request_signed_for_another_key_is_refused_by_a_channel_with_the_wrong_key(
    make_sendgrid_channel: ChannelFactory,
    serve: Callable[[SendGridChannel], httpx.Client],
    signer: EventSigner,
    sendgrid_sink: StoreSink,
) -> None:
    channel = make_sendgrid_channel(env={"SENDGRID_WEBHOOK_PUBLIC_KEY": EventSigner().public_key_b64})
    body, headers = signer.signed_request(events())

    wrong_key = serve(channel)
    assert 403 == wrong_key.post(PATH, content=body, headers=headers).status_code
    assert [] == sendgrid_sink.rows()


def test_an_oversized_body_is_refused_with_413(
    make_sendgrid_channel: ChannelFactory,
    serve: Callable[[SendGridChannel], httpx.Client],
    signer: EventSigner,
    sendgrid_sink: StoreSink,
) -> None:
    channel = make_sendgrid_channel(webhook_max_body_bytes=2000)
    body, headers = signer.signed_request(events(20))

    small = serve(channel)
    assert 413 == small.post(PATH, content=body, headers=headers).status_code
    assert [] == sendgrid_sink.rows()


@pytest.mark.parametrize("payload", [b"[{not json", b'{"event":"delivered"}', b"[1, 2]"])
def test_signed_but_malformed_json_is_refused_with_400(
    payload: bytes, signer: EventSigner, client: httpx.Client, sendgrid_sink: StoreSink
) -> None:
    body, headers = signer.signed_request(body=payload)

    response = client.post(PATH, content=body, headers=headers)

    assert (400, "Traceback" in response.text) == (response.status_code, False)
    assert [] == sendgrid_sink.rows()


def test_events_without_an_sg_event_id_are_skipped_not_recorded(
    signer: EventSigner, client: httpx.Client, sendgrid_sink: StoreSink
) -> None:
    batch = events(2)
    del batch[1]["sg_event_id"]
    body, headers = signer.signed_request(batch)

    assert {"recorded": 1, "duplicates": 0, "skipped": 1} == client.post(
        PATH, content=body, headers=headers
    ).json()


def test_a_failing_sink_answers_503_so_sendgrid_retries(
    signer: EventSigner, client: httpx.Client, sendgrid_sink: StoreSink
) -> None:
    sendgrid_sink.fail = True
    body, headers = signer.signed_request(events())

    response = client.post(PATH, content=body, headers=headers)

    assert (503, False) == (response.status_code, "Traceback" in response.text)


def test_without_a_verification_key_every_event_is_refused_with_503(
    make_sendgrid_channel: ChannelFactory,
    serve: Callable[[SendGridChannel], httpx.Client],
    signer: EventSigner,
    sendgrid_sink: StoreSink,
) -> None:
    channel = make_sendgrid_channel(env={"SENDGRID_WEBHOOK_PUBLIC_KEY": ""})
    body, headers = signer.signed_request(events())

    unconfigured = serve(channel)
    assert 503 == unconfigured.post(PATH, content=body, headers=headers).status_code
    assert [] == sendgrid_sink.rows()


def test_only_post_is_routed(client: httpx.Client) -> None:
    assert 405 == client.get(PATH).status_code


def test_the_official_sendgrid_test_vector_verifies() -> None:
    key = (
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINX"
        "vVpiglSI8eNEc6wEA3F+g=="
    )
    signature = (
        "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM="
    )
    payload = (
        json.dumps(
            [
                {
                    "email": "hello@world.com",
                    "event": "dropped",
                    "reason": "Bounced Address",
                    "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
                    "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-"
                    "5F5FC76C-9.0",
                    "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
                    "timestamp": 1600112492,
                }
            ],
            sort_keys=True,
            separators=(",", ":"),
        )
        + "\r\n"
    ).encode()
    verifier = SignatureVerifier(key, secret_name="SENDGRID_WEBHOOK_PUBLIC_KEY")

    assert (True, False) == (
        verifier.verify(payload, signature, "1600112502"),
        verifier.verify(payload.rstrip(), signature, "1600112502"),
    )


def test_a_pem_armoured_verification_key_is_accepted(signer: EventSigner) -> None:
    pem = "-----BEGIN PUBLIC KEY-----\n" + signer.public_key_b64 + "\n-----END PUBLIC KEY-----\n"
    body, headers = signer.signed_request(events())

    assert SignatureVerifier(pem, secret_name="K").verify(body, headers[SIG], headers[TS])
