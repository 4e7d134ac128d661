"""Server-rendered pages: one Jinja2 environment for the core's templates and connectors' pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

CORE = Path(__file__).parent / "templates"
CONNECTORS = Path(__file__).resolve().parent.parent / "connectors"

env = Environment(
    loader=ChoiceLoader([FileSystemLoader(CORE), FileSystemLoader(CONNECTORS)]),
    autoescape=select_autoescape(["html"]),
)
templates = Jinja2Templates(env=env)


def page(
    request: Request, name: str, context: dict[str, Any] | None = None, *, status_code: int = 200
) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context or {}, status_code=status_code)


def is_local(request: Request) -> bool:
    """Admin pages answer only to this machine: loopback clients not relayed by a proxy."""
    host = request.client.host if request.client else ""
    return (
        host in ("127.0.0.1", "::1", "localhost", "testclient") and "x-forwarded-for" not in request.headers
    )
