"""The signed Event Webhook: ``POST /hooks/sendgrid/events``.

Order of checks, cheapest and safest first: body size (413), signature headers present and the
timestamp inside the window (403), the ECDSA signature over the *raw* bytes (403), then JSON (400).
A post's events go to ``InboundSink.delivery_events`` together (one transaction), which
deduplicates on ``sg_event_id`` in the database; the answer is 2xx only after every event was
recorded, so SendGrid retries otherwise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nps_sync.connectors.sendgrid.mapping import (
    SEND_KEY_ARG,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WEBHOOK_PATH,
)
from nps_sync.models import ProviderEvent

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from nps_sync.abc import InboundSink
    from nps_sync.connectors.sendgrid.client import SignatureVerifier

log = structlog.get_logger("nps_sync.connectors.sendgrid.webhooks")


class _BodyTooLargeError(Exception):
    pass


def _refuse(status: int, message: str, **fields: Any) -> Response:
    log.warning("sendgrid.webhook_refused", status=status, reason=message, **fields)
    return JSONResponse({"error": message}, status_code=status)


async def _read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def _occurred_at(value: object) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def _detail(event: dict[str, Any]) -> str:
    for key in ("reason", "response", "url"):
        value = event.get(key)
        if value:
            return str(value)[:1000]
    return ""


def _deliver(inbound: InboundSink, events: list[dict[str, Any]]) -> tuple[int, int, int]:
    """Record a post's events in one transaction; returns (recorded, duplicates, skipped)."""
    batch: list[ProviderEvent] = []
    for event in events:
        event_id, kind = event.get("sg_event_id"), event.get("event")
        if not isinstance(event_id, str) or not event_id or not isinstance(kind, str) or not kind:
            continue
        send_key = event.get(SEND_KEY_ARG)
        email = event.get("email")
        batch.append(
            ProviderEvent(
                provider="sendgrid",
                event_id=event_id,
                event=kind,
                send_key=send_key if isinstance(send_key, str) and send_key else None,
                address=email if isinstance(email, str) and email else None,
                occurred_at=_occurred_at(event.get("timestamp")),
                detail=_detail(event),
            )
        )
    new = inbound.delivery_events(batch) if batch else []
    recorded = sum(new)
    return recorded, len(new) - recorded, len(events) - len(batch)


def event_routes(
    *,
    verifier: SignatureVerifier | None,
    inbound: InboundSink | None,
    max_age: int,
    max_body: int,
) -> Sequence[BaseRoute]:
    """The event route; it answers 503 (SendGrid retries for 72 h) while the key or sink is missing."""

    async def events(request: Request) -> Response:
        if verifier is None or inbound is None:
            return _refuse(503, "event webhook not configured: verification key or sink missing")
        try:
            body = await _read_capped(request, max_body)
        except _BodyTooLargeError:
            return _refuse(413, f"body larger than {max_body} bytes")
        except ClientDisconnect:
            return _refuse(400, "client disconnected before the body was complete")
        signature = request.headers.get(SIGNATURE_HEADER)
        timestamp = request.headers.get(TIMESTAMP_HEADER)
        if not signature or not timestamp:
            return _refuse(403, "missing signature or timestamp header")
        if not timestamp.isdigit() or len(timestamp) > 12:
            return _refuse(403, "timestamp is not epoch seconds", timestamp=timestamp[:40])
        skew = time.time() - int(timestamp)
        if abs(skew) > max_age:
            return _refuse(403, f"timestamp outside the {max_age} s window", skew=round(skew))
        if not verifier.verify(body, signature, timestamp):
            return _refuse(403, "signature does not match the body and timestamp")
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return _refuse(400, "body is not JSON")
        if not isinstance(parsed, list) or not all(isinstance(e, dict) for e in parsed):
            return _refuse(400, "body is not a JSON array of event objects")
        try:
            recorded, duplicates, skipped = await run_in_threadpool(_deliver, inbound, parsed)
        except Exception as exc:  # the sender must retry later, and must never see a traceback
            log.exception("sendgrid.webhook_sink_failed", events=len(parsed), error=str(exc))
            return JSONResponse({"error": "could not record events, retry later"}, status_code=503)
        if skipped:
            log.warning("sendgrid.webhook_events_skipped", skipped=skipped, reason="no sg_event_id or event")
        return JSONResponse({"recorded": recorded, "duplicates": duplicates, "skipped": skipped})

    return [Route(WEBHOOK_PATH, events, methods=["POST"], name="sendgrid_events")]
