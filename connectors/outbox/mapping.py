"""How outbox rows relate to messages."""

from __future__ import annotations

from typing import Any

from nps_sync.models import OutboundMessage


def to_row(message: OutboundMessage, sender: str, now: Any) -> dict[str, Any]:
    return {
        "direction": "out",
        "send_key": message.send_key,
        "channel": message.channel,
        "to_addr": message.to,
        "from_addr": sender,
        "subject": message.subject,
        "text": message.text,
        "html": message.html,
        "headers": dict(message.headers),
        "purpose": message.purpose,
        "created_at": now,
    }
