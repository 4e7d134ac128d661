"""Hostile-input guard for the public web server: a request-size limit and a per-IP rate limit.

An ASGI middleware around the whole app (../shared/docs/reliability-and-compliance.md §3). Before the
app sees a request:

- the body is read, up to the limit, and replayed to the app: a larger one is answered 413 and never
  reaches a handler (a Content-Length over the limit is refused without reading a byte);
- each client IP has a token bucket per kind of path (webhooks under ``/hooks/`` get their own, larger
  budget: a provider posts from few addresses): an empty bucket is answered 429 with Retry-After.

The client IP is the peer address, or — when the peer is one of ``trusted_proxies`` — the right-most
address in X-Forwarded-For that is not a trusted proxy (left-most entries are whatever the client
wrote). Buckets live in memory: with several replicas each enforces its own share.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("nps_sync.limits")
#: An oversized body up to this many times the limit is read and dropped before the 413.
DRAIN_FACTOR = 4

#: Never limited: monitoring must see an overloaded daemon.
EXEMPT = ("/healthz", "/metrics")
WEBHOOKS = "/hooks/"
MAX_TRACKED = 100_000

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class LimitSettings:
    max_body_bytes: int = 65_536
    webhook_max_body_bytes: int = 5_000_000
    requests_per_minute: int = 120
    webhook_requests_per_minute: int = 6_000
    trusted_proxies: tuple[str, ...] = ()


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """``"10.0.0.1"`` or ``"10.0.0.0/8"`` → networks; raises ValueError naming the bad entry."""
    nets = []
    for value in values:
        try:
            nets.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(
                f"expected an IP address or network such as '10.0.0.1' or '10.0.0.0/8', got: {value!r}"
            ) from exc
    return tuple(nets)


class Buckets:
    """Token buckets keyed by (kind, ip): ``rate`` per minute, bursts up to one minute's worth."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._state: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    def take(self, key: tuple[str, str], per_minute: int) -> float:
        """0.0 when the request may go; else the seconds until a token is back."""
        now = self.clock()
        capacity = float(per_minute)
        tokens, last = self._state.pop(key, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * per_minute / 60.0)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) * 60.0 / per_minute
        self._state[key] = (tokens, now)
        while len(self._state) > MAX_TRACKED:
            self._state.popitem(last=False)
        return wait


class Limits:
    """The middleware. ``create_app`` wraps the Starlette app in it."""

    def __init__(
        self, app: ASGIApp, settings: LimitSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.app = app
        self.settings = settings
        self.trusted = parse_networks(settings.trusted_proxies)
        self.buckets = Buckets(clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        hook = scope["path"].startswith(WEBHOOKS)
        s = self.settings
        ip = client_ip(scope, self.trusted)
        wait = self.buckets.take(
            ("hook" if hook else "page", ip), s.webhook_requests_per_minute if hook else s.requests_per_minute
        )
        if wait:
            log.info("limits.rate_limited", ip=ip, path=scope["path"])
            await _reply(send, 429, "too many requests\n", {"retry-after": str(math.ceil(wait))})
            return
        limit = s.webhook_max_body_bytes if hook else s.max_body_bytes
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            status = 413 if length.isdigit() else 400
            log.info("limits.body_refused", ip=ip, path=scope["path"], content_length=length[:40])
            if status == 413 and int(length) <= DRAIN_FACTOR * limit:
                # Read (and drop) a modestly oversized body, so the client gets the 413 instead of a
                # connection reset while it is still sending; a huge one is not worth reading.
                await _drain(receive, DRAIN_FACTOR * limit)
            await _reply(send, status, "request body too large\n" if status == 413 else "bad request\n")
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body"))
            if len(body) > limit:
                log.info("limits.body_refused", ip=ip, path=scope["path"], read=len(body))
                if more:
                    await _drain(receive, DRAIN_FACTOR * limit - len(body))
                await _reply(send, 413, "request body too large\n", {"connection": "close"})
                return
        await self.app(scope, _replay(bytes(body), receive), send)


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop the rest of a request body, at most ``budget`` bytes."""
    more = True
    while more and budget > 0:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        budget -= len(message.get("body", b""))
        more = bool(message.get("more_body"))


def client_ip(scope: Scope, trusted: Sequence[Network]) -> str:
    peer = (scope.get("client") or ("unknown", 0))[0]
    if not trusted or not _in(peer, trusted):
        return str(peer)
    forwarded = _header(scope, b"x-forwarded-for") or ""
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return str(peer)  # garbage in the header: count it against the proxy
    return str(peer)


def _in(address: str, nets: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in nets)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1").strip())
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _reply(send: Send, status: int, text: str, headers: dict[str, str] | None = None) -> None:
    raw = text.encode()
    pairs = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(raw)).encode())]
    pairs += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": pairs})
    await send({"type": "http.response.body", "body": raw})
