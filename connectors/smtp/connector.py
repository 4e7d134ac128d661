"""The SMTP email channel: hands rendered messages to the company's own mail relay."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import structlog

from nps_sync.abc import ConnectorContext
from nps_sync.connectors.smtp import mapping
from nps_sync.connectors.smtp.client import CONNECTOR, Delivery, SmtpClient, SmtpSession
from nps_sync.connectors.smtp.config import SmtpOptions
from nps_sync.errors import AuthFailed, ConnectorError, ConnectorUnavailable
from nps_sync.models import ChannelKind, OutboundMessage, PendingSend, SendOutcome

if TYPE_CHECKING:
    from pydantic import SecretStr
    from starlette.routing import BaseRoute

log = structlog.get_logger("nps_sync.connectors.smtp")


class SmtpChannel:
    """Email through an SMTP relay: one connection per batch, reused for up to
    ``max_per_connection`` messages."""

    name = "smtp"
    kind: ChannelKind = "email"

    def __init__(self, options: SmtpOptions, password: SecretStr | None) -> None:
        self.options = options
        self.client = SmtpClient(options, password)
        # A batch is sent over one connection; a longer batch would only mean reconnecting inside it.
        self.max_batch = options.max_per_connection

    def send(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        """Send each message in its own mail transaction; one outcome per message, in order.

        ``sent`` (provider_id = our Message-ID) once the relay answered 250 to the body; ``failed``
        for a 5xx refusal (``suppress`` only for "no such user" replies); ``unknown`` when the
        connection was lost after the body was sent. Raises ``ConnectorUnavailable`` / ``AuthFailed``
        only when the first message got nowhere, so nothing of the batch was accepted. When a later
        message hits a transient problem the batch stops there: that message and the rest come back
        ``failed`` with a reason saying they were never handed over. NOT idempotent: never call twice.
        """
        outcomes: list[SendOutcome] = []
        session: SmtpSession | None = None
        now = datetime.now(timezone.utc)
        try:
            for index, message in enumerate(messages):
                try:
                    built = mapping.build(message, now=now, envelope_from=self.options.envelope_from)
                except ValueError as exc:
                    outcomes.append(SendOutcome(message.send_key, "failed", reason=str(exc)))
                    continue
                if (
                    session is None
                    or not session.alive
                    or session.transactions >= self.options.max_per_connection
                ):
                    if session is not None:
                        session.close()
                    try:
                        session = self.client.open()
                    except ConnectorError as exc:
                        if not outcomes:
                            raise
                        outcomes.extend(self._stop(messages[index:], str(exc)))
                        break
                if built.smtputf8 and not session.supports_smtputf8:
                    outcomes.append(
                        SendOutcome(
                            message.send_key,
                            "failed",
                            reason=f"address {built.recipient!r} / {built.envelope_from!r} needs "
                            f"SMTPUTF8, which relay {self.client.where} does not offer",
                        )
                    )
                    continue
                delivery = session.deliver(
                    built.envelope_from, built.recipient, built.data, smtputf8=built.smtputf8
                )
                outcome = self._outcome(message, built, delivery)
                if outcome is None:
                    problem = self._batch_problem(delivery)
                    if not outcomes:
                        raise problem
                    outcomes.extend(self._stop(messages[index:], str(problem)))
                    break
                outcomes.append(outcome)
        finally:
            if session is not None:
                session.close()
        self._log_batch(outcomes)
        return outcomes

    def _outcome(
        self, message: OutboundMessage, built: mapping.Built, delivery: Delivery
    ) -> SendOutcome | None:
        """The message's outcome, or None when the relay's answer concerns the whole batch."""
        reason = f"{delivery.code} {delivery.reason}" if delivery.code is not None else delivery.reason
        if delivery.status == "accepted":
            return SendOutcome(message.send_key, "sent", provider_id=built.message_id)
        if delivery.status == "unknown":
            log.warning(
                "smtp.outcome_unknown", send_key=message.send_key, relay=self.client.where, reason=reason
            )
            return SendOutcome(message.send_key, "unknown", provider_id=built.message_id, reason=reason)
        if delivery.status == "refused" and delivery.stage != "mail":
            suppress = delivery.stage == "rcpt" and mapping.should_suppress(
                delivery.code or 0, delivery.reason
            )
            return SendOutcome(
                message.send_key,
                "failed",
                reason=f"relay refused {delivery.stage.upper()}: {reason}",
                suppress=suppress,
            )
        return None

    def _batch_problem(self, delivery: Delivery) -> ConnectorError:
        reason = f"{delivery.code} {delivery.reason}" if delivery.code is not None else delivery.reason
        if delivery.status == "refused":
            # A refused MAIL FROM refuses every message: the account may not send as this address.
            return AuthFailed(
                f"SMTP relay {self.client.where} refused the sender: {reason}; check that the account "
                f"may send as the configured from_address / envelope_from",
                connector=CONNECTOR,
                status=delivery.code,
            )
        return ConnectorUnavailable(
            f"SMTP relay {self.client.where} deferred the message at {delivery.stage.upper()}, nothing "
            f"was accepted: {reason}",
            connector=CONNECTOR,
            status=delivery.code,
        )

    def _log_batch(self, outcomes: Sequence[SendOutcome]) -> None:
        counts = {
            status: sum(1 for o in outcomes if o.status == status) for status in ("sent", "failed", "unknown")
        }
        if counts["failed"] or counts["unknown"]:
            log.info("smtp.batch_sent", relay=self.client.where, **counts)

    def _stop(self, rest: Sequence[OutboundMessage], problem: str) -> list[SendOutcome]:
        """Outcomes for the messages after a batch-wide problem: none of them reached the relay."""
        log.warning("smtp.batch_stopped", relay=self.client.where, not_sent=len(rest), problem=problem)
        reason = f"not handed to the relay (safe to send again): {problem}"
        return [SendOutcome(m.send_key, "failed", reason=reason, transient=True) for m in rest]

    def lookup(self, pending: Sequence[PendingSend]) -> dict[str, SendOutcome]:
        """Always ``{}``: SMTP has no way to ask a relay whether it queued a message, so sends left
        ``unknown`` stay unknown here and the core lists them for ops (the relay's log, searched
        for the ``X-NPS-Send-Key`` header or the Message-ID, is the evidence)."""
        return {}

    def routes(self) -> Sequence[BaseRoute]:
        """None: bounces come back as mail to the envelope sender, not through a webhook."""
        return []

    def check(self, *, online: bool) -> list[str]:
        """Problems with the setup. ``online`` connects, EHLOs, upgrades to TLS, logs in and QUITs."""
        if not online:
            return []
        try:
            session = self.client.open()
        except ConnectorError as exc:
            return [str(exc)]
        session.close()
        return []

    def close(self) -> None:
        """Nothing held between batches (each batch opens and QUITs its own connection)."""


def build(options: SmtpOptions, ctx: ConnectorContext) -> SmtpChannel:
    """The factory in ``CONNECTOR``: resolves the password by name at start-up."""
    password = None
    if options.username is not None:
        password = ctx.secrets.require(
            options.password_secret,
            purpose=f"the SMTP relay login of {options.username!r} ([channels.email.smtp].password_secret)",
        )
    return SmtpChannel(options, password)
