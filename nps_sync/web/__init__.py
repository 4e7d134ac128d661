"""The daemon's web server: survey pages, unsubscribe, webhooks, the local UI, health and metrics."""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from nps_sync.limits import Limits, LimitSettings
from nps_sync.runtime import Runtime
from nps_sync.web import admin_pages, dashboard, ops, survey_pages, testimonial_pages


def create_app(rt: Runtime, *, disabled_channels: Callable[[], dict[str, str]] | None = None) -> Starlette:
    """``disabled_channels``: in a web process of its own (nps_sync.web.processes), how /healthz learns
    which channels the daemon disabled; by default this runtime's sender is asked."""
    routes: list[BaseRoute] = [*survey_pages.routes(rt), *admin_pages.routes(rt)]
    routes += ops.routes(rt, disabled_channels or (lambda: dict(rt.sender.disabled)))
    routes += testimonial_pages.routes(rt)
    routes += dashboard.routes(rt)
    routes += list(rt.crm.routes())
    for channel in rt.channels.values():
        routes += list(channel.routes())
    limits = rt.config.daemon.limits
    # Outermost after Starlette's error handler: size and rate checks before any route runs.
    guard = Middleware(Limits, settings=LimitSettings(**limits.model_dump()))
    return Starlette(routes=routes, middleware=[guard])


__all__ = ["create_app"]
