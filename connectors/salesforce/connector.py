"""The Salesforce CRM: audience through SOQL (or Bulk API 2.0), write-back through sObject
Collections (or a Bulk ingest job), tasks created at most once by our key."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import structlog
from pydantic import ValidationError

from nps_sync.abc import ConnectorContext
from nps_sync.connectors.salesforce import mapping
from nps_sync.connectors.salesforce.client import NAME, SalesforceClient
from nps_sync.connectors.salesforce.config import SalesforceAudience, SalesforceOptions
from nps_sync.errors import (
    AmbiguousOutcome,
    ConfigError,
    ConnectorError,
    ConnectorUnavailable,
    PermanentError,
)
from nps_sync.models import (
    AccountUpdate,
    Audience,
    BatchResult,
    Contact,
    ContactUpdate,
    Owner,
    RecordFailure,
    TaskResult,
    TaskSpec,
    TaskState,
)

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

log = structlog.get_logger("nps_sync.connectors.salesforce")

_FIELD_PATH = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*$")
_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
#: Keep an IN (…) list's share of a GET URL under Salesforce's 16,384-byte URI limit.
_IN_BUDGET = 12_000
_USER_FIELDS = ("Id", "Name", "Email", "Username", "ManagerId")
_TASK_FIELDS = ("Id", "IsClosed", "ActivityDate", "OwnerId", "Status")
#: Settings (state database) holding the contact count of the last pull of each audience.
AUDIENCE_SIZE_SETTING = "salesforce.audience_size"
#: Owner ids from audience pulls kept to fill owner queries' spare room (about 40 KB at most).
NOTED_OWNERS = 2_000


def _audience_size_key(soql_where: str) -> str:
    """The setting that keeps the size of the last pull of an audience (by its condition)."""
    return f"{AUDIENCE_SIZE_SETTING}:{hashlib.sha256(soql_where.encode()).hexdigest()[:32]}"


def _valid_ids(ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(i for i in ids if isinstance(i, str) and _ID.match(i)))


def _budget_chunks(values: Sequence[str]) -> Iterator[list[str]]:
    """≤ 200 values whose quoted, escaped length stays within the URL budget."""
    chunk: list[str] = []
    size = 0
    for value in values:
        cost = len(quote_plus(mapping.quote(value))) + 4  # as requests encodes it, plus ", "
        if chunk and (len(chunk) >= mapping.COLLECTION_SIZE or size + cost > _IN_BUDGET):
            yield chunk
            chunk, size = [], 0
        chunk.append(value)
        size += cost
    if chunk:
        yield chunk


class SalesforceCRM:
    name = NAME
    #: Records per batched write (the core sizes its write-back and task batches to it).
    batch_size = mapping.COLLECTION_SIZE

    def __init__(self, options: SalesforceOptions, ctx: ConnectorContext) -> None:
        self.options = options
        overrides = ctx.overrides or {}
        self._secrets = ctx.secrets
        self.client = SalesforceClient(options, ctx.secrets, session=overrides.get("session"))
        self._store = ctx.store
        #: Users already read, by the id asked for: (when read, the user), for ``owner_cache_seconds``.
        self._users: dict[str, tuple[float, Owner]] = {}
        #: ``find_owner`` answers that found someone, by query text, kept as long.
        self._found: dict[str, tuple[float, Owner]] = {}
        #: Owner ids met in audience pulls and not read yet (insertion-ordered, at most
        #: ``NOTED_OWNERS``): they fill the spare room of the next owner query (see ``get_owners``).
        self._noted_owners: dict[str, None] = {}

    # --- reads -------------------------------------------------------------------------------------

    def _contact_query(self, extra: Sequence[str]) -> mapping.ContactQuery:
        bad = [name for name in extra if not _FIELD_PATH.match(name)]
        if bad:
            raise ConfigError(
                f"extra fields must be Salesforce API names such as Title or Account.Plan__c, got: {bad}"
            )
        existing = set(self.client.field_types("Contact"))
        q = mapping.contact_query(self.options, existing, extra)
        dropped = [
            n for n in (self.options.locale_field, self.options.time_zone_field) if n and n not in existing
        ]
        if dropped:
            log.warning("salesforce.optional_fields_missing", fields=dropped, effect="values read as empty")
        return q

    def iter_audience(self, audience: Audience) -> Iterator[Sequence[Contact]]:
        try:
            table = SalesforceAudience.model_validate(dict(audience.filter))
        except ValidationError as exc:
            raise ConfigError(f"program {audience.program!r}: [program.audience]: {exc}") from exc
        self.client.ensure_budget()
        q = self._contact_query(audience.extra_fields)
        soql = mapping.select(q.fields, "Contact", f"({table.soql_where})" if table.soql_where else "")
        size_key = _audience_size_key(table.soql_where)
        # An audience that was above the threshold last time (a daily wave over the same condition)
        # goes straight to Bulk API: the REST page that would only tell its size again is not read.
        last = self._store.get_setting(size_key)
        if last is not None and int(last) > self.options.bulk_query_threshold:
            log.info("salesforce.audience_pull", program=audience.program, last_total=int(last), path="bulk")
            yield from self._bulk_pages(soql, q, size_key)
            return
        # The first page's totalSize is the audience count: deciding REST vs Bulk costs no extra call.
        try:
            page = self.client.query(soql, table.page_size)
        except PermanentError as exc:
            raise PermanentError(
                f"program {audience.program!r}: audience soql_where {table.soql_where!r} was refused: {exc}",
                connector=NAME,
                status=exc.status,
            ) from exc
        total = int(page["totalSize"])
        self._store.set_setting(size_key, str(total))
        if total > self.options.bulk_query_threshold:
            log.info("salesforce.audience_pull", program=audience.program, total=total, path="bulk")
            yield from self._bulk_pages(soql, q, size_key)
            return
        log.info("salesforce.audience_pull", program=audience.program, total=total, path="rest")
        while True:
            if page["records"]:
                yield self._note_owners([mapping.to_contact(r, q) for r in page["records"]])
            if page["done"]:
                return
            page = self.client.query_more(page["nextRecordsUrl"], table.page_size)

    def _bulk_pages(self, soql: str, q: mapping.ContactQuery, size_key: str) -> Iterator[list[Contact]]:
        """The audience through one Bulk API 2.0 query job; once it is read whole, its size is kept
        for the next pull's choice of path."""
        total = 0
        for rows in self.client.bulk_query("Contact", soql):
            for chunk in mapping.chunks(rows, mapping.MAX_QUERY_PAGE):
                total += len(chunk)
                yield self._note_owners([mapping.to_contact(r, q) for r in chunk])
        self._store.set_setting(size_key, str(total))

    def get_contacts(self, ids: Sequence[str]) -> dict[str, Contact]:
        valid = _valid_ids(ids)
        if not valid:
            return {}
        q = self._contact_query(())
        found: dict[str, Contact] = {}
        for chunk in mapping.chunks(valid, mapping.COLLECTION_SIZE):
            soql = mapping.select(q.fields, "Contact", f"Id IN {mapping.in_list(chunk)}")
            for record in self.client.query_all(soql):
                contact = mapping.to_contact(record, q)
                found[contact.id] = contact
        return found

    def _owners(self, where: str) -> list[Owner]:
        records = self.client.query_all(mapping.select(_USER_FIELDS, "User", where))
        return [
            Owner(
                id=str(r["Id"]),
                name=mapping.as_text(r.get("Name")) or "",
                email=mapping.as_text(r.get("Email")),
                username=mapping.as_text(r.get("Username")),
                manager_id=mapping.as_text(r.get("ManagerId")),
            )
            for r in records
        ]

    def _fresh(self, cache: Mapping[str, tuple[float, Owner]], key: str, now: float) -> Owner | None:
        hit = cache.get(key)
        return hit[1] if hit is not None and now - hit[0] < self.options.owner_cache_seconds else None

    def _note_owners(self, contacts: list[Contact]) -> list[Contact]:
        """Remember the page's owner ids not read yet, so later owner queries can carry them."""
        if len(self._noted_owners) < NOTED_OWNERS:
            ids = {c.owner_id for c in contacts} | {c.account_owner_id for c in contacts}
            for owner_id in ids - self._users.keys() - self._noted_owners.keys():
                if owner_id and len(self._noted_owners) < NOTED_OWNERS:
                    self._noted_owners[owner_id] = None
        return contacts

    def get_owners(self, ids: Sequence[str]) -> dict[str, Owner]:
        """Users by id: those read within ``owner_cache_seconds`` from memory, the rest (an id never
        seen, or one Salesforce did not know last time) in ⌈n/200⌉ queries. The last query's spare
        room is filled with owner ids met in audience pulls and not read yet, so the owners of a whole
        wave are usually read by the first playbook batch's one query instead of one query each batch
        that meets a new one; this never adds a query."""
        now = time.monotonic()
        owners: dict[str, Owner] = {}
        missing: list[str] = []
        for owner_id in _valid_ids(ids):
            owner = self._fresh(self._users, owner_id, now)
            if owner is None:
                missing.append(owner_id)
            else:
                owners[owner.id] = owner
        asked = list(missing)
        if missing and self._noted_owners:
            room = -len(missing) % mapping.COLLECTION_SIZE
            wanted = set(missing)
            for noted in list(self._noted_owners):
                if room == 0:
                    break
                del self._noted_owners[noted]
                if noted not in wanted and self._fresh(self._users, noted, now) is None:
                    asked.append(noted)
                    room -= 1
        requested = {m[:15] for m in missing}
        for chunk in mapping.chunks(asked, mapping.COLLECTION_SIZE):
            # A 15-character id is answered with its 18-character form: both are kept.
            found = {o.id[:15]: o for o in self._owners(f"Id IN {mapping.in_list(chunk)}")}
            for owner_id in chunk:
                match = found.get(owner_id[:15])
                if match is not None:
                    self._users[owner_id] = self._users[match.id] = (now, match)
                    if owner_id[:15] in requested:
                        owners[match.id] = match
        return owners

    def find_owner(self, query: str) -> Owner | None:
        text = query.strip()
        if not text:
            return None
        now = time.monotonic()
        cached = self._fresh(self._found, text.lower(), now)
        if cached is not None:
            return cached
        owner = self._find_owner(text)
        if owner is not None:  # not found is asked again: the user may be created meanwhile
            self._found[text.lower()] = (now, owner)
            self._users[owner.id] = (now, owner)
        return owner

    def _find_owner(self, text: str) -> Owner | None:
        literal = mapping.quote(text)
        matches = self._owners(f"IsActive = true AND (Username = {literal} OR Email = {literal})")
        by_username = [o for o in matches if (o.username or "").lower() == text.lower()]
        if by_username or matches:
            return (by_username or matches)[0]
        if "@" not in text:
            # "jweber" for the user whose Salesforce username is "jweber@acme.com": only when unambiguous.
            pattern = mapping.escape_soql(text).replace("%", "\\%").replace("_", "\\_")
            prefixed = self._owners(f"IsActive = true AND Username LIKE '{pattern}@%'")
            if len(prefixed) == 1:
                return prefixed[0]
        return None

    def get_tasks(self, ids: Sequence[str]) -> dict[str, TaskState]:
        states: dict[str, TaskState] = {}
        for chunk in mapping.chunks(_valid_ids(ids), mapping.COLLECTION_SIZE):
            soql = mapping.select(_TASK_FIELDS, "Task", f"Id IN {mapping.in_list(chunk)}")
            for record in self.client.query_all(soql):
                state = mapping.to_task_state(record)
                states[state.id] = state
        return states

    # --- writes ------------------------------------------------------------------------------------

    def update_contacts(self, updates: Sequence[ContactUpdate]) -> BatchResult:
        logical = self.options.contact_fields.model_dump()
        items = [(u.contact_id, {logical.get(k, k): v for k, v in u.values.items()}) for u in updates]
        return self._write("Contact", items)

    def update_accounts(self, updates: Sequence[AccountUpdate]) -> BatchResult:
        af = self.options.account_fields
        items = []
        for u in updates:
            values: dict[str, Any] = {af.nps: u.nps, af.responses: u.responses}
            for name, count in (
                (af.promoters, u.promoters),
                (af.passives, u.passives),
                (af.detractors, u.detractors),
            ):
                if name:
                    values[name] = count
            items.append((u.account_id, values))
        return self._write("Account", items)

    def _write(self, sobject: str, items: list[tuple[str, dict[str, Any]]]) -> BatchResult:
        if not items:
            return BatchResult()
        self.client.ensure_budget()
        fields = {f["name"]: f for f in self.client.describe(sobject)["fields"]}
        merged: dict[str, dict[str, Any]] = {}
        failed: dict[str, RecordFailure] = {}
        for record_id, values in items:
            try:
                wire = self._to_wire(sobject, fields, values)
            except ValueError as exc:
                failed[record_id] = RecordFailure(record_id, str(exc))
                continue
            merged.setdefault(record_id, {}).update(wire)
        for record_id in [r for r in merged if not _ID.match(r)]:
            failed[record_id] = RecordFailure(record_id, f"not a Salesforce {sobject} id: {record_id!r}")
            del merged[record_id]
        succeeded: list[str] = [r for r, values in merged.items() if not values and r not in failed]
        todo = [(r, v) for r, v in merged.items() if v and r not in failed]
        if len(todo) > self.options.bulk_write_threshold:
            log.info("salesforce.write_bulk", sobject=sobject, records=len(todo))
            rows = [{"Id": r, **{k: mapping.to_csv_cell(x) for k, x in v.items()}} for r, v in todo]
            errors = dict(self.client.bulk_update(sobject, rows))
            for record_id, _ in todo:
                if record_id in errors:
                    failed[record_id] = _failure(record_id, errors[record_id])
                else:
                    succeeded.append(record_id)
        else:
            for chunk in mapping.chunks(todo, mapping.COLLECTION_SIZE):
                records = [{"attributes": {"type": sobject}, "id": r, **v} for r, v in chunk]
                for (record_id, _), result in zip(
                    chunk, self.client.collections("PATCH", records), strict=False
                ):
                    if result.get("success"):
                        succeeded.append(record_id)
                    else:
                        failed[record_id] = _save_failure(record_id, result)
        if failed:
            log.warning(
                "salesforce.write_failures",
                sobject=sobject,
                failed=len(failed),
                succeeded=len(succeeded),
                first=next(iter(failed.values())).reason,
            )
        return BatchResult(succeeded=tuple(succeeded), failed=tuple(failed.values()))

    def _to_wire(
        self, sobject: str, fields: Mapping[str, Mapping[str, Any]], values: Mapping[str, Any]
    ) -> dict[str, Any]:
        wire: dict[str, Any] = {}
        for name, value in values.items():
            field = fields.get(name)
            if field is None:
                raise ValueError(
                    f"{sobject} has no field {name!r}: create it or fix the field name in the config"
                )
            if not field.get("updateable", True):
                raise ValueError(f"{sobject}.{name} is not editable by the integration user")
            try:
                wire[name] = mapping.to_wire(value, field.get("type"))
            except ValueError as exc:
                raise ValueError(f"{sobject}.{name}: {exc}") from None
        return wire

    def _task_record(self, spec: TaskSpec) -> dict[str, Any]:
        record: dict[str, Any] = {
            "attributes": {"type": "Task"},
            "WhoId": spec.contact_id,
            "Subject": spec.subject[:255],
            "Description": spec.body[:32000],
            "ActivityDate": spec.due.isoformat(),
            "Priority": mapping.PRIORITY[spec.priority],
            "Status": "Not Started",
            "TaskSubtype": "Call" if spec.type == "call" else "Task",
            self.options.task_key_field: spec.key,
        }
        if spec.account_id:
            record["WhatId"] = spec.account_id
        if spec.owner_id:
            record["OwnerId"] = spec.owner_id
        return record

    def _existing_tasks(self, keys: Sequence[str]) -> dict[str, str]:
        key_field = self.options.task_key_field
        found: dict[str, str] = {}
        for chunk in _budget_chunks(keys):
            soql = mapping.select(("Id", key_field), "Task", f"{key_field} IN {mapping.in_list(chunk)}")
            for record in self.client.query_all(soql):
                found.setdefault(str(record[key_field]), str(record["Id"]))
        return found

    def create_tasks(self, tasks: Sequence[TaskSpec]) -> list[TaskResult]:
        if not tasks:
            return []
        self.client.ensure_budget()
        results: dict[str, TaskResult] = {}
        specs = list({t.key: t for t in tasks}.values())
        # Only keys an earlier attempt may have used are looked up (a first try's cannot exist yet).
        existing = self._existing_tasks([s.key for s in specs if s.recheck])
        todo = []
        for spec in specs:
            if spec.key in existing:
                results[spec.key] = TaskResult(spec.key, task_id=existing[spec.key], existed=True)
            else:
                todo.append(spec)
        for chunk in mapping.chunks(todo, mapping.COLLECTION_SIZE):
            try:
                saved = self.client.collections("POST", [self._task_record(s) for s in chunk])
            except AmbiguousOutcome:
                results.update(self._reconcile_tasks(chunk))
                continue
            for spec, result in zip(chunk, saved, strict=False):
                if result.get("success"):
                    results[spec.key] = TaskResult(spec.key, task_id=str(result["id"]))
                else:
                    failure = _save_failure(spec.key, result)
                    results[spec.key] = TaskResult(
                        spec.key, error=failure.reason, transient=failure.transient
                    )
        return [results[t.key] for t in tasks]

    def _reconcile_tasks(self, chunk: Sequence[TaskSpec]) -> dict[str, TaskResult]:
        """The create call's answer was lost: our keys tell which tasks exist now."""
        found = self._existing_tasks([s.key for s in chunk])
        log.warning("salesforce.task_create_ambiguous", tasks=len(chunk), found=len(found))
        return {
            s.key: TaskResult(s.key, task_id=found[s.key], existed=True)
            if s.key in found
            else TaskResult(
                s.key, error="create call got no answer and the task is not there yet", transient=True
            )
            for s in chunk
        }

    # --- notes -------------------------------------------------------------------------------------

    def _existing_note(self, key: str, contact_id: str) -> str | None:
        pattern = mapping.escape_soql(mapping.note_marker(key)).replace("%", "\\%").replace("_", "\\_")
        soql = mapping.select(
            ("ContentDocumentId",),
            "ContentDocumentLink",
            f"LinkedEntityId = {mapping.quote(contact_id)} AND ContentDocument.Title LIKE '%{pattern}'",
        )
        found = self.client.query_all(soql)
        return str(found[0]["ContentDocumentId"]) if found else None

    def add_note(self, key: str, contact_id: str, title: str, body: str) -> str:
        """A Lightning note (ContentNote) linked to the contact, created with its link in one
        all-or-none Composite call. Our key ends the note's title, so a retry finds it first."""
        if not _ID.match(contact_id):
            raise PermanentError(f"not a Salesforce Contact id: {contact_id!r}", connector=NAME)
        self.client.ensure_budget()
        existing = self._existing_note(key, contact_id)
        if existing is not None:
            return existing
        try:
            answer = self.client.composite(
                lambda base: mapping.note_request(base, key, contact_id, title, body)
            )
        except AmbiguousOutcome:
            found = self._existing_note(key, contact_id)
            if found is not None:
                return found
            raise ConnectorUnavailable(
                f"note {key!r}: the create call got no answer and the note is not there yet", connector=NAME
            ) from None
        by_ref = {r.get("referenceId"): r for r in answer.get("compositeResponse", [])}
        note, link = by_ref.get("note", {}), by_ref.get("link", {})
        if link.get("httpStatusCode") == 201 and note.get("httpStatusCode") == 201:
            log.info("salesforce.note_added", key=key, note_id=note["body"]["id"])
            return str(note["body"]["id"])
        errors = [
            e
            for r in (note, link)
            for e in (r.get("body") if isinstance(r.get("body"), list) else [])
            if e.get("errorCode") != "PROCESSING_HALTED"
        ] or [{"errorCode": "UNKNOWN", "message": f"unexpected composite answer: {answer!r}"[:300]}]
        code = str(errors[0].get("errorCode"))
        reason = "; ".join(f"{e.get('errorCode')}: {e.get('message')}" for e in errors)
        kind = ConnectorUnavailable if code in mapping.TRANSIENT_CODES else PermanentError
        raise kind(f"note {key!r} for contact {contact_id} refused: {reason}", connector=NAME)

    # --- setup -------------------------------------------------------------------------------------

    def check(self, *, online: bool) -> list[str]:
        o = self.options
        needed = {
            "jwt": [(o.consumer_key_secret, "consumer key"), (o.private_key_secret, "private key")],
            "client_credentials": [
                (o.consumer_key_secret, "consumer key"),
                (o.consumer_secret_secret, "consumer secret"),
            ],
            "password": [(o.password_secret, "password")],
        }[o.auth]
        problems = [
            f"[crm.salesforce] auth = {o.auth!r} needs the {what} in secret {name} (environment variable or "
            f"$CREDENTIALS_DIRECTORY/{name})"
            for name, what in needed
            if self._secrets.get(name) is None
        ]
        if problems or not online:
            return problems
        try:
            self.client.login()
            described = {
                sobject: {f["name"]: f for f in self.client.describe(sobject)["fields"]}
                for sobject in ("Contact", "Account", "Task")
            }
        except ConnectorError as exc:
            return [f"Salesforce: {exc}"]
        for spec in mapping.required_fields(o):
            problem = mapping.check_field(spec, described[spec.sobject])
            if problem is not None:
                problems.append(problem)
        return problems

    def routes(self) -> Sequence[BaseRoute]:
        return []

    def close(self) -> None:
        self.client.close()


def _failure(record_id: str, error: str) -> RecordFailure:
    code = error.split(":", 1)[0].strip()
    return RecordFailure(record_id, error, transient=code in mapping.TRANSIENT_CODES)


def _save_failure(record_id: str, result: Mapping[str, Any]) -> RecordFailure:
    errors = result.get("errors") or [{}]
    first = errors[0]
    code = str(first.get("statusCode", "UNKNOWN"))
    reason = "; ".join(f"{e.get('statusCode')}: {e.get('message')}" for e in errors) or code
    return RecordFailure(record_id, reason, transient=code in mapping.TRANSIENT_CODES)


def build(options: SalesforceOptions, ctx: ConnectorContext) -> SalesforceCRM:
    return SalesforceCRM(options, ctx)
