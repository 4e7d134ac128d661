"""The local web UI for people trying nps-sync: home, outbox, responses.

Admin pages answer only to this machine (loopback clients not relayed by a proxy), because they show
personal data and there is no login yet.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import desc, func, or_, select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from nps_sync.runtime import Runtime
from nps_sync.sending import is_paused
from nps_sync.store import schema
from nps_sync.store.db import utcnow
from nps_sync.web.render import is_local, page

Endpoint = Callable[[Request], Awaitable[Response]]


def local_only(endpoint: Endpoint) -> Endpoint:
    async def wrapper(request: Request) -> Response:
        if not is_local(request):
            return page(
                request,
                "message.html",
                {
                    "heading": "Not here",
                    "text": "This page is only served to the machine the daemon runs on.",
                },
                status_code=403,
            )
        return await endpoint(request)

    return wrapper


def routes(rt: Runtime) -> list[Route]:
    outbox, sends, resp = schema.outbox, schema.sends, schema.responses

    async def home(request: Request) -> Response:
        programs = []
        with rt.store.read() as conn:
            for p in rt.config.program:
                last = conn.execute(
                    select(func.max(schema.waves.c.started_at)).where(schema.waves.c.program == p.name)
                ).scalar()
                sent = conn.execute(
                    select(func.count())
                    .select_from(sends)
                    .where(sends.c.program == p.name, sends.c.state == "sent", sends.c.kind == "survey")
                ).scalar()
                answered = conn.execute(
                    select(func.count()).select_from(resp).where(resp.c.program == p.name)
                ).scalar()
                programs.append(
                    {
                        "name": p.name,
                        "channel": p.channel,
                        "schedule": p.schedule,
                        "last_wave": last.strftime("%Y-%m-%d %H:%M UTC") if last else None,
                        "sent": sent,
                        "responses": answered,
                    }
                )
        return page(
            request, "home.html", {"admin": True, "programs": programs, "paused": is_paused(rt.store)}
        )

    async def outbox_list(request: Request) -> Response:
        with rt.store.read() as conn:
            rows = conn.execute(select(outbox).order_by(desc(outbox.c.id)).limit(500)).mappings().all()
        return page(request, "outbox_list.html", {"admin": True, "messages": rows})

    async def outbox_message(request: Request) -> Response:
        message_id = int(request.path_params["id"])
        with rt.store.read() as conn:
            m = conn.execute(select(outbox).where(outbox.c.id == message_id)).mappings().first()
            if m is None:
                return page(
                    request, "message.html", {"admin": True, "heading": "No such message"}, status_code=404
                )
            thread: list[Any] = []
            if m["channel"] == "sms":
                number = m["to_addr"] if m["direction"] == "out" else m["from_addr"]
                thread = list(
                    conn.execute(
                        select(outbox)
                        .where(
                            outbox.c.channel == "sms",
                            or_(outbox.c.to_addr == number, outbox.c.from_addr == number),
                        )
                        .order_by(outbox.c.id)
                    )
                    .mappings()
                    .all()
                )
        return page(request, "outbox_message.html", {"admin": True, "m": m, "thread": thread})

    async def outbox_reply(request: Request) -> Response:
        """Simulate the customer texting back: the same inbound path a provider webhook takes."""
        message_id = int(request.path_params["id"])
        body = str((await request.form()).get("body", "")).strip()[:1600]
        with rt.store.read() as conn:
            m = conn.execute(select(outbox).where(outbox.c.id == message_id)).mappings().first()
        if m is None or m["channel"] != "sms" or not body:
            return RedirectResponse(f"/outbox/{message_id}", status_code=303)
        number, ours = (
            (m["to_addr"], m["from_addr"]) if m["direction"] == "out" else (m["from_addr"], m["to_addr"])
        )
        now = utcnow()
        with rt.store.begin() as conn:
            conn.execute(
                outbox.insert().values(
                    direction="in",
                    send_key=None,
                    channel="sms",
                    to_addr=ours,
                    from_addr=number,
                    subject="",
                    text=body,
                    html=None,
                    headers={},
                    purpose="reply",
                    created_at=now,
                )
            )
        reply = rt.responses.sms_received(
            provider="outbox", event_id=uuid.uuid4().hex, from_number=number, to_number=ours, body=body
        )
        if reply.text:
            with rt.store.begin() as conn:
                conn.execute(
                    outbox.insert().values(
                        direction="out",
                        send_key=None,
                        channel="sms",
                        to_addr=number,
                        from_addr=ours,
                        subject="",
                        text=reply.text,
                        html=None,
                        headers={},
                        purpose="reply",
                        created_at=utcnow(),
                    )
                )
        return RedirectResponse(f"/outbox/{message_id}", status_code=303)

    async def response(request: Request) -> Response:
        response_id = int(request.path_params["id"])
        with rt.store.read() as conn:
            row = (
                conn.execute(
                    select(resp, sends.c.snapshot)
                    .join(sends, sends.c.id == resp.c.send_id)
                    .where(resp.c.id == response_id)
                )
                .mappings()
                .first()
            )
        if row is None:
            return page(
                request, "message.html", {"admin": True, "heading": "No such response"}, status_code=404
            )
        return page(request, "response.html", {"admin": True, "r": row, "contact": row["snapshot"]})

    return [
        Route("/", local_only(home)),
        Route("/outbox", local_only(outbox_list)),
        Route("/outbox/{id:int}", local_only(outbox_message)),
        Route("/outbox/{id:int}/reply", local_only(outbox_reply), methods=["POST"]),
        Route("/responses/{id:int}", local_only(response)),
    ]
