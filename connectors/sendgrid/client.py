"""The only module that imports the sendgrid SDK: the v3 client and the Event Webhook verifier.

SDK exceptions become :mod:`nps_sync.errors` kinds here, decided by *when* the failure happened:
refused with a status (nothing accepted) → ``AuthFailed`` / ``RateLimited`` / ``ConnectorUnavailable``
/ ``PermanentError``; no connection could be made or the request could not be written (urllib wraps
those in ``URLError``) → ``ConnectorUnavailable``; the request left but the answer was lost (reset,
timeout while waiting) → ``AmbiguousOutcome``, never retried.
"""

from __future__ import annotations

import binascii
import http.client
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.error import URLError

import python_http_client.exceptions as sg_errors
from sendgrid import SendGridAPIClient
from sendgrid.helpers.eventwebhook import EventWebhook

from nps_sync.connectors.sendgrid.mapping import error_reason
from nps_sync.errors import (
    AmbiguousOutcome,
    AuthFailed,
    ConfigError,
    ConnectorUnavailable,
    PermanentError,
    RateLimited,
)

NAME = "sendgrid"


@dataclass(frozen=True)
class Accepted:
    """SendGrid took a ``mail/send`` request (202); ``message_id`` is its ``X-Message-Id``."""

    message_id: str | None


def _retry_after(headers: Any) -> float | None:
    for name in ("Retry-After", "X-RateLimit-Reset"):
        value = headers.get(name) if headers is not None else None
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            continue
        if name == "X-RateLimit-Reset":
            seconds = max(0.0, seconds - time.time())
        return seconds
    return None


def _refused(exc: sg_errors.HTTPError, what: str) -> Exception:
    status = int(exc.status_code)
    body = exc.body if isinstance(exc.body, bytes) else str(exc.body or "").encode()
    reason = error_reason(status, body)
    if status in (401, 403):
        return AuthFailed(f"{what}: API key refused. {reason}", connector=NAME, status=status)
    if status == 429:
        return RateLimited(
            f"{what}: {reason}", connector=NAME, status=status, retry_after=_retry_after(exc.headers)
        )
    if status >= 500:
        return ConnectorUnavailable(f"{what}: {reason}", connector=NAME, status=status)
    return PermanentError(reason, connector=NAME, status=status)


class SendGridClient:
    """A thin, typed face over ``SendGridAPIClient`` (one instance per channel, thread-safe for
    calls because the SDK builds a new urllib opener per request)."""

    def __init__(self, api_key: str, *, base_url: str, timeout: float) -> None:
        self._sdk = SendGridAPIClient(api_key=api_key, host=base_url)
        self._timeout = timeout
        self.base_url = base_url

    def send_mail(self, body: Mapping[str, Any]) -> Accepted:
        """POST /v3/mail/send. Raises the kinds described in the module docstring."""
        try:
            response = self._sdk.client.mail.send.post(request_body=dict(body), timeout=self._timeout)
        except sg_errors.HTTPError as exc:
            raise _refused(exc, "POST /v3/mail/send") from exc
        except URLError as exc:
            raise ConnectorUnavailable(
                f"could not reach SendGrid at {self.base_url}: {exc.reason}", connector=NAME
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise AmbiguousOutcome(
                f"POST /v3/mail/send to {self.base_url} left but no answer came back "
                f"({type(exc).__name__}: {exc}); SendGrid may have accepted it",
                connector=NAME,
            ) from exc
        headers = response.headers
        return Accepted(message_id=headers.get("X-Message-Id") if headers is not None else None)

    def scopes(self) -> list[str]:
        """GET /v3/scopes: the API key's permissions."""
        try:
            response = self._sdk.client.scopes.get(timeout=self._timeout)
        except sg_errors.HTTPError as exc:
            raise _refused(exc, "GET /v3/scopes") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ConnectorUnavailable(
                f"could not reach SendGrid at {self.base_url}: {exc}", connector=NAME
            ) from exc
        try:
            scopes = json.loads(response.body.decode("utf-8")).get("scopes", [])
        except (ValueError, AttributeError) as exc:
            raise ConnectorUnavailable(
                f"GET /v3/scopes answered something other than JSON: {response.body[:200]!r}",
                connector=NAME,
            ) from exc
        return [str(s) for s in scopes]


class SignatureVerifier:
    """Checks SendGrid's signed Event Webhook (ECDSA P-256, SHA-256 over ``timestamp + raw body``)."""

    def __init__(self, public_key_b64: str, *, secret_name: str) -> None:
        key = "".join(public_key_b64.split())
        if key.startswith("-----BEGIN"):
            # Accept a pasted PEM too: the helper wants the bare base64 between the armour lines.
            key = "".join(line for line in public_key_b64.splitlines() if not line.startswith("-----"))
        try:
            self._helper = EventWebhook(key)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"secret {secret_name} is not a SendGrid Event Webhook verification key (expected the "
                f"base64 public key from Settings → Mail Settings → Event Webhook): {exc}"
            ) from exc

    def verify(self, body: bytes, signature: str, timestamp: str) -> bool:
        """True only for the exact bytes SendGrid signed; any malformed input is simply False."""
        try:
            payload = body.decode("utf-8")
            binascii.a2b_base64(signature.encode("ascii"))
            return bool(self._helper.verify_signature(payload, signature, timestamp))
        except Exception:  # malformed signatures must read as "not signed", never a 500
            return False
