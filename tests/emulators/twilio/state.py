"""What the Twilio emulator remembers: account, senders, messages, opt-outs, call counts."""

from __future__ import annotations

import re
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
# Twilio's default keywords (reliability-and-compliance §4).
STOP_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "END", "QUIT", "REVOKE", "OPTOUT", "CANCEL"})
START_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})


def new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def rfc2822(value: datetime | None) -> str | None:
    return format_datetime(value) if value else None


@dataclass
class Message:
    sid: str
    account_sid: str
    to: str
    from_: str
    body: str
    messaging_service_sid: str | None
    status: str
    direction: str  # outbound-api | outbound-reply | inbound
    status_callback: str | None
    date_created: datetime
    date_sent: datetime | None = None
    error_code: int | None = None

    def resource(self) -> dict[str, Any]:
        """The JSON Twilio returns for a Message."""
        segments = 1 if len(self.body) <= 160 else -(-len(self.body) // 153)
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": self.body,
            "date_created": rfc2822(self.date_created),
            "date_updated": rfc2822(self.date_sent or self.date_created),
            "date_sent": rfc2822(self.date_sent),
            "direction": self.direction,
            "error_code": self.error_code,
            "error_message": None,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": "0",
            "num_segments": str(segments),
            "price": None,
            "price_unit": "USD",
            "status": self.status,
            "subresource_uris": {
                "media": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{self.sid}/Media.json"
            },
            "to": self.to,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{self.sid}.json",
        }


@dataclass
class TwilioState:
    account_sid: str
    auth_token: str
    #: Messaging Services and the numbers in their sender pools.
    services: dict[str, list[str]] = field(default_factory=dict)
    #: Numbers owned outside any service (used as ``From``).
    numbers: set[str] = field(default_factory=set)
    #: API keys: SID → secret.
    api_keys: dict[str, str] = field(default_factory=dict)
    #: Valid E.164 numbers that are landlines (21614 on create).
    landlines: set[str] = field(default_factory=set)
    #: (scope, number): scope is a Messaging Service SID or a sender number.
    opt_outs: set[tuple[str, str]] = field(default_factory=set)
    messages: list[Message] = field(default_factory=list)
    #: The same messages by SID (``find`` is called for every status callback).
    by_sid: dict[str, Message] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def scope_of(self, number: str) -> str:
        """Opt-outs apply to the whole Messaging Service a number belongs to, else to the number."""
        for service, pool in self.services.items():
            if number in pool:
                return service
        return number

    def count(self, kind: str) -> None:
        with self.lock:
            self.calls[kind] += 1

    def add(self, message: Message) -> None:
        with self.lock:
            self.messages.append(message)
            self.by_sid[message.sid] = message

    def find(self, sid: str) -> Message | None:
        with self.lock:
            return self.by_sid.get(sid)

    def forget_messages(self) -> None:
        with self.lock:
            self.messages.clear()
            self.by_sid.clear()


def now() -> datetime:
    return datetime.now(timezone.utc)
