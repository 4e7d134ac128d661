"""The Twilio SMS channel: one ``Messages.create`` per SMS, paced and capped, never resent."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from nps_sync.abc import ConnectorContext
from nps_sync.connectors.twilio.client import NAME, TwilioApi, TwilioRefusedError, WebhookSigningKeys
from nps_sync.connectors.twilio.config import TwilioOptions
from nps_sync.connectors.twilio.mapping import SUPPRESS_CODES, SentMessage, segments, status_callback_url
from nps_sync.connectors.twilio.webhooks import build_routes
from nps_sync.errors import (
    AmbiguousOutcome,
    AuthFailed,
    ConnectorError,
    ConnectorUnavailable,
    RateLimited,
)
from nps_sync.models import ChannelKind, OutboundMessage, PendingSend, SendOutcome

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

log = structlog.get_logger("nps_sync.connectors.twilio")

#: Twilio's ``date_created`` has one-second resolution and its clock is not ours.
CLOCK_SKEW = timedelta(seconds=30)


class _Pacer:
    """Spaces requests so the senders' segments-per-second is never exceeded (shared by threads)."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, units: int) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + units * self._interval
        if start > now:
            time.sleep(start - now)


@dataclass(frozen=True)
class _Result:
    """Either an outcome, or the error that kept the message from being handed over at all."""

    outcome: SendOutcome | None = None
    error: ConnectorError | None = None


class TwilioChannel:
    """``nps_sync.abc.Channel`` over Twilio Programmable Messaging."""

    name = NAME
    kind: ChannelKind = "sms"

    def __init__(
        self, options: TwilioOptions, ctx: ConnectorContext, api: TwilioApi, keys: WebhookSigningKeys
    ) -> None:
        self.options = options
        self.max_batch = options.max_batch
        self._ctx = ctx
        self._api = api
        self._keys = keys
        self._pacer = _Pacer(options.rate)
        self._pool = ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="twilio-send")
        self._sender = (
            {"messaging_service_sid": options.messaging_service_sid}
            if options.messaging_service_sid
            else {"from_": options.from_number or ""}
        )
        self._closed = False

    # --- sending ---------------------------------------------------------------------------------

    def send(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        if not messages:
            return []
        abort = threading.Event()
        retries: list[str] = []
        results = list(self._pool.map(lambda m: self._send_one(m, abort, retries), messages))
        errors = [r.error for r in results if r.error is not None]
        if len(errors) == len(results):
            # Nothing was handed over: let the core back off and retry the whole batch.
            auth = next((e for e in errors if isinstance(e, AuthFailed)), None)
            log.warning("twilio.send_refused", messages=len(results), error=str(auth or errors[0]))
            raise auth or errors[0]
        outcomes = [
            r.outcome
            if r.outcome is not None
            else SendOutcome(
                m.send_key,
                "failed",
                reason=f"not sent: {r.error}",
                # refused before Twilio accepted it (20429, 5xx, refused connection): claim it again later
                transient=not isinstance(r.error, AuthFailed),
            )
            for m, r in zip(messages, results, strict=True)
        ]
        counts = {s: sum(1 for o in outcomes if o.status == s) for s in ("sent", "failed", "unknown")}
        quiet = counts["sent"] == len(outcomes) and not retries
        (log.debug if quiet else log.info)("twilio.batch_sent", **counts, retries=len(retries))
        return outcomes

    def _send_one(self, message: OutboundMessage, abort: threading.Event, retries: list[str]) -> _Result:
        retrying = Retrying(
            retry=retry_if_exception_type(ConnectorUnavailable),
            stop=stop_after_attempt(self.options.max_attempts),
            wait=wait_exponential_jitter(multiplier=0.1, max=5.0, jitter=0.1),
            before_sleep=lambda state: retries.append(message.send_key),
            reraise=True,
        )
        units = segments(message.text)
        callback = status_callback_url(self._ctx.public_url, message.send_key)
        try:
            for attempt in retrying:
                with attempt:
                    if abort.is_set():
                        raise AuthFailed("twilio credentials refused earlier in this batch", connector=NAME)
                    self._pacer.wait(units)
                    sid = self._api.create_message(
                        to=message.to, body=message.text, status_callback=callback, sender=self._sender
                    )
        except TwilioRefusedError as exc:
            suppress = exc.code in SUPPRESS_CODES
            return _Result(SendOutcome(message.send_key, "failed", reason=str(exc), suppress=suppress))
        except AmbiguousOutcome as exc:
            return _Result(SendOutcome(message.send_key, "unknown", reason=str(exc)))
        except AuthFailed as exc:
            abort.set()
            return _Result(error=exc)
        except ConnectorUnavailable as exc:
            if isinstance(exc, RateLimited):
                log.warning("twilio.concurrency_limit", send_key=message.send_key, error=str(exc))
            return _Result(error=exc)
        return _Result(SendOutcome(message.send_key, "sent", provider_id=sid))

    # --- reconciliation --------------------------------------------------------------------------

    def lookup(self, pending: Sequence[PendingSend]) -> dict[str, SendOutcome]:
        by_number: dict[str, list[PendingSend]] = defaultdict(list)
        for item in pending:
            by_number[item.to].append(item)
        groups = list(by_number.values())
        found: dict[str, SendOutcome] = {}
        for outcomes in self._pool.map(self._lookup_number, groups):
            found.update(outcomes)
        return found

    def _lookup_number(self, group: list[PendingSend]) -> dict[str, SendOutcome]:
        since = min(p.claimed_at for p in group) - CLOCK_SKEW
        try:
            listed = self._api.recent_messages(
                to=group[0].to, since=since, from_number=self.options.from_number
            )
        except AuthFailed:
            raise
        except ConnectorError as exc:
            log.warning("twilio.lookup_failed", pending=len(group), error=str(exc))
            return {}
        ours = [m for m in listed if self._is_ours(m)]
        result: dict[str, SendOutcome] = {}
        for item in group:
            candidates = [
                m for m in ours if m.created_at is None or m.created_at >= item.claimed_at - CLOCK_SKEW
            ]
            if not candidates:
                result[item.send_key] = SendOutcome(item.send_key, "failed", reason="not at provider")
            elif len(candidates) == 1 and len(group) == 1:
                result[item.send_key] = SendOutcome(item.send_key, "sent", provider_id=candidates[0].sid)
        return result

    def _is_ours(self, message: SentMessage) -> bool:
        # TwiML replies (STOP confirmations, HELP) are not sends of ours.
        if message.direction != "outbound-api":
            return False
        if self.options.messaging_service_sid:
            return message.messaging_service_sid == self.options.messaging_service_sid
        return message.from_number == self.options.from_number

    # --- the rest of the Channel interface -------------------------------------------------------

    def routes(self) -> Sequence[BaseRoute]:
        if self._ctx.inbound is None:
            return []
        return build_routes(self.options, self._ctx.public_url, self._ctx.inbound, self._keys)

    def check(self, *, online: bool) -> list[str]:
        problems: list[str] = []
        if not self._ctx.public_url.startswith("https://"):
            problems.append(
                f"public_url is {self._ctx.public_url!r}: Twilio webhooks should reach nps-sync over https"
            )
        if not online:
            return problems
        try:
            status = self._api.account_status()
            if status != "active":
                problems.append(f"twilio account {self.options.account_sid} is {status!r}, expected 'active'")
            if self.options.messaging_service_sid:
                self._api.service_name(self.options.messaging_service_sid)
        except ConnectorError as exc:
            problems.append(str(exc))
        return problems

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True)
        self._api.close()
