"""Options of the ``[channels.email.sendgrid]`` table.

The common ``[channels.email]`` keys (``kind``, ``from_address``, ``from_name``, ``reply_to``,
``postal_address``) belong to the core and are not repeated here. Secrets are *names* resolved through
``ConnectorContext.secrets``; the config file never holds a key.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from nps_sync.connectors.sendgrid.mapping import MAX_CATEGORIES, PURPOSES_WITH_TEMPLATES

GLOBAL_HOST = "https://api.sendgrid.com"
EU_HOST = "https://api.eu.sendgrid.com"

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, None: 1}


def parse_seconds(value: object, *, name: str) -> int:
    """``300``, ``"300s"``, ``"5m"`` or ``"1h"`` → seconds (a positive integer)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be seconds or a duration like '5m', got: {value!r}")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"{name} must be seconds or a duration like '5m', got: {value!r}")
    if seconds <= 0:
        raise ValueError(f"{name} must be positive, got: {value!r}")
    return seconds


class SendGridOptions(BaseModel):
    """``[channels.email.sendgrid]``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Name of the secret holding the API key (env var or ``$CREDENTIALS_DIRECTORY`` file).
    api_key_secret: str = "SENDGRID_API_KEY"  # noqa: S105 - the name of a secret, not a secret
    #: ``https://api.sendgrid.com``, or ``https://api.eu.sendgrid.com`` for EU data residency.
    base_url: str = GLOBAL_HOST
    #: ``nps-sync``: our own rendering with substitutions; ``dynamic``: SendGrid dynamic templates.
    templates: Literal["nps-sync", "dynamic"] = "nps-sync"
    #: ``{ survey = { en = "d-…", de = "d-…" }, reminder = {…}, playbook = {…} }``.
    dynamic_templates: dict[str, dict[str, str]] = Field(default_factory=dict)
    #: The language whose dynamic template is used when the recipient's language has none.
    default_language: str = "en"
    #: SendGrid unsubscribe group (Suppressions → Unsubscribe Groups) added to every message.
    asm_group_id: int | None = None
    #: Categories shown in SendGrid's statistics (at most 10).
    categories: tuple[str, ...] = ()
    #: SendGrid validates but delivers nothing (``mail_settings.sandbox_mode``): for trying a setup.
    sandbox_mode: bool = False
    #: Name of the secret holding the Event Webhook verification key (base64, from SendGrid).
    webhook_public_key_secret: str = "SENDGRID_WEBHOOK_PUBLIC_KEY"  # noqa: S105 - a name
    #: Signed events older (or further in the future) than this are refused.
    webhook_max_age: int = 300
    #: Event batches larger than this are refused with 413.
    webhook_max_body_bytes: int = Field(default=1_000_000, gt=0)
    #: Seconds to wait for SendGrid before the outcome of a send becomes ``unknown``.
    timeout: int = 30

    @field_validator("webhook_max_age", "timeout", mode="before")
    @classmethod
    def _duration(cls, value: object, info: ValidationInfo) -> int:
        return parse_seconds(value, name=str(info.field_name))

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError(
                f"base_url must be an http(s) URL such as {GLOBAL_HOST} or {EU_HOST}, got: {value!r}"
            )
        return value.rstrip("/")

    @field_validator("asm_group_id")
    @classmethod
    def _asm(cls, value: int | None) -> int | None:
        if value is not None and value <= 0:
            raise ValueError(f"asm_group_id must be a positive SendGrid group id, got: {value!r}")
        return value

    @field_validator("categories")
    @classmethod
    def _categories(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) > MAX_CATEGORIES:
            raise ValueError(f"categories allows at most {MAX_CATEGORIES} entries, got: {len(value)}")
        return value

    @field_validator("dynamic_templates")
    @classmethod
    def _template_ids(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for purpose, by_language in value.items():
            for language, template_id in by_language.items():
                if not template_id.startswith("d-"):
                    raise ValueError(
                        f"dynamic_templates.{purpose}.{language} must be a dynamic template id "
                        f"starting with 'd-', got: {template_id!r}"
                    )
        return value

    @model_validator(mode="after")
    def _dynamic_needs_templates(self) -> SendGridOptions:
        if self.templates == "dynamic" and "survey" not in self.dynamic_templates:
            raise ValueError(
                "templates = 'dynamic' needs dynamic_templates.survey (a table of language = 'd-…'); "
                f"got purposes: {sorted(self.dynamic_templates) or 'none'} "
                f"(known purposes: {', '.join(PURPOSES_WITH_TEMPLATES)})"
            )
        return self
