"""Fixtures of the chaos suite: a fast Twilio emulator (no per-request OpenAPI check: thousands of
sends go through it, and its wire format is proven by the Twilio connector's own tests)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.connectors.twilio.fixtures import ACCOUNT_SID, AUTH_TOKEN, SERVICE_NUMBER, SERVICE_SID
from tests.emulators.twilio import TwilioEmulator


@dataclass
class Provider:
    emulator: TwilioEmulator
    config_toml: str
    env: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def fast_twilio() -> Iterator[Provider]:
    emulator = TwilioEmulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, validate_spec=False)
    emulator.add_service(SERVICE_SID, [SERVICE_NUMBER])
    emulator.start()
    toml = f"""\
[channels.sms]
kind = "twilio"

[channels.sms.twilio]
account_sid = "{ACCOUNT_SID}"
auth_token_secret = "TWILIO_AUTH_TOKEN"
messaging_service_sid = "{SERVICE_SID}"
base_url = "{emulator.url}"
messages_per_second = 1000
"""
    yield Provider(emulator, toml, {"TWILIO_AUTH_TOKEN": AUTH_TOKEN})
    emulator.stop()
