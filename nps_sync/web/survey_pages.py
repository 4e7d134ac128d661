"""The customer-facing pages: score landing page and unsubscribe.

A GET never records anything: mail security scanners open every link in an email. The score is
recorded only when the person submits the form (a POST). A later answer replaces the earlier one.

An email's 11 score links are its one survey link with ``?score=N``, which only preselects that
score on the form: the signed token says which survey, and whoever holds it may answer it with any
score anyway. Links from earlier versions, which carried the score inside the token, still work.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from nps_sync.errors import TokenError
from nps_sync.models import Category
from nps_sync.responses import SEND_BY_ID, ResponseError
from nps_sync.runtime import Runtime
from nps_sync.store import schema
from nps_sync.web.render import page

log = structlog.get_logger("nps_sync.web")

TEXT_KEYS = (
    "question",
    "low_label",
    "high_label",
    "follow_up_detractor",
    "follow_up_passive",
    "follow_up_promoter",
    "thanks",
    "submit",
    "your_score",
    "comment_label",
)


def _error(request: Request, status: int, heading: str, text: str) -> HTMLResponse:
    return page(request, "message.html", {"heading": heading, "text": text}, status_code=status)


def _send(rt: Runtime, send_id: int) -> dict[str, Any] | None:
    with rt.store.lookup() as conn:
        row = conn.execute(SEND_BY_ID, {"id": send_id}).mappings().first()
    return dict(row) if row else None


def _score(raw: str | None) -> int | None:
    """``raw`` as a score from 0 to 10, or None ("²".isdigit() is True, and a long run of digits is
    not worth converting)."""
    if raw is not None and len(raw) <= 2 and raw.isascii() and raw.isdigit() and int(raw) <= 10:
        return int(raw)
    return None


def _preselected(query: str | None, signed: Any) -> int | None:
    """The score a link asks the page to show chosen: ``?score=N``, or the score an older link
    carried in its token; None when neither is a score from 0 to 10."""
    score = _score(query)
    if score is not None:
        return score
    return signed if type(signed) is int and 0 <= signed <= 10 else None


def routes(rt: Runtime) -> list[Route]:
    # The page wording depends only on the program and the language; a reload builds a new app.
    wording: dict[tuple[str, str], dict[str, str]] = {}

    def texts(send: dict[str, Any]) -> dict[str, str]:
        key = (send["program"], send["language"])
        if key not in wording:
            program = next((p for p in rt.config.program if p.name == send["program"]), None)
            wording[key] = {k: rt.renderer.text(send["language"], k, program) for k in TEXT_KEYS}
        return wording[key]

    def verify(request: Request) -> tuple[dict[str, Any], dict[str, Any]] | HTMLResponse:
        try:
            payload = rt.tokens.verify("survey", request.path_params["token"])
            send_id = int(payload["s"])
        except (TokenError, KeyError, TypeError, ValueError) as exc:
            log.info("survey.bad_token", reason=str(exc))
            return _error(
                request, 400, "This link is not valid", "It may have been changed or it has expired."
            )
        send = _send(rt, send_id)
        if send is None or send["kind"] != "survey":
            return _error(request, 404, "Survey not found", "This survey does not exist any more.")
        return payload, send

    async def landing(request: Request) -> Response:
        # Database reads run in the thread pool: a blocked event loop would stall every other request.
        return await run_in_threadpool(show, request)

    def show(request: Request) -> Response:
        checked = verify(request)
        if isinstance(checked, HTMLResponse):
            return checked
        payload, send = checked
        t = texts(send)
        score = _preselected(request.query_params.get("score"), payload.get("v"))
        with rt.store.lookup() as conn:
            existing = conn.execute(
                select(schema.responses.c.score, schema.responses.c.comment).where(
                    schema.responses.c.send_id == send["id"]
                )
            ).first()
        comment = existing.comment if existing else ""
        if score is None and existing is not None:
            score = existing.score
        follow_up = t[f"follow_up_{Category.of(score).value}"] if score is not None else ""
        return page(
            request,
            "survey.html",
            {
                "t": t,
                "score": score,
                "follow_up": follow_up,
                "comment": comment,
                "action": request.url.path,
                "lang": send["language"],
                "done": False,
            },
        )

    async def submit(request: Request) -> Response:
        form = await request.form()
        # Recording is synchronous database work (on SQLite it waits for the write lock): in the
        # thread pool it no longer blocks the event loop that every other request needs.
        return await run_in_threadpool(record, request, form)

    def record(request: Request, form: FormData) -> Response:
        checked = verify(request)
        if isinstance(checked, HTMLResponse):
            return checked
        _, send = checked
        score = _score(str(form.get("score", "")))
        t = texts(send)
        if score is None:
            return _error(request, 422, t["question"], "Please choose a score from 0 to 10.")
        comment = str(form.get("comment", "")).strip()[:5000]
        try:
            # Committed as an answer job: a worker records it (and its write-back and playbooks).
            category = rt.responses.accept(int(send["id"]), score, comment, channel=send["channel"])
        except ResponseError as exc:
            return _error(request, 422, "Your answer could not be recorded", str(exc))
        program = next((p for p in rt.config.program if p.name == send["program"]), None)
        return page(
            request,
            "survey.html",
            {
                "t": t,
                "score": score,
                "comment": comment or None,
                "follow_up": t[f"follow_up_{category.value}"],
                "action": request.url.path,
                "lang": send["language"],
                "done": True,
                "recorded": rt.renderer.text(send["language"], "score_recorded", program, score=score),
            },
        )

    def unsub_send(request: Request) -> dict[str, Any] | HTMLResponse:
        try:
            send_id = int(rt.tokens.verify("unsubscribe", request.path_params["token"])["s"])
        except (TokenError, KeyError, TypeError, ValueError):
            return _error(
                request, 400, "This link is not valid", "It may have been changed or it has expired."
            )
        send = _send(rt, send_id)
        if send is None:
            return _error(request, 404, "Not found", "This message does not exist any more.")
        return send

    async def unsubscribe_page(request: Request) -> Response:
        send = unsub_send(request)
        if isinstance(send, HTMLResponse):
            return send
        t = rt.renderer.text(send["language"], "unsubscribe")
        return page(
            request,
            "message.html",
            {
                "heading": t,
                "text": send["address"],
                "form_action": request.url.path,
                "button": t,
                "lang": send["language"],
            },
        )

    async def unsubscribe(request: Request) -> Response:
        # RFC 8058 one-click: mail clients POST "List-Unsubscribe=One-Click" without cookies.
        send = unsub_send(request)
        if isinstance(send, HTMLResponse):
            return send
        rt.responses.unsubscribe(
            int(send["id"]),
            source="one_click" if b"One-Click" in await request.body() else "unsubscribe_page",
        )
        if "text/html" not in request.headers.get("accept", ""):
            return PlainTextResponse("unsubscribed\n")
        text = rt.renderer.text(send["language"], "unsubscribed")
        return page(request, "message.html", {"heading": text, "text": "", "lang": send["language"]})

    return [
        Route("/r/{token}", landing, methods=["GET"]),
        Route("/r/{token}", submit, methods=["POST"]),
        Route("/u/{token}", unsubscribe_page, methods=["GET"]),
        Route("/u/{token}", unsubscribe, methods=["POST"]),
    ]
