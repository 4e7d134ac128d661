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
    # The templates ship with the package: checking every file's mtime on every page cost a tenth of
    # the CPU of answering a survey.
    auto_reload=False,
)
templates = Jinja2Templates(env=env)


def page(
    request: Request, name: str, context: dict[str, Any] | None = None, *, status_code: int = 200
) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context or {}, status_code=status_code)


#: Headers a reverse proxy or tunnel on this machine adds for the real client. Proxies differ (nginx
#: is often set up with X-Real-IP only, RFC 7239 proxies send Forwarded, Cloudflare CF-Connecting-IP),
#: so any of them means "relayed", not "this machine".
RELAY_HEADERS = (
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
    "x-forwarded-host",
    "cf-connecting-ip",
    "true-client-ip",
)


LOOPBACK_NAMES = ("127.0.0.1", "::1", "[::1]", "localhost", "testclient")


def is_local(request: Request) -> bool:
    """Admin pages answer only to this machine: loopback clients not relayed by a proxy, asking for a
    loopback host name (a page on another site that rebinds its DNS name to 127.0.0.1 still sends its
    own name in Host), and — for a form post — coming from a page of this server (Origin)."""
    host = request.client.host if request.client else ""
    if host not in LOOPBACK_NAMES or any(h in request.headers for h in RELAY_HEADERS):
        return False
    if _hostname(request.headers.get("host", "")) not in LOOPBACK_NAMES:
        return False
    origin = request.headers.get("origin")
    if request.method not in ("GET", "HEAD") and origin not in (None, "null"):
        return _hostname(origin.split("://", 1)[-1]) in LOOPBACK_NAMES
    return True


def _hostname(netloc: str) -> str:
    """``"127.0.0.1:8080"`` → ``"127.0.0.1"``; ``"[::1]:8080"`` → ``"::1"``."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc
