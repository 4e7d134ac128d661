"""SendGrid email channel: batched v3 ``mail/send`` and the signed Event Webhook."""

from __future__ import annotations

from nps_sync.abc import ConnectorSpec
from nps_sync.connectors.sendgrid.config import SendGridOptions
from nps_sync.connectors.sendgrid.connector import SendGridChannel, factory

CONNECTOR = ConnectorSpec(
    name="sendgrid",
    role="channel",
    kinds=("email",),
    options=SendGridOptions,
    factory=factory,
)

__all__ = ["CONNECTOR", "SendGridChannel", "SendGridOptions"]
