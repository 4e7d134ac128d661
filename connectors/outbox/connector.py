"""The outbox channel: the embedded default for email and SMS.

Every message is stored with everything a provider would get (headers included) and shown in the
local web UI and by ``nps-sync outbox``; nothing leaves the machine. SMS replies are simulated from the
web UI's reply form, which goes through the same inbound path a provider webhook would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from nps_sync.abc import ConnectorContext
from nps_sync.models import ChannelKind, OutboundMessage, PendingSend, SendOutcome
from nps_sync.store.db import utcnow

from .client import OutboxDb
from .config import OutboxOptions
from .mapping import to_row

if TYPE_CHECKING:
    from starlette.routing import BaseRoute


class OutboxChannel:
    name = "outbox"
    max_batch = 500

    def __init__(self, options: OutboxOptions, ctx: ConnectorContext) -> None:
        assert ctx.role in ("email", "sms")
        self.kind: ChannelKind = ctx.role
        self.options = options
        self.db = OutboxDb(ctx.store)

    def send(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        now = utcnow()
        rows = [to_row(m, m.sender or self.options.sender, now) for m in messages]
        self.db.insert(rows)
        ids = self.db.ids_for([m.send_key for m in messages])
        return [SendOutcome(m.send_key, "sent", provider_id=f"outbox-{ids[m.send_key]}") for m in messages]

    def lookup(self, pending: Sequence[PendingSend]) -> dict[str, SendOutcome]:
        ids = self.db.ids_for([p.send_key for p in pending])
        return {
            p.send_key: (
                SendOutcome(p.send_key, "sent", provider_id=f"outbox-{ids[p.send_key]}")
                if p.send_key in ids
                else SendOutcome(p.send_key, "failed", reason="not in the outbox")
            )
            for p in pending
        }

    def routes(self) -> Sequence[BaseRoute]:
        return []

    def check(self, *, online: bool) -> list[str]:
        return []

    def close(self) -> None:
        """Nothing to release."""
