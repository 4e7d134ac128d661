"""The HubSpot CRM: audiences from lists or searches, NPS write-back, follow-up tasks, owners.

Cost per job (calls): read N contacts ⌈N/100⌉ (all contacts) or ⌈N/250⌉ + ⌈N/100⌉ (a list) or
about ⌈N/200⌉ (a search, partitioned past 10,000), plus one batch read per 100 new companies; write
W contacts ⌈W/100⌉ plus one property read per object type; T tasks ⌈T/100⌉ key searches + ⌈T/100⌉
creates. See the README for the trade-offs.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import ValidationError

from nps_sync.abc import ConnectorContext
from nps_sync.errors import ConfigError, ConnectorError
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

from . import notes, reader
from .client import HubSpotClient, PropertyInfo, Record
from .config import HubSpotAudience, HubSpotOptions, SearchFilter
from .mapping import (
    BATCH_LIMIT,
    COMPANY_ID,
    COMPANY_PROPERTIES,
    COMPANY_SPECS,
    CONTACT_BASE_PROPERTIES,
    CONTACT_SPECS,
    HUBSPOT_EMAIL_OPT_OUT,
    PROPERTY_RECHECK_SECONDS,
    TASK_KEY_SPEC,
    Company,
    PropertySpec,
    Value,
    chunks,
    is_record_id,
    to_company,
    to_contact,
    to_owner,
    to_value,
)
from .reader import PageSource
from .tasks import HubSpotTasks

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

log = structlog.get_logger("nps_sync.connectors.hubspot")

SETUP_HINT = "run `nps-sync setup hubspot` to create it"
#: Raw contact pages read ahead of their conversion into contacts (``iter_audience``).
RAW_PAGES_AHEAD = 10


class HubSpotCrm:
    name = "hubspot"
    #: Records per batched write (the core sizes its write-back and task batches to it).
    batch_size = BATCH_LIMIT

    def __init__(self, options: HubSpotOptions, ctx: ConnectorContext, client: HubSpotClient) -> None:
        self.options = options
        self.ctx = ctx
        self.client = client
        #: Object type → (when read, property definitions); kept for the process (see ``_property_info``).
        self._props: dict[str, tuple[float, dict[str, PropertyInfo]]] = {}
        self._owners: tuple[float, list[dict[str, Any]]] | None = None
        self.tasks = HubSpotTasks(client, options, ctx.time_zone)

    # -- reading contacts ---------------------------------------------------------------------

    def _contact_properties(self, extra: Sequence[str]) -> list[str]:
        cp = self.options.contact_properties
        names = [
            *CONTACT_BASE_PROPERTIES,
            self.options.time_zone_property,
            cp.email_opt_out,
            HUBSPOT_EMAIL_OPT_OUT,
            cp.sms_opt_out,
            *extra,
        ]
        return list(dict.fromkeys(names))

    def _to_contacts(
        self, records: Sequence[Record], companies: dict[str, Company | None], extra: tuple[str, ...]
    ) -> list[Contact]:
        wanted = {r.properties.get(COMPANY_ID) for r in records} - set(companies) - {None, ""}
        wanted_ids = sorted(str(c) for c in wanted if is_record_id(c))
        for chunk in chunks(wanted_ids, BATCH_LIMIT):
            found = {
                r.id: to_company(r.id, r.properties)
                for r in self.client.batch_read("companies", chunk, COMPANY_PROPERTIES)
            }
            for company_id in chunk:
                companies[company_id] = found.get(company_id)
        cp = self.options.contact_properties
        return [
            to_contact(
                r.id,
                r.properties,
                companies.get(str(r.properties.get(COMPANY_ID) or "")),
                email_opt_out=cp.email_opt_out,
                sms_opt_out=cp.sms_opt_out,
                time_zone=self.options.time_zone_property,
                extra_fields=extra,
            )
            for r in records
        ]

    def iter_audience(self, audience: Audience) -> Iterator[Sequence[Contact]]:
        try:
            spec = HubSpotAudience.model_validate(dict(audience.filter))
        except ValidationError as exc:
            raise ConfigError(f"program {audience.program!r}: [program.audience] for HubSpot: {exc}") from exc
        props = self._contact_properties(audience.extra_fields)
        limit = spec.page_limit(audience.page_size)
        companies: dict[str, Company | None] = {}
        extra = tuple(audience.extra_fields)
        if spec.all_contacts:
            source = PageSource("all", tuple(props), limit)
        elif spec.list_id is not None:
            source = PageSource("list", tuple(props), min(limit, BATCH_LIMIT), list_id=spec.list_id)
        else:
            groups = tuple(tuple(_api_filter(f) for f in group.filters) for group in spec.filter_groups or ())
            source = PageSource("search", tuple(props), limit, filter_groups=groups)
        # Raw pages are read ahead of their conversion (time zones, phone numbers, companies): the
        # next round trip starts as soon as a page's cursor is known.
        pages = reader.pages(
            self.client, source, in_process=self.options.read_pages_in_process, ahead=RAW_PAGES_AHEAD
        )
        count = 0
        for records in pages:
            count += len(records)
            yield self._to_contacts(records, companies, extra)
        log.info("hubspot.audience_read", program=audience.program, contacts=count)

    def get_contacts(self, ids: Sequence[str]) -> dict[str, Contact]:
        valid = list(dict.fromkeys(i for i in ids if is_record_id(i)))
        props = self._contact_properties(())
        companies: dict[str, Company | None] = {}
        found: dict[str, Contact] = {}
        for chunk in chunks(valid, BATCH_LIMIT):
            for contact in self._to_contacts(self.client.batch_read("contacts", chunk, props), companies, ()):
                found[contact.id] = contact
        return {i: found[i] for i in valid if i in found}

    # -- owners -------------------------------------------------------------------------------

    def _all_owners(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        if self._owners is not None and now - self._owners[0] < self.options.owner_cache_seconds:
            return self._owners[1]
        owners: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            page, after = self.client.owners_page(after)
            owners.extend(page)
            if after is None:
                break
        self._owners = (now, owners)
        return owners

    def _manager_id(self, email: str | None) -> str | None:
        manager_email = self.options.managers.get((email or "").lower())
        if not manager_email:
            return None
        for owner in self._all_owners():
            if (owner.get("email") or "").lower() == manager_email:
                return str(owner["id"])
        log.warning("hubspot.manager_unknown", owner=email, manager=manager_email)
        return None

    def get_owners(self, ids: Sequence[str]) -> dict[str, Owner]:
        wanted = set(ids)
        return {
            str(o["id"]): to_owner(o, self._manager_id(o.get("email")))
            for o in self._all_owners()
            if str(o["id"]) in wanted
        }

    def find_owner(self, query: str) -> Owner | None:
        text = query.strip()
        if "@" in text:
            page, _ = self.client.owners_page(None, email=text)
            matches = [o for o in page if (o.get("email") or "").lower() == text.lower()]
        else:
            lowered = text.lower()
            matches = [
                o
                for o in self._all_owners()
                if str(o["id"]) == text
                or f"{o.get('first_name') or ''} {o.get('last_name') or ''}".strip().lower() == lowered
            ]
        return to_owner(matches[0], self._manager_id(matches[0].get("email"))) if matches else None

    # -- writing ------------------------------------------------------------------------------

    def _property_info(self, object_type: str) -> dict[str, PropertyInfo]:
        """Property definitions, read once and kept for the process: they change only when someone
        edits properties in HubSpot, which ``_recheck`` notices."""
        cached = self._props.get(object_type)
        if cached is None:
            cached = (time.monotonic(), self.client.properties(object_type))
            self._props[object_type] = cached
        return cached[1]

    def _recheck(self, object_type: str) -> dict[str, PropertyInfo]:
        """The definitions again after a write named a property or option the kept list lacks (a
        ``setup``, or an option added in HubSpot, is seen without a restart); at most once per
        ``PROPERTY_RECHECK_SECONDS``, so a property that is missing for good costs no call per batch."""
        cached = self._props.get(object_type)
        if cached is not None and time.monotonic() - cached[0] < PROPERTY_RECHECK_SECONDS:
            return cached[1]
        self._props.pop(object_type, None)
        return self._property_info(object_type)

    def _prepare(
        self, object_type: str, record_id: str, values: Mapping[str, Value]
    ) -> tuple[dict[str, str] | None, str | None]:
        """HubSpot property values for one record, or why it cannot be written."""
        if not is_record_id(record_id):
            return None, f"{object_type} id must be HubSpot's numeric record id, got: {record_id!r}"
        info = self._property_info(object_type)
        out: dict[str, str] = {}
        for name, value in values.items():
            if isinstance(value, enum.Enum):
                value = value.value
            text = to_value(value)
            prop = info.get(name)
            if prop is None or _unknown_option(prop, text):
                info = self._recheck(object_type)
                prop = info.get(name)
            if prop is None:
                return None, f"{object_type} property {name!r} does not exist in HubSpot; {SETUP_HINT}"
            if prop.read_only:
                return (
                    None,
                    f"{object_type} property {name!r} is read-only in HubSpot (value {value!r} not written)",
                )
            if _unknown_option(prop, text):
                return None, (
                    f"{object_type} property {name!r}: {text!r} is not one of its options "
                    f"({', '.join(sorted(prop.options))})"
                )
            out[name] = text
        return out, None

    def _write(self, object_type: str, inputs: Sequence[tuple[str, dict[str, str]]]) -> BatchResult:
        """Batch update ≤ 100 records; a refused batch is narrowed down so one bad record fails alone."""
        ok, errors = self.client.batch_update(object_type, inputs)
        if not errors:
            return BatchResult(succeeded=tuple(ok))
        if any(MISSING_PROPERTY in e.message for e in errors):
            # Our kept definitions are out of date (a property was deleted): read them before the next write.
            self._props.pop(object_type, None)
        sent = [record_id for record_id, _ in inputs]
        blamed = {i for e in errors for i in e.ids if i in sent}
        message = {i: e.message for e in errors for i in e.ids}
        failed = [RecordFailure(i, message[i]) for i in sent if i in blamed]
        rest = [(i, p) for i, p in inputs if i not in blamed and i not in ok]
        if ok or not rest:
            # A 207: HubSpot wrote what it could; anything neither written nor blamed is reported.
            failed += [RecordFailure(i, errors[0].message) for i, _ in rest]
            return BatchResult(tuple(ok), tuple(failed))
        if blamed:
            again = self._write(object_type, rest)
            return BatchResult(again.succeeded, tuple(failed) + again.failed)
        if len(inputs) == 1:
            return BatchResult((), (RecordFailure(inputs[0][0], errors[0].message),))
        half = len(inputs) // 2
        first, second = self._write(object_type, inputs[:half]), self._write(object_type, inputs[half:])
        return BatchResult(first.succeeded + second.succeeded, first.failed + second.failed)

    def _update(self, object_type: str, rows: Sequence[tuple[str, Mapping[str, Value]]]) -> BatchResult:
        ready: list[tuple[str, dict[str, str]]] = []
        failed: list[RecordFailure] = []
        for record_id, values in rows:
            props, problem = self._prepare(object_type, record_id, values)
            if props is None:
                failed.append(RecordFailure(record_id, problem or "invalid"))
            else:
                ready.append((record_id, props))
        succeeded: list[str] = []
        for chunk in chunks(ready, BATCH_LIMIT):
            result = self._write(object_type, chunk)
            succeeded.extend(result.succeeded)
            failed.extend(result.failed)
        if failed:
            log.warning(
                "hubspot.write_failures", object_type=object_type, failed=len(failed), first=failed[0].reason
            )
        return BatchResult(tuple(succeeded), tuple(failed))

    def update_contacts(self, updates: Sequence[ContactUpdate]) -> BatchResult:
        names = self.options.contact_properties.model_dump()
        return self._update(
            "contacts",
            [(u.contact_id, {names.get(k, k): v for k, v in u.values.items()}) for u in updates],
        )

    def update_accounts(self, updates: Sequence[AccountUpdate]) -> BatchResult:
        cp = self.options.company_properties
        rows: list[tuple[str, Mapping[str, Value]]] = [
            (u.account_id, {cp.nps: None if u.nps is None else round(u.nps, 1), cp.responses: u.responses})
            for u in updates
        ]
        return self._update("companies", rows)

    # -- tasks --------------------------------------------------------------------------------

    def create_tasks(self, tasks: Sequence[TaskSpec]) -> list[TaskResult]:
        return self.tasks.create(tasks)

    def get_tasks(self, ids: Sequence[str]) -> dict[str, TaskState]:
        return self.tasks.states(ids)

    # -- properties ---------------------------------------------------------------------------

    def _required(self) -> dict[str, dict[str, PropertySpec | None]]:
        """Property name → our definition (None: HubSpot's own, checked but never created)."""
        cp, co = self.options.contact_properties.model_dump(), self.options.company_properties.model_dump()
        contacts: dict[str, PropertySpec | None] = {cp[k]: CONTACT_SPECS.get(k) for k in cp}
        contacts[self.options.time_zone_property] = None
        return {
            "contacts": contacts,
            "companies": {co[k]: COMPANY_SPECS[k] for k in co},
            "tasks": {self.options.task_key_property: TASK_KEY_SPEC},
        }

    def check(self, *, online: bool) -> list[str]:
        if not online:
            return []
        problems: list[str] = []
        try:
            for object_type, wanted in self._required().items():
                have = self.client.properties(object_type)
                self._props[object_type] = (time.monotonic(), have)
                for name, spec in wanted.items():
                    if name not in have:
                        hint = (
                            SETUP_HINT
                            if spec is not None and not name.startswith("hs_")
                            else "it is expected to exist"
                        )
                        problems.append(f"HubSpot {object_type} property {name!r} is missing; {hint}")
                    elif spec is not None and spec.options and not set(spec.options) <= have[name].options:
                        problems.append(
                            f"HubSpot {object_type} property {name!r} lacks options "
                            f"{sorted(set(spec.options) - have[name].options)}; add them in HubSpot"
                        )
        except ConnectorError as exc:
            problems.append(f"HubSpot could not be checked: {exc}")
        return problems

    def setup(self) -> list[str]:
        """Create the NPS property group and missing properties (409 counts as present). Idempotent;
        returns what was created, e.g. ``["contacts.nps_score"]``."""
        created: list[str] = []
        group, label = self.options.property_group, self.options.property_group_label
        for object_type, wanted in self._required().items():
            have = self.client.properties(object_type)
            todo = {
                n: s for n, s in wanted.items() if s is not None and n not in have and not n.startswith("hs_")
            }
            if not todo:
                continue
            if self.client.create_group(object_type, group, label):
                log.info("hubspot.group_created", object_type=object_type, group=group)
            for name, spec in todo.items():
                if self.client.create_property(
                    object_type,
                    name=name,
                    label=spec.label,
                    type_=spec.type,
                    field_type=spec.field_type,
                    group=group,
                    description=spec.description,
                    options=spec.options,
                ):
                    created.append(f"{object_type}.{name}")
                    log.info("hubspot.property_created", object_type=object_type, name=name)
        self._props.clear()
        return created

    def add_note(self, key: str, contact_id: str, title: str, body: str) -> str:
        """A note on the contact's timeline, found by our key (in its body) before any create."""
        return notes.add_note(self.client, key, contact_id, title, body)

    def routes(self) -> Sequence[BaseRoute]:
        return []

    def wait_ready(self, timeout: float) -> None:
        """Wait for the page reader's fork server (``read_pages_in_process``), so a wave that starts
        right after the daemon does not wait for it."""
        if self.options.read_pages_in_process:
            reader.wait_warm(timeout)

    def close(self) -> None:
        self.client.close()


#: HubSpot's error code for a write naming a property the portal does not have.
MISSING_PROPERTY = "PROPERTY_DOESNT_EXIST"


def _unknown_option(prop: PropertyInfo, text: str) -> bool:
    return prop.type == "enumeration" and bool(text) and bool(prop.options) and text not in prop.options


def _api_filter(f: SearchFilter) -> dict[str, Any]:
    """Our filter as keyword arguments of the SDK's ``Filter`` model."""
    out: dict[str, Any] = {"property_name": f.property, "operator": f.operator}
    if f.value is not None:
        out["value"] = f.value
    if f.values is not None:
        out["values"] = list(f.values)
    if f.high_value is not None:
        out["high_value"] = f.high_value
    return out
