"""Options of ``[channels.sms.twilio]``. Secrets are named here and resolved through ``ctx.secrets``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nps_sync.connectors.twilio.mapping import SENDER_MPS, SenderType

StopConfirmation = Literal["nps-sync", "twilio"]


class TwilioOptions(BaseModel):
    """How to reach Twilio, which sender to use, and how fast to go."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    #: Name of the secret holding the account's Auth Token. Always needed: Twilio signs webhooks
    #: with it, even when the REST calls use an API key.
    auth_token_secret: str = "TWILIO_AUTH_TOKEN"  # noqa: S105 -- the name of a secret, not one
    #: API key (``SK…``) for REST calls instead of the Auth Token; its secret is named by
    #: ``api_key_secret_secret``.
    api_key_sid: str | None = Field(default=None, pattern=r"^SK[0-9a-fA-F]{32}$")
    api_key_secret_secret: str | None = None
    #: Secret of a webhook SharedKey, used only for requests signed with HMAC-SHA256 (header
    #: ``X-Twilio-Webhooks-Signature-Settings``); without it those are checked with the Auth Token.
    webhook_key_secret: str | None = None
    messaging_service_sid: str | None = Field(default=None, pattern=r"^MG[0-9a-fA-F]{32}$")
    from_number: str | None = Field(default=None, pattern=r"^\+[1-9][0-9]{6,14}$")
    sender_type: SenderType = "long_code"
    #: Overrides the rate derived from ``sender_type`` (message segments per second, all senders).
    messages_per_second: float | None = Field(default=None, gt=0, le=10_000)
    #: Requests in flight at once; Twilio's account-wide cap is about 100 (error 20429 beyond it).
    concurrency: int = Field(default=10, ge=1, le=50)
    max_batch: int = Field(default=20, ge=1, le=500)
    #: Tries per message on refusals that are safe to retry (20429, 5xx, connection refused).
    max_attempts: int = Field(default=4, ge=1, le=10)
    timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    #: API root for tests and egress proxies; every Twilio domain is rewritten to it.
    base_url: str | None = None
    #: Who confirms STOP: "twilio" when Twilio's (Advanced) Opt-Out already replies, so the person
    #: gets at most one confirmation; "nps-sync" when Twilio's opt-out replies are turned off.
    stop_confirmation: StopConfirmation = "twilio"
    max_webhook_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got: {value!r}")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _one_sender(self) -> TwilioOptions:
        if (self.messaging_service_sid is None) == (self.from_number is None):
            raise ValueError(
                "set exactly one of messaging_service_sid (MG…) or from_number (E.164), got: "
                f"messaging_service_sid={self.messaging_service_sid!r}, from_number={self.from_number!r}"
            )
        if (self.api_key_sid is None) != (self.api_key_secret_secret is None):
            raise ValueError(
                "api_key_sid and api_key_secret_secret go together, got: "
                f"api_key_sid={self.api_key_sid!r}, api_key_secret_secret={self.api_key_secret_secret!r}"
            )
        return self

    @property
    def rate(self) -> float:
        """Message segments per second this daemon may hand Twilio."""
        return self.messages_per_second or SENDER_MPS[self.sender_type]
