"""The only module that imports the twilio SDK: one message per call, errors mapped to our kinds."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.request_validator import HMAC_SHA256, RequestValidator, get_signature_algorithm
from twilio.rest import Client
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from nps_sync.connectors.twilio.mapping import TOO_MANY_REQUESTS, SentMessage
from nps_sync.errors import (
    AmbiguousOutcome,
    AuthFailed,
    ConnectorError,
    ConnectorUnavailable,
    PermanentError,
    RateLimited,
)

NAME = "twilio"
T = TypeVar("T")


@dataclass(frozen=True)
class WebhookSigningKeys:
    """Secrets webhooks are signed with; ``repr`` hides them."""

    auth_token: str = field(repr=False)
    shared_key: str | None = field(default=None, repr=False)


class TwilioRefusedError(PermanentError):
    """Twilio refused this one request for good; ``code`` is Twilio's error code (21610, 21211…)."""

    def __init__(self, message: str, *, code: int | None, status: int | None) -> None:
        self.code = code
        super().__init__(message, connector=NAME, status=status)


class _RoutingHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """Sends every Twilio domain (api, messaging…) to ``base_url`` when set, with a pool sized for
    our concurrency (the SDK's default pool of 10 would drop connections above that)."""

    def __init__(self, base_url: str | None, *, timeout: float, pool_size: int) -> None:
        super().__init__(timeout=timeout)
        self._base = base_url.rstrip("/") if base_url else None
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if self._base is not None:
            parts = urlsplit(url)
            url = self._base + parts.path + (f"?{parts.query}" if parts.query else "")
        return super().request(method, url, params, data, headers, auth, timeout, allow_redirects)


def _map_api_error(exc: TwilioRestException | TwilioServiceException, action: str) -> ConnectorError:
    status = int(exc.status) if exc.status is not None else None
    code = int(exc.code) if exc.code is not None else None
    text = getattr(exc, "msg", None) or getattr(exc, "detail", None) or getattr(exc, "title", "")
    message = f"twilio {action}: HTTP {status}, code {code}: {text}"
    if status == 401:
        return AuthFailed(message + " (check account SID, auth token or API key)", connector=NAME, status=401)
    if status == 429 or code == TOO_MANY_REQUESTS:
        return RateLimited(message, connector=NAME, status=status)
    if status is not None and status >= 500:
        return ConnectorUnavailable(message, connector=NAME, status=status)
    return TwilioRefusedError(message, code=code, status=status)


def _map_page_error(exc: TwilioException, action: str) -> ConnectorError:
    """List pages fail with a bare ``TwilioException("Unable to fetch page", response)``."""
    response = exc.args[1] if len(exc.args) > 1 else None
    status = getattr(response, "status_code", None)
    message = f"twilio {action}: HTTP {status}: {getattr(response, 'text', exc)}"
    if status == 401:
        return AuthFailed(message, connector=NAME, status=401)
    if status == 429:
        return RateLimited(message, connector=NAME, status=429)
    return ConnectorUnavailable(message, connector=NAME, status=status)


def _never_left(exc: requests.exceptions.ConnectionError) -> bool:
    """True when no connection was made, so Twilio cannot have seen the request."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0] if exc.args else None, "reason", None)
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


class TwilioApi:
    """A thread-safe wrapper over ``twilio.rest.Client`` speaking our types and errors."""

    def __init__(
        self,
        *,
        account_sid: str,
        username: str,
        password: str,
        base_url: str | None,
        timeout: float,
        pool_size: int,
    ) -> None:
        self._http = _RoutingHttpClient(base_url, timeout=timeout, pool_size=pool_size)
        # A non-empty environment: the SDK falls back to os.environ for an empty one, and
        # TWILIO_EDGE / TWILIO_REGION there would rewrite the host.
        self._client = Client(
            username, password, account_sid, http_client=self._http, environment={"NPS_SYNC": "1"}
        )

    def create_message(self, *, to: str, body: str, status_callback: str, sender: Mapping[str, str]) -> str:
        """POST one message and return its SID.

        Raises ``RateLimited`` (20429) / ``ConnectorUnavailable`` (5xx, no connection): nothing was
        accepted, safe to retry; ``AuthFailed``; ``TwilioRefusedError`` (other 4xx); ``AmbiguousOutcome``
        when the request left and no answer came back.
        """
        try:
            message = self._client.messages.create(
                to=to, body=body, status_callback=status_callback, **sender
            )
        except (TwilioRestException, TwilioServiceException) as exc:
            raise _map_api_error(exc, "create message") from exc
        except requests.exceptions.ConnectionError as exc:
            if _never_left(exc):
                raise ConnectorUnavailable(f"twilio unreachable: {exc}", connector=NAME) from exc
            raise AmbiguousOutcome(f"twilio connection lost after sending: {exc}", connector=NAME) from exc
        except requests.exceptions.RequestException as exc:
            raise AmbiguousOutcome(f"twilio gave no answer after sending: {exc}", connector=NAME) from exc
        return str(message.sid)

    def recent_messages(self, *, to: str, since: datetime, from_number: str | None) -> list[SentMessage]:
        """Messages to ``to`` created at or after ``since``, newest first (paging stops at the
        first older one, since Twilio lists newest first)."""

        def run() -> list[SentMessage]:
            found: list[SentMessage] = []
            filters: dict[str, Any] = {"to": to}
            if from_number is not None:
                filters["from_"] = from_number
            for item in self._client.messages.stream(page_size=50, **filters):
                created: datetime | None = item.date_created
                if created is not None and created < since:
                    break
                found.append(
                    SentMessage(
                        sid=str(item.sid),
                        to=str(item.to),
                        from_number=str(item.from_ or ""),
                        messaging_service_sid=item.messaging_service_sid,
                        created_at=created,
                        status=str(item.status or ""),
                        direction=str(item.direction or ""),
                    )
                )
            return found

        return self._read("list messages", run)

    def account_status(self) -> str:
        return self._read("fetch account", lambda: str(self._client.api.v2010.account.fetch().status))

    def service_name(self, sid: str) -> str:
        return self._read(
            "fetch messaging service",
            lambda: str(self._client.messaging.v1.services(sid).fetch().friendly_name),
        )

    def _read(self, action: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except (TwilioRestException, TwilioServiceException) as exc:
            raise _map_api_error(exc, action) from exc
        except TwilioException as exc:
            raise _map_page_error(exc, action) from exc
        except requests.exceptions.RequestException as exc:
            raise ConnectorUnavailable(f"twilio {action} failed: {exc}", connector=NAME) from exc

    def close(self) -> None:
        if self._http.session is not None:
            self._http.session.close()


def signature_valid(
    *, keys: WebhookSigningKeys, url: str, params: Any, signature: str, settings: str
) -> bool:
    """Check ``X-Twilio-Signature`` over ``url`` + sorted params (SDK's validator: HMAC-SHA1 with
    the Auth Token, or HMAC-SHA256 with the SharedKey named in ``settings``)."""
    algorithm = get_signature_algorithm(settings)
    token = keys.shared_key if algorithm == HMAC_SHA256 and keys.shared_key else keys.auth_token
    return bool(RequestValidator(token).validate(url, params, signature, algorithm))
