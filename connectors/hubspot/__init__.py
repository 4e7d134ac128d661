"""The HubSpot CRM connector (hubspot-api-client v12, CRM v3 APIs, private app access token)."""

from __future__ import annotations

from nps_sync.abc import ConnectorContext, ConnectorSpec

from . import reader
from .client import HubSpotClient
from .config import HubSpotAudience, HubSpotOptions
from .connector import HubSpotCrm


def create(options: HubSpotOptions, ctx: ConnectorContext) -> HubSpotCrm:
    token = ctx.secrets.require(
        options.access_token_secret,
        purpose=f"the HubSpot private app access token ([crm.hubspot] access_token_secret = "
        f"{options.access_token_secret!r})",
    )
    client = HubSpotClient(
        token.get_secret_value(),
        base_url=options.base_url,
        window_calls=options.rate_limit_calls,
        window_seconds=options.rate_limit_window_seconds,
        search_per_second=options.search_per_second,
        max_attempts=options.max_attempts,
        retry_wait=options.retry_wait_seconds,
        retry_max_wait=options.retry_max_wait_seconds,
        timeout=options.timeout_seconds,
        daily_warn_fraction=options.daily_warn_fraction,
    )
    if options.read_pages_in_process:
        reader.warm()
    return HubSpotCrm(options, ctx, client)


CONNECTOR = ConnectorSpec(
    name="hubspot",
    role="crm",
    kinds=(),
    options=HubSpotOptions,
    factory=create,
    audience=HubSpotAudience,
)

__all__ = ["CONNECTOR", "HubSpotCrm"]
