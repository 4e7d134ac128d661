"""The SendGrid email channel: batched ``mail/send``, event-based reconciliation, the setup check."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from nps_sync.abc import ConnectorContext
from nps_sync.connectors.sendgrid.client import NAME, SendGridClient, SignatureVerifier
from nps_sync.connectors.sendgrid.config import SendGridOptions
from nps_sync.connectors.sendgrid.mapping import (
    EVIDENCE_FAILED,
    EVIDENCE_SENT,
    MAX_PERSONALIZATIONS,
    PURPOSES_WITH_TEMPLATES,
    REQUIRED_SCOPE,
    Call,
    SendSettings,
    plan_calls,
)
from nps_sync.connectors.sendgrid.webhooks import event_routes
from nps_sync.errors import (
    AmbiguousOutcome,
    AuthFailed,
    ConnectorError,
    ConnectorUnavailable,
    PermanentError,
    RateLimited,
)
from nps_sync.models import ChannelKind, OutboundMessage, PendingSend, SendOutcome
from nps_sync.store import schema

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

log = structlog.get_logger("nps_sync.connectors.sendgrid")

#: Later requests of one ``send`` are retried this often on 429/5xx (refused, so nothing was
#: accepted): raising would throw away the outcomes of the requests already accepted.
LATER_CALL_ATTEMPTS = 3
#: The longest a Retry-After is honoured inside one ``send`` (the send worker holds its batch).
MAX_RETRY_AFTER = 60.0


class SendGridChannel:
    """An email :class:`~nps_sync.abc.Channel` over SendGrid's v3 Web API."""

    name = NAME
    kind: ChannelKind = "email"
    max_batch = MAX_PERSONALIZATIONS

    def __init__(self, options: SendGridOptions, ctx: ConnectorContext) -> None:
        self.options = options
        self._ctx = ctx
        overrides = dict(ctx.overrides or {})
        api_key = ctx.secrets.require(options.api_key_secret, purpose="the SendGrid API key")
        self._client = SendGridClient(
            api_key.get_secret_value(), base_url=options.base_url, timeout=options.timeout
        )
        public_key = ctx.secrets.get(options.webhook_public_key_secret)
        self._verifier = (
            SignatureVerifier(public_key.get_secret_value(), secret_name=options.webhook_public_key_secret)
            if public_key is not None
            else None
        )
        self._retry_wait: float = float(overrides.get("retry_wait", 1.0))
        self._settings = SendSettings(
            dynamic_templates=options.dynamic_templates if options.templates == "dynamic" else None,
            default_language=options.default_language,
            asm_group_id=options.asm_group_id,
            categories=options.categories,
            sandbox_mode=options.sandbox_mode,
        )
        self._failing = False

    # --- sending ------------------------------------------------------------------------------

    def send(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        """One ``mail/send`` per group of identical content (≤1,000 personalizations, each address
        once). The first request's refusal (401/403, 429, 5xx, unreachable) is raised: nothing was
        accepted. Later requests are retried on 429/5xx; past that, or on any refusal of their own,
        their messages come back ``failed`` with the reason so the accepted ones keep ``sent``."""
        outcomes: list[SendOutcome | None] = [None] * len(messages)
        calls = plan_calls(messages, self._settings)
        committed = 0  # requests SendGrid accepted, or may have (their outcome must be kept)
        for call in calls:
            try:
                results = self._send_call(call, messages, retry=committed > 0)
            except ConnectorError as exc:
                self._note_failure(exc)
                if committed == 0:
                    raise
                reason = f"not sent: {exc} (after {committed} of {len(calls)} requests were accepted)"
                results = [
                    SendOutcome(
                        send_key=messages[i].send_key,
                        status="failed",
                        reason=reason,
                        # nothing of this request was accepted: the core may claim it again later
                        transient=isinstance(exc, ConnectorUnavailable),
                    )
                    for i in call.indexes
                ]
            if any(r.status != "failed" for r in results):
                committed += 1
            for index, outcome in zip(call.indexes, results, strict=True):
                outcomes[index] = outcome
        if calls and self._failing and all(o is not None and o.status == "sent" for o in outcomes):
            self._failing = False
            log.info("sendgrid.send_recovered")
        return [o for o in outcomes if o is not None]

    def _send_call(
        self, call: Call, messages: Sequence[OutboundMessage], *, retry: bool
    ) -> list[SendOutcome]:
        keys = [messages[i].send_key for i in call.indexes]
        try:
            if retry:
                retrying = Retrying(
                    retry=retry_if_exception_type(ConnectorUnavailable),
                    stop=stop_after_attempt(LATER_CALL_ATTEMPTS),
                    wait=self._wait,
                    reraise=True,
                )
                accepted = retrying(self._client.send_mail, call.body)
            else:
                accepted = self._client.send_mail(call.body)
        except PermanentError as exc:
            log.warning("sendgrid.request_refused", status=exc.status, messages=len(keys), reason=str(exc))
            return [SendOutcome(send_key=k, status="failed", reason=str(exc)) for k in keys]
        except AmbiguousOutcome as exc:
            log.error("sendgrid.outcome_unknown", messages=len(keys), error=str(exc))
            return [SendOutcome(send_key=k, status="unknown", reason=str(exc)) for k in keys]
        return [SendOutcome(send_key=k, status="sent", provider_id=accepted.message_id) for k in keys]

    def _wait(self, state: RetryCallState) -> float:
        backoff = float(wait_exponential(multiplier=self._retry_wait, max=30 * self._retry_wait)(state))
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return min(max(backoff, exc.retry_after), MAX_RETRY_AFTER)
        return backoff

    def _note_failure(self, exc: ConnectorError) -> None:
        if not self._failing:
            self._failing = True
            event = "sendgrid.auth_failed" if isinstance(exc, AuthFailed) else "sendgrid.unavailable"
            log.error(event, status=exc.status, error=str(exc))

    # --- reconciliation -----------------------------------------------------------------------

    def lookup(self, pending: Sequence[PendingSend]) -> dict[str, SendOutcome]:
        """Evidence from events already received: SendGrid has no per-message lookup without the
        paid Email Activity add-on, so only sends that produced an event can be resolved."""
        keys = [p.send_key for p in pending]
        kinds: dict[str, set[str]] = {}
        table = schema.inbound_events
        with self._ctx.store.read() as conn:
            for start in range(0, len(keys), 500):
                rows = conn.execute(
                    select(table.c.send_key, table.c.kind, table.c.detail).where(
                        table.c.provider == NAME, table.c.send_key.in_(keys[start : start + 500])
                    )
                )
                for send_key, kind, _detail in rows:
                    kinds.setdefault(str(send_key), set()).add(str(kind))
        found: dict[str, SendOutcome] = {}
        for key, seen in kinds.items():
            if seen & EVIDENCE_SENT:
                found[key] = SendOutcome(send_key=key, status="sent")
            elif seen & EVIDENCE_FAILED:
                found[key] = SendOutcome(
                    send_key=key, status="failed", reason="SendGrid dropped the message", suppress=True
                )
        return found

    # --- web, checks, lifecycle ---------------------------------------------------------------

    def routes(self) -> Sequence[BaseRoute]:
        return event_routes(
            verifier=self._verifier,
            inbound=self._ctx.inbound,
            max_age=self.options.webhook_max_age,
            max_body=self.options.webhook_max_body_bytes,
        )

    def check(self, *, online: bool) -> list[str]:
        problems: list[str] = []
        opts = self.options
        if self._verifier is None:
            problems.append(
                f"no Event Webhook verification key in secret {opts.webhook_public_key_secret}: "
                "bounces, spam reports and unsubscribes from SendGrid will not be recorded"
            )
        if self._ctx.inbound is None:
            problems.append("the SendGrid event webhook has no inbound sink (core wiring missing)")
        if opts.templates == "dynamic":
            for purpose in PURPOSES_WITH_TEMPLATES:
                languages = opts.dynamic_templates.get(purpose, {})
                if languages and opts.default_language not in languages:
                    problems.append(
                        f"dynamic_templates.{purpose} has no template for default_language "
                        f"{opts.default_language!r} (has: {', '.join(sorted(languages))})"
                    )
        if online:
            problems.extend(self._check_online())
        return problems

    def _check_online(self) -> list[str]:
        try:
            scopes = self._client.scopes()
        except AuthFailed as exc:
            return [f"SendGrid refused the API key from secret {self.options.api_key_secret}: {exc}"]
        except ConnectorError as exc:
            return [f"SendGrid is not reachable at {self.options.base_url}: {exc}"]
        if REQUIRED_SCOPE not in scopes:
            return [
                f"the API key from secret {self.options.api_key_secret} lacks the {REQUIRED_SCOPE!r} "
                f"scope (it has {len(scopes)} scopes); give it 'Mail Send' access in SendGrid"
            ]
        return []

    def close(self) -> None:
        """Nothing to release: the SDK opens a connection per request."""


def factory(options: Any, ctx: ConnectorContext) -> SendGridChannel:
    if not isinstance(options, SendGridOptions):
        options = SendGridOptions.model_validate(options)
    return SendGridChannel(options, ctx)
