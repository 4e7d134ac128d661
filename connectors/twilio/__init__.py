"""Twilio Programmable Messaging as the SMS channel, with signed inbound and status webhooks."""

from __future__ import annotations

from nps_sync.abc import ConnectorContext, ConnectorSpec
from nps_sync.connectors.twilio.client import TwilioApi, WebhookSigningKeys
from nps_sync.connectors.twilio.config import TwilioOptions
from nps_sync.connectors.twilio.connector import TwilioChannel

__all__ = ["CONNECTOR", "TwilioChannel", "TwilioOptions", "build"]

TABLE = "[channels.sms.twilio]"


def build(options: TwilioOptions, ctx: ConnectorContext) -> TwilioChannel:
    """Resolve the named secrets and build the channel. Raises ``ConfigError`` for a missing secret."""
    auth_token = ctx.secrets.require(
        options.auth_token_secret, purpose=f"{TABLE} auth_token_secret (Twilio Auth Token)"
    ).get_secret_value()
    username, password = options.account_sid, auth_token
    if options.api_key_sid and options.api_key_secret_secret:
        username = options.api_key_sid
        password = ctx.secrets.require(
            options.api_key_secret_secret, purpose=f"{TABLE} api_key_secret_secret (Twilio API key secret)"
        ).get_secret_value()
    shared_key = (
        ctx.secrets.require(
            options.webhook_key_secret, purpose=f"{TABLE} webhook_key_secret (Twilio webhook SharedKey)"
        ).get_secret_value()
        if options.webhook_key_secret
        else None
    )
    api = TwilioApi(
        account_sid=options.account_sid,
        username=username,
        password=password,
        base_url=options.base_url,
        timeout=options.timeout_seconds,
        pool_size=options.concurrency,
    )
    keys = WebhookSigningKeys(auth_token=auth_token, shared_key=shared_key)
    return TwilioChannel(options, ctx, api, keys)


CONNECTOR = ConnectorSpec(
    name="twilio",
    role="channel",
    kinds=("sms",),
    options=TwilioOptions,
    factory=build,
)
