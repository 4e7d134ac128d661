"""Options validation and the pure conversions of the SMTP channel (no relay needed)."""

# The house style is `assert expected == actual`, which SIM300 calls a Yoda condition.

from __future__ import annotations

import sys
from typing import Any

import pytest
from pydantic import ValidationError

from nps_sync import registry
from nps_sync.abc import ConnectorContext
from nps_sync.connectors.smtp import CONNECTOR, SmtpOptions
from nps_sync.connectors.smtp.mapping import fold_ascii, is_loopback, should_suppress
from nps_sync.errors import ConfigError
from nps_sync.secrets import Secrets
from tests.harness import E2EChannel

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef, import-not-found, unused-ignore]


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (550, "5.1.1 <gone@example.test>: no such user", True),
        (550, "5.1.1 The email account that you tried to reach does not exist", True),
        (553, "5.1.3 Invalid address syntax", True),
        (551, "5.1.6 User not local; please try <new@example.test>", True),
        (550, "No such user here", True),
        (550, "Requested action not taken: mailbox unavailable", True),
        (550, "5.7.1 Relaying denied by policy", False),
        (550, "5.7.1 Message rejected as spam", False),
        (552, "5.2.2 Mailbox full", False),
        (554, "5.1.1 no such user", False),
        (450, "4.1.1 no such user (try again)", False),
        (550, "Access denied", False),
    ],
)
def test_only_no_such_user_refusals_suppress_the_address(code: int, text: str, expected: bool) -> None:
    assert expected == should_suppress(code, text)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.0.0.53", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("10.0.0.5", False),
        ("smtp.office365.com", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback_hosts(host: str, expected: bool) -> None:
    assert expected == is_loopback(host)


def test_security_none_is_refused_for_a_remote_relay_with_a_clear_message() -> None:
    with pytest.raises(ValidationError) as raised:
        SmtpOptions.model_validate({"host": "mail.acme.test", "security": "none"})

    message = str(raised.value)
    assert 'security = "none"' in message
    assert "'mail.acme.test'" in message
    assert "127.0.0.1, ::1 or localhost" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_security_none_is_allowed_for_a_relay_on_this_machine(host: str) -> None:
    options = SmtpOptions.model_validate({"host": host, "security": "none"})

    assert 25 == options.effective_port


@pytest.mark.parametrize(
    ("table", "port"),
    [
        ({"host": "smtp.office365.com"}, 587),
        ({"host": "smtp.gmail.com", "security": "tls"}, 465),
        ({"host": "smtp.acme.test", "port": 2525}, 2525),
    ],
)
def test_port_defaults_follow_the_security_mode(table: dict[str, Any], port: int) -> None:
    options = SmtpOptions.model_validate(table)

    assert port == options.effective_port
    assert "starttls" == SmtpOptions.model_validate({"host": "x"}).security


@pytest.mark.parametrize(("value", "seconds"), [(10, 10.0), ("30s", 30.0), ("1m", 60.0), (2.5, 2.5)])
def test_timeout_accepts_seconds_and_durations(value: object, seconds: float) -> None:
    assert seconds == SmtpOptions.model_validate({"host": "x", "timeout": value}).timeout


@pytest.mark.parametrize(
    "table",
    [
        {"host": "x", "timeout": 0},
        {"host": "x", "timeout": "soon"},
        {"host": "x", "max_per_connection": 0},
        {"host": "x", "security": "ssl"},
        {"host": "x", "ca_file": "/nonexistent/relay-ca.pem"},
        {"host": "x", "envelope_from": "Bounces <b@acme.test>"},
        {"host": "x", "password": "hunter2"},
        {"host": ""},
    ],
)
def test_invalid_options_are_refused_at_load(table: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SmtpOptions.model_validate(table)


def test_folding_keeps_each_unsubscribe_url_whole_on_its_own_line() -> None:
    https = "<https://nps.acme.test/u/" + "t" * 120 + ">"
    mailto = "<mailto:unsubscribe@acme.test?subject=" + "t" * 120 + ">"

    assert f"{https},\n {mailto}" == fold_ascii("List-Unsubscribe", f"{https}, {mailto}")
    assert "<https://a.test/u/x>, <mailto:u@a.test>" == fold_ascii(
        "List-Unsubscribe", "<https://a.test/u/x>, <mailto:u@a.test>"
    )


def test_folding_refuses_an_entry_longer_than_998_characters() -> None:
    with pytest.raises(ValueError, match="longer than 998"):
        fold_ascii("List-Unsubscribe", "<https://nps.acme.test/u/" + "t" * 1000 + ">")


def test_factory_requires_the_password_secret_when_a_username_is_set(smtp_context: ConnectorContext) -> None:
    options = SmtpOptions.model_validate({"host": "smtp.acme.test", "username": "nps@acme.test"})
    smtp_context.secrets = Secrets(environ={})

    with pytest.raises(ConfigError, match="environment variable SMTP_PASSWORD"):
        CONNECTOR.factory(options, smtp_context)


def test_factory_needs_no_secret_for_a_relay_without_login(smtp_context: ConnectorContext) -> None:
    smtp_context.secrets = Secrets(environ={})

    channel = CONNECTOR.factory(
        SmtpOptions.model_validate({"host": "localhost", "security": "none"}), smtp_context
    )

    assert "smtp" == channel.name


def test_registry_finds_the_smtp_channel() -> None:
    spec = registry.get("smtp", role="channel", path="channels.email.kind")

    assert CONNECTOR is spec
    assert ("email",) == spec.kinds
    assert SmtpOptions is spec.options


def test_e2e_table_is_valid_toml_whose_smtp_table_validates(channel_e2e_smtp: E2EChannel) -> None:
    config = tomllib.loads(channel_e2e_smtp.config_toml)

    email = config["channels"]["email"]
    assert "smtp" == email["kind"]
    assert "nps@acme.test" == email["from_address"]
    assert email["postal_address"]
    options = SmtpOptions.model_validate(email["smtp"])
    assert "SMTP_PASSWORD" == options.password_secret
    assert {"SMTP_PASSWORD"} == set(channel_e2e_smtp.env)
