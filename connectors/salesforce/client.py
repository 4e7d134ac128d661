"""The only module that imports simple-salesforce: login, calls, limits, and the mapping of its
exceptions to ``nps_sync.errors`` kinds.

The SDK is built from a session id we obtain ourselves, so an expired session (401
INVALID_SESSION_ID) comes back to us: we log in again and repeat the call once. A 401 means the
request was refused before it ran, so repeating even a POST cannot duplicate anything.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import requests
import structlog
from requests.adapters import HTTPAdapter
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceOperationError,
    SalesforceRefusedRequest,
)
from simple_salesforce.login import SalesforceLogin
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from nps_sync.connectors.salesforce.config import SalesforceOptions
from nps_sync.errors import (
    AmbiguousOutcome,
    AuthFailed,
    ConfigError,
    ConnectorError,
    ConnectorUnavailable,
    PermanentError,
    RateLimited,
)
from nps_sync.secrets import Secrets

log = structlog.get_logger("nps_sync.connectors.salesforce")
T = TypeVar("T")
NAME = "salesforce"
_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")
#: 403 codes that mean the integration user lacks a permission: ops must act, retrying won't help.
_ACCESS_CODES = {
    "API_DISABLED_FOR_ORG",
    "INSUFFICIENT_ACCESS",
    "INSUFFICIENT_ACCESS_OR_READONLY",
    "FORBIDDEN",
}


#: Rows parsed from a Bulk result page at a time (the REST query page size).
BULK_CHUNK = 2000


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` with their endings, one at a time: ``io.StringIO`` would first copy a
    whole result page into a buffer of four bytes a character."""
    start, size = 0, len(text)
    while start < size:
        end = text.find("\n", start)
        if end < 0:
            yield text[start:]
            return
        yield text[start : end + 1]
        start = end + 1


class _Transport(HTTPAdapter):
    """Applies our timeout to every request and, for tests and proxies, sends the SDK's https
    traffic (it builds every URL as ``https://…``) to ``base`` instead, keeping path and query."""

    def __init__(self, base: str | None, timeout: float) -> None:
        self.base = base.rstrip("/") if base else None
        self.timeout = timeout
        super().__init__()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if self.base is not None:
            request.url = self.base + request.path_url
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().send(request, **kwargs)


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, ConnectorUnavailable) and not isinstance(exc, RateLimited)


#: Idempotent calls (reads, field updates) are retried briefly on network trouble and 5xx.
_retry_idempotent = retry(
    retry=retry_if_exception(_is_transient),
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=0.5, max=4),
    reraise=True,
)


def _error_codes(exc: SalesforceError) -> tuple[str, str]:
    content = exc.content
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        return str(content[0].get("errorCode", "")), str(content[0].get("message", ""))
    return "", str(content)[:300]


class SalesforceClient:
    def __init__(
        self,
        options: SalesforceOptions,
        secrets: Secrets,
        *,
        session: requests.Session | None = None,
    ) -> None:
        self.options = options
        self._secrets = secrets
        self._own_session = session is None
        self.session = session or requests.Session()
        self.session.mount("https://", _Transport(options.transport_url, options.timeout_seconds))
        self.session.hooks["response"].append(self._on_response)
        self._sf: Salesforce | None = None
        self._login_lock = threading.Lock()
        self.usage: tuple[int, int] | None = None
        self._paused_until = 0.0
        self._describes: dict[str, dict[str, Any]] = {}

    # --- login -------------------------------------------------------------------------------------

    def _secret(self, name: str, purpose: str) -> str:
        try:
            return self._secrets.require(name, purpose=purpose).get_secret_value()
        except ConfigError as exc:
            raise AuthFailed(str(exc), connector=NAME) from exc

    def _login_kwargs(self) -> dict[str, Any]:
        o = self.options
        if o.auth == "jwt":
            key = self._secret(o.private_key_secret, "Salesforce JWT private key")
            pem = key if "-----BEGIN" in key else None
            return {
                "username": o.username,
                "consumer_key": self._secret(o.consumer_key_secret, "Salesforce consumer key"),
                "privatekey": pem,
                "privatekey_file": None if pem else key.strip(),
            }
        if o.auth == "client_credentials":
            return {
                "consumer_key": self._secret(o.consumer_key_secret, "Salesforce consumer key"),
                "consumer_secret": self._secret(o.consumer_secret_secret, "Salesforce consumer secret"),
            }
        token = self._secrets.get(o.security_token_secret)
        return {
            "username": o.username,
            "password": self._secret(o.password_secret, "Salesforce password"),
            # Logins from a trusted IP range need no token; the SOAP login still wants the argument.
            "security_token": token.get_secret_value() if token else "",
        }

    def login(self) -> Salesforce:
        with self._login_lock:
            kwargs = self._login_kwargs()
            try:
                session_id, instance = SalesforceLogin(
                    session=self.session,
                    domain=self.options.login_domain,
                    sf_version=self.options.api_version,
                    **kwargs,
                )
            except SalesforceAuthenticationFailed as exc:
                if isinstance(exc.code, int) and exc.code >= 500:
                    raise ConnectorUnavailable(
                        f"Salesforce login failed with HTTP {exc.code}", connector=NAME, status=exc.code
                    ) from exc
                log.error("salesforce.login_failed", flow=self.options.auth, code=str(exc.code))
                raise AuthFailed(
                    f"Salesforce refused the {self.options.auth} login at {self.options.login_domain}: "
                    f"{exc.code}: {exc.auth_message}",
                    connector=NAME,
                ) from exc
            except (requests.RequestException, OSError) as exc:
                raise ConnectorUnavailable(f"Salesforce login failed: {exc}", connector=NAME) from exc
            self._sf = Salesforce(
                session_id=session_id,
                instance=instance,
                session=self.session,
                version=self.options.api_version,
            )
            log.info("salesforce.logged_in", flow=self.options.auth, instance=instance)
            return self._sf

    def _client(self) -> Salesforce:
        return self._sf if self._sf is not None else self.login()

    # --- limits ------------------------------------------------------------------------------------

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        match = _USAGE.search(response.headers.get("Sforce-Limit-Info", ""))
        if match is not None:
            self.usage = (int(match[1]), int(match[2]))

    def _pause(self, reason: str) -> RateLimited:
        pause = self.options.limit_pause.total_seconds()
        if time.time() >= self._paused_until:
            used, total = self.usage or (None, None)
            log.warning("salesforce.paused", reason=reason, used=used, total=total, pause_seconds=pause)
        self._paused_until = time.time() + pause
        return RateLimited(
            f"Salesforce API allowance: {reason}; pausing new work for {pause:.0f} s",
            connector=NAME,
            status=403,
            retry_after=pause,
        )

    def ensure_budget(self) -> None:
        """Raise RateLimited instead of starting new work while paused or past ``limit_share``."""
        now = time.time()
        if now < self._paused_until:
            raise RateLimited(
                "Salesforce API allowance exhausted; new work paused",
                connector=NAME,
                retry_after=self._paused_until - now,
            )
        if self._paused_until:
            # The usage we saw is from before the pause: let the next answer tell us the new one.
            self._paused_until = 0.0
            self.usage = None
            log.info("salesforce.resumed")
        if self.usage is not None:
            used, total = self.usage
            if total and used >= self.options.limit_share * total:
                raise self._pause(
                    f"{used}/{total} daily API requests used (limit_share {self.options.limit_share})"
                )

    # --- calling -----------------------------------------------------------------------------------

    def _map(self, exc: Exception, *, sent_maybe: bool) -> ConnectorError:
        if isinstance(exc, ConnectorError):
            return exc
        if isinstance(exc, SalesforceRefusedRequest):
            code, message = _error_codes(exc)
            if code == "REQUEST_LIMIT_EXCEEDED":
                return self._pause(f"REQUEST_LIMIT_EXCEEDED ({message})")
            if code in _ACCESS_CODES:
                return AuthFailed(f"Salesforce refused access: {code}: {message}", connector=NAME, status=403)
            return PermanentError(
                f"Salesforce refused the request: {code}: {message}", connector=NAME, status=403
            )
        if isinstance(exc, SalesforceExpiredSession):
            return AuthFailed(
                "Salesforce session invalid right after a new login", connector=NAME, status=401
            )
        if isinstance(exc, SalesforceError):
            code, message = _error_codes(exc)
            if exc.status >= 500:
                return ConnectorUnavailable(
                    f"Salesforce HTTP {exc.status}: {message}", connector=NAME, status=exc.status
                )
            return PermanentError(
                f"Salesforce HTTP {exc.status} {code}: {message}", connector=NAME, status=exc.status
            )
        if isinstance(exc, SalesforceOperationError):
            return PermanentError(f"Salesforce Bulk API job failed: {exc}", connector=NAME)
        if isinstance(exc, requests.RequestException):
            never_sent = isinstance(exc, requests.ConnectTimeout) or "NewConnectionError" in repr(exc)
            if sent_maybe and not never_sent:
                return AmbiguousOutcome(f"no answer from Salesforce: {exc}", connector=NAME)
            return ConnectorUnavailable(f"cannot reach Salesforce: {exc}", connector=NAME)
        # An answer the SDK could not read (a proxy's HTML page, say): for a create we cannot tell
        # whether it took effect.
        kind = AmbiguousOutcome if sent_maybe else ConnectorUnavailable
        return kind(f"unexpected answer from Salesforce: {type(exc).__name__}: {exc}", connector=NAME)

    def call(self, fn: Callable[[Salesforce], T], *, idempotent: bool = True) -> T:
        """Run one SDK call: renew an expired session and repeat once; map errors."""
        if time.time() < self._paused_until:
            raise RateLimited(
                "Salesforce API allowance exhausted; paused",
                connector=NAME,
                retry_after=self._paused_until - time.time(),
            )

        def attempt() -> T:
            try:
                try:
                    return fn(self._client())
                except SalesforceExpiredSession:
                    log.info("salesforce.session_renewed")
                    return fn(self.login())
            except Exception as exc:  # every SDK and transport error becomes one of ours
                raise self._map(exc, sent_maybe=not idempotent) from exc

        return _retry_idempotent(attempt)() if idempotent else attempt()

    # --- operations --------------------------------------------------------------------------------

    def query(self, soql: str, batch_size: int | None = None) -> dict[str, Any]:
        headers = {"Sforce-Query-Options": f"batchSize={batch_size}"} if batch_size else {}
        return dict(self.call(lambda sf: sf.query(soql, headers=headers)))

    def query_more(self, next_url: str, batch_size: int | None = None) -> dict[str, Any]:
        headers = {"Sforce-Query-Options": f"batchSize={batch_size}"} if batch_size else {}
        return dict(self.call(lambda sf: sf.query_more(next_url, identifier_is_url=True, headers=headers)))

    def query_all(self, soql: str) -> list[dict[str, Any]]:
        page = self.query(soql)
        records = list(page["records"])
        while not page["done"]:
            page = self.query_more(page["nextRecordsUrl"])
            records.extend(page["records"])
        return records

    def describe(self, sobject: str) -> dict[str, Any]:
        """The sObject's describe, cached for the client's life (fields rarely change under us)."""
        if sobject not in self._describes:
            self._describes[sobject] = dict(self.call(lambda sf: getattr(sf, sobject).describe()))
        return self._describes[sobject]

    def field_types(self, sobject: str) -> dict[str, str]:
        return {f["name"]: f["type"] for f in self.describe(sobject)["fields"]}

    def collections(self, method: str, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One sObject Collections call (≤ 200 records); SaveResults in request order.

        Updates are idempotent and retried; a create is not (a lost answer raises AmbiguousOutcome).
        """
        body = {"allOrNone": False, "records": list(records)}
        result = self.call(
            lambda sf: sf.restful("composite/sobjects", method=method, json=body),
            idempotent=method == "PATCH",
        )
        return [dict(r) for r in result or []]

    def composite(self, build: Callable[[str], Mapping[str, Any]]) -> dict[str, Any]:
        """One Composite API call; ``build`` gets the data path (``/services/data/v59.0``) for the
        subrequest URLs. Never retried: a lost answer raises AmbiguousOutcome."""

        def run(sf: Salesforce) -> Any:
            return sf.restful(
                "composite", method="POST", json=dict(build(f"/services/data/v{sf.sf_version}"))
            )

        return dict(self.call(run, idempotent=False) or {})

    def bulk_query(self, sobject: str, soql: str, chunk: int = BULK_CHUNK) -> Iterator[list[dict[str, str]]]:
        """Rows of a Bulk API 2.0 query job, at most ``chunk`` at a time (a result page holds up to
        ``bulk_page_size`` rows: parsing a whole page at once would hold all of them as dicts). A
        session that expires mid-job restarts the job once with a new login; rows already yielded
        (by Id) are not yielded again."""
        # What was yielded, as 8-byte hashes (a set of a million ids would take ~100 MB); turned
        # into a set only after a restart, which is when it is consulted.
        seen = array("q")
        skip: set[int] = set()
        restarted = False
        while True:
            try:
                handler = getattr(self._client().bulk2, sobject)
                for text in handler.query(
                    soql, max_records=self.options.bulk_page_size, wait=self.options.bulk_poll_seconds
                ):
                    reader = csv.DictReader(_lines(text))
                    while part := list(itertools.islice(reader, chunk)):
                        rows = [r for r in part if hash(r.get("Id")) not in skip] if skip else part
                        seen.extend(hash(r["Id"]) for r in rows)
                        if rows:
                            yield rows
                return
            except SalesforceExpiredSession as exc:
                if restarted:
                    raise self._map(exc, sent_maybe=False) from exc
                restarted = True
                skip = set(seen)
                log.info("salesforce.session_renewed", during="bulk_query")
                self.login()
            except Exception as exc:
                raise self._map(exc, sent_maybe=False) from exc

    def bulk_update(self, sobject: str, rows: list[dict[str, str]]) -> list[tuple[str, str]]:
        """One Bulk API 2.0 update job; returns (record id, error) for every failed row."""

        def run(sf: Salesforce) -> list[tuple[str, str]]:
            handler = getattr(sf.bulk2, sobject)
            failures: list[tuple[str, str]] = []
            for job in handler.update(records=rows, wait=self.options.bulk_poll_seconds):
                if int(job["numberRecordsFailed"]):
                    text = handler.get_failed_records(job["job_id"])
                    failures.extend(
                        (r["sf__Id"] or r.get("Id", ""), r["sf__Error"])
                        for r in csv.DictReader(io.StringIO(text))
                    )
            return failures

        return self.call(run)

    def close(self) -> None:
        if self._own_session:
            self.session.close()
        self._sf = None
