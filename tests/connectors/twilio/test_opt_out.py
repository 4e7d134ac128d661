"""STOP/START/HELP end to end through the signed inbound webhook (R9 for Twilio): at most one
confirmation reaches the person, whoever sends it; an opt-out at Twilio turns into 21610 + suppress."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from nps_sync.models import OutboundMessage
from tests.connectors.twilio.fixtures import (
    HELP_TEXT,
    SERVICE_SID,
    START_CONFIRMATION,
    STOP_CONFIRMATION,
    Hooks,
)
from tests.emulators.twilio import TwilioEmulator
from tests.emulators.twilio.hooks import TWILIO_HELP_REPLY, TWILIO_STOP_REPLY

EXACT_KEYWORDS = ["STOP", "stop", "Stop", " STOP ", "STOPALL", "UNSUBSCRIBE", "Unsubscribe", "CANCEL", "end",
                  "QUIT", "REVOKE", "OPTOUT"]  # fmt: skip
OTHER_STOPS = ["Stop.", "STOP!!", "stop all", "opt out", "Opt-Out", "please stop", "Stop texting me"]
VARIANTS = EXACT_KEYWORDS + OTHER_STOPS


def number(i: int) -> str:
    return f"+1415556{i:04d}"


def test_with_nps_sync_confirming_every_stop_variant_gets_exactly_one_confirmation(
    twilio_hooks_factory: Callable[..., Hooks],
) -> None:
    hooks = twilio_hooks_factory(stop_confirmation="nps-sync")
    hooks.sender.twilio_answers_keywords = False

    replies = {
        variant: hooks.sender.inbound(number(i), variant).replies for i, variant in enumerate(VARIANTS)
    }

    assert {variant: [STOP_CONFIRMATION] for variant in VARIANTS} == replies
    reaching_the_people = [m.body for m in hooks.sender.em.messages("outbound-reply")]
    assert len(VARIANTS) * [STOP_CONFIRMATION] == reaching_the_people


def test_with_twilio_confirming_no_stop_variant_gets_a_confirmation_from_us_and_at_most_one_in_all(
    twilio_hooks_factory: Callable[..., Hooks],
) -> None:
    hooks = twilio_hooks_factory(stop_confirmation="twilio")
    hooks.sender.twilio_answers_keywords = True
    ours: dict[str, list[str]] = {}
    reaching_the_person: dict[str, list[str]] = {}

    for i, variant in enumerate(VARIANTS):
        ours[variant] = hooks.sender.inbound(number(i), variant).replies
        reaching_the_person[variant] = [
            m.body for m in hooks.sender.em.messages("outbound-reply") if m.to == number(i)
        ]

    assert {variant: [] for variant in VARIANTS} == ours
    expected = {v: [TWILIO_STOP_REPLY] if v in EXACT_KEYWORDS else [] for v in VARIANTS}
    assert expected == reaching_the_person
    assert len(VARIANTS) == hooks.sink.count()


def test_stop_at_twilio_blocks_the_next_send_with_21610_and_suppress_until_start(
    twilio_hooks_factory: Callable[..., Hooks], twilio_emulator: TwilioEmulator
) -> None:
    hooks = twilio_hooks_factory(stop_confirmation="nps-sync")
    survey = OutboundMessage("wave3:C1:sms", "sms", number(1), "", "Rate us 0-10")

    hooks.sender.inbound(number(1), "STOP")
    assert {(SERVICE_SID, number(1))} == twilio_emulator.state.opt_outs
    [blocked] = hooks.channel.send([survey])
    hooks.sender.inbound(number(1), "START")
    [resumed] = hooks.channel.send([OutboundMessage("wave4:C1:sms", "sms", number(1), "", "Rate us 0-10")])

    assert (blocked.status, blocked.suppress, resumed.status) == ("failed", True, "sent")
    assert "21610" in (blocked.reason or "")
    assert set() == twilio_emulator.state.opt_outs
    assert twilio_emulator.call_counts()["messages.create"] == 2


def test_help_is_answered_by_us_unless_twilio_answered_it(twilio_hooks_factory: Callable[..., Hooks]) -> None:
    ours = twilio_hooks_factory(stop_confirmation="nps-sync")
    theirs = twilio_hooks_factory(stop_confirmation="twilio")
    theirs.sender.twilio_answers_keywords = True

    assert ours.sender.inbound(number(1), "HELP").replies == [HELP_TEXT]
    assert theirs.sender.inbound(number(2), "HELP").replies == []
    assert [m.body for m in theirs.sender.em.messages("outbound-reply") if m.to == number(2)] == [
        TWILIO_HELP_REPLY
    ]


def test_start_confirmation_from_us_still_goes_out_when_twilio_does_not_answer_keywords(
    twilio_hooks_factory: Callable[..., Hooks],
) -> None:
    hooks = twilio_hooks_factory(stop_confirmation="twilio")

    assert hooks.sender.inbound(number(1), "START").replies == [START_CONFIRMATION]


@pytest.mark.parametrize("body", ["9", "10 great support", "the end of support was great"])
def test_scores_and_comments_get_an_empty_twiml_response(
    twilio_hooks_factory: Callable[..., Hooks], body: str
) -> None:
    hooks = twilio_hooks_factory(stop_confirmation="nps-sync")

    posted = hooks.sender.inbound(number(1), body)

    assert (posted.status, posted.body) == (200, '<?xml version="1.0" encoding="UTF-8"?><Response/>')
