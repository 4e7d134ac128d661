"""How SendGrid's refusals and lost answers become outcomes or errors (never a blind resend)."""

from __future__ import annotations

import socket

import pytest

from nps_sync.errors import AuthFailed, ConnectorUnavailable, RateLimited
from tests.connectors.sendgrid.fixtures import ChannelFactory, tagged_message
from tests.emulators.sendgrid import SendGridEmulator


def test_field_errors_fail_those_messages_with_the_reason_after_one_call(
    sendgrid_emulator: SendGridEmulator, make_sendgrid_channel: ChannelFactory
) -> None:
    bad = [
        m.__class__(**{**m.__dict__, "sender": "Acme <not-an-address>"})
        for m in map(tagged_message, range(3))
    ]

    outcomes = make_sendgrid_channel().send(bad)

    assert ["failed"] * 3 == [o.status for o in outcomes]
    assert all("SendGrid refused the request (400): from.email: " in (o.reason or "") for o in outcomes)
    assert {"mail_send": 1} == sendgrid_emulator.call_counts()


def test_a_refused_group_fails_alone_while_the_other_group_is_sent(
    sendgrid_emulator: SendGridEmulator, make_sendgrid_channel: ChannelFactory
) -> None:
    good = tagged_message(1)
    bad = tagged_message(2, language="de")
    bad = bad.__class__(**{**bad.__dict__, "to": "no-at-sign.example.test"})

    outcomes = make_sendgrid_channel().send([good, bad])

    assert ["sent", "failed"] == [o.status for o in outcomes]
    assert "(400): personalizations.0.to.0.email: " in (outcomes[1].reason or "")
    assert ({"mail_send": 2}, [good.to]) == (
        sendgrid_emulator.call_counts(),
        [m.to for m in sendgrid_emulator.messages()],
    )


def test_a_wrong_api_key_raises_auth_failed(
    sendgrid_emulator: SendGridEmulator, make_sendgrid_channel: ChannelFactory
) -> None:
    channel = make_sendgrid_channel(env={"SENDGRID_API_KEY": "SG.revoked"})

    with pytest.raises(AuthFailed) as refused:
        channel.send([tagged_message(1)])

    assert 401 == refused.value.status
    assert ({"mail_send": 1}, []) == (sendgrid_emulator.call_counts(), sendgrid_emulator.messages())


def test_429_raises_rate_limited_with_retry_after_and_nothing_accepted(
    sendgrid_emulator: SendGridEmulator, make_sendgrid_channel: ChannelFactory
) -> None:
    sendgrid_emulator.fail_next(429, retry_after=7)

    with pytest.raises(RateLimited) as limited:
        make_sendgrid_channel().send([tagged_message(n) for n in range(5)])

    assert (429, 7.0) == (limited.value.status, limited.value.retry_after)
    assert ({"mail_send": 1}, []) == (sendgrid_emulator.call_counts(), sendgrid_emulator.messages())


def test_500_raises_connector_unavailable_with_nothing_accepted(
    sendgrid_emulator: SendGridEmulator, make_sendgrid_channel: ChannelFactory
) -> None:
    sendgrid_emulator.fail_next(500)

    with pytest.raises(ConnectorUnavailable) as unavailable:
        make_sendgrid_channel().send([tagged_message(n) for n in range(5)])

    assert (500, False) == (unavailable.value.status, isinstance(unavailable.value, RateLimited))
    assert ({"mail_send": 1}, []) == (sendgrid_emulator.call_counts(), sendgrid_emulator.messages())


def test_an_unreachable_host_raises_connector_unavailable(make_sendgrid_channel: ChannelFactory) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    channel = make_sendgrid_channel(base_url=f"http://127.0.0.1:{closed}")

    with pytest.raises(ConnectorUnavailable):
        channel.send([tagged_message(1)])


def test_a_reset_after_the_request_left_gives_unknown_and_no_resend(
    sendgrid_emulator: SendGridEmulator, make_sendgrid_channel: ChannelFactory
) -> None:
    sendgrid_emulator.fail_next(0)
    messages = [tagged_message(n) for n in range(4)]

    outcomes = make_sendgrid_channel().send(messages)

    assert ["unknown"] * 4 == [o.status for o in outcomes]
    assert {"mail_send": 1} == sendgrid_emulator.call_counts()
    assert 4 == len(sendgrid_emulator.messages())  # SendGrid did take them: reconcile, never resend


def test_a_timeout_waiting_for_the_answer_gives_unknown_and_no_resend(
    sendgrid_emulator: SendGridEmulator, make_sendgrid_channel: ChannelFactory
) -> None:
    sendgrid_emulator.fail_next(1, seconds=2.5)

    outcomes = make_sendgrid_channel(timeout=1).send([tagged_message(1), tagged_message(2)])

    assert ["unknown", "unknown"] == [o.status for o in outcomes]
    assert {"mail_send": 1} == sendgrid_emulator.call_counts()


def test_a_later_request_refused_with_500_is_retried_because_nothing_of_it_was_accepted(
    sendgrid_emulator: SendGridEmulator, make_sendgrid_channel: ChannelFactory
) -> None:
    sendgrid_emulator.fail_next(500, times=2, after=1)
    messages = [tagged_message(1), tagged_message(2, language="de")]

    outcomes = make_sendgrid_channel().send(messages)

    assert ["sent", "sent"] == [o.status for o in outcomes]
    assert {"mail_send": 1 + 3} == sendgrid_emulator.call_counts()
    assert [m.to for m in messages] == [m.to for m in sendgrid_emulator.messages()]


def test_after_an_accepted_request_a_persistently_refused_one_comes_back_failed(
    sendgrid_emulator: SendGridEmulator, make_sendgrid_channel: ChannelFactory
) -> None:
    sendgrid_emulator.fail_next(503, times=3, after=1)
    messages = [tagged_message(1), tagged_message(2, language="de")]

    outcomes = make_sendgrid_channel().send(messages)

    assert ["sent", "failed"] == [o.status for o in outcomes]
    assert [False, True] == [o.transient for o in outcomes]  # the core queues the refused one again
    assert (outcomes[1].reason or "").startswith(
        "not sent: POST /v3/mail/send: SendGrid refused the request (503)"
    )
    assert {"mail_send": 1 + 3} == sendgrid_emulator.call_counts()
    assert [messages[0].to] == [m.to for m in sendgrid_emulator.messages()]


def test_a_500_after_only_refusals_is_raised_because_nothing_was_accepted(
    sendgrid_emulator: SendGridEmulator, make_sendgrid_channel: ChannelFactory
) -> None:
    first = tagged_message(1)
    first = first.__class__(**{**first.__dict__, "sender": "Acme <not-an-address>"})
    sendgrid_emulator.fail_next(500, after=1)

    with pytest.raises(ConnectorUnavailable):
        make_sendgrid_channel().send([first, tagged_message(2)])

    assert ({"mail_send": 2}, []) == (sendgrid_emulator.call_counts(), sendgrid_emulator.messages())


def test_a_later_request_meeting_429_is_retried_after_retry_after(
    sendgrid_emulator: SendGridEmulator, make_sendgrid_channel: ChannelFactory
) -> None:
    sendgrid_emulator.fail_next(429, after=1, retry_after=0)

    outcomes = make_sendgrid_channel().send([tagged_message(1), tagged_message(2, language="de")])

    assert (["sent", "sent"], {"mail_send": 3}) == (
        [o.status for o in outcomes],
        sendgrid_emulator.call_counts(),
    )
