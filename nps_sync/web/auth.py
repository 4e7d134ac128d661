"""Who may open /dashboard.

Three ways in, from the ``[dashboard]`` table:

- a password: its salted scrypt hash (``nps-sync dashboard hash-password``) sits in the secret named by
  ``password_hash_secret``; a right password sets a signed session cookie (itsdangerous, its own salt,
  HttpOnly, SameSite=Lax, Secure when ``public_url`` is https) that lasts ``session_max_age``;
- a header set by an authenticating reverse proxy (``trusted_header``), believed only when the TCP
  peer is one of ``trusted_proxies`` — anyone else could send the same header;
- neither configured: only this machine (loopback clients not relayed by a proxy), like /outbox.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets as _secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from nps_sync.errors import ConfigError
from nps_sync.web.render import is_local

log = structlog.get_logger("nps_sync.web.auth")

COOKIE = "nps_sync_dashboard"
SESSION_SALT = "nps-sync/dashboard-session/v1"
MIN_PASSWORD = 10
# scrypt cost: 16 MiB and ~50 ms per guess on a small server; stored in the hash, so it can rise later.
SCRYPT_N, SCRYPT_R, SCRYPT_P, DKLEN = 2**14, 8, 1, 32
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Wrong passwords allowed per client address in FAILURE_WINDOW before logins from it are refused.
MAX_FAILURES, FAILURE_WINDOW = 10, 900.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` with a fresh 16-byte salt."""
    salt = salt or _secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=DKLEN, maxmem=64 * 2**20
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _parse(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    """Raises ValueError on anything but a hash made by :func:`hash_password`."""
    parts = encoded.strip().split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("expected 'scrypt$N$r$p$salt$hash' as printed by `nps-sync dashboard hash-password`")
    n, r, p = (int(x) for x in parts[1:4])
    if n < 2**10 or n & (n - 1) or not 0 < r <= 64 or not 0 < p <= 16:
        raise ValueError(f"scrypt parameters out of range: N={n} r={r} p={p}")
    salt, digest = _unb64(parts[4]), _unb64(parts[5])
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("salt or hash too short")
    return n, r, p, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    n, r, p, salt, digest = _parse(encoded)
    candidate = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(digest), maxmem=256 * 2**20
    )
    return hmac.compare_digest(candidate, digest)


@dataclass
class FailureLimiter:
    """Slows password guessing: after MAX_FAILURES wrong passwords from one address within
    FAILURE_WINDOW seconds, that address may not try again until the oldest failure ages out."""

    limit: int = MAX_FAILURES
    window: float = FAILURE_WINDOW
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.setdefault(client, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again (0 = now)."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(client, now)
            return int(times[0] + self.window - now) + 1 if len(times) >= self.limit else 0

    def failed(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(client, now).append(now)
            if len(self._failures) > 10_000:  # a flood of addresses must not grow memory forever
                self._failures = {k: v for k, v in self._failures.items() if v}


@dataclass
class DashboardAuth:
    password_hash: str | None
    trusted_header: str
    proxies: tuple[Network, ...]
    serializer: URLSafeTimedSerializer
    max_age: timedelta
    secure_cookie: bool
    limiter: FailureLimiter = field(default_factory=FailureLimiter)

    @classmethod
    def from_runtime(cls, rt: Any) -> DashboardAuth:
        """Read ``[dashboard]`` and its secret. Raises ConfigError for a malformed hash."""
        from nps_sync.tokens import load_keys

        cfg, daemon = rt.config.dashboard, rt.config.daemon
        secret = rt.secrets.get(cfg.password_hash_secret)
        password_hash = secret.get_secret_value().strip() if secret is not None else None
        if password_hash:
            try:
                _parse(password_hash)
            except ValueError as exc:
                raise ConfigError(
                    f"{rt.config.source}: dashboard.password_hash_secret: the secret "
                    f"{cfg.password_hash_secret} does not hold a password hash: {exc}"
                ) from exc
        keys = load_keys(rt.secrets, daemon.signing_keys_secret, rt.config.state_dir)
        auth = cls(
            password_hash=password_hash or None,
            trusted_header=cfg.trusted_header,
            proxies=tuple(ipaddress.ip_network(p, strict=False) for p in cfg.trusted_proxies),
            serializer=URLSafeTimedSerializer(list(keys), salt=SESSION_SALT),
            max_age=cfg.session_max_age,
            secure_cookie=daemon.public_url.startswith("https://"),
        )
        log.info("dashboard.auth", mode=auth.mode)
        return auth

    @property
    def mode(self) -> str:
        modes = [m for m, on in (("password", self.password_hash), ("header", self.trusted_header)) if on]
        return "+".join(modes) or "loopback"

    def _fingerprint(self) -> str:
        # Sessions name the hash they were made under: a new password ends every old session.
        return hashlib.sha256((self.password_hash or "").encode()).hexdigest()[:16]

    def from_proxy(self, request: Request) -> str | None:
        if not self.trusted_header:
            return None
        value = request.headers.get(self.trusted_header, "").strip()
        if not value:
            return None
        try:
            peer = ipaddress.ip_address(request.client.host if request.client else "")
        except ValueError:
            return None
        if not any(peer in net for net in self.proxies):
            log.warning("dashboard.untrusted_header", peer=str(peer), header=self.trusted_header)
            return None
        return value[:200]

    def from_session(self, request: Request) -> str | None:
        token = request.cookies.get(COOKIE)
        if not token or not self.password_hash:
            return None
        try:
            data = self.serializer.loads(token, max_age=int(self.max_age.total_seconds()))
        except BadSignature:
            return None
        if not isinstance(data, dict) or data.get("h") != self._fingerprint():
            return None
        user = data.get("u")
        return user if isinstance(user, str) else None

    def user(self, request: Request) -> str | None:
        """Who is asking, or None when they must sign in (or may not come in at all)."""
        who = self.from_proxy(request) or self.from_session(request)
        if who:
            return who
        if not self.password_hash and not self.trusted_header and is_local(request):
            return "local"
        return None

    def check_password(self, password: str) -> bool:
        return bool(self.password_hash) and verify_password(password, self.password_hash or "")

    def sign_in(self, response: Response, user: str = "admin") -> None:
        token = self.serializer.dumps({"u": user, "h": self._fingerprint()})
        response.set_cookie(
            COOKIE,
            token,
            max_age=int(self.max_age.total_seconds()),
            path="/dashboard",
            httponly=True,
            samesite="lax",
            secure=self.secure_cookie,
        )

    def sign_out(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path="/dashboard", httponly=True, samesite="lax")
