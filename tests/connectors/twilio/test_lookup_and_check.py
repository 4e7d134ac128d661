"""Reconciliation (``lookup``) from Twilio's message list, and the setup ``check``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from nps_sync.connectors.twilio import TwilioChannel
from nps_sync.errors import AuthFailed
from nps_sync.models import OutboundMessage, PendingSend, SendOutcome
from nps_sync.store.db import Store
from tests.connectors.twilio.fixtures import FROM_NUMBER, make_channel
from tests.emulators.twilio import Fault, TwilioEmulator

MakeChannel = Callable[..., TwilioChannel]
TO = "+14155550042"


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


def sms(key: str, to: str = TO) -> OutboundMessage:
    return OutboundMessage(send_key=key, channel="sms", to=to, subject="", text=f"Survey {key}")


def pending(key: str, to: str = TO, ago: timedelta = timedelta(seconds=1)) -> PendingSend:
    return PendingSend(send_key=key, channel="sms", to=to, claimed_at=datetime.now(timezone.utc) - ago)


def age_all_messages(emulator: TwilioEmulator, by: timedelta) -> None:
    for message in emulator.messages():
        message.date_created -= by


def test_an_unknown_send_whose_answer_was_lost_is_found_as_sent_with_its_sid(
    twilio_emulator: TwilioEmulator, channel_factory: MakeChannel
) -> None:
    channel = channel_factory()
    twilio_emulator.inject(Fault("messages.create", drop=True))
    claimed = pending("w1:C1")
    [outcome] = channel.send([sms("w1:C1")])
    assert outcome.status == "unknown"

    found = channel.lookup([claimed])

    [message] = twilio_emulator.messages("outbound-api")
    assert found == {"w1:C1": SendOutcome("w1:C1", "sent", provider_id=message.sid)}
    assert twilio_emulator.call_counts()["messages.list"] == 1


def test_a_send_twilio_never_got_is_failed_not_at_provider(
    twilio_emulator: TwilioEmulator, channel_factory: MakeChannel
) -> None:
    found = channel_factory().lookup([pending("w1:C1")])

    assert found == {"w1:C1": SendOutcome("w1:C1", "failed", reason="not at provider")}


def test_older_messages_twiml_replies_and_other_senders_are_not_evidence(
    twilio_emulator: TwilioEmulator, channel_factory: MakeChannel, twilio_hooks_factory: Callable[..., Any]
) -> None:
    channel_factory().send([sms("w0:C1")])
    age_all_messages(twilio_emulator, timedelta(days=3))
    channel_factory(messaging_service_sid=None, from_number=FROM_NUMBER).send([sms("other:C1")])
    hooks = twilio_hooks_factory(stop_confirmation="nps-sync")
    hooks.sender.inbound(TO, "HELP")  # answered by a TwiML reply from the service's number

    found = channel_factory().lookup([pending("w1:C1", ago=timedelta(seconds=5))])

    assert found == {"w1:C1": SendOutcome("w1:C1", "failed", reason="not at provider")}


def test_two_candidate_messages_are_ambiguous_and_left_out(
    twilio_emulator: TwilioEmulator, channel_factory: MakeChannel
) -> None:
    channel = channel_factory()
    channel.send([sms("w1:C1"), sms("w1:C1-again")])

    assert channel.lookup([pending("w1:C1")]) == {}


def test_one_list_call_per_distinct_number_and_paging_through_long_lists(
    twilio_emulator: TwilioEmulator, channel_factory: MakeChannel
) -> None:
    channel = channel_factory(max_batch=60)
    channel.send([sms(f"bulk:{i}", to="+14155550077") for i in range(60)])
    keys = [pending("a:1", "+14155550001"), pending("a:2", "+14155550002"), pending("a:3", "+14155550002")]

    found = channel.lookup([*keys, pending("b:1", "+14155550077")])

    assert found == {k.send_key: SendOutcome(k.send_key, "failed", reason="not at provider") for k in keys}
    # +14155550001, +14155550002 once each; 60 candidates for +14155550077 take two pages of 50.
    assert twilio_emulator.call_counts()["messages.list"] == 4


def test_paging_stops_at_the_first_message_older_than_the_claim(
    twilio_emulator: TwilioEmulator, channel_factory: MakeChannel
) -> None:
    channel = channel_factory(max_batch=120)
    channel.send([sms(f"old:{i}") for i in range(120)])
    age_all_messages(twilio_emulator, timedelta(days=1))
    [sent] = channel.send([sms("w1:C1")])

    found = channel.lookup([pending("w1:C1")])

    assert found == {"w1:C1": SendOutcome("w1:C1", "sent", provider_id=sent.provider_id)}
    assert twilio_emulator.call_counts()["messages.list"] == 1


def test_lookup_without_an_answer_gives_no_evidence_and_auth_failure_raises(
    twilio_emulator: TwilioEmulator, channel_factory: MakeChannel, twilio_store: Store
) -> None:
    twilio_emulator.inject(Fault("messages.list", status=500, code=20500))
    assert channel_factory().lookup([pending("w1:C1")]) == {}

    wrong = make_channel(twilio_emulator, twilio_store, env={"TWILIO_AUTH_TOKEN": "wrong"})
    try:
        with pytest.raises(AuthFailed):
            wrong.lookup([pending("w1:C1")])
    finally:
        wrong.close()


def test_check_online_fetches_the_account_and_the_messaging_service(
    twilio_emulator: TwilioEmulator, channel_factory: MakeChannel
) -> None:
    problems = channel_factory().check(online=True)

    assert problems == []
    assert twilio_emulator.call_counts() == {"accounts.fetch": 1, "services.fetch": 1}


def test_check_reports_an_unknown_messaging_service(channel_factory: MakeChannel) -> None:
    problems = channel_factory(messaging_service_sid="MG" + "f" * 32).check(online=True)

    assert len(problems) == 1
    assert "fetch messaging service: HTTP 404, code 20404" in problems[0]


def test_check_reports_bad_credentials_online_and_a_plain_http_public_url_offline(
    twilio_emulator: TwilioEmulator, twilio_store: Store
) -> None:
    wrong = make_channel(
        twilio_emulator, twilio_store, env={"TWILIO_AUTH_TOKEN": "wrong"}, public_url="http://nps.example.com"
    )
    try:
        online, offline = wrong.check(online=True), wrong.check(online=False)
    finally:
        wrong.close()

    assert offline == [
        "public_url is 'http://nps.example.com': Twilio webhooks should reach nps-sync over https"
    ]
    assert len(online) == 2
    assert online[0] == offline[0]
    assert "fetch account: HTTP 401, code 20003" in online[1]
    assert twilio_emulator.call_counts() == {"accounts.fetch": 1}
