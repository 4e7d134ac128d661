"""HubSpot tasks: created at most once per nps-sync key, read back for their state.

Our key is stored in a task property (``nps_task_key``). Before creating, the keys an earlier
attempt may have used (``TaskSpec.recheck``) are searched (``IN``, 100 keys a call) and found tasks
are returned with ``existed=True``. A create whose answer
was lost is resolved by the same lookup, never by sending it again. Caveat: HubSpot's search index
trails writes by a few seconds, so a lookup straight after a lost answer may miss a task that was
created; the result is then a transient error and the core's later retry looks the key up again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from zoneinfo import ZoneInfo

import structlog

from nps_sync.errors import AmbiguousOutcome, ConnectorUnavailable, PermanentError
from nps_sync.models import TaskResult, TaskSpec, TaskState

from .client import HubSpotClient, TaskInput
from .config import HubSpotOptions
from .mapping import (
    ASSOC_TASK_TO_COMPANY,
    ASSOC_TASK_TO_CONTACT,
    BATCH_LIMIT,
    IN_VALUES_LIMIT,
    OWNER,
    PRIORITY_TO_HUBSPOT,
    SEARCH_PAGE_LIMIT,
    TASK_BODY,
    TASK_COMPLETED,
    TASK_DUE,
    TASK_PRIORITY,
    TASK_STATE_PROPERTIES,
    TASK_STATUS,
    TASK_SUBJECT,
    TASK_TYPE,
    TYPE_TO_HUBSPOT,
    blank,
    chunks,
    due_date,
    due_timestamp,
    is_record_id,
)

log = structlog.get_logger("nps_sync.connectors.hubspot.tasks")


def _valuechunks(keys: Sequence[str], limit: int) -> Iterator[list[str]]:
    """Keys as IN values (with a lowercase twin where it differs), at most ``limit`` per chunk."""
    chunk: list[str] = []
    for key in keys:
        values = list(dict.fromkeys((key, key.lower())))
        if len(chunk) + len(values) > limit:
            yield chunk
            chunk = []
        chunk.extend(values)
    if chunk:
        yield chunk


class HubSpotTasks:
    def __init__(self, client: HubSpotClient, options: HubSpotOptions, zone: ZoneInfo) -> None:
        self.client = client
        self.options = options
        self.zone = zone

    def _find_tasks(self, keys: Sequence[str]) -> dict[str, str]:
        """Task id by our key, for the keys that already have a task (search, ``IN``, ≤ 100 values a
        call). HubSpot's docs ask for lowercase ``IN`` values on string properties, so a key with
        capitals is sent both as is and lowercased, and matches are compared without case."""
        key_prop = self.options.task_key_property
        wanted = {k.lower(): k for k in keys}
        found: dict[str, str] = {}
        for values in _valuechunks(list(wanted.values()), IN_VALUES_LIMIT):
            group = [{"property_name": key_prop, "operator": "IN", "values": values}]
            after: str | None = None
            while True:
                page = self.client.search("tasks", [group], [key_prop], limit=SEARCH_PAGE_LIMIT, after=after)
                for record in page.records:
                    key = wanted.get((record.properties.get(key_prop) or "").lower())
                    if key is not None and key not in found:
                        found[key] = record.id
                after = page.after
                if after is None or not page.records:
                    break
        return found

    def _task_input(self, spec: TaskSpec) -> TaskInput:
        props = {
            TASK_SUBJECT: spec.subject,
            TASK_BODY: spec.body,
            TASK_STATUS: "NOT_STARTED",
            TASK_PRIORITY: PRIORITY_TO_HUBSPOT[spec.priority],
            TASK_TYPE: TYPE_TO_HUBSPOT[spec.type],
            TASK_DUE: due_timestamp(spec.due, self.options.task_due_time, self.zone),
            self.options.task_key_property: spec.key,
        }
        if spec.owner_id:
            props[OWNER] = spec.owner_id
        company = spec.account_id if is_record_id(spec.account_id) else None
        return TaskInput(props, spec.contact_id, company)

    def _create_chunk(self, specs: Sequence[TaskSpec]) -> dict[str, TaskResult]:
        key_prop = self.options.task_key_property
        try:
            created = self.client.create_tasks(
                [self._task_input(s) for s in specs], ASSOC_TASK_TO_CONTACT, ASSOC_TASK_TO_COMPANY
            )
        except AmbiguousOutcome as exc:
            # The tasks may exist: only the key lookup may decide, never a blind repeat.
            log.warning("hubspot.task_create_ambiguous", tasks=len(specs), error=str(exc))
            found = self._find_tasks([s.key for s in specs])
            return {
                s.key: TaskResult(s.key, task_id=found[s.key], existed=True)
                if s.key in found
                else TaskResult(
                    s.key,
                    error=f"outcome unknown, the key lookup will decide on retry: {exc}",
                    transient=True,
                )
                for s in specs
            }
        except PermanentError as exc:
            if len(specs) == 1:
                return {specs[0].key: TaskResult(specs[0].key, error=str(exc))}
            # Narrow the refusal down by halves; look the keys up first in case HubSpot created part
            # of the batch before refusing, so no half is ever sent twice.
            found = self._find_tasks([s.key for s in specs])
            results = {k: TaskResult(k, task_id=t, existed=True) for k, t in found.items()}
            rest = [s for s in specs if s.key not in found]
            half = len(rest) // 2
            for part in (rest[:half], rest[half:]) if len(rest) > 1 else (rest,):
                if part:
                    results.update(self._create_chunk(part))
            return results
        by_key = {str(r.properties.get(key_prop)): r.id for r in created if r.properties.get(key_prop)}
        if len(by_key) < len(specs) and len(created) == len(specs):
            by_key = {s.key: r.id for s, r in zip(specs, created, strict=True)}
        return {
            s.key: TaskResult(s.key, task_id=by_key[s.key])
            if s.key in by_key
            else TaskResult(s.key, error="HubSpot returned no task for this input", transient=True)
            for s in specs
        }

    def create(self, tasks: Sequence[TaskSpec]) -> list[TaskResult]:
        """One result per spec, in order; each key gets at most one task (see the module doc)."""
        results: dict[str, TaskResult] = {}
        todo: list[TaskSpec] = []
        seen: set[str] = set()
        for spec in tasks:
            if spec.key in seen:
                continue
            seen.add(spec.key)
            if not is_record_id(spec.contact_id):
                results[spec.key] = TaskResult(
                    spec.key, error=f"contact id must be numeric, got: {spec.contact_id!r}"
                )
            else:
                todo.append(spec)
        # Only keys an earlier attempt may have used are looked up (a first try's cannot exist yet).
        rechecked = [s.key for s in todo if s.recheck]
        existing = self._find_tasks(rechecked) if rechecked else {}
        for key, task_id in existing.items():
            results[key] = TaskResult(key, task_id=task_id, existed=True)
        missing = [s for s in todo if s.key not in existing]
        for n, chunk in enumerate(chunks(missing, BATCH_LIMIT)):
            try:
                results.update(self._create_chunk(chunk))
            except ConnectorUnavailable as exc:
                for spec in missing[n * BATCH_LIMIT :]:
                    results[spec.key] = TaskResult(spec.key, error=str(exc), transient=True)
                break
        created = sum(1 for r in results.values() if r.task_id and not r.existed)
        log.info("hubspot.tasks_created", created=created, existed=len(existing), requested=len(tasks))
        return [results[t.key] for t in tasks]

    def states(self, ids: Sequence[str]) -> dict[str, TaskState]:
        states: dict[str, TaskState] = {}
        valid = list(dict.fromkeys(i for i in ids if is_record_id(i)))
        for chunk in chunks(valid, BATCH_LIMIT):
            for r in self.client.batch_read("tasks", chunk, TASK_STATE_PROPERTIES):
                status = r.properties.get(TASK_STATUS) or ""
                states[r.id] = TaskState(
                    id=r.id,
                    completed=status == TASK_COMPLETED,
                    due=due_date(r.properties.get(TASK_DUE), self.zone),
                    owner_id=blank(r.properties.get(OWNER)),
                    status=status,
                )
        return states
