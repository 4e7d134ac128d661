"""Signed Twilio webhooks: inbound SMS (answered in TwiML) and message status callbacks.

Signatures are checked against the configured public URL, never the URL the request arrived on:
behind a reverse proxy the daemon sees ``http://127.0.0.1:…`` while Twilio signed
``https://public.example/…``. A forged request gets 403 and nothing is recorded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nps_sync.abc import InboundSink
from nps_sync.connectors.twilio.client import NAME, WebhookSigningKeys, signature_valid
from nps_sync.connectors.twilio.config import TwilioOptions
from nps_sync.connectors.twilio.mapping import (
    INBOUND_PATH,
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    STATUS_PATH,
)
from nps_sync.sms_text import parse_sms

log = structlog.get_logger("nps_sync.connectors.twilio.webhooks")

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 200


class _RejectedError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


def twiml(text: str | None) -> Response:
    """A TwiML answer: one ``<Message>`` when there is text, else an empty ``<Response/>``."""
    inner = f"<Response><Message>{escape(text)}</Message></Response>" if text else "<Response/>"
    return Response('<?xml version="1.0" encoding="UTF-8"?>' + inner, media_type="application/xml")


class TwilioWebhooks:
    """Handlers for the two webhook routes, bound to one configuration."""

    def __init__(
        self, options: TwilioOptions, public_url: str, sink: InboundSink, keys: WebhookSigningKeys
    ) -> None:
        self._options = options
        self._public = public_url.rstrip("/")
        self._sink = sink
        self._keys = keys

    async def inbound(self, request: Request) -> Response:
        form = await self._verified_form(request, INBOUND_PATH)
        sid = _required(form, "MessageSid")
        sender, recipient = _required(form, "From"), _required(form, "To")
        body = str(form.get("Body") or "")
        reply = await run_in_threadpool(
            self._sink.sms_received,
            provider=NAME,
            event_id=sid,
            from_number=sender,
            to_number=recipient,
            body=body,
        )
        text = reply.text
        if text and self._options.stop_confirmation == "twilio" and _twilio_answers(form, body):
            # Twilio's opt-out handling already texted its confirmation: a second one is not allowed.
            log.info("twilio.confirmation_left_to_twilio", message_sid=sid)
            text = None
        return twiml(text)

    async def status(self, request: Request) -> Response:
        form = await self._verified_form(request, STATUS_PATH)
        sid, state = _required(form, "MessageSid"), _required(form, "MessageStatus")
        to = form.get("To")
        await run_in_threadpool(
            self._sink.delivery_event,
            provider=NAME,
            event_id=f"{sid}:{state}",
            event=state,
            send_key=request.query_params.get("k"),
            address=to if isinstance(to, str) and to else None,
            occurred_at=None,
            detail=str(form.get("ErrorCode") or ""),
        )
        return Response(status_code=204)

    async def _verified_form(self, request: Request, path: str) -> FormData:
        raw = await _read_capped(request, self._options.max_webhook_bytes)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM_TYPE:
            raise _RejectedError(415, f"expected {FORM_TYPE}")
        try:
            pairs = parse_qsl(
                raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise _RejectedError(400, f"unreadable form body: {exc}") from exc
        form = FormData([(key, value) for key, value in pairs])
        query = request.url.query
        url = self._public + path + (f"?{query}" if query else "")
        signature = request.headers.get(SIGNATURE_HEADER, "")
        settings = request.headers.get(SIGNATURE_SETTINGS_HEADER, "")
        if not signature or not signature_valid(
            keys=self._keys, url=url, params=form, signature=signature, settings=settings
        ):
            client = request.client.host if request.client else None
            log.warning("twilio.webhook_forged", path=path, client=client, signed=bool(signature))
            raise _RejectedError(403, "invalid X-Twilio-Signature")
        return form


def _required(form: FormData, name: str) -> str:
    value = form.get(name)
    if not isinstance(value, str) or not value:
        raise _RejectedError(400, f"missing form field {name}")
    return value


def _twilio_answers(form: FormData, body: str) -> bool:
    """Whether Twilio's own opt-out handling answers this message (``OptOutType`` is sent by
    Advanced Opt-Out for STOP/START/HELP; plain stop keywords are confirmed by default handling)."""
    return bool(form.get("OptOutType")) or parse_sms(body).kind == "stop"


async def _read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _RejectedError(413, f"body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _RejectedError(413, f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except _RejectedError as exc:
            return Response(exc.reason, status_code=exc.status, media_type="text/plain")

    return endpoint


def build_routes(
    options: TwilioOptions, public_url: str, sink: InboundSink, keys: WebhookSigningKeys
) -> list[Route]:
    hooks = TwilioWebhooks(options, public_url, sink, keys)
    return [
        Route(INBOUND_PATH, _guarded(hooks.inbound), methods=["POST"]),
        Route(STATUS_PATH, _guarded(hooks.status), methods=["POST"]),
    ]
