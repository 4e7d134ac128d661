"""SendGrid endpoint constants and the pure mapping between our messages and ``mail/send`` bodies.

Nothing here talks to the network: :func:`plan_calls` turns a list of
:class:`~nps_sync.models.OutboundMessage` into the fewest ``mail/send`` bodies SendGrid accepts, and
remembers which message went into which personalization so outcomes map back in order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parseaddr
from functools import lru_cache
from typing import Any

from nps_sync.models import OutboundMessage

MAIL_SEND = "/v3/mail/send"
SCOPES = "/v3/scopes"
REQUIRED_SCOPE = "mail.send"
WEBHOOK_PATH = "/hooks/sendgrid/events"

#: Documented ``mail/send`` limits: personalizations per request, and to+cc+bcc per request.
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_CATEGORIES = 10
#: ``substitutions`` may hold at most this many bytes per personalization.
MAX_SUBSTITUTION_BYTES = 10_000

#: The custom argument carrying our send key; SendGrid flattens it into every event.
SEND_KEY_ARG = "nps_send_key"

PURPOSES_WITH_TEMPLATES = ("survey", "reminder", "playbook")

#: Events proving SendGrid accepted the message (it processed, delivered, bounced or was engaged).
EVIDENCE_SENT = frozenset(
    {
        "processed",
        "deferred",
        "delivered",
        "open",
        "click",
        "bounce",
        "spamreport",
        "unsubscribe",
        "group_unsubscribe",
        "group_resubscribe",
    }
)
#: SendGrid took the request but never sent the message (suppressed or invalid address).
EVIDENCE_FAILED = frozenset({"dropped"})

#: Signed Event Webhook headers (ECDSA P-256 over ``timestamp + raw body``).
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


@dataclass
class Call:
    """One ``mail/send`` request body and the input positions of its personalizations, in order."""

    body: dict[str, Any]
    indexes: list[int] = field(default_factory=list)


def address(value: str) -> dict[str, str]:
    """``"Acme <nps@acme.test>"`` → ``{"email": "nps@acme.test", "name": "Acme"}``."""
    name, email = _parsed(value)
    return {"email": email or value, "name": name} if name else {"email": email or value}


@lru_cache(maxsize=64)
def _parsed(value: str) -> tuple[str, str]:
    """A batch has one sender (and reply-to) for all its messages: parse it once."""
    return parseaddr(value)


def substitute(text: str, substitutions: Mapping[str, str]) -> str:
    """Replace every tag in one pass, as SendGrid does (a value is never substituted again)."""
    if not substitutions:
        return text
    return _fill(_split(text, tuple(substitutions)), substitutions)


@lru_cache(maxsize=64)
def _pattern(tags: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("(" + "|".join(re.escape(k) for k in sorted(tags, key=len, reverse=True)) + ")")


@lru_cache(maxsize=64)
def _split(text: str, tags: tuple[str, ...]) -> tuple[str, ...]:
    """``text`` cut at its tags (odd positions): a batch of messages shares one tagged body, so it
    is cut once and each recipient's values are joined in."""
    return tuple(_pattern(tags).split(text))


def _fill(parts: Sequence[str], substitutions: Mapping[str, str]) -> str:
    return "".join(substitutions[p] if i % 2 else p for i, p in enumerate(parts))


def _substitutions_fit(msg: OutboundMessage) -> bool:
    """The tagged content reproduces the message exactly and its values fit SendGrid's size limit."""
    tagged = msg.tagged
    if tagged is None or not tagged.substitutions:
        return False
    size = len("".join([*tagged.substitutions, *tagged.substitutions.values()]).encode())
    if size > MAX_SUBSTITUTION_BYTES:
        return False
    subs = tagged.substitutions
    return (
        substitute(tagged.subject, subs) == msg.subject
        and substitute(tagged.text, subs) == msg.text
        and (tagged.html is None) == (msg.html is None)
        and (tagged.html is None or substitute(tagged.html, subs) == msg.html)
    )


def _content(text: str, html: str | None) -> list[dict[str, str]]:
    # SendGrid wants text/plain before text/html and refuses empty values.
    parts = [{"type": "text/plain", "value": text}] if text else []
    if html:
        parts.append({"type": "text/html", "value": html})
    return parts


def template_id_for(
    msg: OutboundMessage, templates: Mapping[str, Mapping[str, str]], default_language: str
) -> str | None:
    """The dynamic template for the message's purpose and language (falling back to the default
    language); ``None`` when the purpose has no template, so our own rendering is used instead."""
    by_language = templates.get(msg.purpose)
    if not by_language:
        return None
    language = str(msg.template_data.get("language") or default_language)
    return (
        by_language.get(language)
        or by_language.get(language.split("-")[0])
        or by_language.get(default_language)
    )


def _json_safe(data: Mapping[str, Any]) -> dict[str, Any]:
    # template_data may carry dates or Decimals; SendGrid only takes JSON.
    result: dict[str, Any] = json.loads(json.dumps(dict(data), default=str))
    return result


@dataclass(frozen=True)
class SendSettings:
    """What every request carries, from the connector's options."""

    dynamic_templates: Mapping[str, Mapping[str, str]] | None
    default_language: str
    asm_group_id: int | None
    categories: Sequence[str]
    sandbox_mode: bool


def _group_of(msg: OutboundMessage, settings: SendSettings) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The key of messages sharing one request body, that body (without personalizations), and
    what goes into this message's personalization."""
    base: dict[str, Any] = {"from": address(msg.sender)}
    if msg.reply_to:
        base["reply_to"] = address(msg.reply_to)
    personal: dict[str, Any] = {
        "to": [{"email": msg.to}],
        "headers": {str(k): str(v) for k, v in msg.headers.items()},
        "custom_args": {SEND_KEY_ARG: msg.send_key},
    }
    template_id = (
        template_id_for(msg, settings.dynamic_templates, settings.default_language)
        if settings.dynamic_templates is not None
        else None
    )
    if template_id is not None:
        data = _json_safe(msg.template_data)
        data.setdefault("subject", msg.subject)
        personal["dynamic_template_data"] = data
        key: tuple[Any, ...] = ("template", template_id, msg.sender, msg.reply_to)
        base["template_id"] = template_id
    elif _substitutions_fit(msg):
        assert msg.tagged is not None
        personal["substitutions"] = dict(msg.tagged.substitutions)
        key = ("content", msg.tagged.subject, msg.tagged.text, msg.tagged.html, msg.sender, msg.reply_to)
        base["subject"] = msg.tagged.subject
        base["content"] = _content(msg.tagged.text, msg.tagged.html)
    else:
        key = ("content", msg.subject, msg.text, msg.html, msg.sender, msg.reply_to)
        base["subject"] = msg.subject
        base["content"] = _content(msg.text, msg.html)
    return key, {"base": base, "personal": personal}


def plan_calls(messages: Sequence[OutboundMessage], settings: SendSettings) -> list[Call]:
    """Group messages with identical content into requests of at most 1,000 personalizations, one
    recipient each, with every address at most once per request (a repeated address starts or joins
    another request of the same group)."""
    groups: dict[tuple[Any, ...], list[Call]] = {}
    seen: dict[int, set[str]] = {}
    calls: list[Call] = []
    for index, msg in enumerate(messages):
        key, parts = _group_of(msg, settings)
        normalised = msg.to.strip().lower()
        target = None
        for call in groups.get(key, []):
            if len(call.indexes) < MAX_PERSONALIZATIONS and normalised not in seen[id(call)]:
                target = call
                break
        if target is None:
            body = dict(parts["base"])
            body["personalizations"] = []
            if settings.asm_group_id is not None:
                body["asm"] = {"group_id": settings.asm_group_id}
            if settings.categories:
                body["categories"] = list(settings.categories)
            if settings.sandbox_mode:
                body["mail_settings"] = {"sandbox_mode": {"enable": True}}
            target = Call(body=body)
            groups.setdefault(key, []).append(target)
            seen[id(target)] = set()
            calls.append(target)
        target.body["personalizations"].append(parts["personal"])
        target.indexes.append(index)
        seen[id(target)].add(normalised)
    return calls


def error_reason(status: int, body: bytes) -> str:
    """SendGrid's ``{"errors": [{"message", "field", "help"}]}`` as one readable line."""
    try:
        errors = json.loads(body.decode("utf-8") or "{}").get("errors") or []
    except (ValueError, AttributeError):
        errors = []
    parts = []
    for error in errors if isinstance(errors, list) else []:
        if isinstance(error, dict):
            field_name = error.get("field")
            message = str(error.get("message") or "").strip()
            parts.append(f"{field_name}: {message}" if field_name not in (None, "null", "") else message)
    detail = "; ".join(p for p in parts if p) or body.decode("utf-8", "replace")[:300] or "no body"
    return f"SendGrid refused the request ({status}): {detail}"
