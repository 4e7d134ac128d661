"""A real SMTP relay on 127.0.0.1 (aiosmtpd in a thread) for the SMTP channel's tests and the e2e loop.

The relay behaves like a submission server: STARTTLS with a certificate from a CA generated here
(or implicit TLS, or plain text), AUTH PLAIN/LOGIN offered only after TLS and required before MAIL,
per-recipient refusals, and a fault that drops the connection after the message body arrived. It
counts connections and commands so tests assert exact numbers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer  # noqa: N811 (aiosmtpd's name; ours says what it is)
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nps_sync.abc import ConnectorContext
from nps_sync.secrets import Secrets
from nps_sync.store.db import Store
from tests.harness import E2EChannel, ReceivedMessage

RELAY_USER = "nps-sender"
RELAY_PASSWORD = "correct horse battery staple"
SEND_KEY_HEADER = "X-NPS-Send-Key"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """A private CA and a server certificate for 127.0.0.1 / localhost signed by it (PEM files)."""
    now = datetime.now(timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nps-sync test relay CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(ca=directory / "relay-ca.pem", cert=directory / "relay.pem", key=directory / "relay.key")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


@dataclass(frozen=True)
class ReceivedMail:
    """One message the relay accepted (or, for ``dropped``, read completely before hanging up)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    connection: int

    def parsed(self) -> EmailMessage:
        message = BytesParser(policy=policy.default).parsebytes(self.content)
        assert isinstance(message, EmailMessage)
        return message


class RelayHandler:
    """aiosmtpd hooks: records mail, refuses or drops on demand, counts everything by kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.mails: list[ReceivedMail] = []
        self.dropped: list[ReceivedMail] = []
        #: RCPT address → the full reply line to refuse it with ("550 5.1.1 …", "451 4.7.1 …").
        self.rcpt_replies: dict[str, str] = {}
        #: Recipients whose message is read completely, then the connection is cut before the reply.
        self.drop_after_data: set[str] = set()

    def _count(self, kind: str) -> int:
        with self._lock:
            self.counts[kind] += 1
            return self.counts[kind]

    async def handle_EHLO(  # noqa: N802 (aiosmtpd hook names)
        self, server: SMTPServer, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        # A new TCP connection's first EHLO is in clear text (or over implicit TLS); the EHLO after
        # STARTTLS arrives on a fresh TLS session and is not another connection.
        if session.ssl is None:
            server.nps_connection_no = self._count("connections")  # type: ignore[attr-defined]
        session.host_name = hostname
        self._count("ehlo")
        return responses

    async def handle_MAIL(  # noqa: N802 (aiosmtpd hook names)
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self._count("mail")
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 (aiosmtpd hook names)
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self._count("rcpt")
        reply = self.rcpt_replies.get(address)
        if reply is not None:
            self._count("rcpt_refused")
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self._count("data")
        mail = ReceivedMail(
            mail_from=str(envelope.mail_from),
            rcpt_tos=tuple(envelope.rcpt_tos),
            content=bytes(envelope.original_content or b""),
            connection=getattr(server, "nps_connection_no", 0),
        )
        if self.drop_after_data.intersection(envelope.rcpt_tos):
            with self._lock:
                self.dropped.append(mail)
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.abort()
            await asyncio.sleep(3600)  # cancelled by connection_lost: no reply is ever written
        with self._lock:
            self.mails.append(mail)
        return "250 2.0.0 OK: queued"

    def authenticate(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == RELAY_USER.encode()
            and auth_data.password == RELAY_PASSWORD.encode()
        )
        self._count("auth_ok" if ok else "auth_failed")
        return AuthResult(success=ok, handled=False)


class _EphemeralController(Controller):
    """Binds port 0 and learns the port the kernel chose before aiosmtpd's readiness probe."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


Security = Literal["starttls", "tls", "none"]


class Relay:
    """A running relay plus a :class:`tests.harness.ChannelProbe` over what it received."""

    def __init__(self, tls: TlsFiles | None, security: Security = "starttls", *, auth: bool = True) -> None:
        self.tls = tls
        self.security = security
        self.handler = RelayHandler()
        kwargs: dict[str, Any] = {}
        if security != "none":
            assert tls is not None
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls.cert, tls.key)
            kwargs["ssl_context" if security == "tls" else "tls_context"] = context
        if auth:
            # aiosmtpd only knows about TLS it negotiated itself (STARTTLS): over implicit TLS it must
            # be told not to withhold AUTH, and then it cannot also require AUTH without warning.
            kwargs.update(
                authenticator=self.handler.authenticate,
                auth_required=security == "starttls",
                auth_require_tls=security == "starttls",
            )
        self.controller = _EphemeralController(
            self.handler, hostname="127.0.0.1", port=0, server_hostname="relay.test", **kwargs
        )

    def start(self) -> Relay:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def options(self, **overrides: Any) -> dict[str, Any]:
        """The ``[channels.email.smtp]`` table for a client of this relay."""
        table: dict[str, Any] = {"host": "127.0.0.1", "port": self.port, "security": self.security}
        if self.tls is not None and self.security != "none":
            table["ca_file"] = str(self.tls.ca)
        if self.security != "none" or overrides.get("username"):
            table["username"] = RELAY_USER
        table.update(overrides)
        return table

    # --- tests.harness.ChannelProbe ---------------------------------------------------------------

    def connect(self, daemon_url: str) -> None:
        """Email has no webhooks into the daemon: nothing to connect."""

    def messages(self, to: str | None = None) -> Sequence[ReceivedMessage]:
        with self.handler._lock:
            mails = list(self.handler.mails)
        received = []
        for mail in mails:
            for rcpt in mail.rcpt_tos:
                if to is None or rcpt.lower() == to.lower():
                    received.append(_received(rcpt, mail.parsed()))
        return received

    def reply(self, from_number: str, body: str) -> None:
        raise NotImplementedError("email has no inbound replies: the SMTP channel only sends")

    def call_counts(self) -> Mapping[str, int]:
        with self.handler._lock:
            return dict(self.handler.counts)


def _received(rcpt: str, message: EmailMessage) -> ReceivedMessage:
    text_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    return ReceivedMessage(
        to=rcpt,
        subject=str(message["Subject"]),
        # SMTP carries CRLF line ends; the parsed body keeps them, the rendered text had LF.
        text=text_part.get_content().replace("\r\n", "\n") if text_part is not None else "",
        html=html_part.get_content().replace("\r\n", "\n") if html_part is not None else None,
        headers={name: str(value) for name, value in message.items()},
        send_key=str(message[SEND_KEY_HEADER]) if message[SEND_KEY_HEADER] is not None else None,
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture(scope="session")
def smtp_tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def smtp_relay(smtp_tls_files: TlsFiles) -> Iterator[Relay]:
    """A submission relay: STARTTLS with the test CA, AUTH required (``RELAY_USER``/``RELAY_PASSWORD``)."""
    relay = Relay(smtp_tls_files, "starttls").start()
    yield relay
    relay.stop()


@pytest.fixture
def channel_e2e_smtp(smtp_relay: Relay) -> E2EChannel:
    """The SMTP channel for the end-to-end loop: the daemon submits to ``smtp_relay``."""
    table = smtp_relay.options(password_secret="SMTP_PASSWORD", timeout=10)
    config = (
        "[channels.email]\n"
        'kind = "smtp"\n'
        'from_address = "nps@acme.test"\n'
        'from_name = "Acme Kundenservice"\n'
        'reply_to = "service@acme.test"\n'
        'postal_address = "Acme GmbH, Musterstraße 1, 10115 Berlin, Germany"\n'
        "\n[channels.email.smtp]\n"
        + "".join(f"{key} = {_toml_value(value)}\n" for key, value in table.items())
    )
    return E2EChannel(config_toml=config, probe=smtp_relay, env={"SMTP_PASSWORD": RELAY_PASSWORD})


__all__ = [
    "RELAY_PASSWORD",
    "RELAY_USER",
    "ReceivedMail",
    "Relay",
    "TlsFiles",
    "channel_e2e_smtp",
    "make_tls_files",
    "smtp_context",
    "smtp_relay",
    "smtp_tls_files",
]


@pytest.fixture
def smtp_context(tmp_path: Path) -> Iterator[ConnectorContext]:
    """What the core hands the channel, with the relay password in the secrets."""
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    yield ConnectorContext(
        role="email",
        state_dir=tmp_path,
        public_url="http://127.0.0.1:8080",
        time_zone=ZoneInfo("Europe/Berlin"),
        secrets=Secrets(environ={"SMTP_PASSWORD": RELAY_PASSWORD}),
        store=store,
    )
    store.dispose()
