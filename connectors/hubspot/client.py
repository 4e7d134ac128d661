"""The only module that imports hubspot-api-client: typed calls, rate limiting, retries, error mapping.

- Every call passes a client-side limiter first: the 10-second window (one per app) and, for search,
  its own per-second limit, so normal operation never meets a 429.
- The SDK's own urllib3 retries are switched off (``Retry(False)``): it would silently repeat some
  GETs on 429 with ``Retry-After`` and our backoff would then repeat them again. Retrying happens in
  one place, here, with tenacity.
- A refusal with a status (429, 5xx, 4xx) means nothing was done, so a 429 is repeated even for a
  POST. A request whose answer was lost (reset, read timeout) is repeated only when the call is
  idempotent; otherwise it raises ``AmbiguousOutcome`` and the caller reconciles (task creation
  looks its keys up), never a blind repeat.
- Responses are read as JSON (``_preload_content=False``): the SDK's model layer parses every
  record's ``createdAt``/``updatedAt`` with dateutil, which costs more CPU than the whole HTTP
  exchange at audience sizes (≈ 10 s per 25,000 contacts). Requests are still built from the SDK's
  model classes, so their shapes are the SDK's.
- Each SDK sub-package has its own ``ApiException``; all of them map to ``nps_sync.errors`` kinds:
  401/403 → ``AuthFailed``, 429 → ``RateLimited``, 5xx/network → ``ConnectorUnavailable``,
  other 4xx → ``PermanentError``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import hubspot.crm.associations.v4 as hs_associations
import hubspot.crm.companies as hs_companies
import hubspot.crm.contacts as hs_contacts
import hubspot.crm.lists as hs_lists
import hubspot.crm.objects.notes as hs_notes
import hubspot.crm.objects.tasks as hs_tasks
import hubspot.crm.owners as hs_owners
import hubspot.crm.properties as hs_properties
import structlog
import urllib3
from hubspot import HubSpot
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from urllib3.util.retry import Retry

from nps_sync.connectors.hubspot.mapping import ASSOC_CATEGORY
from nps_sync.connectors.hubspot.ratelimit import SlidingWindow
from nps_sync.errors import (
    AmbiguousOutcome,
    AuthFailed,
    ConnectorError,
    ConnectorUnavailable,
    PermanentError,
    RateLimited,
)

NAME = "hubspot"
log = structlog.get_logger("nps_sync.connectors.hubspot.client")

_API_EXCEPTIONS: tuple[type[BaseException], ...] = (
    hs_contacts.ApiException,
    hs_companies.ApiException,
    hs_tasks.ApiException,
    hs_owners.ApiException,
    hs_properties.ApiException,
    hs_lists.ApiException,
    hs_notes.ApiException,
    hs_associations.ApiException,
)
#: Failures before the request reached HubSpot: safe to repeat any call.
_NOT_SENT: tuple[type[BaseException], ...] = (
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.ConnectTimeoutError,
)
_OBJECT_PACKAGES: dict[str, Any] = {
    "contacts": hs_contacts,
    "companies": hs_companies,
    "tasks": hs_tasks,
    "notes": hs_notes,
}
_CONFIGS: dict[str, Any] = {
    pkg.__name__: pkg.Configuration()
    for pkg in (hs_contacts, hs_companies, hs_tasks, hs_properties, hs_notes)
}
DAILY_POLICY = "DAILY"


@dataclass(frozen=True)
class Record:
    """A CRM object as plain data: id and its string (or null) property values."""

    id: str
    properties: Mapping[str, str | None]


@dataclass(frozen=True)
class Page:
    records: list[Record]
    after: str | None
    total: int | None = None


@dataclass(frozen=True)
class BatchError:
    """Part of a batch HubSpot refused: the ids it named (maybe none) and why."""

    ids: tuple[str, ...]
    message: str
    status: int


@dataclass(frozen=True)
class PropertyInfo:
    name: str
    type: str
    options: frozenset[str]
    read_only: bool


@dataclass(frozen=True)
class TaskInput:
    properties: Mapping[str, str]
    contact_id: str
    company_id: str | None


class _RepeatableError(Exception):
    """Internal: wraps an error that may be retried; tenacity sees this, callers never do."""

    def __init__(self, error: ConnectorError) -> None:
        super().__init__(str(error))
        self.error = error


def _body(exc: Any) -> dict[str, Any]:
    raw = getattr(exc, "body", None)
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        return {"message": str(raw)[:300]}
    return parsed if isinstance(parsed, dict) else {"message": str(parsed)[:300]}


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    value = headers.get(name)
    return None if value is None else str(value)


def _model(pkg: Any, model_class: str, /, **fields: Any) -> Any:
    """An SDK model built with its package's shared configuration: each model built without one
    deep-copies a fresh ``Configuration``, which dominates the cost of a 100-input batch."""
    return getattr(pkg, model_class)(local_vars_configuration=_CONFIGS[pkg.__name__], **fields)


def _records(body: Mapping[str, Any]) -> list[Record]:
    return [Record(str(r["id"]), r.get("properties") or {}) for r in body.get("results") or []]


def _next(body: Mapping[str, Any]) -> str | None:
    after = ((body.get("paging") or {}).get("next") or {}).get("after")
    return None if after in (None, "") else str(after)


def error_ids(body: Mapping[str, Any]) -> tuple[str, ...]:
    """Record ids a HubSpot error body names (``context.ids``, also inside ``errors``)."""
    found: list[str] = []
    contexts = [body.get("context") or {}] + [e.get("context") or {} for e in body.get("errors") or []]
    for ctx in contexts:
        if isinstance(ctx, Mapping):
            found.extend(str(i) for i in ctx.get("ids") or [])
    return tuple(dict.fromkeys(found))


class HubSpotClient:
    """A typed face over hubspot-api-client (thread-safe: the SDK's pools are, the limiters lock)."""

    def __init__(
        self,
        token: str,
        *,
        base_url: str,
        window_calls: int,
        window_seconds: float,
        search_per_second: int,
        max_attempts: int,
        retry_wait: float,
        retry_max_wait: float,
        timeout: float,
        daily_warn_fraction: float = 0.1,
        sleep: Callable[[float], None] = time.sleep,
        windows: tuple[SlidingWindow, SlidingWindow] | None = None,
    ) -> None:
        #: What a copy of this client in another process needs (``reader``), with ``windows``.
        self.settings: dict[str, Any] = {
            "token": token,
            "base_url": base_url,
            "window_calls": window_calls,
            "window_seconds": window_seconds,
            "search_per_second": search_per_second,
            "max_attempts": max_attempts,
            "retry_wait": retry_wait,
            "retry_max_wait": retry_max_wait,
            "timeout": timeout,
            "daily_warn_fraction": daily_warn_fraction,
        }
        sdk = HubSpot(access_token=token, host=base_url, retry=Retry(False))
        crm = sdk.crm
        self._objects = {
            "contacts": (crm.contacts.basic_api, crm.contacts.batch_api, crm.contacts.search_api),
            "companies": (crm.companies.basic_api, crm.companies.batch_api, crm.companies.search_api),
            "tasks": (crm.objects.tasks.basic_api, crm.objects.tasks.batch_api, crm.objects.tasks.search_api),
            "notes": (crm.objects.notes.basic_api, crm.objects.notes.batch_api, crm.objects.notes.search_api),
        }
        self._associations = crm.associations.v4.basic_api
        self._owners = crm.owners.owners_api
        self._properties = crm.properties.core_api
        self._groups = crm.properties.groups_api
        self._memberships = crm.lists.memberships_api
        #: The 10-second window and the search window, shared with the page reader's process.
        self.windows = windows or (
            SlidingWindow(window_calls, window_seconds, sleep),
            SlidingWindow(search_per_second, 1.0, sleep),
        )
        self._window, self._search = self.windows
        self._attempts = max_attempts
        self._wait, self._max_wait = retry_wait, retry_max_wait
        self._timeout = timeout
        self._sleep = sleep
        self._warn_fraction = daily_warn_fraction
        self._warned_daily = False
        self.daily_limit: int | None = None
        self.daily_remaining: int | None = None

    # -- the one path every call takes ------------------------------------------------------------

    def _call(self, kind: str, fn: Callable[..., Any], *, idempotent: bool, search: bool = False) -> Any:
        limiter = self._search if search else self._window

        def once() -> Any:
            slot = limiter.acquire()
            try:
                response = fn(_request_timeout=self._timeout, _preload_content=False)
                raw = response.data
                response.release_conn()
            except _API_EXCEPTIONS as exc:
                self._track(getattr(exc, "headers", None))
                raise self._refused(kind, exc, idempotent) from exc
            except _NOT_SENT as exc:
                raise _RepeatableError(
                    ConnectorUnavailable(f"{kind}: cannot reach HubSpot: {exc}", connector=NAME)
                ) from exc
            except urllib3.exceptions.HTTPError as exc:
                raise self._lost(kind, exc, idempotent) from exc
            finally:
                limiter.done(slot)
            self._track(response.headers)
            return json.loads(raw) if raw else {}

        retrying = Retrying(
            stop=stop_after_attempt(self._attempts),
            wait=self._backoff,
            retry=retry_if_exception(lambda e: isinstance(e, _RepeatableError)),
            sleep=self._sleep,
            before_sleep=lambda state: (
                log.info(
                    "hubspot.retrying",
                    kind=kind,
                    attempt=state.attempt_number,
                    error=str(state.outcome.exception()),
                )
                if state.outcome
                else None
            ),
            reraise=True,
        )
        try:
            return retrying(once)
        except _RepeatableError as exc:
            raise exc.error from exc.__cause__

    def _backoff(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _RepeatableError) and isinstance(exc.error, RateLimited) and exc.error.retry_after:
            return min(exc.error.retry_after, self._max_wait)
        return float(min(self._wait * 2 ** (state.attempt_number - 1), self._max_wait))

    def _refused(self, kind: str, exc: Any, idempotent: bool) -> Exception:
        status = int(getattr(exc, "status", 0) or 0)
        body = _body(exc)
        detail = f"{kind}: HubSpot answered {status}: {body.get('message') or getattr(exc, 'reason', '')}"
        if body.get("category"):
            detail += f" ({body['category']})"
        if status == 0:
            # The SDK turns TLS failures into status 0; the request may have left for all we know.
            err = ConnectorUnavailable(detail, connector=NAME)
            return _RepeatableError(err) if idempotent else AmbiguousOutcome(detail, connector=NAME)
        if status in (401, 403):
            return AuthFailed(
                f"{detail}. Check the private app token and its scopes (see the HubSpot README).",
                connector=NAME,
                status=status,
            )
        if status == 429:
            retry_after = _header(getattr(exc, "headers", None), "Retry-After")
            limited = RateLimited(
                f"{detail} (policy {body.get('policyName', 'unknown')})",
                connector=NAME,
                status=status,
                retry_after=float(retry_after) if retry_after else None,
            )
            if body.get("policyName") == DAILY_POLICY:
                log.warning("hubspot.daily_limit_reached", kind=kind)
                return limited
            return _RepeatableError(limited)
        if status >= 500:
            err = ConnectorUnavailable(detail, connector=NAME, status=status)
            return (
                _RepeatableError(err)
                if idempotent
                else AmbiguousOutcome(detail, connector=NAME, status=status)
            )
        return PermanentError(detail, connector=NAME, status=status)

    def _lost(self, kind: str, exc: Exception, idempotent: bool) -> Exception:
        detail = f"{kind}: the answer from HubSpot was lost ({exc.__class__.__name__}: {exc})"
        if idempotent:
            return _RepeatableError(ConnectorUnavailable(detail, connector=NAME))
        return AmbiguousOutcome(detail, connector=NAME)

    def _track(self, headers: Any) -> None:
        remaining = _header(headers, "X-HubSpot-RateLimit-Daily-Remaining")
        limit = _header(headers, "X-HubSpot-RateLimit-Daily")
        if remaining is None or not remaining.isdigit():
            return
        self.note_daily(int(remaining), int(limit) if limit is not None and limit.isdigit() else None)

    def note_daily(self, remaining: int, limit: int | None) -> None:
        """The portal's daily allowance as HubSpot last reported it (here or in the page reader)."""
        self.daily_remaining = remaining
        if limit is not None:
            self.daily_limit = limit
        low = self.daily_limit is not None and self.daily_remaining < self.daily_limit * self._warn_fraction
        if low and not self._warned_daily:
            log.warning("hubspot.daily_allowance_low", remaining=self.daily_remaining, limit=self.daily_limit)
        elif not low and self._warned_daily:
            log.info("hubspot.daily_allowance_recovered", remaining=self.daily_remaining)
        self._warned_daily = low

    # -- objects ------------------------------------------------------------------------------

    def list_page(self, object_type: str, properties: Sequence[str], limit: int, after: str | None) -> Page:
        basic = self._objects[object_type][0]
        page = self._call(
            f"{object_type}.list",
            lambda **kw: basic.get_page(
                limit=limit, after=after, properties=list(properties), archived=False, **kw
            ),
            idempotent=True,
        )
        return Page(_records(page), _next(page))

    def batch_read(self, object_type: str, ids: Sequence[str], properties: Sequence[str]) -> list[Record]:
        """Records among ``ids`` (≤ 100); missing ids are simply absent."""
        if not ids:
            return []
        pkg = _OBJECT_PACKAGES[object_type]
        batch = self._objects[object_type][1]
        request = _model(
            pkg,
            "BatchReadInputSimplePublicObjectId",
            inputs=[_model(pkg, "SimplePublicObjectId", id=i) for i in ids],
            properties=list(properties),
            properties_with_history=[],
        )
        result = self._call(
            f"{object_type}.batch_read",
            lambda **kw: batch.read(batch_read_input_simple_public_object_id=request, **kw),
            idempotent=True,
        )
        return _records(result)

    def search(
        self,
        object_type: str,
        filter_groups: Sequence[Sequence[Mapping[str, Any]]],
        properties: Sequence[str],
        *,
        limit: int,
        after: str | None,
    ) -> Page:
        """One search page, sorted by ``hs_object_id`` ascending (stable paging and partitioning)."""
        pkg = _OBJECT_PACKAGES[object_type]
        search_api = self._objects[object_type][2]
        request = pkg.PublicObjectSearchRequest(
            filter_groups=[
                pkg.FilterGroup(filters=[pkg.Filter(**f) for f in group]) for group in filter_groups
            ],
            properties=list(properties),
            limit=limit,
            after=after or "0",
            sorts=[{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
        )
        result = self._call(
            f"{object_type}.search",
            lambda **kw: search_api.do_search(public_object_search_request=request, **kw),
            idempotent=True,
            search=True,
        )
        return Page(_records(result), _next(result), result.get("total"))

    def batch_update(
        self, object_type: str, inputs: Sequence[tuple[str, Mapping[str, str]]]
    ) -> tuple[list[str], list[BatchError]]:
        """Write ≤ 100 records. Returns the ids written and HubSpot's per-record errors; a 400 that
        refuses the whole batch is returned as one BatchError naming the ids it blamed (maybe none)."""
        pkg = _OBJECT_PACKAGES[object_type]
        batch = self._objects[object_type][1]
        request = _model(
            pkg,
            "BatchInputSimplePublicObjectBatchInput",
            inputs=[_model(pkg, "SimplePublicObjectBatchInput", id=i, properties=dict(p)) for i, p in inputs],
        )
        try:
            result = self._call(
                f"{object_type}.batch_update",
                lambda **kw: batch.update(batch_input_simple_public_object_batch_input=request, **kw),
                idempotent=True,
            )
        except PermanentError as exc:
            body = _body(exc.__cause__)
            return [], [BatchError(error_ids(body), str(exc), exc.status or 400)]
        errors = [
            BatchError(error_ids(e), str(e.get("message", "")), 400) for e in result.get("errors") or []
        ]
        return [str(r["id"]) for r in result.get("results") or []], errors

    def create_tasks(self, inputs: Sequence[TaskInput], contact_type: int, company_type: int) -> list[Record]:
        """Create ≤ 100 tasks with inline associations. NOT idempotent: a lost answer raises
        ``AmbiguousOutcome``. HubSpot does not promise results in input order."""

        def associations(item: TaskInput) -> list[Any]:
            links = [(item.contact_id, contact_type)]
            if item.company_id:
                links.append((item.company_id, company_type))
            spec = "AssociationSpec"
            return [
                _model(
                    hs_tasks,
                    "PublicAssociationsForObject",
                    to=_model(hs_tasks, "PublicObjectId", id=to_id),
                    types=[
                        _model(hs_tasks, spec, association_category=ASSOC_CATEGORY, association_type_id=t)
                    ],
                )
                for to_id, t in links
            ]

        request = _model(
            hs_tasks,
            "BatchInputSimplePublicObjectBatchInputForCreate",
            inputs=[
                _model(
                    hs_tasks,
                    "SimplePublicObjectBatchInputForCreate",
                    properties=dict(item.properties),
                    associations=associations(item),
                )
                for item in inputs
            ],
        )
        batch = self._objects["tasks"][1]
        result = self._call(
            "tasks.batch_create",
            lambda **kw: batch.create(batch_input_simple_public_object_batch_input_for_create=request, **kw),
            idempotent=False,
        )
        return _records(result)

    def associated_ids(self, object_type: str, object_id: str, to_type: str) -> list[str]:
        """Ids of the ``to_type`` records associated with one record (v4 associations, 500 a page;
        read from the record itself, so unlike search it never trails a write)."""
        ids: list[str] = []
        after: str | None = None
        while True:
            page = self._call(
                f"{object_type}.associations",
                lambda cursor=after, **kw: self._associations.get_page(
                    object_type, object_id, to_type, after=cursor, limit=500, **kw
                ),
                idempotent=True,
            )
            ids += [str(r["toObjectId"]) for r in page.get("results") or []]
            after = _next(page)
            if after is None:
                return ids

    def create_note(self, properties: Mapping[str, str], contact_id: str, type_id: int) -> Record:
        """Create one note associated with a contact. NOT idempotent: a lost answer raises
        ``AmbiguousOutcome``."""
        request = _model(
            hs_notes,
            "SimplePublicObjectInputForCreate",
            properties=dict(properties),
            associations=[
                _model(
                    hs_notes,
                    "PublicAssociationsForObject",
                    to=_model(hs_notes, "PublicObjectId", id=contact_id),
                    types=[
                        _model(
                            hs_notes,
                            "AssociationSpec",
                            association_category=ASSOC_CATEGORY,
                            association_type_id=type_id,
                        )
                    ],
                )
            ],
        )
        basic = self._objects["notes"][0]
        result = self._call(
            "notes.create",
            lambda **kw: basic.create(simple_public_object_input_for_create=request, **kw),
            idempotent=False,
        )
        return Record(str(result["id"]), result.get("properties") or {})

    def close(self) -> None:
        apis = [api for trio in self._objects.values() for api in trio]
        apis += [self._owners, self._properties, self._groups, self._memberships, self._associations]
        for api in apis:
            api.api_client.rest_client.pool_manager.clear()

    # -- owners, properties, lists --------------------------------------------------------------

    def owners_page(
        self, after: str | None, email: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        page = self._call(
            "owners.list",
            lambda **kw: self._owners.get_page(limit=100, after=after, email=email, archived=False, **kw),
            idempotent=True,
        )
        owners = [
            {
                "id": str(o["id"]),
                "email": o.get("email"),
                "first_name": o.get("firstName"),
                "last_name": o.get("lastName"),
            }
            for o in page.get("results") or []
        ]
        return owners, _next(page)

    def properties(self, object_type: str) -> dict[str, PropertyInfo]:
        result = self._call(
            "properties.list",
            lambda **kw: self._properties.get_all(object_type=object_type, archived=False, **kw),
            idempotent=True,
        )
        return {
            p["name"]: PropertyInfo(
                p["name"],
                p.get("type", ""),
                frozenset(str(o.get("value")) for o in p.get("options") or []),
                bool((p.get("modificationMetadata") or {}).get("readOnlyValue")),
            )
            for p in result.get("results") or []
        }

    def create_group(self, object_type: str, name: str, label: str) -> bool:
        """Create a property group; False when it already exists (409)."""
        request = _model(hs_properties, "PropertyGroupCreate", name=name, label=label, display_order=-1)
        try:
            self._call(
                "groups.create",
                lambda **kw: self._groups.create(
                    object_type=object_type, property_group_create=request, **kw
                ),
                idempotent=True,  # a repeat meets 409, which counts as present
            )
        except PermanentError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def create_property(
        self,
        object_type: str,
        *,
        name: str,
        label: str,
        type_: str,
        field_type: str,
        group: str,
        description: str,
        options: Iterable[str] = (),
    ) -> bool:
        """Create a property; False when it already exists (409)."""
        request = _model(
            hs_properties,
            "PropertyCreate",
            name=name,
            label=label,
            type=type_,
            field_type=field_type,
            group_name=group,
            description=description,
            options=[
                _model(hs_properties, "OptionInput", label=o.title(), value=o, display_order=n, hidden=False)
                for n, o in enumerate(options)
            ],
        )
        try:
            self._call(
                "properties.create",
                lambda **kw: self._properties.create(object_type=object_type, property_create=request, **kw),
                idempotent=True,
            )
        except PermanentError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def list_members(self, list_id: str, limit: int, after: str | None) -> tuple[list[str], str | None]:
        page = self._call(
            "lists.memberships",
            lambda **kw: self._memberships.get_page(list_id=list_id, after=after, limit=limit, **kw),
            idempotent=True,
        )
        return [str(m["recordId"]) for m in page.get("results") or []], _next(page)
