"""``[channels.sms.twilio]`` options, secrets by name, sender rates and SMS segments."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from pydantic import ValidationError

from nps_sync.connectors.twilio import CONNECTOR, TwilioOptions
from nps_sync.connectors.twilio.mapping import segments
from nps_sync.errors import ConfigError
from nps_sync.models import OutboundMessage
from nps_sync.store.db import Store
from tests.connectors.twilio.fixtures import (
    ACCOUNT_SID,
    FROM_NUMBER,
    SERVICE_SID,
    RecordingSink,
    TwilioProbe,
    WebApp,
    make_channel,
)
from tests.emulators.twilio import TwilioEmulator
from tests.harness import E2EChannel

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BASE: dict[str, Any] = {"account_sid": ACCOUNT_SID, "messaging_service_sid": SERVICE_SID}


def test_spec_declares_an_sms_channel() -> None:
    assert (CONNECTOR.name, CONNECTOR.role, CONNECTOR.kinds, CONNECTOR.options) == (
        "twilio", "channel", ("sms",), TwilioOptions
    )  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"from_number": FROM_NUMBER}, "set exactly one of messaging_service_sid"),
        ({"messaging_service_sid": None}, "set exactly one of messaging_service_sid"),
        ({"api_key_sid": "SK" + "1" * 32}, "api_key_sid and api_key_secret_secret go together"),
        ({"account_sid": "AC123"}, "String should match pattern"),
        ({"messaging_service_sid": "XX" + "1" * 32}, "String should match pattern"),
        ({"base_url": "ftp://127.0.0.1"}, "base_url must start with http:// or https://"),
        ({"concurrency": 100}, "less than or equal to 50"),
        ({"stop_confirmation": "both"}, "'nps-sync' or 'twilio'"),
        ({"auth_token": "secret-in-the-config"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_options_are_refused_with_a_message_naming_the_problem(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        TwilioOptions.model_validate({**BASE, **change})


@pytest.mark.parametrize(
    ("options", "rate"),
    [
        ({}, 1.0),
        ({"sender_type": "toll_free"}, 3.0),
        ({"sender_type": "short_code"}, 100.0),
        ({"sender_type": "international"}, 10.0),
        ({"sender_type": "short_code", "messages_per_second": 30}, 30.0),
    ],
)
def test_send_rate_follows_the_sender_type_unless_set_explicitly(
    options: dict[str, Any], rate: float
) -> None:
    assert TwilioOptions.model_validate({**BASE, **options}).rate == rate


def test_defaults_are_safe_for_twilio() -> None:
    options = TwilioOptions.model_validate(BASE)
    assert (options.concurrency, options.stop_confirmation, options.auth_token_secret) == (
        10, "twilio", "TWILIO_AUTH_TOKEN"
    )  # fmt: skip


def test_a_missing_secret_is_a_config_error_naming_where_it_was_looked_for(
    twilio_emulator: TwilioEmulator,
) -> None:
    with pytest.raises(ConfigError, match="environment variable NPS_TWILIO_TOKEN"):
        make_channel(twilio_emulator, Store("sqlite://"), env={}, auth_token_secret="NPS_TWILIO_TOKEN")


@pytest.mark.parametrize(
    ("text", "count"),
    [("x" * 160, 1), ("x" * 161, 2), ("x" * 306, 2), ("x" * 307, 3), ("€" * 80, 1), ("€" * 81, 2),
     ("é" * 160, 1), ("ł" * 70, 1), ("ł" * 71, 2), ("👍" * 35, 1), ("👍" * 36, 2)],
)  # fmt: skip
def test_segments_count_gsm7_and_ucs2_the_way_twilio_bills_them(text: str, count: int) -> None:
    assert segments(text) == count


def test_e2e_fixture_config_builds_a_channel_whose_probe_sees_sends_replies_and_callbacks(
    channel_e2e_twilio: E2EChannel, twilio_emulator: TwilioEmulator, twilio_store: Store
) -> None:
    table = tomllib.loads(channel_e2e_twilio.config_toml)["channels"]["sms"]
    assert table["kind"] == "twilio"
    sink = RecordingSink(twilio_store)
    probe = channel_e2e_twilio.probe
    assert isinstance(probe, TwilioProbe)
    app = WebApp()  # the e2e daemon's public URL is its own address
    env, options = channel_e2e_twilio.env, table["twilio"]
    channel = make_channel(
        twilio_emulator, twilio_store, public_url=app.url, inbound=sink, env=env, **options
    )
    app.channel = channel
    with app:
        probe.connect(app.url)
        [outcome] = channel.send([OutboundMessage("e2e:C1:sms", "sms", "+12125551000", "", "Rate us 0-10")])
        probe.reply("+12125551000", "9 great")
        probe.sender.drain()
    channel.close()

    [received] = probe.messages("+12125551000")
    assert (outcome.status, received.send_key, received.text) == ("sent", "e2e:C1:sms", "Rate us 0-10")
    kinds = sorted(e["kind"] for e in sink.events())
    assert kinds == ["delivered", "sent", "sms"]
    assert probe.call_counts()["messages.create"] == 1
