"""The outbox channel: email and SMS kept in the state database and shown in the web UI."""

from __future__ import annotations

from nps_sync.abc import ConnectorContext, ConnectorSpec

from .config import OutboxOptions
from .connector import OutboxChannel


def create(options: OutboxOptions, ctx: ConnectorContext) -> OutboxChannel:
    return OutboxChannel(options, ctx)


CONNECTOR = ConnectorSpec(
    name="outbox", role="channel", kinds=("email", "sms"), options=OutboxOptions, factory=create
)

__all__ = ["CONNECTOR", "OutboxChannel"]
