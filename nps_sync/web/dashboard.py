"""``/dashboard``: NPS analytics in the daemon's web UI, rendered on the server (inline SVG, no build).

Filters are GET query parameters (``program``, ``period``, ``since``, ``segment``, ``value``,
``category``), so every view is a link that can be shared or bookmarked. Who may look is decided by
:mod:`nps_sync.web.auth`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from nps_sync.analytics import charts
from nps_sync.analytics.nps import PERIODS, by_segment
from nps_sync.analytics.report import Report, build_report, parse_since
from nps_sync.analytics.transitions import CATEGORIES
from nps_sync.runtime import Runtime
from nps_sync.store.db import utcnow
from nps_sync.web.auth import DashboardAuth
from nps_sync.web.render import page

log = structlog.get_logger("nps_sync.web.dashboard")

SINCE_CHOICES = (("", "all time"), ("30d", "last 30 days"), ("90d", "last 90 days"), ("365d", "last year"))
PREFERRED_SEGMENTS = ("plan", "region", "language")
COMMENTS_SHOWN = 50


def _filters(request: Request, rt: Runtime) -> dict[str, str]:
    q = request.query_params
    programs = {p.name for p in rt.config.program}
    return {
        "program": q.get("program", "") if q.get("program", "") in programs else "",
        "period": q.get("period", "") if q.get("period", "") in PERIODS else "month",
        "since": q.get("since", "").strip()[:20],
        "segment": q.get("segment", "").strip()[:64],
        "value": q.get("value", "")[:200],
        "category": q.get("category", "") if q.get("category", "") in CATEGORIES else "",
    }


def _context(rt: Runtime, f: dict[str, str]) -> dict[str, Any]:
    tz, now = rt.config.daemon.time_zone, utcnow()
    error = ""
    try:
        since = parse_since(f["since"], now=now, tz=tz) if f["since"] else None
    except ValueError as exc:
        since, error = None, str(exc)
        f["since"] = ""
    report: Report = build_report(
        rt.store,
        tz=tz,
        now=now,
        program=f["program"] or None,
        since=since,
        period=f["period"],  # type: ignore[arg-type]
    )
    if f["segment"] not in report.segment_names:
        f["segment"] = next((s for s in PREFERRED_SEGMENTS if s in report.segment_names), "program")
    report = replace(report, segment=f["segment"], segments=by_segment(report.answers, f["segment"]))
    values = sorted({a.segment(f["segment"]) for a in report.answers})
    if f["value"] not in values:
        f["value"] = ""
    comments = [
        a
        for a in reversed(report.answers)
        if a.comment
        and (not f["category"] or a.category == f["category"])
        and (not f["value"] or a.segment(f["segment"]) == f["value"])
    ]
    sent, answered = sum(r.sent for r in report.rates), sum(r.answered for r in report.rates)
    matrix_peak = max([report.transitions.count(a, b) for a in CATEGORIES for b in CATEGORIES] + [1])
    return {
        "r": report,
        "f": f,
        "error": error,
        "tz": str(tz),
        "programs": [p.name for p in rt.config.program],
        "periods": PERIODS,
        "since_choices": SINCE_CHOICES,
        "categories": CATEGORIES,
        "segment_values": values,
        "comments": comments[:COMMENTS_SHOWN],
        "comments_total": len(comments),
        "sent": sent,
        "answered": answered,
        "response_rate": answered / sent if sent else None,
        "matrix_peak": matrix_peak,
        "trend_svg": charts.trend_svg(report.periods),
        "segments_svg": charts.segments_svg(report.segments),
        "scores_svg": charts.scores_svg(report.scores),
        "link": lambda **changes: "/dashboard?" + urlencode({k: v for k, v in {**f, **changes}.items() if v}),
        "when": lambda dt: dt.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
    }


def routes(rt: Runtime) -> list[Route]:
    auth = DashboardAuth.from_runtime(rt)

    def refuse(request: Request) -> Response:
        if auth.password_hash:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse("/dashboard/login?" + urlencode({"next": target}), status_code=303)
        text = (
            f"Sign in through the proxy that sets {auth.trusted_header}."
            if auth.trusted_header
            else "The dashboard is only served to the machine the daemon runs on. Configure a "
            "password or a trusted proxy header in [dashboard] to open it from elsewhere."
        )
        return page(request, "message.html", {"heading": "Not here", "text": text}, status_code=403)

    async def dashboard(request: Request) -> Response:
        user = auth.user(request)
        if user is None:
            return refuse(request)
        context = await run_in_threadpool(_context, rt, _filters(request, rt))
        context.update(user=user, can_sign_out=auth.from_session(request) is not None)
        return page(request, "dashboard.html", context)

    def _next(value: object) -> str:
        target = str(value or "")
        # Only paths on this site: never an open redirect to another host.
        return target if target.startswith("/dashboard") and not target.startswith("//") else "/dashboard"

    async def login(request: Request) -> Response:
        if not auth.password_hash:
            return RedirectResponse("/dashboard", status_code=303)
        if request.method == "GET":
            return page(request, "dashboard_login.html", {"next": _next(request.query_params.get("next"))})
        form = await request.form()
        target = _next(form.get("next"))
        password = str(form.get("password", ""))[:1024]
        client = request.client.host if request.client else ""
        wait = auth.limiter.retry_after(client)
        if wait:
            log.warning("dashboard.login_locked", client=client, retry_after=wait)
            locked = page(
                request,
                "dashboard_login.html",
                {
                    "next": target,
                    "error": f"Too many wrong passwords. Try again in {wait // 60 + 1} minutes.",
                },
                status_code=429,
            )
            locked.headers["Retry-After"] = str(wait)
            return locked
        if not await run_in_threadpool(auth.check_password, password):
            auth.limiter.failed(client)
            log.warning("dashboard.login_failed", client=client)
            return page(
                request,
                "dashboard_login.html",
                {"next": target, "error": "Wrong password."},
                status_code=401,
            )
        response = RedirectResponse(target, status_code=303)
        auth.sign_in(response)
        log.info("dashboard.signed_in", client=client)
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse(
            "/dashboard/login" if auth.password_hash else "/dashboard", status_code=303
        )
        auth.sign_out(response)
        return response

    return [
        Route("/dashboard", dashboard),
        Route("/dashboard/login", login, methods=["GET", "POST"]),
        Route("/dashboard/logout", logout, methods=["POST"]),
    ]
