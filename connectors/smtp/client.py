"""The only module that talks SMTP (stdlib ``smtplib``); maps its exceptions to ``nps_sync.errors``.

A :class:`SmtpSession` is one authenticated connection. :meth:`SmtpSession.deliver` runs one mail
transaction step by step (MAIL, RCPT, DATA, body) rather than through ``sendmail`` so it knows how far
a message got when the connection drops: before the body was sent nothing can have been queued (safe
to retry), after it the relay may have queued the message (the outcome is unknown).
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
from dataclasses import dataclass
from typing import Literal

import structlog
from pydantic import SecretStr

from nps_sync.connectors.smtp.config import SmtpOptions
from nps_sync.errors import AuthFailed, ConnectorUnavailable

log = structlog.get_logger("nps_sync.connectors.smtp.client")

CONNECTOR = "smtp"

Stage = Literal["mail", "rcpt", "data", "body"]
DeliveryStatus = Literal["accepted", "refused", "deferred", "unknown"]

_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


@dataclass(frozen=True)
class Delivery:
    """How far one message got: ``accepted`` (250 after the body), ``refused`` (5xx, for good),
    ``deferred`` (4xx or a lost connection before the body: nothing queued) or ``unknown``."""

    status: DeliveryStatus
    stage: Stage
    code: int | None = None
    reason: str = ""


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


class SmtpSession:
    """One connection to the relay, logged in and ready for mail transactions."""

    def __init__(self, smtp: smtplib.SMTP, where: str) -> None:
        self._smtp = smtp
        self._where = where
        #: Mail transactions started on this connection (for ``max_per_connection``).
        self.transactions = 0
        self.alive = True

    @property
    def supports_smtputf8(self) -> bool:
        return bool(self._smtp.has_extn("smtputf8"))

    def deliver(self, envelope_from: str, recipient: str, data: bytes, *, smtputf8: bool) -> Delivery:
        """Run one mail transaction. Never raises: every way it can end is a :class:`Delivery`."""
        if not self.alive:
            raise RuntimeError("deliver() on a closed SMTP session")
        self.transactions += 1
        stage: Stage = "mail"
        try:
            code, reply = self._smtp.mail(envelope_from, ["SMTPUTF8"] if smtputf8 else [])
            if code != 250:
                return self._abort(stage, code, reply)
            stage = "rcpt"
            code, reply = self._smtp.rcpt(recipient)
            if code not in (250, 251):
                return self._abort(stage, code, reply)
            stage = "data"
            self._smtp.putcmd("data")
            code, reply = self._smtp.getreply()
            if code != 354:
                return self._abort(stage, code, reply)
            stage = "body"
            payload = _LEADING_DOT.sub(b"..", data)
            if not payload.endswith(b"\r\n"):
                payload += b"\r\n"
            self._smtp.send(payload + b".\r\n")
            code, reply = self._smtp.getreply()
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            if stage == "body":
                # The body left: the relay may have queued it even though its answer never came.
                return Delivery(
                    "unknown",
                    stage,
                    reason=f"connection to {self._where} lost after the "
                    f"message was sent, before the relay's answer: {exc or type(exc).__name__}",
                )
            return Delivery(
                "deferred",
                stage,
                reason=f"connection to {self._where} lost during "
                f"{stage.upper()}, before the message was sent: {exc or type(exc).__name__}",
            )
        if code == 250:
            return Delivery("accepted", stage, code, _text(reply))
        return self._ended(stage, code, reply)

    def _abort(self, stage: Stage, code: int, reply: bytes) -> Delivery:
        """A refusal inside the transaction: reset it so the connection can carry the next one."""
        delivery = self._ended(stage, code, reply)
        if self.alive:
            try:
                self._smtp.rset()
            except (smtplib.SMTPException, OSError):
                self._drop()
        return delivery

    def _ended(self, stage: Stage, code: int, reply: bytes) -> Delivery:
        if code == 421 or code < 0:
            self._drop()
        status: DeliveryStatus = "refused" if 500 <= code < 600 else "deferred"
        return Delivery(status, stage, code, _text(reply))

    def _drop(self) -> None:
        self.alive = False
        with contextlib.suppress(OSError):
            self._smtp.close()

    def close(self) -> None:
        """QUIT politely; safe to call twice and on a dead connection."""
        if not self.alive:
            return
        self.alive = False
        try:
            self._smtp.quit()
        except (smtplib.SMTPException, OSError):
            self._drop()


class SmtpClient:
    """Opens :class:`SmtpSession` s to one relay with the configured security and login."""

    def __init__(self, options: SmtpOptions, password: SecretStr | None) -> None:
        self.options = options
        self._password = password
        self.where = f"{options.host}:{options.effective_port}"

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.options.ca_file is not None:
            context.load_verify_locations(cafile=str(self.options.ca_file))
        return context

    def open(self) -> SmtpSession:
        """Connect, EHLO, STARTTLS (or implicit TLS), log in.

        Raises ``AuthFailed`` when the login, the relay's certificate or its missing STARTTLS/AUTH
        needs ops to act, ``ConnectorUnavailable`` for network trouble and 4xx answers.
        """
        opts = self.options
        smtp: smtplib.SMTP | None = None
        try:
            if opts.security == "tls":
                smtp = smtplib.SMTP_SSL(
                    opts.host,
                    opts.effective_port,
                    local_hostname=opts.helo_name,
                    timeout=opts.timeout,
                    context=self._tls_context(),
                )
            else:
                smtp = smtplib.SMTP(
                    opts.host, opts.effective_port, local_hostname=opts.helo_name, timeout=opts.timeout
                )
            smtp.ehlo()
            if opts.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise AuthFailed(
                        f"SMTP relay {self.where} does not offer STARTTLS; refusing to send in clear "
                        f'text (use security = "tls" for port 465)',
                        connector=CONNECTOR,
                    )
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
            if opts.username is not None:
                if self._password is None:
                    raise AuthFailed(f"no password for SMTP user {opts.username!r}", connector=CONNECTOR)
                smtp.login(opts.username, self._password.get_secret_value())
        except AuthFailed:
            self._discard(smtp)
            raise
        except smtplib.SMTPAuthenticationError as exc:
            self._discard(smtp)
            reason = f"{exc.smtp_code} {_text(exc.smtp_error)}"
            if 400 <= exc.smtp_code < 500:
                raise ConnectorUnavailable(
                    f"SMTP relay {self.where} could not log in {opts.username!r} for now: {reason}",
                    connector=CONNECTOR,
                    status=exc.smtp_code,
                ) from exc
            raise AuthFailed(
                f"SMTP relay {self.where} refused the login of {opts.username!r}: {reason}; check "
                f"the username and the secret {opts.password_secret}",
                connector=CONNECTOR,
                status=exc.smtp_code,
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            self._discard(smtp)
            raise AuthFailed(
                f"SMTP relay {self.where} does not offer AUTH but username {opts.username!r} is set "
                f"(it may offer AUTH only over TLS): {exc}",
                connector=CONNECTOR,
            ) from exc
        except ssl.SSLCertVerificationError as exc:
            self._discard(smtp)
            raise AuthFailed(
                f"certificate of SMTP relay {self.where} is not trusted: {exc.verify_message}; for a "
                f"private relay set ca_file to its CA certificate (PEM)",
                connector=CONNECTOR,
            ) from exc
        except smtplib.SMTPResponseException as exc:
            self._discard(smtp)
            raise ConnectorUnavailable(
                f"SMTP relay {self.where} answered {exc.smtp_code} {_text(exc.smtp_error)} while connecting",
                connector=CONNECTOR,
                status=exc.smtp_code,
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            self._discard(smtp)
            raise ConnectorUnavailable(
                f"cannot reach SMTP relay {self.where}: {exc or type(exc).__name__}", connector=CONNECTOR
            ) from exc
        return SmtpSession(smtp, self.where)

    @staticmethod
    def _discard(smtp: smtplib.SMTP | None) -> None:
        if smtp is not None:
            with contextlib.suppress(OSError):
                smtp.close()
