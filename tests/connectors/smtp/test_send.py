"""The SMTP channel against a real relay (aiosmtpd on 127.0.0.1): what arrives, how many connections,
and what each way of failing turns into."""

# The house style is `assert expected == actual`, which SIM300 calls a Yoda condition.

from __future__ import annotations

import sys
from typing import Any

import pytest

from nps_sync.abc import ConnectorContext
from nps_sync.connectors.smtp import CONNECTOR, SmtpChannel, SmtpOptions
from nps_sync.errors import AuthFailed, ConnectorUnavailable
from nps_sync.models import OutboundMessage, SendOutcome
from nps_sync.secrets import Secrets
from tests.connectors.smtp.fixtures import Relay, TlsFiles
from tests.harness import E2EChannel

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef, import-not-found, unused-ignore]

TOKEN = "eyJzIjoic2stMDAwMSIsImMiOiJDMDEifQ.ZmFrZS1zaWduYXR1cmUtZm9yLXRlc3RzLW9ubHktMDEyMzQ1Njc4OQ"
UNSUBSCRIBE = (
    f"<https://nps.acme.test/u/{TOKEN}>, <mailto:unsubscribe@acme.test?subject=unsubscribe%20{TOKEN}>"
)
SUBJECT = "Würden Sie uns weiterempfehlen? Ihre Meinung zählt – Grüße aus Köln"
TEXT = "Hallo Jürgen,\n\nwie wahrscheinlich ist es, dass Sie uns weiterempfehlen?\n.Punkt am Zeilenanfang\n"
HTML = "<p>Hallo Jürgen,</p><p>wie wahrscheinlich ist es … <a href='https://nps.acme.test/s/1'>10</a></p>\n"


def outbound(number: int, *, to: str | None = None, html: str | None = HTML) -> OutboundMessage:
    return OutboundMessage(
        send_key=f"sk-{number:04d}",
        channel="email",
        to=to or f"kunde{number}@example.test",
        subject=SUBJECT,
        text=TEXT,
        html=html,
        headers={"List-Unsubscribe": UNSUBSCRIBE, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        sender="Acme Kundenservice <nps@acme.test>",
        reply_to="service@acme.test",
    )


def channel_for(relay: Relay, ctx: ConnectorContext, **overrides: Any) -> SmtpChannel:
    channel = CONNECTOR.factory(SmtpOptions.model_validate(relay.options(**overrides)), ctx)
    assert isinstance(channel, SmtpChannel)
    return channel


def crlf_to_lf(text: str) -> str:
    """SMTP carries CRLF line ends; the parsed body keeps them."""
    return text.replace("\r\n", "\n")


def statuses(outcomes: list[SendOutcome]) -> list[tuple[str, str]]:
    return [(o.send_key, o.status) for o in outcomes]


def test_delivered_message_carries_one_click_headers_send_key_and_both_parts(
    smtp_relay: Relay, smtp_context: ConnectorContext
) -> None:
    outcomes = channel_for(smtp_relay, smtp_context).send([outbound(1)])

    assert [("sk-0001", "sent")] == statuses(outcomes)
    [mail] = smtp_relay.handler.mails
    assert "nps@acme.test" == mail.mail_from
    assert ("kunde1@example.test",) == mail.rcpt_tos
    message = mail.parsed()
    assert UNSUBSCRIBE == message["List-Unsubscribe"]
    assert "List-Unsubscribe=One-Click" == message["List-Unsubscribe-Post"]
    assert "sk-0001" == message["X-NPS-Send-Key"]
    assert SUBJECT == message["Subject"]
    assert "Acme Kundenservice <nps@acme.test>" == message["From"]
    assert "kunde1@example.test" == message["To"]
    assert "service@acme.test" == message["Reply-To"]
    assert outcomes[0].provider_id == message["Message-ID"]
    assert message["Message-ID"].endswith("@acme.test>")
    assert message["Date"] is not None
    assert "multipart/alternative" == message.get_content_type()
    text_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    assert text_part is not None
    assert html_part is not None
    assert TEXT == crlf_to_lf(text_part.get_content())
    assert HTML == crlf_to_lf(html_part.get_content())
    assert "utf-8" == text_part.get_content_charset()


def test_message_without_html_is_a_single_text_part(
    smtp_relay: Relay, smtp_context: ConnectorContext
) -> None:
    channel_for(smtp_relay, smtp_context).send([outbound(1, html=None)])

    message = smtp_relay.handler.mails[0].parsed()
    assert "text/plain" == message.get_content_type()
    assert TEXT == crlf_to_lf(message.get_content())


def test_every_line_of_the_wire_message_is_7bit_so_any_relay_passes_it(
    smtp_relay: Relay, smtp_context: ConnectorContext
) -> None:
    channel_for(smtp_relay, smtp_context).send([outbound(1)])

    content = smtp_relay.handler.mails[0].content
    assert content.isascii()
    assert max(len(line) for line in content.split(b"\r\n")) <= 998


def test_list_unsubscribe_goes_on_the_wire_as_plain_urls_not_encoded_words(
    smtp_relay: Relay, smtp_context: ConnectorContext
) -> None:
    """Mailbox providers read List-Unsubscribe raw: an RFC 2047 encoded word would hide the URLs."""
    channel_for(smtp_relay, smtp_context).send([outbound(1)])

    content = smtp_relay.handler.mails[0].content
    head = content.split(b"\r\n\r\n", 1)[0]
    https, mailto = UNSUBSCRIBE.split(", ")
    expected = f"List-Unsubscribe: {https},\r\n {mailto}\r\n".encode()
    assert expected in head
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in head
    assert b"X-NPS-Send-Key: sk-0001\r\n" in head


def test_header_with_a_line_break_fails_that_message_instead_of_injecting_headers(
    smtp_relay: Relay, smtp_context: ConnectorContext
) -> None:
    bad = OutboundMessage(
        send_key="sk-0001",
        channel="email",
        to="kunde1@example.test",
        subject="Hi",
        text="x",
        headers={"List-Unsubscribe": "<https://nps.acme.test/u/x>\r\nBcc: victim@example.test"},
        sender="nps@acme.test",
    )

    outcomes = channel_for(smtp_relay, smtp_context).send([bad, outbound(2)])

    assert [("sk-0001", "failed"), ("sk-0002", "sent")] == statuses(outcomes)
    assert "header List-Unsubscribe must be one line" in (outcomes[0].reason or "")
    assert 1 == smtp_relay.call_counts()["mail"]


def test_batch_of_25_uses_exactly_one_connection_and_one_login(
    smtp_relay: Relay, smtp_context: ConnectorContext
) -> None:
    channel = channel_for(smtp_relay, smtp_context, max_per_connection=25)

    outcomes = channel.send([outbound(n) for n in range(25)])

    assert [(f"sk-{n:04d}", "sent") for n in range(25)] == statuses(outcomes)
    counts = smtp_relay.call_counts()
    assert 1 == counts["connections"]
    assert 1 == counts["auth_ok"]
    assert 25 == counts["mail"]
    assert 25 == counts["data"]
    assert 25 == len({o.provider_id for o in outcomes})


def test_batch_longer_than_max_per_connection_reconnects_after_n_messages(
    smtp_relay: Relay, smtp_context: ConnectorContext
) -> None:
    channel = channel_for(smtp_relay, smtp_context, max_per_connection=10)

    outcomes = channel.send([outbound(n) for n in range(25)])

    assert 25 == sum(o.status == "sent" for o in outcomes)
    assert 3 == smtp_relay.call_counts()["connections"]
    assert [10, 10, 5] == [sum(m.connection == c for m in smtp_relay.handler.mails) for c in (1, 2, 3)]


def test_max_batch_follows_max_per_connection(smtp_relay: Relay, smtp_context: ConnectorContext) -> None:
    assert 7 == channel_for(smtp_relay, smtp_context, max_per_connection=7).max_batch


def test_wrong_password_raises_auth_failed_and_sends_nothing(
    smtp_relay: Relay, smtp_context: ConnectorContext
) -> None:
    smtp_context.secrets = Secrets(environ={"SMTP_PASSWORD": "wrong"})
    channel = channel_for(smtp_relay, smtp_context)

    with pytest.raises(AuthFailed, match="refused the login of 'nps-sender'") as raised:
        channel.send([outbound(1), outbound(2)])

    assert 535 == raised.value.status
    counts = smtp_relay.call_counts()
    assert 0 == counts.get("mail", 0)
    assert 0 == counts.get("auth_ok", 0)


def test_refused_recipient_fails_with_suppress_while_the_others_are_sent(
    smtp_relay: Relay, smtp_context: ConnectorContext
) -> None:
    smtp_relay.handler.rcpt_replies["gone@example.test"] = "550 5.1.1 <gone@example.test>: no such user"

    outcomes = channel_for(smtp_relay, smtp_context).send(
        [outbound(1), outbound(2, to="Ex Kunde <gone@example.test>"), outbound(3)]
    )

    assert [("sk-0001", "sent"), ("sk-0002", "failed"), ("sk-0003", "sent")] == statuses(outcomes)
    assert outcomes[1].suppress
    assert "relay refused RCPT: 550 5.1.1 <gone@example.test>: no such user" == outcomes[1].reason
    assert [("kunde1@example.test",), ("kunde3@example.test",)] == [
        m.rcpt_tos for m in smtp_relay.handler.mails
    ]
    assert 1 == smtp_relay.call_counts()["connections"]


def test_policy_refusal_of_a_recipient_fails_without_suppress(
    smtp_relay: Relay, smtp_context: ConnectorContext
) -> None:
    smtp_relay.handler.rcpt_replies["kunde2@example.test"] = "550 5.7.1 Relaying denied by policy"

    outcomes = channel_for(smtp_relay, smtp_context).send([outbound(1), outbound(2)])

    assert [("sk-0001", "sent"), ("sk-0002", "failed")] == statuses(outcomes)
    assert not outcomes[1].suppress


def test_connection_dropped_after_data_is_unknown_and_never_resent(
    smtp_relay: Relay, smtp_context: ConnectorContext
) -> None:
    smtp_relay.handler.drop_after_data.add("kunde2@example.test")

    outcomes = channel_for(smtp_relay, smtp_context).send([outbound(1), outbound(2), outbound(3)])

    assert [("sk-0001", "sent"), ("sk-0002", "unknown"), ("sk-0003", "sent")] == statuses(outcomes)
    assert outcomes[1].provider_id is not None
    assert 1 == len(smtp_relay.handler.dropped)
    assert outcomes[1].provider_id == smtp_relay.handler.dropped[0].parsed()["Message-ID"]
    counts = smtp_relay.call_counts()
    assert 3 == counts["data"]  # one body per message: the dropped one was not sent again
    assert 2 == counts["connections"]  # the third message went over a fresh connection
    assert [("kunde1@example.test",), ("kunde3@example.test",)] == [
        m.rcpt_tos for m in smtp_relay.handler.mails
    ]


def test_transient_refusal_of_the_first_message_raises_connector_unavailable(
    smtp_relay: Relay, smtp_context: ConnectorContext
) -> None:
    smtp_relay.handler.rcpt_replies["kunde1@example.test"] = "451 4.3.0 Temporary lookup failure"

    with pytest.raises(ConnectorUnavailable, match="deferred the message at RCPT") as raised:
        channel_for(smtp_relay, smtp_context).send([outbound(1), outbound(2)])

    assert 451 == raised.value.status
    assert [] == smtp_relay.handler.mails
    assert 1 == smtp_relay.call_counts()["rcpt"]


def test_transient_refusal_later_in_the_batch_keeps_earlier_outcomes(
    smtp_relay: Relay, smtp_context: ConnectorContext
) -> None:
    smtp_relay.handler.rcpt_replies["kunde2@example.test"] = "452 4.5.3 Too many recipients this hour"

    outcomes = channel_for(smtp_relay, smtp_context).send([outbound(1), outbound(2), outbound(3)])

    assert [("sk-0001", "sent"), ("sk-0002", "failed"), ("sk-0003", "failed")] == statuses(outcomes)
    assert all(
        (o.reason or "").startswith("not handed to the relay (safe to send again)") for o in outcomes[1:]
    )
    assert not any(o.suppress for o in outcomes)
    assert [False, True, True] == [o.transient for o in outcomes]
    assert 2 == smtp_relay.call_counts()["rcpt"]
    assert 1 == len(smtp_relay.handler.mails)


def test_unreachable_relay_raises_connector_unavailable(
    smtp_tls_files: TlsFiles, smtp_context: ConnectorContext
) -> None:
    relay = Relay(smtp_tls_files).start()
    relay.stop()  # the port is now closed

    with pytest.raises(ConnectorUnavailable, match=r"cannot reach SMTP relay 127\.0\.0\.1"):
        channel_for(relay, smtp_context, timeout=5).send([outbound(1)])


def test_relay_certificate_not_signed_by_the_ca_file_raises_auth_failed(
    smtp_relay: Relay, smtp_context: ConnectorContext
) -> None:
    options = smtp_relay.options()
    del options["ca_file"]
    channel = CONNECTOR.factory(SmtpOptions.model_validate(options), smtp_context)

    assert isinstance(channel, SmtpChannel)
    with pytest.raises(AuthFailed, match=r"not trusted.*set ca_file"):
        channel.send([outbound(1)])

    assert 0 == smtp_relay.call_counts().get("auth_ok", 0)


def test_starttls_client_refuses_a_relay_that_does_not_offer_starttls(
    smtp_context: ConnectorContext,
) -> None:
    relay = Relay(None, "none", auth=False).start()
    try:
        channel = channel_for(relay, smtp_context, security="starttls")
        with pytest.raises(AuthFailed, match="does not offer STARTTLS"):
            channel.send([outbound(1)])
        assert 0 == relay.call_counts().get("mail", 0)
    finally:
        relay.stop()


def test_implicit_tls_relay_receives_the_message(
    smtp_tls_files: TlsFiles, smtp_context: ConnectorContext
) -> None:
    relay = Relay(smtp_tls_files, "tls").start()
    try:
        outcomes = channel_for(relay, smtp_context).send([outbound(1)])
        assert [("sk-0001", "sent")] == statuses(outcomes)
        assert SUBJECT == relay.handler.mails[0].parsed()["Subject"]
        assert 1 == relay.call_counts()["auth_ok"]
    finally:
        relay.stop()


def test_plain_text_relay_on_loopback_without_login_receives_the_message(
    smtp_context: ConnectorContext,
) -> None:
    relay = Relay(None, "none", auth=False).start()
    try:
        outcomes = channel_for(relay, smtp_context, envelope_from="bounces@acme.test").send([outbound(1)])
        assert [("sk-0001", "sent")] == statuses(outcomes)
        assert "bounces@acme.test" == relay.handler.mails[0].mail_from
        assert 0 == relay.call_counts().get("auth_ok", 0)
    finally:
        relay.stop()


def test_unusable_recipient_address_fails_that_message_only(
    smtp_relay: Relay, smtp_context: ConnectorContext
) -> None:
    outcomes = channel_for(smtp_relay, smtp_context).send([outbound(1, to="not an address"), outbound(2)])

    assert [("sk-0001", "failed"), ("sk-0002", "sent")] == statuses(outcomes)
    assert 1 == smtp_relay.call_counts()["rcpt"]


def test_check_online_is_empty_for_a_working_relay_and_names_a_refused_login(
    smtp_relay: Relay, smtp_context: ConnectorContext
) -> None:
    assert [] == channel_for(smtp_relay, smtp_context).check(online=True)
    assert 1 == smtp_relay.call_counts()["auth_ok"]
    assert 0 == smtp_relay.call_counts().get("mail", 0)

    smtp_context.secrets = Secrets(environ={"SMTP_PASSWORD": "wrong"})
    [problem] = channel_for(smtp_relay, smtp_context).check(online=True)
    assert "refused the login of 'nps-sender'" in problem


def test_lookup_has_no_evidence_and_routes_are_empty(
    smtp_relay: Relay, smtp_context: ConnectorContext
) -> None:
    channel = channel_for(smtp_relay, smtp_context)

    assert {} == channel.lookup([])
    assert [] == list(channel.routes())
    assert [] == channel.check(online=False)
    channel.close()
    channel.close()
    assert 0 == smtp_relay.call_counts().get("connections", 0)


def test_internationalised_recipient_is_sent_with_smtputf8(
    smtp_relay: Relay, smtp_context: ConnectorContext
) -> None:
    outcomes = channel_for(smtp_relay, smtp_context).send([outbound(1, to="jürgen@müller.example")])

    assert [("sk-0001", "sent")] == statuses(outcomes)
    [mail] = smtp_relay.handler.mails
    assert ("jürgen@müller.example",) == mail.rcpt_tos
    assert "jürgen@müller.example" == mail.parsed()["To"]


def test_e2e_probe_reads_back_what_a_channel_built_from_the_e2e_toml_sent(
    channel_e2e_smtp: E2EChannel, smtp_context: ConnectorContext
) -> None:
    table = tomllib.loads(channel_e2e_smtp.config_toml)["channels"]["email"]["smtp"]
    smtp_context.secrets = Secrets(environ=dict(channel_e2e_smtp.env))
    channel = CONNECTOR.factory(SmtpOptions.model_validate(table), smtp_context)
    assert isinstance(channel, SmtpChannel)
    probe = channel_e2e_smtp.probe
    probe.connect("http://127.0.0.1:1")

    channel.send([outbound(1), outbound(2)])

    [received] = probe.messages("kunde2@example.test")
    assert "kunde2@example.test" == received.to
    assert SUBJECT == received.subject
    assert TEXT == received.text
    assert HTML == received.html
    assert "sk-0002" == received.send_key
    assert UNSUBSCRIBE == received.headers["List-Unsubscribe"]
    assert ["sk-0001", "sk-0002"] == [m.send_key for m in probe.messages()]
    assert 1 == probe.call_counts()["connections"]
    with pytest.raises(NotImplementedError):
        probe.reply("+4915112345678", "10")


def test_relay_refusing_an_unauthenticated_sender_raises_auth_failed(
    smtp_relay: Relay, smtp_context: ConnectorContext
) -> None:
    """A relay that needs AUTH answers MAIL FROM with 530 when no username is configured."""
    channel = channel_for(smtp_relay, smtp_context, username=None)

    with pytest.raises(AuthFailed, match="refused the sender: 530"):
        channel.send([outbound(1), outbound(2)])

    assert [] == smtp_relay.handler.mails
