"""The sandbox CRM's pages in the local web UI: what nps-sync wrote, as an account manager sees it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from nps_sync.web.admin_pages import local_only
from nps_sync.web.render import page

if TYPE_CHECKING:
    from .connector import SandboxCrm

T = "sandbox/templates/"


def routes(crm: SandboxCrm) -> list[Route]:
    db = crm.db

    def owner_names() -> dict[str, str]:
        with db.store.read() as conn:
            from nps_sync.store import schema

            return {r.id: r.name for r in conn.execute(schema.sandbox_owners.select())}

    async def contacts(request: Request) -> Response:
        rows = [pair for chunk in db.contact_pages({}, 1000) for pair in chunk]
        return page(request, T + "contacts.html", {"admin": True, "rows": rows})

    async def contact(request: Request) -> Response:
        found = db.contacts([request.path_params["id"]])
        if not found:
            return page(
                request, "message.html", {"admin": True, "heading": "No such contact"}, status_code=404
            )
        row, account = found[0]
        tasks = [t for t in db.tasks() if t["contact_id"] == row["id"]]
        return page(
            request,
            T + "contact.html",
            {"admin": True, "c": row, "a": account, "tasks": tasks, "owners": owner_names()},
        )

    async def account(request: Request) -> Response:
        account_id = request.path_params["id"]
        rows = [pair for chunk in db.contact_pages({"account_id": account_id}, 1000) for pair in chunk]
        found = db.contacts([rows[0][0]["id"]]) if rows else []
        if not found:
            return page(
                request, "message.html", {"admin": True, "heading": "No such account"}, status_code=404
            )
        acc = found[0][1]
        tasks = [t for t in db.tasks() if t["account_id"] == account_id]
        return page(
            request,
            T + "account.html",
            {"admin": True, "a": acc, "rows": rows, "tasks": tasks, "owners": owner_names()},
        )

    async def tasks(request: Request) -> Response:
        return page(
            request,
            T + "tasks.html",
            {"admin": True, "tasks": list(reversed(db.tasks())), "owners": owner_names()},
        )

    async def complete(request: Request) -> Response:
        crm.complete_task(request.path_params["id"])
        return RedirectResponse("/sandbox/tasks", status_code=303)

    return [
        Route("/sandbox/contacts", local_only(contacts)),
        Route("/sandbox/contacts/{id}", local_only(contact)),
        Route("/sandbox/accounts/{id}", local_only(account)),
        Route("/sandbox/tasks", local_only(tasks)),
        Route("/sandbox/tasks/{id}/complete", local_only(complete), methods=["POST"]),
    ]
