"""Reconciliation from recorded events, the setup check, the options, and the e2e probe."""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import httpx
import pytest
from pydantic import ValidationError

from nps_sync.abc import Channel
from nps_sync.connectors.sendgrid import CONNECTOR, SendGridOptions
from nps_sync.errors import ConfigError
from nps_sync.models import PendingSend
from tests.connectors.sendgrid.fixtures import (
    ChannelFactory,
    SendGridProbe,
    StoreSink,
    WebServer,
    tagged_message,
)
from tests.emulators.sendgrid import SendGridEmulator
from tests.harness import E2EChannel

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def _pending(key: str) -> PendingSend:
    return PendingSend(
        send_key=key, channel="email", to=f"{key}@example.test", claimed_at=datetime.now(timezone.utc)
    )


def _event(sink: StoreSink, event_id: str, kind: str, send_key: str, provider: str = "sendgrid") -> None:
    sink.delivery_event(
        provider=provider, event_id=event_id, event=kind, send_key=send_key, address=None, occurred_at=None
    )


def test_lookup_answers_only_from_events_already_recorded(
    make_sendgrid_channel: ChannelFactory, sendgrid_sink: StoreSink, sendgrid_emulator: SendGridEmulator
) -> None:
    _event(sendgrid_sink, "e1", "processed", "k-delivered")
    _event(sendgrid_sink, "e2", "delivered", "k-delivered")
    _event(sendgrid_sink, "e3", "dropped", "k-dropped")
    _event(sendgrid_sink, "e4", "delivered", "k-other-provider", provider="twilio")
    channel = make_sendgrid_channel()

    found = channel.lookup(
        [_pending(k) for k in ("k-delivered", "k-dropped", "k-silent", "k-other-provider")]
    )

    assert {"k-delivered": ("sent", False), "k-dropped": ("failed", True)} == {
        k: (o.status, o.suppress) for k, o in found.items()
    }
    assert {} == sendgrid_emulator.call_counts()  # no API call: SendGrid has no per-message lookup


def test_check_online_is_clean_with_a_mail_send_key(
    make_sendgrid_channel: ChannelFactory, sendgrid_emulator: SendGridEmulator
) -> None:
    assert [] == make_sendgrid_channel().check(online=True)
    assert {"scopes": 1} == sendgrid_emulator.call_counts()


def test_check_reports_a_key_without_the_mail_send_scope(
    make_sendgrid_channel: ChannelFactory, sendgrid_emulator: SendGridEmulator
) -> None:
    sendgrid_emulator.state.scopes = ["templates.read"]

    problems = make_sendgrid_channel().check(online=True)

    assert 1 == len(problems)
    assert "lacks the 'mail.send' scope" in problems[0]


def test_check_reports_a_refused_key_and_a_missing_verification_key(
    make_sendgrid_channel: ChannelFactory,
) -> None:
    channel = make_sendgrid_channel(env={"SENDGRID_API_KEY": "SG.wrong", "SENDGRID_WEBHOOK_PUBLIC_KEY": ""})

    problems = channel.check(online=True)

    assert 2 == len(problems)
    assert "no Event Webhook verification key in secret SENDGRID_WEBHOOK_PUBLIC_KEY" in problems[0]
    assert "SendGrid refused the API key from secret SENDGRID_API_KEY" in problems[1]
    assert [problems[0]] == channel.check(online=False)


def test_a_missing_api_key_stops_start_up_naming_where_it_looked(
    make_sendgrid_channel: ChannelFactory,
) -> None:
    with pytest.raises(ConfigError) as missing:
        make_sendgrid_channel(env={"SENDGRID_API_KEY": ""})

    assert "environment variable SENDGRID_API_KEY" in str(missing.value)


def test_a_verification_key_that_is_not_a_key_stops_start_up(make_sendgrid_channel: ChannelFactory) -> None:
    with pytest.raises(ConfigError) as bad:
        make_sendgrid_channel(env={"SENDGRID_WEBHOOK_PUBLIC_KEY": "bm90IGEga2V5"})

    assert "secret SENDGRID_WEBHOOK_PUBLIC_KEY is not a SendGrid Event Webhook verification key" in str(
        bad.value
    )


def test_the_connector_spec_describes_an_email_channel(make_sendgrid_channel: ChannelFactory) -> None:
    assert ("sendgrid", "channel", ("email",), SendGridOptions) == (
        CONNECTOR.name,
        CONNECTOR.role,
        CONNECTOR.kinds,
        CONNECTOR.options,
    )
    channel = make_sendgrid_channel()
    assert (True, 1000, "email") == (isinstance(channel, Channel), channel.max_batch, channel.kind)


def test_options_parse_durations_and_default_to_the_global_host() -> None:
    options = SendGridOptions.model_validate({"webhook_max_age": "5m", "timeout": "45s"})

    assert ("https://api.sendgrid.com", 300, 45, "nps-sync") == (
        options.base_url,
        options.webhook_max_age,
        options.timeout,
        options.templates,
    )
    assert "https://api.eu.sendgrid.com" == SendGridOptions(base_url="https://api.eu.sendgrid.com/").base_url


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"templates": "dynamic"}, "needs dynamic_templates.survey"),
        ({"dynamic_templates": {"survey": {"en": "1234"}}}, "dynamic_templates.survey.en must be"),
        ({"webhook_max_age": "0s"}, "webhook_max_age must be positive"),
        ({"webhook_max_age": "soon"}, "webhook_max_age must be seconds or a duration"),
        ({"base_url": "api.sendgrid.com"}, "base_url must be an http(s) URL"),
        ({"asm_group_id": 0}, "asm_group_id must be a positive"),
        ({"categories": [str(n) for n in range(11)]}, "categories allows at most 10"),
        ({"from_address": "x@example.test"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_options_are_refused_with_what_was_expected(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        SendGridOptions.model_validate(options)

    assert message in str(refused.value)


def test_the_e2e_probe_makes_the_emulator_post_signed_events_to_the_daemon(
    channel_e2e_sendgrid: E2EChannel,
    make_sendgrid_channel: ChannelFactory,
    sendgrid_web_server: WebServer,
    sendgrid_emulator: SendGridEmulator,
    sendgrid_sink: StoreSink,
) -> None:
    channel = make_sendgrid_channel()
    sendgrid_web_server.mount(channel.routes())
    probe = channel_e2e_sendgrid.probe
    assert isinstance(probe, SendGridProbe)
    probe.connect(sendgrid_web_server.url)
    messages = [tagged_message(n) for n in range(3)]

    channel.send(messages)
    sendgrid_emulator.wait_events()

    assert [200] == sendgrid_emulator.state.webhook_statuses
    assert sorted((m.send_key, kind) for m in messages for kind in ("delivered", "open")) == sorted(
        (r["send_key"], r["kind"]) for r in sendgrid_sink.rows()
    )
    assert [m.to for m in messages] == [m.to for m in probe.messages()]
    assert {"mail_send": 1} == probe.call_counts()
    assert f'base_url = "{sendgrid_emulator.url}"' in channel_e2e_sendgrid.config_toml
    parsed = tomllib.loads(channel_e2e_sendgrid.config_toml + 'postal_address = "Acme Inc."\n')
    assert ("sendgrid", "Acme Inc.") == (
        parsed["channels"]["email"]["kind"],
        parsed["channels"]["email"]["postal_address"],
    )
    SendGridOptions.model_validate(parsed["channels"]["email"]["sendgrid"])
    assert sendgrid_emulator.signer.public_key_b64 == channel_e2e_sendgrid.env["SENDGRID_WEBHOOK_PUBLIC_KEY"]
    assert 404 == httpx.get(f"{sendgrid_web_server.url}/nothing-here").status_code
