"""Twilio constants and conversions: error codes, sender rates, segments, webhook paths."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import quote

SenderType = Literal["long_code", "toll_free", "short_code", "international"]

#: Default delivery throughput per sender type, in message segments per second (Twilio's docs:
#: US/CA long code 1, toll-free 3, short code 100, senders outside +1 about 10).
SENDER_MPS: dict[SenderType, float] = {
    "long_code": 1.0,
    "toll_free": 3.0,
    "short_code": 100.0,
    "international": 10.0,
}

INBOUND_PATH = "/hooks/twilio/inbound"
STATUS_PATH = "/hooks/twilio/status"
SIGNATURE_HEADER = "X-Twilio-Signature"
SIGNATURE_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"

# Twilio error codes that decide an outcome.
TOO_MANY_REQUESTS = 20429  # account concurrency cap: never processed, safe to retry
OPTED_OUT = 21610  # recipient texted STOP to this sender / Messaging Service
INVALID_TO = 21211
NOT_MOBILE = 21614
QUEUE_FULL = 21611
SUPPRESS_CODES = frozenset({OPTED_OUT, INVALID_TO, NOT_MOBILE})


def status_callback_url(public_url: str, send_key: str) -> str:
    """The status callback for one send, carrying our key so events map back to it."""
    return f"{public_url.rstrip('/')}{STATUS_PATH}?k={quote(send_key, safe='')}"


# GSM 03.38 basic set; the extension set costs two septets each.
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|€\f")


def segments(text: str) -> int:
    """How many SMS segments Twilio bills and paces ``text`` as (GSM-7 or UCS-2)."""
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENDED for ch in text):
        septets = sum(2 if ch in _GSM_EXTENDED else 1 for ch in text)
        return 1 if septets <= 160 else math.ceil(septets / 153)
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= 70 else math.ceil(units / 67)


@dataclass(frozen=True)
class SentMessage:
    """A message as Twilio lists it, in our words (SDK objects stay in client.py)."""

    sid: str
    to: str
    from_number: str
    messaging_service_sid: str | None
    created_at: datetime | None
    status: str
    direction: str
