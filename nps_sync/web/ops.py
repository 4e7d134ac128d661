"""Health and metrics endpoints for ops and monitoring."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nps_sync.runtime import Runtime
from nps_sync.sending import is_paused
from nps_sync.store import schema


class StoreCollector(Collector):
    """Reads the figures from the store on each scrape, so every replica reports the same truth."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        sends = GaugeMetricFamily(
            "nps_sync_sends", "Sends by kind, channel and state", labels=["kind", "channel", "state"]
        )
        jobs = GaugeMetricFamily("nps_sync_jobs", "Queued work by kind and state", labels=["kind", "state"])
        responses = GaugeMetricFamily(
            "nps_sync_responses", "Responses by program and category", labels=["program", "category"]
        )
        s, j, r = schema.sends, schema.jobs, schema.responses
        with self.rt.store.read() as conn:
            for row in conn.execute(
                select(s.c.kind, s.c.channel, s.c.state, func.count()).group_by(
                    s.c.kind, s.c.channel, s.c.state
                )
            ):
                sends.add_metric([row[0], row[1], row[2]], row[3])
            for row in conn.execute(select(j.c.kind, j.c.state, func.count()).group_by(j.c.kind, j.c.state)):
                jobs.add_metric([row[0], row[1]], row[2])
            for row in conn.execute(
                select(r.c.program, r.c.category, func.count()).group_by(r.c.program, r.c.category)
            ):
                responses.add_metric([row[0], row[1]], row[2])
            suppressed = conn.execute(select(func.count()).select_from(schema.suppressions)).scalar_one()
        yield sends
        yield jobs
        yield responses
        yield GaugeMetricFamily("nps_sync_suppressions", "Suppressed addresses", value=suppressed)
        yield GaugeMetricFamily(
            "nps_sync_paused", "1 when outbound sending is paused", value=1 if is_paused(self.rt.store) else 0
        )


def routes(rt: Runtime, disabled_channels: Callable[[], dict[str, str]]) -> list[Route]:
    registry = CollectorRegistry()
    registry.register(StoreCollector(rt))

    async def healthz(request: Request) -> Response:
        try:
            with rt.store.read() as conn:
                conn.execute(text("select 1"))
        except Exception as exc:
            return JSONResponse({"status": "error", "database": type(exc).__name__}, status_code=503)
        body: dict[str, object] = {"status": "ok", "paused": is_paused(rt.store)}
        disabled = disabled_channels()
        if disabled:  # credentials refused: ops must act (this replica stops using it)
            body["status"] = "degraded"
            body["disabled_channels"] = disabled
        return JSONResponse(body)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    return [Route("/healthz", healthz), Route("/metrics", metrics)]
