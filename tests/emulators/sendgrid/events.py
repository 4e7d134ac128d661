"""SendGrid's signed Event Webhook, from the sender's side: a test ECDSA P-256 key that signs
``timestamp + body`` exactly as SendGrid does, and a poster for real HTTP delivery."""

from __future__ import annotations

import base64
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


class EventSigner:
    """Holds a fresh key pair; ``public_key_b64`` is what SendGrid shows as the Verification Key."""

    def __init__(self) -> None:
        self._private = ec.generate_private_key(ec.SECP256R1())
        der = self._private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key_b64 = base64.b64encode(der).decode()

    def sign(self, body: bytes, timestamp: str) -> str:
        signed = timestamp.encode() + body
        return base64.b64encode(self._private.sign(signed, ec.ECDSA(hashes.SHA256()))).decode()

    def signed_request(
        self,
        events: Sequence[Mapping[str, Any]] | None = None,
        *,
        body: bytes | None = None,
        timestamp: int | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """The body SendGrid would send (compact JSON + CRLF) and its headers, signed now."""
        if body is None:
            body = (json.dumps(list(events or []), separators=(",", ":")) + "\r\n").encode()
        ts = str(int(time.time()) if timestamp is None else timestamp)
        return body, {
            "Content-Type": "application/json",
            "User-Agent": "SendGrid Event API",
            SIGNATURE_HEADER: self.sign(body, ts),
            TIMESTAMP_HEADER: ts,
        }


def make_event(
    kind: str, email: str, *, message_id: str, custom_args: Mapping[str, str], **extra: Any
) -> dict[str, Any]:
    """One event as SendGrid posts it; custom_args are flattened into top-level keys."""
    event: dict[str, Any] = {
        "email": email,
        "event": kind,
        "timestamp": int(time.time()),
        "sg_event_id": base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("="),
        "sg_message_id": f"{message_id}.filterdrecv-emulator-{secrets.token_hex(4)}",
        "smtp-id": f"<{message_id}@emulator.sendgrid.test>",
        **dict(custom_args),
    }
    if kind == "delivered":
        event["response"] = "250 OK"
    if kind in ("bounce", "dropped"):
        event.setdefault("reason", "550 5.1.1 The email account that you tried to reach does not exist")
    event.update(extra)
    return event


def post(url: str, body: bytes, headers: Mapping[str, str], *, timeout: float = 10) -> int:
    """POST to the daemon's webhook over real HTTP (loopback only); the status code."""
    if not url.startswith(("http://127.0.0.1", "http://localhost")):
        raise ValueError(f"the emulator only posts to loopback, got: {url}")
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
