"""The daemon's web server: survey pages, unsubscribe, webhooks, the local UI, health and metrics."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from nps_sync.runtime import Runtime
from nps_sync.web import admin_pages, ops, survey_pages


def create_app(rt: Runtime) -> Starlette:
    routes: list[BaseRoute] = [*survey_pages.routes(rt), *admin_pages.routes(rt), *ops.routes(rt)]
    routes += list(rt.crm.routes())
    for channel in rt.channels.values():
        routes += list(channel.routes())
    return Starlette(routes=routes)


__all__ = ["create_app"]
