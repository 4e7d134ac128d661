"""Sending through the real twilio SDK against the emulator: exact calls, outcomes, errors."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from nps_sync.connectors.twilio import TwilioChannel
from nps_sync.errors import AuthFailed, ConnectorUnavailable, RateLimited
from nps_sync.models import OutboundMessage, PendingSend
from nps_sync.store.db import Store
from tests.connectors.twilio.fixtures import (
    API_KEY_SECRET,
    API_KEY_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    PUBLIC_URL,
    SERVICE_NUMBER,
    SERVICE_SID,
    make_channel,
)
from tests.emulators.twilio import SPEC_MISSING, Fault, TwilioEmulator

MakeChannel = Callable[..., TwilioChannel]


@pytest.fixture
def channel_factory(twilio_emulator: TwilioEmulator) -> Iterator[MakeChannel]:
    built: list[TwilioChannel] = []
    store = Store("sqlite://")

    def make(**options: Any) -> TwilioChannel:
        channel = make_channel(twilio_emulator, store, **options)
        built.append(channel)
        return channel

    yield make
    for channel in built:
        channel.close()
    store.dispose()


def sms(i: int, to: str | None = None) -> OutboundMessage:
    return OutboundMessage(
        send_key=f"wave1:C{i:04d}:sms",
        channel="sms",
        to=to or f"+1415555{i:04d}",
        subject="",
        text=f"Hi {i}, how likely are you to recommend us? Reply 0-10. Reply STOP to opt out.",
    )


def test_each_sms_is_exactly_one_create_call_with_a_status_callback_carrying_the_send_key(
    twilio_emulator: TwilioEmulator, channel_factory: MakeChannel
) -> None:
    channel = channel_factory()
    messages = [sms(i) for i in range(7)]

    outcomes = channel.send(messages)

    assert [("sent", m.send_key) for m in messages] == [(o.status, o.send_key) for o in outcomes]
    accepted = twilio_emulator.messages("outbound-api")
    assert {o.provider_id for o in outcomes} == {m.sid for m in accepted}
    assert twilio_emulator.call_counts() == {"messages.create": 7, "messages.accepted": 7}
    by_key = {parse_qs(urlsplit(m.status_callback or "").query)["k"][0]: m for m in accepted}
    assert {m.send_key for m in messages} == set(by_key)
    first = by_key[messages[0].send_key]
    assert f"{PUBLIC_URL}/hooks/twilio/status?k=wave1%3AC0000%3Asms" == first.status_callback
    assert (messages[0].to, messages[0].text, SERVICE_SID, SERVICE_NUMBER) == (
        first.to, first.body, first.messaging_service_sid, first.from_
    )  # fmt: skip
    assert twilio_emulator.spec_problems == []


def test_create_requests_match_the_official_openapi_spec(
    twilio_emulator: TwilioEmulator, channel_factory: MakeChannel
) -> None:
    if twilio_emulator.spec is None or not twilio_emulator.spec.available:
        pytest.skip(SPEC_MISSING)
    channel_factory().send([sms(1)])
    channel_factory(messaging_service_sid=None, from_number=FROM_NUMBER).send([sms(2)])
    channel_factory().lookup([PendingSend("k", "sms", "+14155550001", datetime.now(timezone.utc))])

    assert twilio_emulator.spec_problems == []
    assert twilio_emulator.call_counts()["messages.accepted"] == 2


def test_from_number_sender_is_used_when_no_messaging_service_is_configured(
    twilio_emulator: TwilioEmulator, channel_factory: MakeChannel
) -> None:
    channel = channel_factory(messaging_service_sid=None, from_number=FROM_NUMBER)

    [outcome] = channel.send([sms(1)])

    [message] = twilio_emulator.messages("outbound-api")
    assert (outcome.status, message.from_, message.messaging_service_sid) == ("sent", FROM_NUMBER, None)


def test_api_key_credentials_authenticate_rest_calls(
    twilio_emulator: TwilioEmulator, twilio_store: Store
) -> None:
    channel = make_channel(
        twilio_emulator,
        twilio_store,
        env={"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_API_KEY_SECRET": API_KEY_SECRET},
        api_key_sid=API_KEY_SID,
        api_key_secret_secret="TWILIO_API_KEY_SECRET",
    )
    try:
        assert [o.status for o in channel.send([sms(1)])] == ["sent"]
    finally:
        channel.close()


def test_opted_out_recipient_fails_with_suppress_after_exactly_one_call(
    twilio_emulator: TwilioEmulator, channel_factory: MakeChannel
) -> None:
    twilio_emulator.opt_out(SERVICE_SID, "+14155550001")
    channel = channel_factory()

    outcomes = channel.send([sms(1), sms(2)])

    assert [(o.status, o.suppress) for o in outcomes] == [("failed", True), ("sent", False)]
    assert "21610" in (outcomes[0].reason or "")
    assert twilio_emulator.call_counts() == {"messages.create": 2, "messages.accepted": 1}


def test_opt_out_at_one_sender_does_not_block_another_sender(
    twilio_emulator: TwilioEmulator, channel_factory: MakeChannel
) -> None:
    twilio_emulator.opt_out(SERVICE_SID, "+14155550001")
    channel = channel_factory(messaging_service_sid=None, from_number=FROM_NUMBER)

    assert [o.status for o in channel.send([sms(1)])] == ["sent"]


@pytest.mark.parametrize(
    ("to", "code", "suppress"),
    [("4155550001", "21211", True), ("+14155550002", "21614", True), ("+14155550003", "21617", False)],
)
def test_refused_recipients_fail_with_the_twilio_code_and_suppress_only_invalid_numbers(
    twilio_emulator: TwilioEmulator, channel_factory: MakeChannel, to: str, code: str, suppress: bool
) -> None:
    twilio_emulator.state.landlines.add("+14155550002")
    message = sms(1, to=to)
    if code == "21617":
        message = OutboundMessage(send_key="k", channel="sms", to=to, subject="", text="x" * 1601)

    [outcome] = channel_factory().send([message])

    assert ("failed", suppress) == (outcome.status, outcome.suppress)
    assert code in (outcome.reason or "")
    assert twilio_emulator.call_counts()["messages.create"] == 1


def test_server_errors_before_acceptance_are_retried_and_sent_once(
    twilio_emulator: TwilioEmulator, channel_factory: MakeChannel
) -> None:
    twilio_emulator.inject(Fault("messages.create", status=503, code=20503), times=2)

    [outcome] = channel_factory().send([sms(1)])

    assert outcome.status == "sent"
    assert twilio_emulator.call_counts() == {"messages.create": 3, "messages.accepted": 1}


def test_a_batch_refused_entirely_by_server_errors_raises_retryable_and_sends_nothing(
    twilio_emulator: TwilioEmulator, channel_factory: MakeChannel
) -> None:
    twilio_emulator.inject(Fault("messages.create", status=500, code=20500), times=4)

    with pytest.raises(ConnectorUnavailable):
        channel_factory(max_attempts=2, concurrency=1).send([sms(1), sms(2)])

    assert twilio_emulator.call_counts() == {"messages.create": 4}


def test_an_answer_lost_after_acceptance_is_unknown_and_never_resent(
    twilio_emulator: TwilioEmulator, channel_factory: MakeChannel
) -> None:
    twilio_emulator.inject(Fault("messages.create", drop=True))

    outcomes = channel_factory(concurrency=1).send([sms(1), sms(2)])

    assert [o.status for o in outcomes] == ["unknown", "sent"]
    assert twilio_emulator.call_counts() == {"messages.create": 2, "messages.accepted": 2}


def test_a_timeout_after_the_request_left_is_unknown_and_never_resent(
    twilio_emulator: TwilioEmulator, channel_factory: MakeChannel
) -> None:
    twilio_emulator.inject(Fault("messages.create", stall=1.5))

    [outcome] = channel_factory(timeout_seconds=0.5).send([sms(1)])

    assert outcome.status == "unknown"
    assert {"messages.create": 1, "messages.accepted": 1} == twilio_emulator.call_counts()


def test_a_refused_connection_is_retryable_because_nothing_left(twilio_store: Store) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    dead = TwilioEmulator(account_sid="AC" + "0" * 32, auth_token="x")
    dead.url = f"http://127.0.0.1:{port}"
    channel = make_channel(dead, twilio_store, max_attempts=2)
    try:
        with pytest.raises(ConnectorUnavailable, match="twilio unreachable"):
            channel.send([sms(1)])
    finally:
        channel.close()


def test_wrong_auth_token_raises_auth_failed_and_stops_the_batch(
    twilio_emulator: TwilioEmulator, twilio_store: Store
) -> None:
    channel = make_channel(twilio_emulator, twilio_store, env={"TWILIO_AUTH_TOKEN": "wrong"}, concurrency=1)
    try:
        with pytest.raises(AuthFailed):
            channel.send([sms(i) for i in range(5)])
    finally:
        channel.close()
    assert twilio_emulator.call_counts() == {"messages.create": 1}


def test_under_the_account_cap_200_sms_meet_no_20429(
    twilio_emulator: TwilioEmulator, channel_factory: MakeChannel
) -> None:
    twilio_emulator.concurrency_limit = 5
    twilio_emulator.create_delay = 0.01
    # The first creates wait until 4 are in flight together: with fewer workers they would time out
    # at 3 or less; a busy machine no longer decides whether the 4 overlap.
    twilio_emulator.gather_in_flight = 4
    channel = channel_factory(concurrency=4, max_batch=200)
    messages = [sms(i) for i in range(200)]

    outcomes = channel.send(messages)

    assert [o.status for o in outcomes] == 200 * ["sent"]
    counts = twilio_emulator.call_counts()
    assert (counts["messages.create"], counts["messages.accepted"], counts.get("rejected.20429", 0)) == (
        200,
        200,
        0,
    )
    assert twilio_emulator.max_in_flight == 4


def test_above_the_account_cap_20429s_are_retried_and_nothing_is_sent_twice(
    twilio_emulator: TwilioEmulator, channel_factory: MakeChannel
) -> None:
    twilio_emulator.concurrency_limit = 2
    twilio_emulator.create_delay = 0.02
    channel = channel_factory(concurrency=8, max_batch=60, max_attempts=10)
    messages = [sms(i) for i in range(60)]

    outcomes = channel.send(messages)

    assert [o.status for o in outcomes] == 60 * ["sent"]
    counts = twilio_emulator.call_counts()
    assert counts["rejected.20429"] > 0
    delivered = Counter((m.to, m.body) for m in twilio_emulator.messages("outbound-api"))
    assert {(m.to, m.text): 1 for m in messages} == dict(delivered)


def test_rate_limited_everywhere_raises_rate_limited_for_the_core_to_back_off(
    twilio_emulator: TwilioEmulator, channel_factory: MakeChannel
) -> None:
    twilio_emulator.inject(Fault("messages.create", status=429, code=20429), times=3)

    with pytest.raises(RateLimited):
        channel_factory(max_attempts=3).send([sms(1)])

    assert twilio_emulator.call_counts() == {"messages.create": 3}
